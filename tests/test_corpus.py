"""The reader over the real-world codec corpus in ../shared/videos (test material, not shipped).

Each file must either decode exactly the manifest's true frame count or fail with a VideoError.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
