"""The accuracy suite's real-footage tasks: labels must hold by construction (benchmarks/accuracy/tasks.py).

Real footage is stood in for by generated textured frames, so these run without ../shared."""

import json
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


def panning_footage(count: int, step: int, seed: int = 0) -> np.ndarray:
    """A 240×320 window sliding ``step`` px right per frame over one wide texture."""
    wide = textured_frames(1, seed)[0]
    wide = np.concatenate([wide, wide[:, ::-1], wide], axis=1)
    return np.stack([wide[:, i * step : i * step + 320] for i in range(count)])


def test_only_windows_that_move_count_for_the_arrow_of_time() -> None:
    still = np.stack([tasks.centre_square(textured_frames(1)[0])] * 12)
    pan = np.stack([tasks.centre_square(frame) for frame in panning_footage(12, 4)])
    # Still for 6 frames, then panning: only windows lying mostly in the pan move.
    mixed = np.concatenate([still[:6], pan[:6]])

    assert tasks.moving_windows(still, 5) == []
    assert tasks.moving_windows(pan, 5) == list(range(8))
    assert tasks.moving_windows(mixed, 5) == [4, 5, 6, 7]


def write_corpus(root: Path, videos: dict[str, np.ndarray]) -> None:
    """Videos and the manifest.json that ``tasks.corpus_videos`` reads."""
    records = []
    for name, frames in videos.items():
        write_clip(frames, root / name, 15.0)
        records.append({"file": name, "cv2_decoded_frames": len(frames), "width": frames.shape[2],
                        "height": frames.shape[1]})
    (root / "manifest.json").write_text(json.dumps(records))


def test_arrow_of_time_writes_each_moving_window_both_ways_and_skips_still_footage(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    # Names picked so that split_of puts the two moving videos in train and test.
    videos = {"a_pan.avi": panning_footage(40, 3, seed=1), "b_pan.avi": panning_footage(40, 2, seed=2),
              "still.avi": np.stack(textured_frames(1, seed=3) * 40)}
    assert [tasks.split_of(Path(name)) for name in videos] == ["train", "test", "train"]
    write_corpus(corpus, videos)
    scale = tasks.Scale(train_per_class=3, test_per_class=2, clip_frames=8)

    tasks.arrow_of_time(tmp_path / "data", corpus, scale, seed=0)

    forward = sorted((tmp_path / "data").glob("*/forward/*.avi"))
    assert {(path.parent.parent.name, path.name.split("-")[0]) for path in forward} == {
        ("train", "a_pan"), ("test", "b_pan")}  # the still video gave no clips
    clips = {split: len([p for p in forward if p.parts[-3] == split]) for split in ("train", "test")}
    assert clips == {"train": 3 * tasks.ARROW_WINDOWS_FACTOR, "test": 2 * tasks.ARROW_WINDOWS_FACTOR}
    for path in forward:
        clip, backwards = (np.stack(tasks.read_frames(p, short_side=tasks.CLIP_SIZE))
                           for p in (path, path.parents[1] / "reversed" / path.name))
        assert clip.shape == (8, tasks.CLIP_SIZE, tasks.CLIP_SIZE, 3)
        assert np.abs(clip.astype(int) - backwards[::-1]).mean() < 2  # the same frames, in reverse
        assert content_shift(clip[0], clip[-1])[0] < -5  # played forward, the picture moves left


def test_arrow_headroom_cuts_each_test_video_in_two_halves_that_share_no_frame(tmp_path: Path) -> None:
    import arrow_headroom

    corpus = tmp_path / "corpus"
    write_corpus(corpus, {"a_pan.avi": panning_footage(40, 3, seed=1), "b_pan.avi": panning_footage(40, 2, seed=2)})
    scale = tasks.Scale(train_per_class=3, test_per_class=2, clip_frames=8)
    data = tasks.arrow_of_time(tmp_path / "data", corpus, scale, seed=0)["data"]

    early, late_test = arrow_headroom.split_test_footage(data, corpus, scale, 0, tmp_path / "halves")

    strided, _ = tasks.arrow_windows(corpus / "b_pan.avi", scale.clip_frames)  # 20 frames: every 2nd of 40
    half = len(strided) // 2

    def frame_index(frame: np.ndarray) -> int:
        return int(np.argmin([np.abs(frame.astype(int) - s).mean() for s in strided]))

    positions = {}
    for part, folder in (("early", early), ("late", late_test)):
        clips = sorted(folder.glob("forward/*.avi"))
        assert clips and all(arrow_headroom.footage_of(c) == tasks.clip_stem(corpus / "b_pan.avi") for c in clips)
        assert sorted(p.name for p in folder.glob("reversed/*.avi")) == [c.name for c in clips]
        positions[part] = [frame_index(frame) for c in clips for frame in tasks.read_frames(c, short_side=tasks.CLIP_SIZE)]
    assert max(positions["early"]) < half <= min(positions["late"])  # no window spans the cut
