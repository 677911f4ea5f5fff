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


def test_cli_keeps_ffmpeg_codec_chatter_off_stderr() -> None:
    import subprocess
    import sys

    noisy = CORPUS / "deb-opencv-doc__box.mp4"  # FFmpeg logs "non-intra slice" errors while decoding it
    quiet = subprocess.run([sys.executable, "-m", "vidclf", "probe", str(noisy), "--json"],
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    debug = subprocess.run([sys.executable, "-m", "vidclf", "--debug", "probe", str(noisy), "--json"],
                           capture_output=True, text=True)
    assert "h264 @" in debug.stderr
