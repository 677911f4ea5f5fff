"""Deterministic synthetic video clips whose classes differ only in how things change over time.

Every clip shows one "object" shape over a static textured background with a few
distractor shapes. The eight classes come in time-reversed partner pairs
(``move_left``/``move_right``, ``move_up``/``move_down``, ``grow``/``shrink``,
``rotate_cw``/``rotate_ccw``): all object motion is linear in time (constant
velocity, linear scale change, constant angular speed) and the per-frame noise
(distractor jitter, brightness flicker) is i.i.d., so playing a clip backwards
gives a valid clip of the partner class. A classifier therefore has to look at
temporal order; no single frame (and no unordered bag of frames) tells the class.

Only numpy and cv2 are used. Everything is driven by an explicit
``numpy.random.Generator`` so a seed reproduces clips exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "CLASSES",
    "PARTNER",
    "ClipSpec",
    "clip_spec",
    "render_clip",
    "write_clip",
    "reverse_clip",
    "make_samples",
]

CLASSES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
)

# Each class maps to the class you get by playing its clips backwards.
PARTNER: dict[str, str] = {
    "move_left": "move_right",
    "move_right": "move_left",
    "move_up": "move_down",
    "move_down": "move_up",
    "grow": "shrink",
    "shrink": "grow",
    "rotate_cw": "rotate_ccw",
    "rotate_ccw": "rotate_cw",
}

# Clip variety used by make_samples. mp4v (MPEG-4 part 2, yuv420p) needs even
# sizes: OpenCV's FFmpeg writer silently crops odd sizes by one pixel, so odd
# sizes only go to the MJPG .avi clips. MJPG is intra-only and several times
# larger per frame than mp4v, so .avi clips also get smaller frames to keep the
# default set small (measured: about 5 MB for 8 x 12 clips).
MP4_SIZES: tuple[tuple[int, int], ...] = ((160, 120), (128, 128), (176, 144), (120, 160), (144, 108))
AVI_SIZES: tuple[tuple[int, int], ...] = ((128, 96), (112, 84), (96, 128), (112, 112), (97, 73))
FPS_CHOICES: tuple[float, ...] = (10.0, 12.0, 15.0, 24.0, 25.0)
MIN_FRAMES, MAX_FRAMES = 16, 40
MJPEG_QUALITY = 75

# fourcc per suffix. Backends: mp4v always goes through FFmpeg. For MJPG,
# FFmpeg's encoder (4:2:0 chroma) makes files about half the size of OpenCV's
# built-in one, but it ignores VIDEOWRITER_PROP_QUALITY (its default is close
# to JPEG quality 75) and, like mp4v, silently crops odd sizes. So MJPG uses
# FFmpeg for even sizes and OpenCV's encoder (which keeps odd sizes and honours
# MJPEG_QUALITY) for odd ones.
_FOURCC: dict[str, str] = {".mp4": "mp4v", ".avi": "MJPG"}


_SHIFT = 4  # sub-pixel bits for cv2 drawing, so slow motion is smooth, not 1-px steps
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------- background


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """A BGR colour (float32, 0..255) from a random hue with saturation/value in the given ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static textured background (uint8 BGR): a random mix of cheap texture layers.

    Contrast is kept moderate so the object stays clearly visible, and fine
    high-frequency noise is kept weak because it is what makes MJPEG files big.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = _random_colour(rng, (0.0, 0.5), (0.35, 0.75))
    img = np.broadcast_to(base, (height, width, 3)).astype(np.float32)

    layers = ["blobs", "stripes", "checker", "gradient", "noise"]
    n_layers = int(rng.integers(2, 4))
    for kind in rng.choice(layers, size=n_layers, replace=False):
        if kind == "blobs":  # low-frequency colour blobs: random coarse grid upscaled
            gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
            coarse = rng.uniform(-1, 1, (gh, gw, 3)).astype(np.float32)
            img += rng.uniform(20, 45) * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        elif kind == "stripes":  # oriented sine or square stripes
            ang = rng.uniform(0, math.pi)
            period = rng.uniform(10, 32)
            phase = (xx * math.cos(ang) + yy * math.sin(ang)) * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi)
            wave = np.sin(phase)
            if rng.random() < 0.5:  # squarer stripes, edges kept soft (hard edges bloat MJPEG)
                wave = np.tanh(2.5 * wave)
            img += wave[..., None] * (rng.uniform(12, 28) * rng.uniform(-1, 1, 3).astype(np.float32))
        elif kind == "checker":  # axis-aligned checkerboard with a random offset
            cell = rng.uniform(8, 22)
            ox, oy = rng.uniform(0, cell, 2)
            board = (np.floor((xx + ox) / cell) + np.floor((yy + oy) / cell)) % 2 * 2 - 1
            board = cv2.GaussianBlur(board, (0, 0), 0.8)  # soften edges: much cheaper to encode
            img += board[..., None] * (rng.uniform(10, 22) * rng.uniform(-1, 1, 3).astype(np.float32))
        elif kind == "gradient":  # linear ramp towards a second colour
            ang = rng.uniform(0, 2 * math.pi)
            ramp = xx * math.cos(ang) + yy * math.sin(ang)
            ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
            img += ramp[..., None] * (_random_colour(rng, (0.2, 0.8), (0.3, 0.9)) - base) * rng.uniform(0.4, 0.9)
        else:  # slightly blurred grain
            grain = rng.normal(0, 1, (height, width, 1)).astype(np.float32)
            img += cv2.GaussianBlur(grain, (0, 0), 1.2)[..., None] * rng.uniform(4, 9)
    return np.clip(img, 20, 235).astype(np.uint8)


# --------------------------------------------------------------------------- shapes


_SHAPES = ("rectangle", "ellipse", "triangle", "polygon")


def _shape(rng: np.random.Generator, kinds: Sequence[str] = _SHAPES) -> np.ndarray:
    """Vertices (K, 2) of a random shape in local units (radius about 1), centred on 0.

    None is rotationally symmetric by less than 120 degrees; together with the
    off-centre marker drawn on the object this keeps rotation direction visible.
    """
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "rectangle":
        a = rng.uniform(0.4, 0.7)  # aspect ratio well away from a square
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], np.float32)
    if kind == "ellipse":
        a = rng.uniform(0.4, 0.65)
        t = np.linspace(0, 2 * math.pi, 36, endpoint=False)
        return np.stack([np.cos(t), a * np.sin(t)], axis=1).astype(np.float32)
    if kind == "triangle":
        t = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.35, 0.35, 3)
        r = rng.uniform(0.75, 1.0, 3)
        return np.stack([r * np.cos(t), r * np.sin(t)], axis=1).astype(np.float32)
    k = int(rng.integers(5, 8))
    t = np.sort(rng.uniform(0, 2 * math.pi, k))
    t = np.linspace(0, 2 * math.pi, k, endpoint=False) * 0.5 + t * 0.5  # avoid degenerate slivers
    r = rng.uniform(0.55, 1.0, k)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1).astype(np.float32)


def _place(verts: np.ndarray, cx: float, cy: float, scale: float, angle: float) -> np.ndarray:
    """Rotate (radians; positive is clockwise on screen, since y points down), scale and translate."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)
    pts = verts @ rot.T * scale + np.array([cx, cy], np.float32)
    return np.round(pts * _ONE).astype(np.int32)  # fixed point for sub-pixel drawing


def _draw(img: np.ndarray, pts: np.ndarray, colour: np.ndarray, outline: np.ndarray | None) -> None:
    cv2.fillPoly(img, [pts], colour.tolist(), cv2.LINE_AA, _SHIFT)
    if outline is not None:
        cv2.polylines(img, [pts], True, outline.tolist(), 1, cv2.LINE_AA, _SHIFT)


def _contrasting(rng: np.random.Generator, against: np.ndarray, tries: int = 6) -> np.ndarray:
    """A saturated colour chosen (best of a few) to stand out against the given mean colour."""
    cands = [_random_colour(rng, (0.65, 1.0), (0.7, 1.0)) for _ in range(tries)]
    return max(cands, key=lambda c: float(np.linalg.norm(c - against)))


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class _Track:
    """Object pose at t=0 and t=1; frames interpolate linearly (so time reversal swaps the ends)."""

    x: tuple[float, float]
    y: tuple[float, float]
    scale: tuple[float, float]
    angle: tuple[float, float]


def _track(label: str, rng: np.random.Generator, width: int, height: int, object_scale: float) -> _Track:
    """Random start/end pose for a class. Each pair is sampled symmetrically, so the
    distribution of a class's tracks equals the distribution of its partner's tracks reversed."""
    dim = float(min(width, height)) * object_scale
    angle0 = rng.uniform(0, 2 * math.pi)

    def span(extent: float, travel: float, margin: float) -> tuple[float, float]:
        # A random segment of length `travel` whose ends keep `margin` from the edges.
        lo, hi = margin + travel / 2, extent - margin - travel / 2
        mid = rng.uniform(lo, hi) if hi > lo else extent / 2
        return mid - travel / 2, mid + travel / 2

    def drift(extent: float, centre_margin: float, frac: float) -> tuple[float, float]:
        # A small linear drift along an axis the class does not care about, so
        # "no motion" is not a shortcut for the non-move classes.
        d = rng.uniform(-frac, frac) * extent
        return span(extent, abs(d), centre_margin)[:: 1 if d >= 0 else -1]

    if label in ("move_left", "move_right", "move_up", "move_down"):
        scale = rng.uniform(0.14, 0.24) * dim
        horizontal = label in ("move_left", "move_right")
        along, across = (width, height) if horizontal else (height, width)
        a0, a1 = span(along, rng.uniform(0.3, 0.6) * along, 0.8 * scale)
        if label in ("move_left", "move_up"):
            a0, a1 = a1, a0
        c = drift(across, scale, 0.05)
        x, y = ((a0, a1), c) if horizontal else (c, (a0, a1))
        return _Track(x, y, (scale, scale), (angle0, angle0))
    if label in ("grow", "shrink"):
        small = rng.uniform(0.08, 0.12) * dim
        large = min(small * rng.uniform(2.0, 3.0), 0.33 * dim)
        scales = (small, large) if label == "grow" else (large, small)
        x = drift(width, 0.9 * large, 0.06)
        y = drift(height, 0.9 * large, 0.06)
        return _Track(x, y, scales, (angle0, angle0))
    if label in ("rotate_cw", "rotate_ccw"):
        scale = rng.uniform(0.16, 0.26) * dim
        turn = math.radians(rng.uniform(120, 300)) * (1 if label == "rotate_cw" else -1)
        x = drift(width, scale, 0.06)
        y = drift(height, scale, 0.06)
        return _Track(x, y, (scale, scale), (angle0, angle0 + turn))
    raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")


# --------------------------------------------------------------------------- public API


def render_clip(label: str, rng: np.random.Generator, num_frames: int, width: int, height: int,
                background: np.ndarray | None = None, object_scale: float = 1.0) -> np.ndarray:
    """Render one clip of class `label` as uint8 BGR frames of shape (num_frames, height, width, 3),
    over ``background`` (a BGR image of that size, e.g. a real scene) or a generated texture;
    ``object_scale`` multiplies the size of every shape.

    Deterministic given the generator state. ``clip[::-1]`` is a valid clip of ``PARTNER[label]``.
    """
    if label not in PARTNER:
        raise ValueError(f"unknown class {label!r}; expected one of {CLASSES}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show motion, got {num_frames}")
    if width < 32 or height < 32:
        raise ValueError(f"frame size must be at least 32x32, got {width}x{height}")

    bg = _background(rng, height, width) if background is None else background
    if bg.shape != (height, width, 3):
        raise ValueError(f"background must be {height}x{width} BGR, got shape {bg.shape}")
    bg_mean = bg.reshape(-1, 3).mean(axis=0)
    dim = float(min(width, height)) * object_scale

    # The object: random shape, colour that stands out, outline, and two off-centre
    # markers (make rotation and scale visible inside the shape, not only at its
    # edges). Markers always have corners: a uniform ellipse with a round marker
    # gives flow and feature trackers almost nothing to lock onto when it rotates.
    verts = _shape(rng)
    colour = _contrasting(rng, bg_mean)
    outline = np.zeros(3, np.float32) if colour.mean() > 110 else np.full(3, 255, np.float32)
    corner_shapes = ("rectangle", "triangle", "polygon")
    second = rng.uniform(2.2, 4.1)  # angle of the second marker, well away from the first
    markers = [
        (_shape(rng, corner_shapes) * 0.26 + np.array([rng.uniform(0.3, 0.45), 0.0], np.float32), 255 - colour),
        (_shape(rng, corner_shapes) * 0.16 + 0.4 * np.array([math.cos(second), math.sin(second)], np.float32), outline),
    ]
    track = _track(label, rng, width, height, object_scale)

    # Distractors look like objects (same shape family, often equally vivid colours) but are
    # smaller and either static or jitter i.i.d. per frame (time-symmetric noise).
    n_distract = int(rng.integers(2, 6))
    distractors = []
    for _ in range(n_distract):
        distractors.append(
            dict(
                verts=_shape(rng),
                cx=rng.uniform(0.05, 0.95) * width,
                cy=rng.uniform(0.05, 0.95) * height,
                scale=rng.uniform(0.05, 0.12) * dim,
                angle=rng.uniform(0, 2 * math.pi),
                colour=(
                    _contrasting(rng, bg_mean, tries=2)
                    if rng.random() < 0.5
                    else _random_colour(rng, (0.0, 1.0), (0.2, 1.0))
                ),
                jitter=rng.uniform(0.5, 1.8) if rng.random() < 0.5 else 0.0,
            )
        )
    flicker = rng.uniform(0.0, 0.02)  # i.i.d. per-frame global gain, so frame differences are never clean

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        t = i / (num_frames - 1)
        img = bg.copy()
        for d in distractors:
            jx, jy = rng.normal(0, d["jitter"], 2) if d["jitter"] else (0.0, 0.0)
            _draw(img, _place(d["verts"], d["cx"] + jx, d["cy"] + jy, d["scale"], d["angle"]), d["colour"], None)
        cx = track.x[0] + t * (track.x[1] - track.x[0])
        cy = track.y[0] + t * (track.y[1] - track.y[0])
        sc = track.scale[0] + t * (track.scale[1] - track.scale[0])
        ang = track.angle[0] + t * (track.angle[1] - track.angle[0])
        _draw(img, _place(verts, cx, cy, sc, ang), colour, outline)
        for marker_verts, marker_colour in markers:
            _draw(img, _place(marker_verts, cx, cy, sc, ang), marker_colour, None)
        gain = 1.0 + rng.normal(0, flicker) if flicker else 1.0
        if gain != 1.0:
            img = cv2.convertScaleAbs(img, alpha=gain)
        frames[i] = img
    return frames


def write_clip(frames: np.ndarray, path: Path, fps: float) -> None:
    """Write uint8 BGR frames (N, H, W, 3) to `path`; the codec follows the suffix.

    ``.mp4`` -> fourcc ``mp4v`` (FFmpeg; width and height must be even),
    ``.avi`` -> ``MJPG`` (FFmpeg for even sizes, OpenCV's own encoder at quality
    ``MJPEG_QUALITY`` for odd sizes, which FFmpeg would crop).
    Raises ValueError for bad input and RuntimeError if the writer cannot open or writes nothing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FOURCC:
        raise ValueError(f"unsupported video suffix {path.suffix!r} for {path}; use .mp4 or .avi")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    height, width = frames.shape[1:3]
    fourcc = _FOURCC[suffix]
    odd = bool(width % 2 or height % 2)
    if suffix == ".mp4" and odd:
        # FFmpeg would silently crop to even size; fail loudly instead.
        raise ValueError(f"mp4v needs even width and height, got {width}x{height}; use .avi for odd sizes")
    backend = cv2.CAP_OPENCV_MJPEG if suffix == ".avi" and odd else cv2.CAP_FFMPEG

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), backend, cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(
            f"cv2.VideoWriter could not open {path} (fourcc {fourcc}, {width}x{height} @ {fps} fps); "
            "check the directory is writable and this OpenCV build has the codec"
        )
    try:
        if suffix == ".avi":
            # Honoured by OpenCV's MJPEG encoder; FFmpeg's returns False and keeps its default.
            writer.set(cv2.VIDEOWRITER_PROP_QUALITY, MJPEG_QUALITY)
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"cv2.VideoWriter produced no data for {path}")


def _read_frames(path: Path) -> tuple[np.ndarray, float]:
    """Decode every frame of a video with cv2; returns (frames, fps)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cv2.VideoCapture could not open {path}")
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {path}")
    if not fps > 0:
        raise RuntimeError(f"{path} reports no frame rate")
    return np.stack(frames), fps


def reverse_clip(src: Path, dst: Path) -> None:
    """Write the frames of `src` in reverse order to `dst` with the same fps and codec.

    The codec follows the suffix, so `dst` must have the same suffix as `src`.
    `dst` may equal `src` (all frames are read before writing).
    """
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() != dst.suffix.lower():
        raise ValueError(f"dst suffix {dst.suffix!r} differs from src {src.suffix!r}; the codec would change")
    frames, fps = _read_frames(src)
    write_clip(frames[::-1], dst, fps)


@dataclass(frozen=True)
class ClipSpec:
    """Container parameters of one generated clip (everything except its content)."""

    width: int
    height: int
    fps: float
    num_frames: int
    suffix: str  # ".mp4" or ".avi"


def _clip_rng(seed: int, label: str, index: int) -> np.random.Generator:
    # Keyed by (seed, class, clip index) rather than drawn from one stream, so a
    # clip does not change when other classes or clip counts are requested.
    return np.random.default_rng(np.random.SeedSequence([seed, CLASSES.index(label), index]))


def clip_spec(label: str, index: int, seed: int = 0) -> ClipSpec:
    """The size, fps, length and container that `make_samples` uses for clip `index` of `label`."""
    return _spec_from(_clip_rng(seed, label, index), label, index)


def _spec_from(rng: np.random.Generator, label: str, index: int) -> ClipSpec:
    # Alternate codecs per clip (offset by class) so any class with >= 2 clips has
    # both, and the whole set is half mp4v, half MJPG.
    suffix = ".mp4" if (index + CLASSES.index(label)) % 2 == 0 else ".avi"
    sizes = MP4_SIZES if suffix == ".mp4" else AVI_SIZES
    width, height = sizes[int(rng.integers(len(sizes)))]
    fps = FPS_CHOICES[int(rng.integers(len(FPS_CHOICES)))]
    num_frames = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
    return ClipSpec(width, height, fps, num_frames, suffix)


def make_samples(
    out_dir: Path,
    clips_per_class: int = 12,
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
) -> list[Path]:
    """Write `clips_per_class` clips per class to ``out_dir/<label>/<label>_<NNN>.<mp4|avi>``.

    Deterministic for a seed (clip content is a function of seed, class and index only).
    Existing files with the same names are overwritten; other files are left alone.
    Returns the written paths in class, then index, order.
    """
    if clips_per_class < 0:
        raise ValueError(f"clips_per_class must be >= 0, got {clips_per_class}")
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names, not a single string")
    unknown = [c for c in classes if c not in PARTNER]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; expected a subset of {CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {list(classes)}")

    out_dir = Path(out_dir)
    written: list[Path] = []
    for label in classes:
        for index in range(clips_per_class):
            rng = _clip_rng(seed, label, index)
            spec = _spec_from(rng, label, index)
            frames = render_clip(label, rng, spec.num_frames, spec.width, spec.height)
            path = out_dir / label / f"{label}_{index:03d}{spec.suffix}"
            write_clip(frames, path, spec.fps)
            written.append(path)
    return written
