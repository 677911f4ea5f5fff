"""The reader over the real-world codec corpus in ../shared/videos (test material, not shipped).

Each file must either decode exactly the manifest's true frame count or fail with a VideoError.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_seeking import forced_seeks
from vidclf import video
from vidclf.video import VideoError, probe, sample_frames, sample_indices

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
MANIFEST = CORPUS / "manifest.json"
RECORDS = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else []

pytestmark = pytest.mark.skipif(not RECORDS, reason=f"real-video corpus not found at {CORPUS}")


@pytest.mark.parametrize("record", RECORDS, ids=[r["file"] for r in RECORDS])
def test_reader_matches_true_decodable_frame_count(record: dict) -> None:
    path = CORPUS / record["file"]
    try:
        info = probe(path)
    except VideoError as exc:
        assert record["file"] in str(exc)
        return
    assert info.frame_count == record["cv2_decoded_frames"]
    clip = sample_frames(path, 8, size=64)
    assert clip.frame_count == record["cv2_decoded_frames"]
    assert clip.indices.tolist() == sample_indices(info.frame_count, 8).tolist()
    assert clip.frames.shape == (8, 64, 64, 3)


# FFmpeg's own log switches: a CI or user shell may set them, and they decide what FFmpeg prints.
OPENCV_LOG_VARS = ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG", "OPENCV_LOG_LEVEL")
BARE_DECODE = "import cv2, sys\ncap = cv2.VideoCapture(sys.argv[1])\nwhile cap.grab():\n    pass\n"


def _codec_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[h264 @")]


def test_cli_keeps_ffmpeg_codec_chatter_off_stderr() -> None:
    import os
    import subprocess
    import sys

    noisy = CORPUS / "deb-opencv-doc__box.mp4"  # FFmpeg logs "non-intra slice" errors while decoding it
    env = {k: v for k, v in os.environ.items() if k not in OPENCV_LOG_VARS}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)

    quiet = run("-m", "vidclf", "probe", str(noisy), "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""
    # --debug must show what plain OpenCV shows for the same file in the same environment.
    bare = _codec_lines(run("-c", BARE_DECODE, str(noisy)).stderr)
    if not bare:
        pytest.skip("this OpenCV/FFmpeg build prints no codec chatter for the file: nothing to compare")
    debug = run("-m", "vidclf", "--debug", "probe", str(noisy), "--json")
    assert debug.returncode == 0
    assert {line.split("] ", 1)[1] for line in _codec_lines(debug.stderr)} == \
        {line.split("] ", 1)[1] for line in bare}


def _one_pass(path: Path, targets: list[int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames, index = {}, 0
    while index <= targets[-1] and capture.grab():
        if index in targets:
            frames[index] = capture.retrieve()[1]
        index += 1
    return [frames[target] for target in targets]


SEEKABLE = [record for record in RECORDS if record["container"].startswith("mov,mp4") and record["cv2_decoded_frames"] > 1]


@pytest.mark.parametrize("record", SEEKABLE, ids=[r["file"] for r in SEEKABLE])
def test_seeks_in_real_mp4_and_mov_files_land_on_the_one_pass_frames(record: dict) -> None:
    """What lets long MP4/MOV files be sampled by seeking: on every such file of the corpus
    (H.264, HEVC, MJPEG; B-frames, variable frame rate, rotation) a seek reads the very frame
    the forward pass does."""
    path = CORPUS / record["file"]
    targets = sorted(set(sample_indices(record["cv2_decoded_frames"], 16).tolist()) - {0})
    for target, seeked, read in zip(targets, forced_seeks(path, targets), _one_pass(path, targets), strict=True):
        assert np.array_equal(seeked, read), target


@pytest.mark.parametrize("record", RECORDS, ids=[r["file"] for r in RECORDS])
def test_sampling_with_seeking_allowed_matches_one_pass(record: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file: with seeking allowed at any gap, the same clip (or the same error) as one pass."""
    def sample(min_gap: int) -> object:
        monkeypatch.setattr(video, "SEEK_MIN_GAP", min_gap)
        try:
            return sample_frames(CORPUS / record["file"], 8, 32)
        except VideoError as exc:
            return str(exc)

    seeking, one_pass = sample(0), sample(10**9)
    if isinstance(one_pass, str):
        assert seeking == one_pass
    else:
        assert np.array_equal(seeking.frames, one_pass.frames) and np.array_equal(seeking.indices, one_pass.indices)
        assert (seeking.frame_count, seeking.warnings) == (one_pass.frame_count, one_pass.warnings)
