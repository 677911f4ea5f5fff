"""The training engine at scale: memory as the dataset grows, epoch throughput, processes.

Usage: python benchmarks/train_scale.py [--parts memory,throughput,ddp,default]
       [--clips 500,5000] [--frames 8] [--size 64] [--workers 2]

- memory: generates the largest set once (`make-samples`, 8 classes), trains on its first N
  clips through a CSV manifest with `--epochs 1 --finetune-epochs 0` (the default preset: every
  clip decoded, its flows and frozen Lite0 features cached and read back), each run in a fresh
  process with a cold cache; peak RSS of the training process (ru_maxrss of the largest child),
  wall time, ratios, and the projection to UCF-101's 13,320 clips.
- throughput: clips/s of the first epoch (decoding, flow and frozen features with a cold cache,
  then the epoch) against cached frozen epochs; of fine-tuning epochs streamed from the cache
  against an in-memory loop over the same batches (in one process, `--throughput-clips`).
- ddp: the same frozen epochs under `torchrun` with 1 and 2 processes (warm cache).
- default: wall time of `vidclf train` with the default preset on 400 clips, cold cache.
Not a test: prints only.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vidclf.config import TrainOptions
from vidclf.dataset import EpochSampler, Tensors
from vidclf.model import VideoClassifier
from vidclf.samples import CLASSES, make_samples
from vidclf.train import Heads, Stage, fit, make_optimizer, plan_splits, prepare_inputs

UCF101 = 13_320
MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def write_manifest(root: Path, clips: int) -> Path:
    """The first ``clips`` clips, taken round-robin over the classes."""
    per_class = {label: sorted((root / "clips" / label).iterdir()) for label in CLASSES}
    rows = [(path, label) for n in range(clips) for label, paths in [list(per_class.items())[n % len(CLASSES)]]
            for path in [paths[n // len(CLASSES)]]]
    manifest = root / f"first{clips}.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((path.relative_to(root), label) for path, label in rows)
    return manifest


def peak_rss_mb(manifest: Path, args: argparse.Namespace, cache: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one training run in a fresh process."""
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "vidclf", "train", str(manifest),
               "--out", str(manifest.with_suffix(".vidclf")), "--force", "--epochs", "1", "--finetune-epochs", "0",
               "--frames", str(args.frames), "--size", str(args.size), "--workers", str(args.workers)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "VIDCLF_CACHE_DIR": str(cache)})
    seconds = time.perf_counter() - started
    peak_kb, code = result.stdout.split()[-2:]
    if code != "0":
        sys.exit(f"training on {manifest} failed:\n{result.stderr[-3000:]}")
    return int(peak_kb) / 1024, seconds


def memory(args: argparse.Namespace) -> None:
    sizes = [int(n) for n in args.clips.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_samples(root / "clips", clips_per_class=-(-max(sizes) // len(CLASSES)), seed=1)
        print(f"generated {max(sizes)} clips in {time.perf_counter() - started:.0f} s", flush=True)
        results = {}
        for n in sizes:
            results[n] = peak_rss_mb(write_manifest(root, n), args, root / f"cache{n}")
            print(f"{n:>7} clips: peak RSS {results[n][0]:7.0f} MB, {results[n][1]:6.0f} s", flush=True)
    small, large = min(sizes), max(sizes)
    per_clip = (results[large][0] - results[small][0]) / (large - small)
    print(f"\npeak RSS ratio {large}/{small} clips: {results[large][0] / results[small][0]:.2f} "
          f"(time ratio {results[large][1] / results[small][1]:.1f})")
    print(f"growth {per_clip * 1024:.1f} kB per clip; projected for {UCF101:,} clips (UCF-101): "
          f"{(results[large][0] + per_clip * (UCF101 - large)) / 1024:.2f} GB")


def in_memory_epoch(model: VideoClassifier, batches: list[Tensors], options: TrainOptions) -> float:
    """Seconds of one training pass over batches already in memory: the floor for streaming."""
    model.train()
    heads, optimizer = Heads(model), make_optimizer(model, options)
    started = time.perf_counter()
    for batch in batches:
        loss = sum(nn.functional.cross_entropy(logits, batch.targets) for logits in heads(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def throughput(args: argparse.Namespace) -> None:
    quiet = lambda line: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["VIDCLF_CACHE_DIR"] = str(root / "cache")
        make_samples(root / "clips", clips_per_class=-(-args.throughput_clips // len(CLASSES)), seed=2)
        options = TrainOptions(data=root / "clips", out=root / "m.vidclf", frames=args.frames, size=args.size,
                               workers=args.workers, val_split=0)
        splits = plan_splits(options.data, 0, 0)
        model, cpu = VideoClassifier(options.model_config(splits.labels)), torch.device("cpu")
        started = time.perf_counter()
        inputs = prepare_inputs(model, splits, options, cpu, quiet)
        frozen = inputs.train()
        prepared = time.perf_counter() - started
        _, history = fit(model, frozen, None, options, cpu, quiet, Stage("frozen", 5, None, 5))
        epoch = statistics.median(record.seconds for record in history)
        n = len(frozen)
        print(f"{n} clips, {args.frames} frames at {args.size} px, --workers {args.workers}")
        print(f"first epoch (decode, flow, features, then the epoch): {n / (prepared + epoch):7.1f} clips/s")
        print(f"cached frozen epochs (median of 5):                   {n / epoch:7.1f} clips/s "
              f"({(prepared + epoch) / epoch:.0f}x the first)")
        model.freeze_backbone(False)
        frames = inputs.train()
        _, history = fit(model, frames, None, options, cpu, quiet, Stage("finetune", 2, None, 2))
        streamed = statistics.median(record.seconds for record in history)
        sampler = EpochSampler(frames, options.hflip)
        sampler.set_epoch(1)
        keys = list(sampler)
        batches = [Tensors.collate([frames[k] for k in keys[i : i + options.batch_size]])
                   for i in range(0, len(keys), options.batch_size)]
        in_memory = statistics.median(in_memory_epoch(model, batches, options) for _ in range(2))
        print(f"fine-tuning epochs streamed from the cache:           {n / streamed:7.1f} clips/s "
              f"({in_memory / streamed:.2f}x an in-memory loop over the same batches, {n / in_memory:.1f} clips/s)")


def ddp(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache")}
        make_samples(root / "clips", clips_per_class=-(-args.throughput_clips // len(CLASSES)), seed=3)
        common = ["-m", "vidclf", "train", str(root / "clips"), "--epochs", "5", "--patience", "5", "--finetune-epochs",
                  "0", "--frames", str(args.frames), "--size", str(args.size), "--workers", str(args.workers), "--force"]
        subprocess.run([sys.executable, *common, "--out", str(root / "warm.vidclf")], env=env, capture_output=True, check=True)
        for processes in (1, 2):
            out = root / f"ddp{processes}.vidclf"
            batch = str(8 // processes)  # the same global batch
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                            str(processes), *common, "--out", str(out), "--batch-size", batch],
                           env={**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))},
                           capture_output=True, check=True)
            wall = time.perf_counter() - started
            rows = list(csv.DictReader(out.with_name(out.name + ".metrics.csv").open()))
            epoch = statistics.median(float(row["seconds"]) for row in rows)
            print(f"torchrun, {processes} process(es) x batch {batch}: {epoch:.2f} s per frozen epoch "
                  f"(median of {len(rows)}), {wall:.0f} s in all", flush=True)


def default_preset(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_samples(root / "clips", clips_per_class=50, seed=4)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vidclf", "train", str(root / "clips"), "--out", str(root / "m.vidclf")],
                       env={**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache")}, capture_output=True, check=True)
        print(f"default preset, 400 clips, cold cache: {(time.perf_counter() - started) / 60:.1f} minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="memory,throughput,ddp,default")
    parser.add_argument("--clips", default="500,5000", help="dataset sizes for the memory part, comma-separated")
    parser.add_argument("--throughput-clips", type=int, default=200)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    parts = {"memory": memory, "throughput": throughput, "ddp": ddp, "default": default_preset}
    for name in args.parts.split(","):
        print(f"\n== {name}", flush=True)
        parts[name](args)


if __name__ == "__main__":
    main()
