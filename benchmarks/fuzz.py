"""Fuzzing the reader at length: seeded mutants of small real videos through `vidclf predict`.

Usage: python benchmarks/fuzz.py [--n 5000] [--seed 0] [--chunk 250] [--timeout 600]

Sources: the files of ../shared/videos up to 2 MB (when present), tests/data and two clips of
each sample class. Mutations: tests/mutate.py (byte-level and MP4/AVI-structure-aware, one to
three a file). Each chunk of files goes through one `vidclf predict DIR -f jsonl` process; a
chunk that outlives --timeout is a hang, and its files are rerun one by one to name it.
Prints files, records, errors by kind, hangs and crashes (a traceback, an internal error, an
exit status other than 0/3/4, or an input without its record). Not a test: prints only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from mutate import mutants  # noqa: E402

CORPUS = ROOT.parent / "shared" / "videos"


def sources() -> list[Path]:
    found = [path for path in sorted(CORPUS.glob("*")) if path.suffix != ".json" and path.stat().st_size <= 2 << 20]
    found += sorted((ROOT / "tests" / "data").glob("*.mp*")) + sorted((ROOT / "tests" / "data").glob("*.mkv"))
    return found + sorted((ROOT / "sample_clips").glob("*/*_00[01].*"))


def kind(error: str) -> str:
    """An error message with its numbers and quoted parts blanked: errors of one kind read alike."""
    return re.sub(r"\b\d+\b", "N", re.sub(r"'[^']*'", "'…'", error))[:90]


def predict(folder: Path, timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run([sys.executable, "-m", "vidclf", "predict", str(folder), "-f", "jsonl"],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    files = sources()
    errors: collections.Counter[str] = collections.Counter()
    hangs, crashes, records, started = [], [], 0, time.time()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VIDCLF_CACHE_DIR": str(Path(tmp) / "cache")}
        for first in range(0, args.n, args.chunk):
            folder = Path(tmp) / "chunk"
            shutil.rmtree(folder, ignore_errors=True)
            made = mutants(files, min(args.chunk, args.n - first), folder, seed=args.seed * 1_000_003 + first)
            run = predict(folder, args.timeout, env)
            if run is None:  # a hang: find the file(s) one by one
                for path, applied in made:
                    alone = folder.parent / "alone"
                    shutil.rmtree(alone, ignore_errors=True)
                    alone.mkdir()
                    shutil.copy(path, alone / path.name)
                    if predict(alone, 120, env) is None:
                        hangs.append(f"{path.name} ({applied})")
                continue
            lines = [json.loads(line) for line in run.stdout.splitlines()]
            records += len(lines)
            errors.update(kind(line["error"]) for line in lines if "error" in line)
            if (run.returncode not in (0, 3, 4) or "Traceback" in run.stderr or "internal error" in run.stderr
                    or len(lines) != len(made)):
                crashes.append(f"chunk {first}: exit {run.returncode}, {len(lines)}/{len(made)} records: "
                               f"{run.stderr.strip().splitlines()[-1:]}")
            print(f"{first + len(made)} files, {records} records, {sum(errors.values())} errors, "
                  f"{len(hangs)} hangs, {len(crashes)} crashes, {time.time() - started:.0f} s", file=sys.stderr)
    print(f"\n## Fuzz: {args.n} mutants of {len(files)} real files, seed {args.seed}, {time.time() - started:.0f} s")
    print(f"records {records} of {args.n}; decoded {records - sum(errors.values())}; errors {sum(errors.values())}; "
          f"hangs caught {len(hangs)}; crashes {len(crashes)}")
    print("\n| errors of this kind | count |\n|---|---:|")
    for message, count in errors.most_common():
        print(f"| {message} | {count} |")
    for line in hangs + crashes:
        print("-", line)


if __name__ == "__main__":
    main()
