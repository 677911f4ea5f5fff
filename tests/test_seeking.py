"""Long MP4s sampled by seeking: the same frames, pixel for pixel, as the one-pass reader, and
seeking only where the measured costs say it pays. H.264 test files from 1 (every frame a
keyframe) to 250 (x264's default) frames between keyframes, with B-frames (x264 veryfast)."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from h264 import write_h264
from vidclf import video
from vidclf.config import Fit
from vidclf.video import _Costs, _move_to, _seek_chosen, sample_frames, sample_indices, sample_views, square_resize

GOPS = (1, 12, 50, 250)
FRAMES = 1200
RESIZE = functools.partial(square_resize, size=32, fit=Fit.STRETCH)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("long")
    return {gop: write_h264(root / f"gop{gop}.mp4", FRAMES, 96, 64, gop=gop) for gop in (*GOPS, FRAMES)}


def every_frame(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    return frames


def forced_seeks(path: Path, targets: list[int]) -> list[np.ndarray]:
    """Each target (ascending) reached by a seek, whatever it costs."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames, position = [], 0
    for target in targets:
        assert _move_to(capture, position, target, _Costs(per_frame=1.0))
        frames.append(capture.read()[1])
        position = target + 1
    return frames


@pytest.mark.parametrize("gop", GOPS)
def test_every_seek_lands_on_the_frame_a_forward_pass_reads(long_videos: dict[int, Path], gop: int) -> None:
    path = long_videos[gop]
    reference = every_frame(path)
    assert len(reference) == FRAMES
    targets = sorted(set(np.random.default_rng(gop).integers(1, FRAMES, 40).tolist()) | {FRAMES - 1})
    for target, frame in zip(targets, forced_seeks(path, targets), strict=True):
        assert np.array_equal(frame, reference[target]), target


@pytest.mark.parametrize("gop", GOPS)
@pytest.mark.parametrize("mode,clips", [("uniform", 1), ("uniform", 3), ("random", 1)])
def test_sampling_by_seeking_gives_the_one_pass_clip(long_videos: dict[int, Path], gop: int, mode: str, clips: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def sample(min_gap: int) -> video.Clip:
        monkeypatch.setattr(video, "SEEK_MIN_GAP", min_gap)
        return sample_frames(long_videos[gop], 16, 32, mode, np.random.default_rng(7), clips=clips)

    seeking, one_pass = sample(0), sample(10**9)
    assert np.array_equal(seeking.frames, one_pass.frames) and np.array_equal(seeking.indices, one_pass.indices)
    assert (seeking.frame_count, seeking.warnings) == (one_pass.frame_count, one_pass.warnings) == (FRAMES, ())



@pytest.mark.parametrize("gop", GOPS)
def test_views_sampled_together_by_seeking_are_each_the_clip_sampled_alone(long_videos: dict[int, Path], gop: int,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Training decodes a clip's uniform and random views in one pass (seeking allowed at any gap)."""
    def generators() -> list[np.random.Generator | None]:
        return [None, *(np.random.default_rng(seed) for seed in (1, 2, 3))]

    monkeypatch.setattr(video, "SEEK_MIN_GAP", 0)
    together = sample_views(long_videos[gop], 16, 32, generators())
    monkeypatch.setattr(video, "SEEK_MIN_GAP", 10**9)
    for clip, rng in zip(together, generators(), strict=True):
        alone = sample_frames(long_videos[gop], 16, 32, "uniform" if rng is None else "random", rng)
        assert np.array_equal(clip.frames, alone.frames) and np.array_equal(clip.indices, alone.indices)
        assert (clip.frame_count, clip.warnings) == (alone.frame_count, alone.warnings)

def test_seeks_where_keyframes_are_near_and_grabs_through_where_they_are_not(long_videos: dict[int, Path]) -> None:
    # Gaps of 300 frames: at 96x64 a seek near a keyframe costs a tenth (a quarter on a loaded CI
    # machine) of grabbing through, a margin noise does not close; at 75-frame gaps it did.
    wanted = sample_indices(FRAMES, 4)
    near, far = _Costs(), _Costs()
    for gop, costs in ((12, near), (FRAMES, far)):
        capture = cv2.VideoCapture(str(long_videos[gop]), cv2.CAP_FFMPEG)
        assert len(_seek_chosen(capture, wanted, RESIZE, FRAMES, costs)) == 4
    # Near: every 300-frame gap after the first (which measures decoding) is a seek; the
    # 150-frame gap to the end check may go either way.
    assert near.seeks >= 3
    # One keyframe: a seek decodes from frame 0, slower than grabbing through the gap, so
    # seeking stops after the first try (a second at most, when timings are noisy).
    assert 1 <= far.seeks <= 2


def test_a_header_that_overcounts_falls_back_to_one_pass(long_videos: dict[int, Path]) -> None:
    capture = cv2.VideoCapture(str(long_videos[12]), cv2.CAP_FFMPEG)
    assert _seek_chosen(capture, sample_indices(FRAMES + 5, 16), RESIZE, FRAMES + 5, _Costs()) is None
    capture = cv2.VideoCapture(str(long_videos[12]), cv2.CAP_FFMPEG)
    assert _seek_chosen(capture, sample_indices(FRAMES - 5, 16), RESIZE, FRAMES - 5, _Costs()) is None
