"""Leave-one-person-out on real human actions (Weizmann silhouettes), through the CLI.

Usage: .venv/bin/python benchmarks/accuracy/lopo.py [--folds 9] [--actions bend,jack,...]
                                                     [--train-people N] [--train-args "..."] [--reports DIR]
                                                     [--cache DIR] [--no-groups]

For each test person: a manifest (path,label,group,split) puts that person's clips in `test`
and the others in `train`; `vidclf train` splits its validation by person (the manifest's group
column), `vidclf eval` scores the held-out person. ``--actions`` and ``--train-people`` build the
few-clip variant (e.g. 3 actions, 2 training people). Prints a row per fold and the mean and
spread of top-1; skips with a line saying so when ../shared/weizmann_silhouettes is absent.
Training times include decoding unless ``--cache`` names a cache kept from an earlier run
(then a run of comparisons skips the ~8 minutes of decoding and feature encoding).
``--no-groups`` leaves the manifest's group column out, as a user who names no people would:
validation is then split by clip and shares the training people.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import evaluate, vidclf  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "weizmann_silhouettes"


def read_clips(data: Path, actions: set[str] | None) -> list[dict[str, str]]:
    with (data / "labels.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if actions is None or row["action"] in actions]


def write_manifest(path: Path, data: Path, clips: list[dict[str, str]], test_person: str, train_people: list[str],
                   groups: bool = True) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", *(["group"] if groups else []), "split"])
        for row in clips:
            split = "test" if row["person"] == test_person else "train" if row["person"] in train_people else None
            if split:
                writer.writerow([str(data / row["path"]), row["action"], *([row["person"]] if groups else []), split])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=9, help="test the first N people (sorted)")
    parser.add_argument("--actions", help="comma-separated subset of the 10 actions")
    parser.add_argument("--train-people", type=int, help="train on only the N people after the test one")
    parser.add_argument("--train-args", default="", help="extra options for every vidclf train")
    parser.add_argument("--reports", type=Path, help="save each fold's training log and eval JSON here")
    parser.add_argument("--cache", type=Path, help="VIDCLF_CACHE_DIR to keep between runs (default: a fresh one)")
    parser.add_argument("--no-groups", action="store_true", help="write no group column: validation shares people")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: no Weizmann silhouettes at {args.data}")
        return
    clips = read_clips(args.data, set(args.actions.split(",")) if args.actions else None)
    people = sorted({row["person"] for row in clips})
    print(f"leave-one-person-out, {len(clips)} clips, {len(people)} people, train args {args.train_args!r}"
          f"{', no groups' if args.no_groups else ''}")
    print("| test person | train people | test clips | top-1 | train s |\n|---|---:|---:|---:|---:|", flush=True)
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "VIDCLF_CACHE_DIR": str(args.cache or Path(tmp) / "cache")}
        for n, person in enumerate(people[: args.folds]):
            others = (people[n + 1:] + people[:n])[: args.train_people or len(people)]
            manifest, model = Path(tmp) / f"{person}.csv", Path(tmp) / f"{person}.vidclf"
            write_manifest(manifest, args.data, clips, person, others, not args.no_groups)
            start = time.perf_counter()
            trained = vidclf(["train", str(manifest), "--out", str(model), *shlex.split(args.train_args)], env)
            seconds = time.perf_counter() - start
            if args.reports:
                args.reports.mkdir(parents=True, exist_ok=True)
                (args.reports / f"{person}.train.log").write_text(trained.stderr)
            report, _ = evaluate(model, manifest, env, args.reports and args.reports / f"{person}.json")
            scores.append(report["top1"])
            print(f"| {person} | {len(others)} | {report['count']} | {report['top1']:.3f} | {seconds:.0f} |", flush=True)
    spread = f"{min(scores):.3f}–{max(scores):.3f}"
    print(f"\nmean top-1 {statistics.mean(scores):.3f} over {len(scores)} folds (folds {spread})")


if __name__ == "__main__":
    main()
