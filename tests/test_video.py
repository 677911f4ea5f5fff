"""Frame sampling on real files: exact indices and pixels, lying headers, odd inputs, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from indexed import indexed_frame, read_index, write_indexed_video
from vidclf.config import Fit
from vidclf.video import (
    NoFramesDecodedError,
    NotAFileError,
    NotAVideoError,
    VideoNotFoundError,
    find_videos,
    probe,
    sample_frames,
    sample_indices,
    sample_views,
)

DATA = Path(__file__).parent / "data"


def decoded_indices(clip_frames: np.ndarray) -> list[int]:
    return [read_index(frame) for frame in clip_frames]


# --- index arithmetic -------------------------------------------------------------------------

def test_uniform_takes_segment_centres() -> None:
    assert sample_indices(40, 4).tolist() == [5, 15, 25, 35]
    assert sample_indices(10, 10).tolist() == list(range(10))
    assert sample_indices(7, 3).tolist() == [1, 3, 5]


def test_short_video_repeats_frames_evenly() -> None:
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_random_stays_in_segments_and_is_seeded() -> None:
    first = sample_indices(100, 8, "random", np.random.default_rng(3))
    again = sample_indices(100, 8, "random", np.random.default_rng(3))
    other = sample_indices(100, 8, "random", np.random.default_rng(4))
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    for segment, index in enumerate(first):
        assert 12.5 * segment <= index < 12.5 * (segment + 1) + 1
    assert len(set(first.tolist())) == 8  # never a duplicate when there are enough frames


def test_random_covers_every_frame_of_a_segment() -> None:
    rng = np.random.default_rng(0)
    seen = {int(sample_indices(40, 4, "random", rng)[0]) for _ in range(300)}
    assert seen == set(range(10))


# --- exact frames from real encodes -----------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_sampled_frames_are_the_expected_ones(tmp_path: Path, suffix: str) -> None:
    video = write_indexed_video(tmp_path / f"clip{suffix}", 50, 96, 64)
    clip = sample_frames(video, 8, size=48)
    expected = sample_indices(50, 8).tolist()
    assert clip.indices.tolist() == expected
    assert decoded_indices(clip.frames) == expected
    assert clip.frames.shape == (8, 48, 48, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_count == 50 and not clip.repeated and clip.warnings == ()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_random_mode_frames_match_their_indices(tmp_path: Path, suffix: str) -> None:
    video = write_indexed_video(tmp_path / f"clip{suffix}", 60)
    clip = sample_frames(video, 10, size=32, mode="random", rng=np.random.default_rng(7))
    assert decoded_indices(clip.frames) == clip.indices.tolist()
    assert clip.indices.tolist() == sample_indices(60, 10, "random", np.random.default_rng(7)).tolist()


def test_av1_decodes_every_frame_exactly() -> None:
    # OpenCV 5.0.0.93 opens this file but decodes 0 frames; the pinned 4.x must decode all 40.
    video = DATA / "index40_av1.mp4"
    info = probe(video)
    assert info.frame_count == 40
    clip = sample_frames(video, 16, size=64)
    assert decoded_indices(clip.frames) == sample_indices(40, 16).tolist()


def test_pixels_are_rgb_and_fit_the_square_whole_or_centre_cropped(tmp_path: Path) -> None:
    path = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (120, 60))
    frame = np.zeros((60, 120, 3), np.uint8)
    frame[:, :30] = (255, 0, 0)     # blue left quarter (BGR): cropped away
    frame[:, 30:90] = (0, 0, 255)   # red centre square
    frame[:, 90:] = (0, 255, 0)     # green right quarter: cropped away
    for _ in range(5):
        writer.write(frame)
    writer.release()
    cropped = sample_frames(path, 2, size=30, fit=Fit.CROP).frames[0]
    centre = cropped[4:-4, 4:-4].reshape(-1, 3).mean(axis=0)
    assert centre[0] > 200 and centre[1] < 40 and centre[2] < 40  # red, in RGB order
    stretched = sample_frames(path, 2, size=30, fit=Fit.STRETCH).frames[0]
    assert stretched.shape == (30, 30, 3)
    left, middle, right = (stretched[:, columns].reshape(-1, 3).mean(axis=0)
                           for columns in (slice(0, 5), slice(10, 20), slice(25, 30)))
    assert left[2] > 200 and middle[0] > 200 and right[1] > 200  # blue | red | green: all of the frame
    full = sample_frames(path, 1, size=None)
    assert full.frames.shape == (1, 60, 120, 3)


# --- headers that lie -------------------------------------------------------------------------

def _patch_avi_frame_count(path: Path, claimed: int) -> None:
    """Overwrite the AVI main header's and the stream header's frame counts."""
    data = bytearray(path.read_bytes())
    avih = data.index(b"avih")
    data[avih + 8 + 16 : avih + 8 + 20] = claimed.to_bytes(4, "little")  # dwTotalFrames
    strh = data.index(b"strh")
    data[strh + 8 + 32 : strh + 8 + 36] = claimed.to_bytes(4, "little")  # dwLength
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("claimed", [444, 12, 0])
def test_lying_header_frame_count(tmp_path: Path, claimed: int) -> None:
    video = write_indexed_video(tmp_path / "liar.avi", 30)
    _patch_avi_frame_count(video, claimed)
    header = int(cv2.VideoCapture(str(video), cv2.CAP_FFMPEG).get(cv2.CAP_PROP_FRAME_COUNT))
    assert header != 30, "the patch should make OpenCV's header count wrong"
    assert probe(video).frame_count == 30
    clip = sample_frames(video, 6, size=32)
    assert clip.frame_count == 30
    assert clip.indices.tolist() == sample_indices(30, 6).tolist()
    assert decoded_indices(clip.frames) == clip.indices.tolist()
    assert not clip.repeated



@pytest.mark.parametrize("claimed", [None, 444, 12])
def test_views_sampled_together_are_each_the_clip_sampled_alone(tmp_path: Path, claimed: int | None) -> None:
    """Training decodes a clip's views in one pass; each is the clip ``sample_frames`` gives
    alone, also when the header lies (the second pass draws again from each view's generator)."""
    video = write_indexed_video(tmp_path / "v.avi", 30)
    if claimed is not None:
        _patch_avi_frame_count(video, claimed)
    together = sample_views(video, 6, 32, [None, np.random.default_rng(1), np.random.default_rng(2)])
    alone = [sample_frames(video, 6, 32), *(sample_frames(video, 6, 32, "random", np.random.default_rng(seed))
                                            for seed in (1, 2))]
    for clip, reference in zip(together, alone, strict=True):
        assert np.array_equal(clip.frames, reference.frames) and np.array_equal(clip.indices, reference.indices)
        assert (clip.frame_count, clip.warnings) == (reference.frame_count, reference.warnings)
        assert decoded_indices(clip.frames) == clip.indices.tolist()
    assert together[1].indices.tolist() != together[2].indices.tolist()

def test_mpeg1_without_frame_count_header() -> None:
    video = DATA / "index40_mpeg1.mpg"
    info = probe(video)
    assert info.frame_count == 40 and info.header_frame_count != 40
    clip = sample_frames(video, 5, size=32)
    assert decoded_indices(clip.frames) == sample_indices(40, 5).tolist()


def test_known_frame_count_skips_the_header(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "liar.avi", 20)
    _patch_avi_frame_count(video, 300)
    clip = sample_frames(video, 4, size=32, frame_count=20)
    assert decoded_indices(clip.frames) == sample_indices(20, 4).tolist()
    assert clip.warnings == ()


# --- short, odd and unusual videos ------------------------------------------------------------

def test_one_frame_video(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "one.avi", 1)
    assert probe(video).frame_count == 1
    clip = sample_frames(video, 8, size=32)
    assert clip.indices.tolist() == [0] * 8
    assert clip.repeated and any("repeated" in w for w in clip.warnings)
    assert decoded_indices(clip.frames) == [0] * 8


def test_shorter_than_t_repeats_evenly_and_reports_it(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "short.mp4", 5)
    clip = sample_frames(video, 10, size=32)
    assert decoded_indices(clip.frames) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert clip.repeated


def test_no_duplicate_last_frame_when_long_enough(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "exact.avi", 16)
    _patch_avi_frame_count(video, 40)  # header claims more: indices past 16 must not appear
    clip = sample_frames(video, 16, size=32)
    assert decoded_indices(clip.frames) == list(range(16))


def test_portrait_from_rotation_metadata_comes_out_upright() -> None:
    # Stored 96x64 landscape with a 90-degree display rotation; ffmpeg shows it 64x96.
    video = DATA / "index24_rot90.mp4"
    info = probe(video)
    assert (info.width, info.height) == (64, 96)
    assert info.rotation in (90, 270)
    clip = sample_frames(video, 4, size=None)
    assert clip.frames.shape == (4, 96, 64, 3)
    unrotated = [read_index(cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE)) for f in clip.frames]
    assert unrotated == sample_indices(24, 4).tolist()


def test_portrait_video_stays_portrait_until_the_crop(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "portrait.mp4", 12, width=64, height=112)
    info = probe(video)
    assert (info.width, info.height) == (64, 112)
    clip = sample_frames(video, 3, size=40, fit=Fit.CROP)
    assert decoded_indices(clip.frames) == sample_indices(12, 3).tolist()


@pytest.mark.parametrize("name", ["index9_161x97.mp4", "index9_gray.mkv"])
def test_odd_frame_size(name: str) -> None:
    video = DATA / name  # made by ffmpeg: OpenCV's writers round sizes down to even
    info = probe(video)
    assert (info.width, info.height) == (161, 97)
    clip = sample_frames(video, 3, size=33)
    assert clip.frames.shape == (3, 33, 33, 3)
    assert decoded_indices(clip.frames) == [1, 4, 7]


def test_grayscale_pixel_format_gives_rgb() -> None:
    clip = sample_frames(DATA / "index9_gray.mkv", 9, size=None)
    assert clip.frames.shape == (9, 97, 161, 3)
    assert decoded_indices(clip.frames) == list(range(9))
    assert np.array_equal(clip.frames[..., 0], clip.frames[..., 2])


def test_grayscale_content_gives_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48), isColor=False)
    for level in range(0, 200, 20):
        writer.write(np.full((48, 64), level, np.uint8))
    writer.release()
    clip = sample_frames(path, 10, size=16)
    assert clip.frames.shape == (10, 16, 16, 3)
    channels = clip.frames.reshape(10, -1, 3).mean(axis=1)
    assert np.allclose(channels[:, 0], channels[:, 1], atol=3)
    assert np.all(np.diff(channels[:, 0]) > 5)  # levels come back in order


@pytest.mark.parametrize("name", ["vidéo clip ☃.mp4", "with space.avi", "a%d[1].mp4", "-dash.mp4"])
def test_unicode_spaces_and_odd_names(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "ünï cødé dir"
    folder.mkdir()
    video = write_indexed_video(folder / name, 12)
    assert probe(video).frame_count == 12
    assert decoded_indices(sample_frames(video, 3, size=32).frames) == [2, 6, 10]


# --- errors -----------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match="missing.mp4: no such file"):
        sample_frames(tmp_path / "missing.mp4", 4)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAFileError, match="no videos found in this folder"):
        probe(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(NotAVideoError, match=r"empty \(0 bytes\)"):
        sample_frames(empty, 4)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(NotAVideoError, match="notes.mp4: not a video"):
        probe(text)


def test_truncated_mp4_is_named_as_such(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "cut.mp4", 30)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # mp4v writes its index at the end: now gone
    with pytest.raises(NotAVideoError, match="looks like MP4/MOV .* truncated"):
        sample_frames(video, 4)


def test_truncated_avi_warns_and_keeps_decoded_frames(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "cut.avi", 40)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    clip = sample_frames(video, 4, size=32)
    assert 5 < clip.frame_count < 40
    assert any("decoded only" in w and "of the 40 frames" in w for w in clip.warnings)
    assert decoded_indices(clip.frames) == sample_indices(clip.frame_count, 4).tolist()


def test_opens_but_no_frames_decode(tmp_path: Path) -> None:
    # A valid AVI header with the frame data cut off: OpenCV opens it, nothing decodes.
    video = write_indexed_video(tmp_path / "hollow.avi", 10)
    data = video.read_bytes()
    movi = data.index(b"movi")
    video.write_bytes(data[: movi + 4])
    with pytest.raises(NoFramesDecodedError, match="opened but decoded 0 frames"):
        sample_frames(video, 4)


def test_find_videos_filters_and_ignores_hidden(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["a/x.MP4", "a/y.avi", "a/.z.mp4", "a/notes.txt", ".hidden/w.mp4", "v.WebM"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)] == [
        "a/x.MP4", "a/y.avi", "v.WebM"]


def test_indexed_barcode_roundtrip() -> None:
    for index in (0, 1, 77, 255):
        assert read_index(cv2.cvtColor(indexed_frame(index, 50, 30), cv2.COLOR_BGR2RGB)) == index


def test_copy_keeps_sampling_identical(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "a.avi", 20)
    twin = tmp_path / "b.avi"
    shutil.copy(video, twin)
    assert np.array_equal(sample_frames(video, 5, 32).frames, sample_frames(twin, 5, 32).frames)


def test_multi_clip_indices_offset_within_segments() -> None:
    # 40 frames, T=4 segments of 10: clip c takes offset (c + 0.5) / 2 of each segment.
    assert sample_indices(40, 4, clips=2).tolist() == [2, 12, 22, 32, 7, 17, 27, 37]
    assert sample_indices(40, 4, clips=1).tolist() == sample_indices(40, 4).tolist()
    with pytest.raises(ValueError, match="uniform"):
        sample_indices(40, 4, "random", clips=2)


def test_multi_clip_sampling_decodes_each_clip_exactly(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "multi.avi", 60)
    clip = sample_frames(video, 5, size=32, clips=3)
    assert clip.frames.shape == (15, 32, 32, 3)
    parts = clip.split(3)
    assert [decoded_indices(p.frames) for p in parts] == [p.indices.tolist() for p in parts]
    assert [p.indices.tolist() for p in parts] == [[2, 14, 26, 38, 50], [6, 18, 30, 42, 54], [10, 22, 34, 46, 58]]
