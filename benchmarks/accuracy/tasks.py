"""Deterministic datasets for the accuracy suite, each laid out DATA/{train,val,test}/<label>/.

The appearance task is the counterpart of synthetic-motion: its classes differ only in what is
seen, and motion is drawn the same way for all of them, so a motion-only model cannot win it.
Real-footage tasks draw on ../shared/videos (test material, never shipped) and split by
source video, never by clip, so no test clip shares footage with a training clip. The
arrow-of-time task writes each window of footage both ways, so the order of its frames is the
only thing that tells its two classes apart. The scene-shortcut task makes appearance a trap:
each class is trained over scenes of its own and tested over other classes' scenes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # real footage makes FFmpeg chatty on stderr

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from vidclf.samples import CLASSES, PARTNER, clip_spec, make_samples, render_clip, reverse_clip, write_clip

CAMERA_CLASSES = ("pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out", "static")
ARROW_CLASSES = ("forward", "reversed")
SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon")
CLIP_SIZE = 128  # side of the square clips the real-footage tasks write
CLIP_FPS = 15.0
# The real-footage tasks' clips are named SOURCE_n.avi: their source video is their group (--group).
FOOTAGE_GROUP = r"^(.+)_\d+\.avi$"
# Camera-motion footage must be textured: a window moving over flat grey shows no motion. The
# corpus has a clear gap: 0.02 and 0.07 (a disc on grey, a cartoon) against ≥ 0.31 for the rest.
MIN_TEXTURED_SHARE = 0.2
# Arrow-of-time windows take every 2nd source frame, so a 24-frame clip spans ~1.6 s and moves
# twice as far, and must move: median DIS flow ≥ 0.5 px per clip frame at CLIP_SIZE. Below that,
# forward and reversed are all but the same clip: the label has nothing to go on.
ARROW_STRIDE = 2
ARROW_MAX_FRAMES = 150  # strided frames read per video
MIN_WINDOW_MOTION = 0.5
# 4× the clips per video of the other real-footage tasks: the task has few videos that move,
# and a window is cheap. With ~50 training pairs, one seed in three never learned (validation
# 0.54); with ~200 (the ~400-clip budget) it did, and ~130 test clips, not 36, make the score
# less noisy (round 8).
ARROW_WINDOWS_FACTOR = 4
SCENES_PER_CLASS = 3  # scene-shortcut: 24 of the corpus's 27 distinct textured videos


@dataclass(frozen=True)
class Scale:
    """How big a task's data is: ``quick`` for CI-sized runs, ``full`` for the real table."""

    train_per_class: int
    test_per_class: int
    clip_frames: int


FULL = Scale(train_per_class=40, test_per_class=15, clip_frames=24)
QUICK = Scale(train_per_class=10, test_per_class=5, clip_frames=20)


def synthetic_motion(root: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """8 motion classes from the sample generator; test clips from another seed, plus a
    ``reversed`` set whose folders name the partner class (its accuracy = partner rate)."""
    make_samples(root / "train", scale.train_per_class, seed=seed * 10 + 1)
    make_samples(root / "test", scale.test_per_class, seed=seed * 10 + 2)
    for clip in sorted((root / "test").glob("*/*")):
        target = root / "reversed" / PARTNER[clip.parent.name] / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        reverse_clip(clip, target)
    return {"data": root, "reversed": root / "reversed"}


# synthetic-varied: the generator's own classes in a second parameter range, never used for
# tuning: larger frames, 0.6-1.6x the shapes, 48-120 rendered frames kept 1, 2 or 3 apart (so
# speeds vary 7x), other frame rates, blotchy colour-noise backgrounds, and H.264 as well.
VARIED_SIZES = ((320, 240), (256, 144), (224, 224), (144, 256), (400, 224))
VARIED_FPS = (20.0, 30.0, 50.0)
VARIED_SUFFIXES = (".mp4", ".avi", ".mkv")  # mp4v, MJPEG, H.264 (PyAV)


def noise_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Blotchy colour noise: blurred random pixels, contrast stretched (a texture family the
    generator never draws)."""
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (height, width, 3)).astype(np.float32), (0, 0), rng.uniform(2, 6))
    noise = (noise - noise.mean()) / max(float(noise.std()), 1e-3)
    return np.clip(128 + noise * rng.uniform(25, 50), 20, 235).astype(np.uint8)


def write_h264_clip(frames: np.ndarray, path: Path, fps: float) -> None:
    import av  # a dev dependency: OpenCV's wheel has no H.264 encoder

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())


def varied_clip(label: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A clip of ``label`` from the second parameter range, and its frame rate."""
    width, height = VARIED_SIZES[int(rng.integers(len(VARIED_SIZES)))]
    stride = int(rng.integers(1, 4))
    frames = render_clip(label, rng, int(rng.integers(48, 121)), width, height,
                         noise_background(rng, width, height), float(rng.uniform(0.6, 1.6)))[::stride]
    return frames, VARIED_FPS[int(rng.integers(len(VARIED_FPS)))]


def write_varied(frames: np.ndarray, path: Path, fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (write_h264_clip if path.suffix == ".mkv" else write_clip)(frames, path, fps)


def synthetic_varied(root: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """synthetic-motion's classes from the generator's second parameter range (above), with
    its ``reversed`` set (each test clip played backwards, in the partner class's folder)."""
    for split, count, offset in (("train", scale.train_per_class, 5), ("test", scale.test_per_class, 6)):
        for k, label in enumerate(CLASSES):
            for n in range(count):
                frames, fps = varied_clip(label, np.random.default_rng([seed * 10 + offset, k, n]))
                name = f"{label}_{n:03d}{VARIED_SUFFIXES[(n + k) % 3]}"
                write_varied(frames, root / split / label / name, fps)
                if split == "test":
                    write_varied(frames[::-1], root / "reversed" / PARTNER[label] / name, fps)
    return {"data": root, "reversed": root / "reversed"}


def synthetic_order(root: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """8 "there and back" classes: a sample-generator clip followed by itself reversed, so
    ``move_left_and_back`` goes left then returns. Each class and its partner
    (``move_right_and_back``) show the same frames and the same motions in another order, so
    an order-blind model cannot tell them apart: this is where the LSTM has to earn its place."""
    for split, count, split_seed in (("train", scale.train_per_class, seed * 10 + 3),
                                     ("test", scale.test_per_class, seed * 10 + 4)):
        for first in CLASSES:
            label = f"{first}_and_back"
            for index in range(count):
                spec = clip_spec(first, index, split_seed)
                rng = np.random.default_rng([split_seed, CLASSES.index(first), index])
                there = render_clip(first, rng, spec.num_frames, spec.width, spec.height)
                path = root / split / label / f"{label}_{index:03d}{spec.suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_clip(np.concatenate([there, there[-2::-1]]), path, spec.fps)
    return {"data": root}


def corpus_videos(corpus: Path, min_frames: int, min_side: int = 120) -> list[Path]:
    """Corpus files that decode at least ``min_frames`` frames and are at least ``min_side`` px."""
    records = json.loads((corpus / "manifest.json").read_text())
    return sorted(corpus / r["file"] for r in records
                  if r["cv2_decoded_frames"] >= min_frames and min(r["width"], r["height"]) >= min_side)


def name_hash(path: Path) -> int:
    """A stable 32-bit number from the file name (Python's hash() changes between runs)."""
    return int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16)


def split_of(path: Path) -> str:
    """train / val / test by a hash of the file name: 60/20/20 and stable across runs (see
    ``splits_by_footage`` for copies of one footage)."""
    bucket = name_hash(path) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


SAME_FOOTAGE_CORRELATION = 0.95  # copies score ≥ 0.99 on the corpus; different videos ≤ 0.90


def footage_thumbnail(path: Path) -> np.ndarray:
    """The 6th frame, grey, 32×32, zero mean and unit norm: alike for copies of one footage
    whatever their container, codec or resolution."""
    frame = read_frames(path, limit=6)[-1]
    thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
    thumb = thumb.astype(np.float64) - thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-9)


def splits_by_footage(videos: list[Path]) -> dict[Path, str]:
    """train / val / test per video, copies of one footage in one split.

    The corpus holds the same footage in several files (Big Buck Bunny in 6 containers and
    encodings, a clip pristine and re-compressed); split by file name alone, a copy of a training
    video landed in val or test. Videos whose thumbnails correlate ≥ SAME_FOOTAGE_CORRELATION are
    one footage, whose split is that of its first file name.
    """
    videos = sorted(videos, key=lambda v: v.name)
    thumbs = [footage_thumbnail(v) for v in videos]
    parent = list(range(len(videos)))  # union-find; a group's root is its first file name

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(videos)):
        for j in range(i + 1, len(videos)):
            if float((thumbs[i] * thumbs[j]).sum()) >= SAME_FOOTAGE_CORRELATION:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    return {video: split_of(videos[root(i)]) for i, video in enumerate(videos)}


def read_frames(path: Path, limit: int = 150, short_side: int = 240) -> list[np.ndarray]:
    """Up to ``limit`` BGR frames, downscaled so the shorter side is ``short_side``."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        scale = short_side / min(h, w)
        frames.append(cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA))
    capture.release()
    return frames


def camera_clip(frames: list[np.ndarray], kind: str, rng: np.random.Generator, length: int) -> np.ndarray:
    """A crop window moving over one real frame held still: pans travel 25–40% of the short
    side, zooms change the crop 1.5–1.9×. The footage does not play underneath, so the window's
    motion is the only motion and the label holds by construction: in 3 of the 9 test videos
    the source camera itself moves, which made a playing `static` clip pan (round 3)."""
    frame = frames[int(rng.integers(0, len(frames)))]
    h, w = frame.shape[:2]
    side = min(h, w)
    crop = int(side * rng.uniform(0.45, 0.6))
    travel = side * rng.uniform(0.25, 0.4)
    zoom = rng.uniform(1.5, 1.9)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    dx = {"pan_left": -1, "pan_right": 1}.get(kind, 0)
    dy = {"pan_up": -1, "pan_down": 1}.get(kind, 0)
    out = []
    for t in range(length):
        a = t / (length - 1)
        # zoom in: the window shrinks from crop to crop/zoom; zoom out: the reverse.
        size = crop * (zoom ** (-a) if kind == "zoom_in" else zoom ** (a - 1) if kind == "zoom_out" else 1.0)
        x = cx + dx * travel * (a - 0.5)
        y = cy + dy * travel * (a - 0.5)
        half = size / 2
        x = min(max(x, half), w - half)
        y = min(max(y, half), h - half)
        window = frame[int(y - half) : int(y + half), int(x - half) : int(x + half)]
        out.append(cv2.resize(window, (CLIP_SIZE, CLIP_SIZE), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def textured_share(frames: list[np.ndarray], block: int = 16, min_std: float = 4.0) -> float:
    """Share of ``block``-px squares whose grey levels vary (std ≥ ``min_std``), over frames."""
    shares = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        h, w = grey.shape[0] // block * block, grey.shape[1] // block * block
        stds = grey[:h, :w].reshape(h // block, block, w // block, block).std(axis=(1, 3))
        shares.append(float((stds >= min_std).mean()))
    return float(np.mean(shares))


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The frame's centre square, CLIP_SIZE px a side."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(frame[top : top + side, left : left + side], (CLIP_SIZE, CLIP_SIZE),
                      interpolation=cv2.INTER_AREA)


def footage_clip(frames: list[np.ndarray], rng: np.random.Generator, length: int) -> np.ndarray:
    """A random window of real footage, centre square, as it plays."""
    start = int(rng.integers(0, max(1, len(frames) - length)))
    return np.stack([centre_square(f) for f in frames[start : start + length]])


def step_motion(clip: np.ndarray) -> np.ndarray:
    """Mean DIS flow magnitude (px at CLIP_SIZE) between each pair of consecutive frames."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    grey = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in clip]
    return np.array([float(np.linalg.norm(dis.calc(a, b, None), axis=2).mean()) for a, b in zip(grey, grey[1:])])


def moving_windows(frames: np.ndarray, length: int) -> list[int]:
    """Starts of the ``length``-frame windows whose median step motion is ≥ MIN_WINDOW_MOTION."""
    motion = step_motion(frames)
    return [start for start in range(len(frames) - length + 1)
            if float(np.median(motion[start : start + length - 1])) >= MIN_WINDOW_MOTION]


def shape_vertices(kind: str) -> np.ndarray:
    """Outline of a class's shape, radius about 1, centred on 0."""
    if kind in ("circle", "square", "triangle", "hexagon"):
        corners = {"circle": 48, "square": 4, "triangle": 3, "hexagon": 6}[kind]
        t = np.linspace(0, 2 * math.pi, corners, endpoint=False) + (math.pi / 4 if kind == "square" else 0)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if kind == "star":
        t = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "cross":
        a = 0.33
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                         [-1, a], [-1, -a], [-a, -a]], float)
    raise ValueError(kind)


def appearance_clip(frames: list[np.ndarray], kind: str, rng: np.random.Generator, length: int) -> np.ndarray:
    """A shape (the class) in a random colour over real footage, with motion drawn the same way
    for every class: a random straight path, a random turn and a random change of size."""
    clip = footage_clip(frames, rng, length)
    verts = shape_vertices(kind)
    colour = cv2.cvtColor(np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]]),
                          cv2.COLOR_HSV2BGR)[0, 0].tolist()
    size = CLIP_SIZE * rng.uniform(0.14, 0.22, 2)  # radius at the start and at the end
    start, end = rng.uniform(0.3, 0.7, 2) * CLIP_SIZE, rng.uniform(0.3, 0.7, 2) * CLIP_SIZE
    angle = rng.uniform(0, 2 * math.pi) + np.array([0.0, rng.uniform(-math.pi, math.pi)])
    for t, frame in enumerate(clip):
        a = t / (length - 1)
        theta, radius = angle[0] + a * (angle[1] - angle[0]), size[0] + a * (size[1] - size[0])
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        points = verts @ rotation.T * radius + start + a * (end - start)
        cv2.fillPoly(frame, [np.round(points * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)
    return clip


def clip_stem(video: Path) -> str:
    """A short name unique per source file: stems alone collide (``example.avi`` and
    ``example.mp4``; 40-character prefixes of long names), and a collision overwrote clips."""
    return f"{video.stem[:32]}-{name_hash(video):08x}"


def footage_by_split(corpus: Path, min_frames: int, min_textured_share: float = 0.0) -> dict[str, list[Path]]:
    """Usable corpus videos by split (see ``splits_by_footage``)."""
    videos = corpus_videos(corpus, min_frames=min_frames)
    if min_textured_share:
        videos = [v for v in videos if textured_share(read_frames(v, limit=31)[::15]) >= min_textured_share]
    by_split: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for video, split in splits_by_footage(videos).items():
        by_split[split].append(video)
    return by_split


def clips_per_video(scale: Scale, split: str, videos: int) -> int:
    """Clips per (video, class) so each class gets about the wanted count in the split."""
    wanted = {"train": scale.train_per_class, "val": max(2, scale.train_per_class // 4),
              "test": scale.test_per_class}[split]
    return -(-wanted // max(1, videos))


def real_footage_task(root: Path, corpus: Path, scale: Scale, seed: int, classes: tuple[str, ...],
                      make_clip: Callable[[list[np.ndarray], str, np.random.Generator, int], np.ndarray],
                      min_textured_share: float = 0.0) -> dict[str, Path]:
    """Clips per class from every usable corpus video, foldered by the video's split."""
    for split, vids in footage_by_split(corpus, scale.clip_frames + 8, min_textured_share).items():
        per_video = clips_per_video(scale, split, len(vids))
        for video in vids:
            frames = read_frames(video)
            rng = np.random.default_rng([seed, name_hash(video)])
            for kind in classes:
                for n in range(per_video):
                    path = root / split / kind / f"{clip_stem(video)}_{n}.avi"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_clip(make_clip(frames, kind, rng, scale.clip_frames), path, CLIP_FPS)
    return {"data": root, "group": FOOTAGE_GROUP}


def camera_motion(root: Path, corpus: Path, scale: Scale, seed: int) -> dict[str, Path]:
    return real_footage_task(root, corpus, scale, seed, CAMERA_CLASSES, camera_clip, MIN_TEXTURED_SHARE)


def arrow_windows(video: Path, clip_frames: int) -> tuple[np.ndarray, list[int]]:
    """A video's strided centre-square frames and the starts of its moving windows (maybe none)."""
    frames = read_frames(video, limit=ARROW_STRIDE * ARROW_MAX_FRAMES)
    stride = max(1, min(ARROW_STRIDE, len(frames) // clip_frames))
    strided = np.stack([centre_square(f) for f in frames[::stride]])
    return strided, moving_windows(strided, clip_frames)


def write_arrow_pair(folder: Path, name: str, window: np.ndarray) -> None:
    """One window as played (``folder/forward/name``) and backwards (``folder/reversed/name``)."""
    for kind, clip in zip(ARROW_CLASSES, (window, window[::-1])):
        path = folder / kind / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip(clip, path, CLIP_FPS)


def arrow_of_time(root: Path, corpus: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """Windows of real footage that move, each written twice: as played (``forward``) and
    backwards (``reversed``). A window that does not move reads the same both ways, so it has no
    arrow; a pair of clips with the same frames leaves the order as the only difference."""
    for split, vids in footage_by_split(corpus, scale.clip_frames + 8).items():
        moving = {video: found for video in vids if (found := arrow_windows(video, scale.clip_frames))[1]}
        per_video = clips_per_video(scale, split, len(moving)) * ARROW_WINDOWS_FACTOR
        for video, (strided, starts) in moving.items():
            rng = np.random.default_rng([seed, name_hash(video)])
            for n, start in enumerate(rng.permutation(starts)[:per_video]):
                write_arrow_pair(root / split, f"{clip_stem(video)}_{n}.avi", strided[start : start + scale.clip_frames])
    return {"data": root, "group": FOOTAGE_GROUP}


def appearance(root: Path, corpus: Path, scale: Scale, seed: int) -> dict[str, Path]:
    return real_footage_task(root, corpus, scale, seed, SHAPE_CLASSES, appearance_clip)


def distinct_footage(videos: list[Path]) -> list[Path]:
    """One file per footage: a video whose thumbnail correlates ≥ SAME_FOOTAGE_CORRELATION with an
    earlier one (a copy in another container or encoding) is left out."""
    kept: list[tuple[Path, np.ndarray]] = []
    for video in sorted(videos, key=lambda v: v.name):
        thumb = footage_thumbnail(video)
        if all(float((thumb * other).sum()) < SAME_FOOTAGE_CORRELATION for _, other in kept):
            kept.append((video, thumb))
    return [video for video, _ in kept]


def scene_shortcut(root: Path, corpus: Path, scale: Scale, seed: int) -> dict[str, Path]:
    """The 8 motion classes of synthetic-motion drawn over stills of real scenes, each class's
    training clips over SCENES_PER_CLASS scenes of its own and its test clips over the other
    classes' scenes: the scene names the class in training and misleads at test. A manifest
    (``clips.csv``: path, label, group = scene, split) gives training the scenes as groups."""
    footage = distinct_footage([v for v in corpus_videos(corpus, min_frames=40)
                                if textured_share(read_frames(v, limit=31)[::15]) >= MIN_TEXTURED_SHARE])
    rng = np.random.default_rng([seed, 7])
    chosen = [footage[i] for i in rng.permutation(len(footage))[: SCENES_PER_CLASS * len(CLASSES)]]
    if len(chosen) < SCENES_PER_CLASS * len(CLASSES):
        raise SystemExit(f"scene-shortcut needs {SCENES_PER_CLASS * len(CLASSES)} distinct textured videos; "
                         f"{corpus} has {len(footage)}")
    stills = {video: [centre_square(f) for f in read_frames(video, limit=60)] for video in chosen}
    own = {label: chosen[k * SCENES_PER_CLASS : (k + 1) * SCENES_PER_CLASS] for k, label in enumerate(CLASSES)}
    rows = []
    for label in CLASSES:
        others = [video for other, videos in own.items() if other != label for video in videos]
        for split, count, scenes in (("train", scale.train_per_class, own[label]), ("test", scale.test_per_class, others)):
            for n in range(count):
                scene = scenes[n % len(scenes)] if split == "train" else scenes[int(rng.integers(len(scenes)))]
                still = stills[scene][int(rng.integers(len(stills[scene])))]
                path = root / split / label / f"{clip_stem(scene)}_{n}.avi"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_clip(render_clip(label, rng, scale.clip_frames, CLIP_SIZE, CLIP_SIZE, still), path, CLIP_FPS)
                rows.append((str(path), label, clip_stem(scene), split))
    manifest = root / "clips.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "group", "split"), *rows])
    return {"data": manifest}

