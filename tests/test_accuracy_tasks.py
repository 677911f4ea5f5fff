"""The accuracy suite's real-footage tasks: labels must hold by construction (benchmarks/accuracy/tasks.py).

Real footage is stood in for by generated textured frames, so these run without ../shared."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidclf.samples import write_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy"))
import tasks  # noqa: E402


def textured_frames(count: int = 30, seed: int = 0) -> list[np.ndarray]:
    """Smooth random texture, 240×320, a different picture in every frame (footage that plays)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        noise = rng.uniform(0, 255, (240, 320, 3)).astype(np.float32)
        frames.append(np.clip(cv2.GaussianBlur(noise, (0, 0), 3) * 4 - 384, 0, 255).astype(np.uint8))
    return frames


def content_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far the picture moved from a to b, in px (x right, y down)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in (a, b)]
    (dx, dy), _ = cv2.phaseCorrelate(grey[0], grey[1])
    return dx, dy


def radial_flow(a: np.ndarray, b: np.ndarray) -> float:
    """Mean outward component of the optical flow from a to b: > 0 when the picture grows."""
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (a, b)]
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    h, w = grey[0].shape
    ys, xs = np.mgrid[0:h, 0:w]
    return float(np.mean((xs - w / 2) * flow[..., 0] + (ys - h / 2) * flow[..., 1]))


@pytest.mark.parametrize("kind, sign_x, sign_y", [("pan_left", 1, 0), ("pan_right", -1, 0),
                                                  ("pan_up", 0, 1), ("pan_down", 0, -1)])
def test_a_pan_moves_the_picture_the_other_way(kind: str, sign_x: int, sign_y: int) -> None:
    clip = tasks.camera_clip(textured_frames(), kind, np.random.default_rng(1), 16)
    dx, dy = content_shift(clip[0], clip[4])
    for shift, sign in ((dx, sign_x), (dy, sign_y)):
        assert shift * sign > 2 if sign else abs(shift) < 0.5, (kind, dx, dy)


@pytest.mark.parametrize("kind, grows", [("zoom_in", True), ("zoom_out", False)])
def test_a_zoom_grows_or_shrinks_the_picture(kind: str, grows: bool) -> None:
    clip = tasks.camera_clip(textured_frames(), kind, np.random.default_rng(2), 16)
    assert (radial_flow(clip[0], clip[1]) > 0) == grows


def test_static_holds_one_frame_so_the_footage_adds_no_motion() -> None:
    """The footage's own camera motion once made `static` clips pan: every frame must be the same."""
    clip = tasks.camera_clip(textured_frames(), "static", np.random.default_rng(3), 16)
    assert clip.shape == (16, tasks.CLIP_SIZE, tasks.CLIP_SIZE, 3)
    assert all(np.array_equal(frame, clip[0]) for frame in clip)


def test_textured_share_tells_flat_footage_from_textured() -> None:
    flat = [np.full((240, 320, 3), 200, np.uint8)]
    disc = [cv2.circle(flat[0].copy(), (160, 120), 10, (255, 128, 0), -1)]
    assert tasks.textured_share(flat) == 0.0
    assert tasks.textured_share(disc) < tasks.MIN_TEXTURED_SHARE
    assert tasks.textured_share(textured_frames(2)) > 0.9


def test_clip_stems_are_unique_per_source_file() -> None:
    long = "deb-golang-github-gabriel-vasile-mimetype-dev__"
    names = ["example.avi", "example.mp4", f"{long}mkv.mkv", f"{long}mov.mov", f"{long}ogg.ogv"]
    stems = [tasks.clip_stem(Path(name)) for name in names]
    assert len(set(stems)) == len(names)
    assert stems == [tasks.clip_stem(Path(name)) for name in names]  # stable across calls


def test_copies_of_one_footage_share_a_split_whatever_their_names(tmp_path: Path) -> None:
    footage, other = np.stack(textured_frames(8, seed=0)), np.stack(textured_frames(8, seed=1))
    small = np.stack([cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA) for frame in footage])
    files = {"a_footage.avi": footage, "b_footage_recompressed.mp4": footage, "c_copy.avi": small,
             "d_other.mp4": other}
    for name, frames in files.items():
        write_clip(frames, tmp_path / name, 15.0)
    videos = [tmp_path / name for name in files]
    by_name = [tasks.split_of(video) for video in videos]
    assert by_name == ["val", "val", "train", "test"]  # the file names alone split the copies

    splits = tasks.splits_by_footage(videos)

    assert [splits[video] for video in videos] == ["val", "val", "val", "test"]
