"""The accuracy suite: build each task's data, train with `vidclf train`, test with `vidclf eval`.

Usage: benchmarks/accuracy/run (runs this file with the repo's .venv python)
       benchmarks/accuracy/run [--quick] [--tasks synthetic-motion,camera-motion,arrow-of-time]
                               [--configs default,order-blind,...] [--seeds 0] [--corpus DIR]
                               [--train-args "..."] [--reports DIR]

Prints one table row per (task, config, seed): test top-1, mean class accuracy, training wall
time, predict time per clip (and, for synthetic-motion, the reversed-clip → partner rate).
`--quick` shrinks the data and epochs so the whole run takes a few minutes; it asserts nothing.
Real-footage tasks need ../shared/videos and are skipped (with a line saying so) without it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402

# Named training configurations: extra `vidclf train` options on top of the defaults. Each
# ablation changes one thing from the defaults, so a row reads as "what if we had chosen X".
CONFIGS: dict[str, str] = {
    "default": "",
    "order-blind": "--temporal mean",
    "lstm-only": "--temporal lstm",
    # the presets
    "frozen-lite0": "--preset fast",
    "motion-only": "--preset motion",
    "appearance-mean": "--preset appearance",
    # frames, frame size, schedule, mirroring
    "T8": "--frames 8",
    "T32": "--frames 32",
    "size160": "--size 160",
    "epochs-20": "--epochs 20",
    "epochs-100": "--epochs 100 --patience 30",
    "hflip": "--hflip",  # mirroring: for classes a mirror keeps (it swaps left and right)
    "size224": "--size 224",  # the most expensive last
}
# Configurations of options since removed from the product (their rows stay in README.md here):
# small-cnn, appearance-only, farneback-flow, dis-flow, frame-diff, flow-grid-summary,
# fusion-concat, fusion-project, grid-pooling, lstm-last-state, lstm-64, lstm-256,
# lstm-2-layers, bidirectional.
ABLATIONS = [name for name in CONFIGS if name != "default"]
TASKS = ("synthetic-motion", "synthetic-varied", "synthetic-order", "camera-motion", "arrow-of-time", "appearance", "scene-shortcut")
BUILDERS = {"camera-motion": tasks.camera_motion, "arrow-of-time": tasks.arrow_of_time, "appearance": tasks.appearance,
            "scene-shortcut": tasks.scene_shortcut}


def vidclf(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "vidclf", *args], capture_output=True, text=True, env=env)
    if result.returncode not in (0, 4):
        raise SystemExit(f"vidclf {shlex.join(args)} failed:\n{result.stderr[-2000:]}")
    return result


def evaluate(model: Path, data: Path, env: dict[str, str], save: Path | None) -> tuple[dict, float]:
    start = time.perf_counter()
    output = vidclf(["eval", str(data), "-m", str(model), "-f", "json"], env).stdout
    per_clip = time.perf_counter() - start
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save.write_text(output)
    report = json.loads(output)
    return report, per_clip / max(1, report["count"])


def build(task: str, root: Path, corpus: Path, scale: tasks.Scale, seed: int) -> dict[str, Path] | None:
    if task == "synthetic-motion":
        return tasks.synthetic_motion(root, scale, seed)
    if task == "synthetic-order":
        return tasks.synthetic_order(root, scale, seed)
    if task == "synthetic-varied":
        return tasks.synthetic_varied(root, scale, seed)
    if not (corpus / "manifest.json").is_file():
        print(f"| {task} | skipped: no corpus at {corpus} | | | | | |", flush=True)
        return None
    return BUILDERS[task](root, corpus, scale, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few epochs: minutes, for CI")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--configs", default="default,order-blind",
                        help=f"comma-separated names, or 'ablations' for all of: {', '.join(CONFIGS)}")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "videos")
    parser.add_argument("--train-args", default="", help="extra options for every vidclf train")
    parser.add_argument("--reports", type=Path, help="save each row's `vidclf eval` JSON here "
                        "(confusion matrix, misclassified clips) as TASK-CONFIG-sSEED[-reversed].json, "
                        "and its training log as TASK-CONFIG-sSEED.train.log")
    args = parser.parse_args()
    configs = ["default", *ABLATIONS] if args.configs == "ablations" else args.configs.split(",")
    unknown = [name for name in configs if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    scale = tasks.QUICK if args.quick else tasks.FULL
    extra = "--epochs 15 " if args.quick else ""
    print(f"accuracy suite ({'quick' if args.quick else 'full'}), {os.cpu_count()} CPU threads")
    print("| task | config | seed | top-1 | mean class acc | reversed → partner | train s | predict s/clip |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                env = {**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache")}
                sets = build(task, root / "data", args.corpus, scale, seed)
                if sets is None:
                    break
                for config in configs:
                    model = root / f"{config}.vidclf"
                    start = time.perf_counter()
                    grouped = ["--group", sets["group"]] if "group" in sets else []  # what the data is, not a setting
                    trained = vidclf(["train", str(sets["data"]), "--out", str(model), "--seed", str(seed), *grouped,
                                      *shlex.split(extra + CONFIGS[config] + " " + args.train_args)], env)
                    train_s = time.perf_counter() - start
                    name = f"{task}-{config}-s{seed}"
                    if args.reports:  # the training log: per-epoch curves, which stage won, stream weights
                        args.reports.mkdir(parents=True, exist_ok=True)
                        (args.reports / f"{name}.train.log").write_text(trained.stderr)
                    report, per_clip = evaluate(model, sets["data"], env, args.reports and args.reports / f"{name}.json")
                    partner = "-"
                    if "reversed" in sets:
                        reversed_report, _ = evaluate(model, sets["reversed"], env,
                                                      args.reports and args.reports / f"{name}-reversed.json")
                        partner = f"{reversed_report['top1']:.3f}"
                    print(f"| {task} | {config} | {seed} | {report['top1']:.3f} | {report['mean_class_accuracy']:.3f} | "
                          f"{partner} | {train_s:.0f} | {per_clip:.3f} |", flush=True)


if __name__ == "__main__":
    main()
