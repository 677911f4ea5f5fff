"""Training inputs streamed from the cache: cheap content keys, loaders with worker processes,
seeded epochs, and distributed training under torchrun."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cached import cached_clips
from vidclf.data import DIGEST_BLOCK, clip_digests, file_digest, full_digest, view_cache_path
from vidclf.dataset import LOADER_MIN_ITEMS, CacheError, EpochSampler, Key, loader
from vidclf.samples import make_samples

CPU = torch.device("cpu")


def test_a_clip_is_keyed_by_its_ends_and_whole_files_settle_a_tie(tmp_path: Path) -> None:
    """Two 3 MiB files that differ only in the middle share the cheap key (size, first and
    last MiB); within one dataset such a tie is settled by hashing both whole."""
    body = bytearray(os.urandom(3 * DIGEST_BLOCK))
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    a.write_bytes(body)
    body[len(body) // 2] ^= 0xFF
    b.write_bytes(body)
    body[0] ^= 0xFF
    c.write_bytes(body)
    assert file_digest(a) == file_digest(b) != file_digest(c)
    keys = clip_digests([a, b, c], [file_digest(p) for p in (a, b, c)])
    assert keys == [full_digest(a), full_digest(b), file_digest(c)] and len(set(keys)) == 3
    twin = tmp_path / "renamed.mp4"
    twin.write_bytes(a.read_bytes())
    assert clip_digests([a, twin], [file_digest(a), file_digest(twin)])[0] == full_digest(twin)  # same content, same key


def some_clips(n: int, views: int = 1) -> object:
    generator = torch.Generator().manual_seed(n)
    motion = torch.randn(n, 4, 4, 8, 8, generator=generator)
    return cached_clips(motion, torch.arange(n) % 3, torch.full((n,), 4), f"clips-{n}", views=views)


def test_worker_processes_read_the_same_batches_in_the_same_order() -> None:
    """An epoch's batches (views, mirroring, order) come from (seed, epoch, clip): the same read
    by worker processes as in this one, and another epoch differs."""
    data = some_clips(LOADER_MIN_ITEMS + 20, views=4)

    def epoch(workers: int, number: int) -> list[tuple]:
        sampler = EpochSampler(data, hflip=True)
        batches = loader(data, sampler, 64, workers, CPU)
        sampler.set_epoch(number)
        assert batches.num_workers == workers
        return [(batch.keys, batch.motion) for batch in batches]

    here, there = epoch(0, 3), epoch(2, 3)
    assert [keys for keys, _ in here] == [keys for keys, _ in there]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(here, there))
    keys = [key for batch, _ in here for key in batch]
    assert sorted(key.clip for key in keys) == list(range(len(data)))  # every clip once
    assert {key.view for key in keys} == {0, 1, 2, 3} and {key.mirror for key in keys} == {False, True}
    assert [k for batch, _ in epoch(0, 4) for k in batch] != keys


def test_a_cache_entry_gone_while_training_is_one_clear_line(private_cache: Path) -> None:
    data = some_clips(LOADER_MIN_ITEMS)
    entry = view_cache_path(data.digests[7], data.spec, 0, data.seed)
    entry.unlink()
    for workers in (0, 2):
        with pytest.raises(CacheError) as caught:
            list(loader(data, range(len(data)), 64, workers, CPU))
        assert str(caught.value).startswith(f"{entry}: a cache entry is missing or damaged") and "\n" not in str(caught.value)


def test_small_loaders_read_in_process() -> None:
    data = some_clips(10)
    assert loader(data, EpochSampler(data, hflip=False), 4, 2, CPU).num_workers == 0


def torchrun(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vidclf", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_torchrun_trains_one_model_speaks_once_and_resumes_after_sigterm(tmp_path: Path) -> None:
    """Two processes (gloo) train one model: stopped by SIGTERM (as Slurm or Kubernetes stop
    a job) after a checkpoint, then resumed with --resume: every epoch logged once, one report
    on stdout, one model file that predicts; validation is split between the ranks and gathered."""
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    for split, seed in (("train", 1), ("val", 2)):
        make_samples(tmp_path / "data" / split, clips_per_class=5, seed=seed, classes=("move_left", "move_right"))
    out = tmp_path / "ddp.vidclf"
    args = ["train", str(tmp_path / "data"), "--out", str(out), "--preset", "motion", "--epochs", "40", "--patience", "40",
            "--frames", "4", "--size", "32", "--workers", "1"]
    first = torchrun(*args, env=env)
    checkpoint = out.with_name(out.name + ".ckpt")
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, errors = first.communicate(timeout=120)
    assert first.returncode != 0 and errors.count("terminated (SIGTERM)") >= 1 and checkpoint.exists() and not out.exists()

    resumed = torchrun(*args, "--resume", env=env)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert stderr.count("resuming from") == 1 and stderr.count("epoch 40/40") == 1 and stderr.count("train: 10 clips") == 1
    assert stdout.count("validation split (10 clips") == 1 and stdout.count(str(out)) == 1
    assert not checkpoint.exists()
    predicted = subprocess.run([sys.executable, "-m", "vidclf", "predict", str(tmp_path / "data" / "val"),
                                "--model", str(out), "--format", "csv"], capture_output=True, text=True, env=env)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) > 10, predicted.stderr


def test_two_processes_learn_as_one_with_the_same_global_batch(tmp_path: Path) -> None:
    """2 ranks × batch 4 take the same clips per step as 1 process × batch 8 (DistributedSampler
    deals each global batch out between the ranks, DDP averages their gradients). Dropout masks
    and BatchNorm batch statistics are per rank, so the runs agree closely, not bit for bit:
    validation loss within 2% and training loss within 10% at every epoch."""
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    for split, seed in (("train", 1), ("val", 2)):
        make_samples(tmp_path / "data" / split, clips_per_class=8 if split == "train" else 5, seed=seed,
                     classes=("move_left", "move_right"))
    args = ["train", str(tmp_path / "data"), "--preset", "motion", "--epochs", "3", "--patience", "3",
            "--frames", "4", "--size", "32", "--workers", "1"]
    one = subprocess.run([sys.executable, "-m", "vidclf", *args, "--out", str(tmp_path / "one.vidclf"), "--batch-size", "8"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr
    two = torchrun(*args, "--out", str(tmp_path / "two.vidclf"), "--batch-size", "4", env=env)
    _, errors = two.communicate(timeout=600)
    assert two.returncode == 0, errors
    rows = [list(csv.DictReader((tmp_path / f"{name}.vidclf.metrics.csv").open())) for name in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 3
    for a, b in zip(*rows):
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) <= 0.02 * float(a["val_loss"]), (a, b)
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= 0.10 * float(a["train_loss"]), (a, b)


def test_two_trainings_at_once_share_the_cache_without_harm(tmp_path: Path) -> None:
    """Both decode the same views into one cache at the same time (each entry written to a temp
    file and renamed): both finish, and with the same seed make the same model."""
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache")}
    make_samples(tmp_path / "data", clips_per_class=6, seed=3, classes=("move_left", "move_right"))
    args = ["train", str(tmp_path / "data"), "--epochs", "2", "--frames", "4", "--size", "32", "--workers", "1",
            "--val-split", "0.5", "--finetune-epochs", "0"]
    runs = [subprocess.Popen([sys.executable, "-m", "vidclf", *args, "--out", str(tmp_path / f"{n}.vidclf")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for n in range(2)]
    for run in runs:
        _, errors = run.communicate(timeout=600)
        assert run.returncode == 0, errors
    states = [torch.load(tmp_path / f"{n}.vidclf", weights_only=True)["state_dict"] for n in range(2)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_streamed_batches_are_the_arrays_in_memory_bit_for_bit() -> None:
    """What a loader streams from the cache is exactly what an in-memory loop over the same
    clips, views and mirroring computes (float16 storage, as before streaming): streaming
    cannot change what a model learns from."""
    generator = torch.Generator().manual_seed(5)
    n, views = 24, 3
    motion = torch.randn(n, 4, 4, 8, 8, generator=generator).half().float()
    appearance, flow_images = torch.randn(2, n, 4, 1280, generator=generator).half().float()
    data = cached_clips(motion, torch.arange(n) % 2, torch.full((n,), 4), "in-memory", appearance=appearance, views=views,
                        flow_images=flow_images)
    mirrored = motion.flip(4) * torch.tensor([-1.0, 1.0, -1.0, 1.0])[None, :, None, None]
    sampler = EpochSampler(data, hflip=False)
    sampler.set_epoch(2)
    for batch in loader(data, sampler, 5, 0, CPU):
        clips = [key.clip for key in batch.keys]
        assert torch.equal(batch.motion, motion[clips]) and torch.equal(batch.appearance, appearance[clips])
        assert torch.equal(batch.flow_images, flow_images[clips])
        assert torch.equal(batch.targets, torch.tensor(clips) % 2)
    assert torch.equal(data[Key(3, 2, mirror=False)].motion[0], motion[3])
    assert torch.equal(data.reading("motion")[Key(3, 1, mirror=True)].motion[0], mirrored[3])
