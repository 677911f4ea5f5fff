"""How far can the arrow-of-time task go on this corpus? Two measurements, CLI in and out.

Usage: .venv/bin/python benchmarks/accuracy/arrow_headroom.py [--seeds 0,1,2] [--sizes 4,8,12] [--train-args "..."]

1. **Learning curve over footage.** The task's model trained on the clips of only k of its
   moving training videos (nested subsets, seeded), with the task's own validation and test
   sets. If accuracy climbs with k, the task is short of footage, not of model.
2. **Seen footage.** Each test video is cut in two halves in time. The model is trained twice:
   on the task's training clips alone (``unseen``), and on those plus windows from the first half
   of every test video (``seen``); both are tested on windows from the second half only, which
   share no frame with the first. The gap is what having seen a footage is worth: if the task
   were short of examples of its test scenes' arrow, ``seen`` would win by far.

Rows print as they finish; each gives top-1 and the accuracy per test footage. The disc
stimulus (psychtoolbox ``DualDiscs``) moves at constant speed, so nothing in it tells forwards
from backwards: its clips sit at chance for any model.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402
from suite import vidclf  # noqa: E402


def footage_of(clip: Path) -> str:
    """The source video a task clip was cut from: its name without the window number."""
    return clip.name.rsplit("_", 1)[0]


def link_clips(clips: list[Path], folder: Path) -> None:
    """Symlink clips into folder/<label>/ (their cached views are found under the real path)."""
    for clip in clips:
        target = folder / clip.parent.name / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(clip.resolve())


def training_set(root: Path, train: list[Path], val: Path, test: Path) -> Path:
    """A DATA folder: the given training clips, and links to the validation and test folders."""
    link_clips(train, root / "train")
    (root / "val").symlink_to(val.resolve())
    (root / "test").symlink_to(test.resolve())
    return root


def split_test_footage(data: Path, corpus: Path, scale: tasks.Scale, seed: int, out: Path) -> tuple[Path, Path]:
    """Windows of each moving test video, cut at half its length: the first half's windows go to
    out/early, the second half's to out/late/test (a window never spans the cut)."""
    test_videos = tasks.footage_by_split(corpus, scale.clip_frames + 8)["test"]
    train_footage = len({footage_of(c) for c in (data / "train").glob("*/*")})
    per_video = tasks.clips_per_video(scale, "train", train_footage) * tasks.ARROW_WINDOWS_FACTOR
    for video in test_videos:
        strided, starts = tasks.arrow_windows(video, scale.clip_frames)
        half = len(strided) // 2
        rng = np.random.default_rng([seed, tasks.name_hash(video), 1])
        halves = {"early": [s for s in starts if s + scale.clip_frames <= half],
                  "late/test": [s for s in starts if s >= half]}
        for part, part_starts in halves.items():
            for n, start in enumerate(rng.permutation(part_starts)[:per_video]):
                tasks.write_arrow_pair(out / part, f"{tasks.clip_stem(video)}_{n}.avi",
                                       strided[start : start + scale.clip_frames])
    return out / "early", out / "late" / "test"


def score(model: Path, data: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Test top-1 and the share right per source footage (from eval's misclassified list)."""
    report = json.loads(vidclf(["eval", str(data), "-m", str(model), "-f", "json"], env).stdout)
    clips = Counter(footage_of(c) for c in (data / "test").glob("*/*"))
    wrong = Counter(footage_of(Path(item["video"])) for item in report["misclassified"])
    return report["top1"], {name: 1 - wrong[name] / count for name, count in sorted(clips.items())}


def train(data: Path, model: Path, seed: int, train_args: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    vidclf(["train", str(data), "--out", str(model), "--seed", str(seed), *shlex.split(train_args)], env)
    return time.perf_counter() - start


def row(label: str, seed: int, clips: int, videos: int, top1: float, per_footage: dict[str, float], seconds: float) -> None:
    footage = ", ".join(f"{name.rsplit('-', 1)[0][-24:]} {share:.2f}" for name, share in per_footage.items())
    print(f"| {label} | {seed} | {videos} | {clips} | {top1:.3f} | {seconds:.0f} | {footage} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sizes", default="4,8,12", help="training-footage counts below the full set")
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "videos")
    parser.add_argument("--train-args", default="--finetune-epochs 0",
                        help="extra vidclf train options (default: no fine-tuning, which the "
                             "default never keeps on this task: same model, a third of the time)")
    args = parser.parse_args()
    if not (args.corpus / "manifest.json").is_file():
        raise SystemExit(f"no corpus at {args.corpus}: this benchmark needs ../shared/videos (--corpus)")
    scale = tasks.FULL
    print(f"arrow-of-time headroom, {os.cpu_count()} CPU threads, train args: {args.train_args!r}")
    print("| row | seed | training videos | training clips | top-1 | train s | per test footage |")
    print("|---|---:|---:|---:|---:|---:|---|", flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = {**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache")}
            data = tasks.arrow_of_time(root / "data", args.corpus, scale, seed)["data"]
            early, late_test = split_test_footage(data, args.corpus, scale, seed, root / "halves")
            train_clips = sorted((data / "train").glob("*/*"))
            by_footage: dict[str, list[Path]] = defaultdict(list)
            for clip in train_clips:
                by_footage[footage_of(clip)].append(clip)
            order = list(np.random.default_rng(seed).permutation(sorted(by_footage)))

            full = root / "full.vidclf"
            seconds = train(data, full, seed, args.train_args, env)
            top1, per_footage = score(full, data, env)
            row("all training footage (the task)", seed, len(train_clips), len(by_footage), top1, per_footage, seconds)
            unseen = training_set(root / "unseen", train_clips, data / "val", late_test)
            top1, per_footage = score(full, unseen, env)
            row("unseen: the same model on the test videos' second halves", seed, len(train_clips),
                len(by_footage), top1, per_footage, seconds)

            early_clips = sorted(early.glob("*/*"))
            seen = training_set(root / "seen", train_clips + early_clips, data / "val", late_test)
            model = root / "seen.vidclf"
            seconds = train(seen, model, seed, args.train_args, env)
            top1, per_footage = score(model, seen, env)
            row("seen: + the test videos' first halves", seed, len(train_clips) + len(early_clips),
                len(by_footage) + len({footage_of(c) for c in early_clips}), top1, per_footage, seconds)

            for size in (int(k) for k in args.sizes.split(",")):
                clips = [clip for name in order[:size] for clip in by_footage[name]]
                subset = training_set(root / f"k{size}", clips, data / "val", data / "test")
                model = root / f"k{size}.vidclf"
                seconds = train(subset, model, seed, args.train_args, env)
                top1, per_footage = score(model, subset, env)
                row(f"{size} training videos", seed, len(clips), size, top1, per_footage, seconds)


if __name__ == "__main__":
    main()
