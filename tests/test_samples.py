"""Tests for vidclf.samples: real files, real cv2 encode/decode, and a pixel-level motion check."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidclf import samples
from vidclf.samples import CLASSES, PARTNER, clip_spec, make_samples, render_clip, reverse_clip, write_clip

# Which component of `_motion` each class drives, and in which direction.
# Components: 0 dx, 1 dy (px/frame, y down), 2 log-scale/frame, 3 angle rad/frame (+ = clockwise on screen).
PRIMARY: dict[str, tuple[int, int]] = {
    "move_left": (0, -1),
    "move_right": (0, +1),
    "move_up": (1, -1),
    "move_down": (1, +1),
    "grow": (2, +1),
    "shrink": (2, -1),
    "rotate_cw": (3, +1),
    "rotate_ccw": (3, -1),
}


def _decode(path: Path) -> tuple[np.ndarray, float, str]:
    """All frames, fps and fourcc string of a video, via cv2.VideoCapture."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    fps = cap.get(cv2.CAP_PROP_FPS)
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"no frames decoded from {path}"
    return np.stack(frames), fps, fourcc


def _object_mask(gray: list[np.ndarray]) -> np.ndarray:
    """Region swept by the object: the largest blob of pixels that change a lot over the clip.

    Excludes the static background (whose weak corners drift under flicker) and the
    small jittering distractors, which otherwise out-vote the object in RANSAC.
    """
    std = np.stack(gray).astype(np.float32).std(axis=0)
    changing = cv2.morphologyEx((std > 12).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(changing)
    assert n >= 2, "nothing in the clip changes"
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return cv2.dilate((labels == biggest).astype(np.uint8) * 255, np.ones((5, 5), np.uint8))


def _motion(frames: np.ndarray) -> np.ndarray:
    """Median per-frame similarity motion of the object: [dx, dy, log_scale, angle].

    Corners inside the object's swept region are tracked frame to frame with
    Lucas-Kanade and a rotation+scale+translation is fitted with RANSAC.
    """
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    mask = _object_mask(gray)
    per_pair = []
    for a, b in zip(gray[:-1], gray[1:]):
        p0 = cv2.goodFeaturesToTrack(a, 100, 0.05, 2, mask=mask)
        if p0 is None:
            continue
        p1, status, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, winSize=(11, 11), maxLevel=2)
        p0, p1 = p0.reshape(-1, 2), p1.reshape(-1, 2)
        keep = (status.ravel() == 1) & (np.linalg.norm(p1 - p0, axis=1) > 0.2)
        if keep.sum() < 3:
            continue
        # A tight threshold, so near-static corners cannot join the object's consensus.
        m, inliers = cv2.estimateAffinePartial2D(
            p0[keep], p1[keep], method=cv2.RANSAC, ransacReprojThreshold=0.5, maxIters=2000, confidence=0.999
        )
        if m is None:
            continue
        centre = p0[keep][inliers.ravel() == 1].mean(axis=0)
        shift = m[:, :2] @ centre + m[:, 2] - centre
        per_pair.append([shift[0], shift[1], np.log(np.hypot(m[0, 0], m[1, 0])), np.arctan2(m[1, 0], m[0, 0])])
    assert len(per_pair) >= len(frames) // 2, "object motion could not be tracked in most frames"
    return np.median(np.array(per_pair), axis=0)


def _signed_primary(label: str, frames: np.ndarray) -> float:
    """The class's own motion component, signed so that a correct clip gives a positive value."""
    comp, sign = PRIMARY[label]
    return float(_motion(frames)[comp] * sign)


# --------------------------------------------------------------------------- constants


def test_classes_come_in_time_reversed_pairs() -> None:
    assert len(CLASSES) == 8 and len(set(CLASSES)) == 8
    assert set(PARTNER) == set(CLASSES)
    for label, partner in PARTNER.items():
        assert partner != label
        assert PARTNER[partner] == label
    assert PARTNER["move_left"] == "move_right"
    assert PARTNER["move_up"] == "move_down"
    assert PARTNER["grow"] == "shrink"
    assert PARTNER["rotate_cw"] == "rotate_ccw"


# --------------------------------------------------------------------------- render_clip


@pytest.mark.parametrize(("width", "height"), [(160, 120), (120, 160), (97, 73)])
def test_render_clip_shape_and_determinism(width: int, height: int) -> None:
    a = render_clip("grow", np.random.default_rng(7), 20, width, height)
    b = render_clip("grow", np.random.default_rng(7), 20, width, height)
    c = render_clip("grow", np.random.default_rng(8), 20, width, height)
    assert a.shape == (20, height, width, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Not blank or flat: a textured background with several shapes.
    assert a[0].std() > 10
    assert not np.array_equal(a[0], a[-1])


def test_render_clip_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown class"):
        render_clip("jump", rng, 10, 64, 64)
    with pytest.raises(ValueError, match="num_frames"):
        render_clip("grow", rng, 1, 64, 64)
    with pytest.raises(ValueError, match="background must be 64x80"):
        render_clip("grow", rng, 10, 80, 64, background=np.zeros((80, 64, 3), np.uint8))


def test_render_clip_draws_over_a_given_background() -> None:
    scene = np.zeros((96, 128, 3), np.uint8)
    scene[:, 64:] = (30, 90, 200)  # two flat halves: nothing the generator would make
    frames = render_clip("move_right", np.random.default_rng(3), 12, 128, 96, background=scene)
    unchanged = (np.abs(frames.astype(int) - scene.astype(int)).max(axis=3) <= 8).mean(axis=(1, 2))
    assert (unchanged > 0.6).all()  # most of every frame is the scene (brightness flicker ≤ a few %)
    assert not np.array_equal(frames[0], frames[-1])  # and the object moves over it


def test_object_scale_sizes_every_shape() -> None:
    scene = np.full((96, 128, 3), 90, np.uint8)
    covered = [(np.abs(render_clip("rotate_cw", np.random.default_rng(5), 4, 128, 96, scene, scale).astype(int)
                       - 90).max(axis=3) > 12).mean() for scale in (0.5, 1.0, 1.5)]
    assert covered[0] < covered[1] < covered[2]  # the same clip's shapes cover more of the frame


# Several seeds and sizes (incl. portrait and odd) per class; each clip must move
# the way its class says, and the same frames played backwards the partner's way.
_SIZES = [(160, 120), (120, 160), (97, 73), (176, 144)]


@pytest.mark.parametrize("label", CLASSES)
def test_render_clip_motion_matches_class_and_reversal_gives_partner(label: str) -> None:
    for seed, (width, height) in enumerate(_SIZES):
        num_frames = 16 + 8 * seed
        frames = render_clip(label, np.random.default_rng(100 + seed), num_frames, width, height)
        forward = _signed_primary(label, frames)
        backward = _signed_primary(PARTNER[label], frames[::-1])
        assert forward > 0, f"{label} seed {seed}: measured motion has the wrong sign ({forward:.4f})"
        assert backward > 0, f"{label} seed {seed}: reversed clip does not look like {PARTNER[label]}"

        if label.startswith("move_"):
            # Translation is measured accurately (scale/angle estimates are too noisy for
            # magnitude checks): clearly visible travel, 30-60 % of the frame by design,
            # and mostly along one axis.
            total = _motion(frames)[:2] * (num_frames - 1)
            along, extent = (0, width) if label in ("move_left", "move_right") else (1, height)
            assert 0.2 * extent < abs(total[along]) < 0.75 * extent, (label, seed, total)
            assert abs(total[1 - along]) < 0.25 * abs(total[along]), (label, seed, total)


# --------------------------------------------------------------------------- write / reverse


# What cv2 reports back for each container (FFmpeg names MPEG-4 part 2 "FMP4").
FOURCCS = {".mp4": {"FMP4", "mp4v", "MP4V"}, ".avi": {"MJPG"}}


# Even-size .avi goes through FFmpeg's MJPEG encoder, odd-size through OpenCV's own.
@pytest.mark.parametrize(("suffix", "size"), [(".mp4", (128, 96)), (".avi", (128, 96)), (".avi", (97, 73))])
def test_write_and_reverse_clip_roundtrip(tmp_path: Path, suffix: str, size: tuple[int, int]) -> None:
    width, height = size
    frames = render_clip("move_left", np.random.default_rng(5), 24, width, height)
    src, dst = tmp_path / f"left{suffix}", tmp_path / f"reversed{suffix}"
    write_clip(frames, src, 15.0)
    reverse_clip(src, dst)

    decoded, fps, fourcc = _decode(src)
    rev, rev_fps, rev_fourcc = _decode(dst)
    assert decoded.shape == frames.shape == rev.shape  # odd sizes survive, no frames lost
    assert fps == pytest.approx(15.0) and rev_fps == pytest.approx(15.0)
    assert fourcc in FOURCCS[suffix] and rev_fourcc == fourcc
    # Lossy but close to what was rendered, and the reversed file is the reversed clip.
    assert np.abs(decoded.astype(np.int16) - frames).mean() < 6
    assert np.abs(rev.astype(np.int16) - decoded[::-1]).mean() < 6

    assert _motion(decoded)[0] < -0.5  # moves left
    assert _motion(rev)[0] > 0.5  # reversed: moves right


def test_reverse_clip_turns_grow_into_shrink(tmp_path: Path) -> None:
    frames = render_clip("grow", np.random.default_rng(11), 30, 160, 120)
    write_clip(frames, tmp_path / "grow.mp4", 12.0)
    reverse_clip(tmp_path / "grow.mp4", tmp_path / "rev.mp4")
    assert _motion(_decode(tmp_path / "grow.mp4")[0])[2] > 0.01
    assert _motion(_decode(tmp_path / "rev.mp4")[0])[2] < -0.01


def test_write_clip_errors(tmp_path: Path) -> None:
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="suffix"):
        write_clip(frames, tmp_path / "x.mkv", 10.0)
    with pytest.raises(ValueError, match="even"):
        write_clip(np.zeros((3, 63, 65, 3), np.uint8), tmp_path / "odd.mp4", 10.0)
    with pytest.raises(ValueError, match="uint8"):
        write_clip(frames.astype(np.float32), tmp_path / "x.avi", 10.0)
    with pytest.raises(ValueError, match="fps"):
        write_clip(frames, tmp_path / "x.avi", 0.0)
    # A directory where the file should go: the writer cannot open it.
    for name in ("taken.mp4", "taken.avi"):
        (tmp_path / name).mkdir()
        with pytest.raises(RuntimeError, match="could not open"):
            write_clip(frames, tmp_path / name, 10.0)


def test_reverse_clip_errors(tmp_path: Path) -> None:
    write_clip(np.zeros((3, 64, 64, 3), np.uint8), tmp_path / "a.avi", 10.0)
    with pytest.raises(ValueError, match="suffix"):
        reverse_clip(tmp_path / "a.avi", tmp_path / "b.mp4")
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    with pytest.raises(RuntimeError):
        reverse_clip(tmp_path / "junk.avi", tmp_path / "c.avi")


# --------------------------------------------------------------------------- make_samples


def test_make_samples_layout_codecs_and_frame_counts(tmp_path: Path) -> None:
    paths = make_samples(tmp_path, clips_per_class=3, seed=4)
    assert len(paths) == 3 * len(CLASSES)
    for label in CLASSES:
        files = sorted((tmp_path / label).iterdir())
        assert len(files) == 3
        assert [p.stem for p in files] == [f"{label}_{i:03d}" for i in range(3)]
        assert {p.suffix for p in files} == {".mp4", ".avi"}  # both codecs in every class
    assert set(paths) == {p for p in tmp_path.rglob("*") if p.is_file()}

    sizes, rates = set(), set()
    for path in paths:
        label = path.parent.name
        index = int(re.fullmatch(rf"{label}_(\d{{3}})", path.stem).group(1))
        spec = clip_spec(label, index, seed=4)
        frames, fps, fourcc = _decode(path)
        assert path.suffix == spec.suffix
        assert fourcc in FOURCCS[spec.suffix]
        assert frames.shape == (spec.num_frames, spec.height, spec.width, 3), path
        assert samples.MIN_FRAMES <= spec.num_frames <= samples.MAX_FRAMES
        assert fps == pytest.approx(spec.fps)
        sizes.add((spec.width, spec.height))
        rates.add(spec.fps)
    assert len(sizes) >= 4 and len(rates) >= 3  # the set really is mixed


def test_make_samples_is_deterministic_per_seed(tmp_path: Path) -> None:
    classes = ("move_up", "rotate_ccw")
    a = make_samples(tmp_path / "a", clips_per_class=2, seed=1, classes=classes)
    b = make_samples(tmp_path / "b", clips_per_class=2, seed=1, classes=classes)
    c = make_samples(tmp_path / "c", clips_per_class=2, seed=2, classes=classes)
    # A clip depends only on (seed, class, index), not on which other classes are made.
    d = make_samples(tmp_path / "d", clips_per_class=1, seed=1, classes=("rotate_ccw",))
    for pa, pb, pc in zip(a, b, c):
        assert pa.relative_to(tmp_path / "a") == pb.relative_to(tmp_path / "b") == pc.relative_to(tmp_path / "c")
        fa, fb, fc = _decode(pa)[0], _decode(pb)[0], _decode(pc)[0]
        assert np.array_equal(fa, fb)
        assert fa.shape != fc.shape or not np.array_equal(fa, fc)
    assert d[0].relative_to(tmp_path / "d") == a[2].relative_to(tmp_path / "a")
    assert np.array_equal(_decode(d[0])[0], _decode(a[2])[0])


def test_make_samples_decoded_clips_move_as_labelled(tmp_path: Path) -> None:
    # End to end through the codecs: every class, both containers, played forwards and backwards.
    for path in make_samples(tmp_path, clips_per_class=2, seed=9):
        label = path.parent.name
        frames = _decode(path)[0]
        assert _signed_primary(label, frames) > 0, path
        assert _signed_primary(PARTNER[label], frames[::-1]) > 0, path


def test_make_samples_rejects_bad_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_samples(tmp_path, 1, classes=("move_left", "fly"))
    with pytest.raises(TypeError):
        make_samples(tmp_path, 1, classes="grow")
    with pytest.raises(ValueError, match="duplicate"):
        make_samples(tmp_path, 1, classes=("grow", "grow"))


def test_default_set_is_small_and_balanced(tmp_path: Path) -> None:
    paths = make_samples(tmp_path)
    assert len(paths) == 12 * len(CLASSES)
    total = sum(p.stat().st_size for p in paths)
    assert total <= 6_000_000, f"default sample set is {total / 1e6:.2f} MB"
    suffixes = [p.suffix for p in paths]
    assert suffixes.count(".mp4") == suffixes.count(".avi") == len(paths) // 2


def test_committed_sample_clips_are_a_usable_dataset() -> None:
    root = Path(__file__).resolve().parents[1] / "sample_clips"
    by_label = {d.name: sorted(d.iterdir()) for d in root.iterdir() if d.is_dir()}
    assert set(by_label) == set(CLASSES) and len(by_label) >= 6
    assert all(len(clips) >= 12 for clips in by_label.values())
    suffixes = {p.suffix for clips in by_label.values() for p in clips}
    assert suffixes == {".mp4", ".avi"}
    assert sum(p.stat().st_size for clips in by_label.values() for p in clips) <= 8 * 1024 * 1024
