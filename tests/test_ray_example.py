"""The Ray Data example (examples/ray_predict.py) in Ray's local mode: the same records as
`vidclf predict`. Ray is an optional extra (`pip install 'vidclf[ray]'`), not a dependency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vidclf[ray]'): the Ray example is not run")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_clips"


def test_the_ray_example_writes_vidclfs_record_for_every_video(tmp_path: Path) -> None:
    videos = [str(SAMPLES / label / f"{label}_000.mp4") for label in ("grow", "move_left", "rotate_cw")]
    videos.append(str(tmp_path / "missing.mp4"))
    paths = tmp_path / "paths.txt"
    paths.write_text("\n".join(videos) + "\n")
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache"), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "ray_predict.py"), str(paths), str(tmp_path / "out"),
                          "--actors", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = {record["video"]: record for file in (tmp_path / "out").glob("*.json")
               for record in map(json.loads, file.read_text().splitlines())}
    expected = subprocess.run([sys.executable, "-m", "vidclf", "predict", *videos, "-f", "jsonl"],
                              capture_output=True, text=True, env=env, timeout=600)
    for line in expected.stdout.splitlines():
        want = json.loads(line)
        got = records.pop(want["video"])
        assert (got["top"], got.get("error")) == (want.get("top"), want.get("error"))
        if "labels" in want:
            assert [item["label"] for item in got["labels"]] == [item["label"] for item in want["labels"]]
    assert records == {}
