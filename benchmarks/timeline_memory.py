"""Peak memory of a timeline run: a 10-minute video must cost about what a 1-minute one does.

Usage: python benchmarks/timeline_memory.py [--minutes 1,10] [--window 2]
Writes low-resolution synthetic videos (160×120, 15 fps, mp4v) of each length, runs
``vidclf predict VIDEO --window W -f jsonl`` in a child process, and prints its peak RSS
(ru_maxrss of the child), wall time and window count. Not a test: prints only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, minutes: float, fps: float = 15.0) -> None:
    """A moving textured pattern; cheap to write, real to decode."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (240, 640, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture, (0, 0), 3)
    for i in range(int(minutes * 60 * fps)):
        x, y = (i * 3) % 480, (i // 40) % 120
        writer.write(texture[y : y + 120, x : x + 160])
    writer.release()


def peak_rss_mib(args: list[str]) -> tuple[float, float, int]:
    """Run a child; (peak RSS MiB, wall seconds, stdout lines). ru_maxrss is per child, in KiB."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        out = os.open(args[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.execv(sys.executable, [sys.executable, "-m", "vidclf", *args[:-1]])
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vidclf {' '.join(args[:-1])} failed")
    return usage.ru_maxrss / 1024, wall, sum(1 for _ in open(args[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10")
    parser.add_argument("--window", default="2")
    args = parser.parse_args()
    print("| video | frames | windows | peak RSS MiB | wall s |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (float(m) for m in args.minutes.split(",")):
            video = Path(tmp) / f"{minutes:g}min.mp4"
            write_video(video, minutes)
            frames = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
            rss, wall, windows = peak_rss_mib(["predict", str(video), "--window", args.window, "-f", "jsonl",
                                               str(Path(tmp) / "out.jsonl")])
            print(f"| {minutes:g} min 160×120 15 fps | {frames} | {windows} | {rss:.0f} | {wall:.0f} |", flush=True)
            video.unlink()


if __name__ == "__main__":
    main()
