"""Fuzzing in CI: seeded mutants of small real videos (tests/data, sample_clips) through one
`vidclf predict`: every input gets exactly one record, each failure one error line, no
traceback, exit 0 or 4, and the run ends (its timeout is the watchdog). The long version:
benchmarks/fuzz.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mutate import mutants

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "tests" / "data").glob("*.mp*"), *(ROOT / "tests" / "data").glob("*.mkv"),
                  *(ROOT / "sample_clips").glob("*/*_00[01].*")])


def test_mutated_videos_each_get_one_record_and_nothing_crashes(tmp_path: Path) -> None:
    assert len(SOURCES) >= 20
    made = mutants(SOURCES, 80, tmp_path / "mutants", seed=2026)
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "vidclf", "predict", str(tmp_path / "mutants"), "-f", "jsonl",
                          "--workers", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode in (0, 4), run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(record["video"] for record in records) == sorted(str(path) for path, _ in made)
    failed = [record for record in records if "error" in record]
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(failed) and all(record["video"] in " ".join(error_lines) for record in failed)
    assert 0 < len(failed) < len(made)  # the mutations break some files, not all
