"""First benchmark: train with default settings on a fresh motion set, test on unseen clips.

Usage: python benchmarks/train_motion.py [--clips-per-class 40] [--test-per-class 15]
       [--backbones lite0,small] [--extra "--epochs 30"]

Generates 8 classes × N training clips (seed 1) and unseen test clips (seed 2) with
``vidclf make-samples``, trains one model per backbone with ``vidclf train`` (an empty cache,
so the first-epoch feature work is counted), and reports test accuracy, the rate at which a
reversed test clip is classified as the partner class, and wall times. Not a test: prints only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidclf.samples import PARTNER, reverse_clip


def vidclf(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "vidclf", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"vidclf {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def accuracy(model: Path, folder: Path, env: dict[str, str]) -> tuple[float, float]:
    """(share of clips whose top label is their folder name, seconds per clip)."""
    start = time.perf_counter()
    records = [json.loads(line) for line in vidclf("predict", str(folder), "-m", str(model), "-f", "jsonl", env=env).splitlines()]
    seconds = (time.perf_counter() - start) / len(records)
    return sum(r["top"] == Path(r["video"]).parent.name for r in records) / len(records), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=15)
    parser.add_argument("--backbones", default="lite0,small")
    parser.add_argument("--extra", default="", help="extra options for vidclf train")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache")}
        vidclf("make-samples", str(root / "train"), "--clips-per-class", str(args.clips_per_class), "--seed", "1", env=env)
        vidclf("make-samples", str(root / "test"), "--clips-per-class", str(args.test_per_class), "--seed", "2", env=env)
        for clip in sorted((root / "test").glob("*/*")):
            target = root / "reversed" / PARTNER[clip.parent.name] / clip.name
            target.parent.mkdir(parents=True, exist_ok=True)
            reverse_clip(clip, target)
        print(f"8 classes, {args.clips_per_class} train clips/class (80/20 train/val), "
              f"{args.test_per_class} unseen test clips/class; cpu threads: {os.cpu_count()}")
        print("| backbone | test acc | reversed → partner | train wall s | predict s/clip |")
        print("|---|---:|---:|---:|---:|")
        for backbone in args.backbones.split(","):
            model = root / f"{backbone}.vidclf"
            start = time.perf_counter()
            vidclf("train", str(root / "train"), "--out", str(model), "--backbone", backbone,
                   *shlex.split(args.extra), env=env)
            wall = time.perf_counter() - start
            test_acc, per_clip = accuracy(model, root / "test", env)
            partner, _ = accuracy(model, root / "reversed", env)
            print(f"| {backbone} | {test_acc:.3f} | {partner:.3f} | {wall:.0f} | {per_clip:.3f} |", flush=True)


if __name__ == "__main__":
    main()
