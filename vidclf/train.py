"""Training: data folder → cached clip views → fitted classifier → model file.

Stages, each a small function: ``plan_splits`` (find, split, count) → ``prepare_views``
(decode + motion maps, cached, in parallel) → ``stack_inputs`` (frozen backbone features, cached)
→ ``fit`` (epochs with early stopping, a resumable checkpoint after each) → optionally ``fit`` again
with the backbone unfrozen (fine-tuning) → ``save_model``.

Fine-tuning comes after the frozen stage, not instead of it ("linear probing, then fine-tuning":
Kumar et al., ICLR 2022): the heads, the motion stream above all, get their many cheap epochs on
cached features, and the few costly end-to-end epochs start from heads that already work.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vidclf.data import (
    ClipInputs, DatasetError, LabelledVideo, SamplingSpec, atomic_save_npz, cache_dir,
    check_trainable, discover, file_digest, init_worker, stratified_split, view_cache_path, view_job,
)
from vidclf.metrics import EvalReport, evaluate_scores, sign_test_p
from vidclf.model import Lite0Features, ModelConfig, VideoClassifier
from vidclf.modelfile import ModelFileError, save_model
from vidclf.motion import mirror_signs

Log = Callable[[str], None]


@dataclass
class TrainOptions:
    """Everything about how to train (the network itself is a ``ModelConfig``)."""

    data: Path
    out: Path
    epochs: int = 60
    finetune_epochs: int = 0  # after the frozen-backbone epochs, train the backbone (all but its first layers)
    batch_size: int = 8
    lr: float = 2e-3
    # Fine-tuning: the pretrained backbone learns at lr × this, the heads at lr. A full lr
    # wrecks ImageNet features in the first fine-tuning epochs before they recover.
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-2
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    val_split: float = 0.2
    patience: int = 15
    # Fine-tuning stops after this many epochs without beating the best model so far (the
    # frozen one first). None: all finetune_epochs run (suite, round 6: 3 saved 38% of the time
    # on a motion task, where fine-tuning never won, but lost 3.4 points where it won late).
    finetune_patience: int | None = None
    # A fine-tuned epoch replaces the frozen model only if it wins on validation with a
    # sign-test p-value at most this (see Best.to_beat_significantly); 1: any higher accuracy.
    finetune_p: float = 0.05
    class_weights: bool = False
    hflip: bool = False  # mirror half the training clips, every stream alike (see mirror_clips)
    views: int = 4  # cached samplings per training clip: 1 uniform + (views-1) random
    force: bool = False
    resume: bool = False


@dataclass
class Splits:
    train: list[LabelledVideo]
    val: list[LabelledVideo]
    test: list[LabelledVideo]
    labels: list[str]

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: {label: Counter(i.label for i in items)[label] for label in self.labels}
                for name, items in (("train", self.train), ("val", self.val), ("test", self.test)) if items}


@dataclass
class Tensors:
    """Model inputs for a set of clip views, stacked: N views of T steps."""

    lengths: Tensor
    targets: Tensor
    appearance: Tensor | None = None  # cached frozen-backbone features (N, T, D)
    appearance_mirrored: Tensor | None = None  # the same of the frames flipped left-right (--hflip)
    rgb: Tensor | None = None  # uint8 frames (N, T, S, S, 3) when the backbone trains
    motion: Tensor | None = None  # (N, T, C, M, M)
    clip_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def select(self, rows: Tensor) -> Tensors:
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return Tensors(self.lengths[rows], self.targets[rows], pick(self.appearance), pick(self.appearance_mirrored),
                       pick(self.rgb), pick(self.motion), self.clip_index[rows])


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    stage: str = "train"  # "train" (backbone frozen or trained from scratch), or "finetune"


@dataclass
class Stage:
    """A run of epochs with its own optimiser, schedule and checkpoint file."""

    name: str
    epochs: int
    checkpoint: Path
    patience: int  # early stop after this many epochs without a new best


@dataclass
class Best:
    """The best epoch so far by (validation accuracy, -validation loss), its weights, and which
    validation clips it gets right. With a ``baseline`` (the frozen model's right clips, while
    fine-tuning), an epoch must also beat the baseline significantly to become the best."""

    epoch: int = 0
    key: tuple[float, float] = (-1.0, 0.0)
    state: dict[str, Tensor] | None = None
    correct: Tensor | None = None
    baseline: Tensor | None = None
    max_p: float = 1.0

    @property
    def val_acc(self) -> float:
        return self.key[0]

    def beaten_by(self, val_acc: float, val_loss: float, correct: Tensor) -> bool:
        if self.baseline is not None and not significantly_better(correct, self.baseline, self.max_p):
            return False
        return (val_acc, -val_loss) > self.key

    def replaced_by(self, epoch: int, val_acc: float, val_loss: float, state: dict[str, Tensor], correct: Tensor) -> Best:
        return Best(epoch, (val_acc, -val_loss), state, correct, self.baseline, self.max_p)

    def to_beat_significantly(self, max_p: float) -> Best:
        """This epoch as the baseline a fine-tuned epoch must beat on validation: right on more
        of the clips where the two disagree, with a sign-test p-value of at most ``max_p``. A
        model 10x larger must show more than noise: with a validation split of 40-80 clips, a
        win by one or two clips kept fine-tuning that then lost on test (suite, round 11: three
        rows, 0.992 → 0.975, 1.000 → 0.975, 0.685 → 0.654). ``max_p`` 1: any higher accuracy."""
        assert self.correct is not None
        return replace(self, baseline=self.correct, max_p=max_p)

    def val_misses(self) -> int:
        assert self.correct is not None
        return int((~self.correct).sum())

    def can_be_beaten_significantly(self, max_p: float) -> bool:
        """Whether any model could pass ``to_beat_significantly(max_p)``: at best it wins every
        clip this one gets wrong and loses none."""
        return self.val_misses() > 0 and sign_test_p(self.val_misses(), 0) <= max_p


def significantly_better(correct: Tensor, baseline: Tensor, max_p: float) -> bool:
    """``correct`` beats ``baseline`` (per-clip right/wrong on the same clips): more clips won
    than lost, and a one-sided sign-test p-value of at most ``max_p``."""
    wins, losses = int((correct & ~baseline).sum()), int((~correct & baseline).sum())
    return wins > losses and sign_test_p(wins, losses) <= max_p


@dataclass
class TrainResult:
    best_epoch: int
    best_val_acc: float
    report: EvalReport  # the best model on the validation split
    history: list[EpochRecord]
    skipped: list[str]
    out: Path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DatasetError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def plan_splits(data: Path, val_split: float, seed: int) -> Splits:
    """Find clips and split them: the folder's own train/val(/test) or a stratified split."""
    found = discover(data)
    if "all" in found:
        labels = check_trainable(found["all"], data)
        train, val = stratified_split(found["all"], val_split, seed)
        return Splits(train, val, [], labels)
    labels = check_trainable(found.get("train", []), data / "train")
    if not found.get("val"):
        train, val = stratified_split(found["train"], val_split, seed)
        return Splits(train, val, found.get("test", []), labels)
    unknown = sorted({i.label for i in found["val"]} - set(labels))
    if unknown:
        raise DatasetError(f"{data / 'val'}: label(s) {', '.join(unknown)} have no training clips")
    return Splits(found["train"], found["val"], found.get("test", []), labels)


def prepare_views(items: Sequence[LabelledVideo], spec: SamplingSpec, views: int, seed: int,
                  workers: int, log: Log, desc: str) -> tuple[list[tuple[int, int, ClipInputs]], list[str]]:
    """Decode ``views`` samplings of every clip (cached). Returns (clip, view, inputs) triples
    and one line per clip that failed to decode — the rest still go through."""
    jobs = [(item.path, spec, view, seed) for item in items for view in range(views)]
    keys = [(i, v) for i in range(len(items)) for v in range(views)]
    bar = functools.partial(tqdm, total=len(jobs), desc=desc, unit="view", disable=not sys.stderr.isatty(), leave=False)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # spawn, not fork: forking a process that has started torch threads can deadlock.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=init_worker) as pool:
            results = list(bar(pool.imap(view_job, jobs, chunksize=2)))
    else:
        results = list(bar(map(view_job, jobs)))
    out, failures, warned = [], {}, set()
    for (clip, view), (inputs, warnings, error) in zip(keys, results):
        if error is not None:
            failures[clip] = error
        elif clip not in failures:
            out.append((clip, view, inputs))
        for warning in warnings:
            if clip not in warned:
                log(f"warning: {items[clip].path}: {warning}")
                warned.add(clip)
    return [t for t in out if t[0] not in failures], [failures[c] for c in sorted(failures)]


def _feature_cache_path(config: ModelConfig, spec: SamplingSpec, item: LabelledVideo, view: int, seed: int,
                        mirrored: bool) -> Path:
    base = view_cache_path(file_digest(item.path), spec, view, seed)
    key = f"{base.stem}-{config.backbone}-{config.pooling}-{_backbone_sha(config)}" + ("-mirrored" if mirrored else "")
    return cache_dir() / "features" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


def _load_features(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return arrays["features"]
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: recomputed


def _backbone_sha(config: ModelConfig) -> str:
    from vidclf.lite0 import LITE0_WEIGHTS_SHA256

    return LITE0_WEIGHTS_SHA256[:16] if config.backbone == "lite0" else "scratch"


def stack_inputs(model: VideoClassifier, entries: Sequence[tuple[int, int, ClipInputs]],
                 items: Sequence[LabelledVideo], labels: Sequence[str], spec: SamplingSpec,
                 seed: int, device: torch.device, log: Log, mirrored: bool = False) -> Tensors:
    """Stack views into tensors; a frozen backbone's features are computed once and cached
    (with ``mirrored``, also those of the frames flipped left-right, for ``mirror_clips``)."""
    config = model.config
    index = {label: i for i, label in enumerate(labels)}
    tensors = Tensors(
        lengths=torch.tensor([e[2].length for e in entries]),
        targets=torch.tensor([index[items[e[0]].label] for e in entries]),
        clip_index=torch.tensor([e[0] for e in entries]),
    )
    if config.uses_motion:
        tensors.motion = torch.from_numpy(np.stack([e[2].motion for e in entries]).astype(np.float32))
    if config.backbone == "none":
        return tensors
    if not config.frozen:
        tensors.rgb = torch.from_numpy(np.stack([e[2].rgb for e in entries]))
        return tensors
    tensors.appearance = _frozen_features(model, entries, items, spec, seed, device, log, mirrored=False)
    if mirrored:
        tensors.appearance_mirrored = _frozen_features(model, entries, items, spec, seed, device, log, mirrored=True)
    return tensors


def _frozen_features(model: VideoClassifier, entries: Sequence[tuple[int, int, ClipInputs]],
                     items: Sequence[LabelledVideo], spec: SamplingSpec, seed: int, device: torch.device,
                     log: Log, mirrored: bool) -> Tensor:
    """The frozen backbone's features ``(N, T, D)`` of every view (of its frames flipped
    left-right, if ``mirrored``), read from the cache or computed and cached."""
    config = model.config
    features: list[np.ndarray | None] = []
    todo = []
    for n, (clip, view, _) in enumerate(entries):
        path = _feature_cache_path(config, spec, items[clip], view, seed, mirrored)
        features.append(_load_features(path))
        if features[-1] is None:
            todo.append((n, path))
    if todo:
        log(f"encoding {len(todo)} {'mirrored ' if mirrored else ''}clip views with the frozen {config.backbone} "
            "backbone (cached for next time)")
    bar = tqdm(total=len(todo), desc="features", unit="view", disable=not sys.stderr.isatty(), leave=False)
    model.eval()  # the features must be exactly what prediction computes, whatever the batch
    for start in range(0, len(todo), 8):
        chunk = todo[start : start + 8]
        rgb = torch.from_numpy(np.stack([entries[n][2].rgb for n, _ in chunk])).to(device)
        if mirrored:
            rgb = rgb.flip(3)  # (B, T, H, W, 3): W
        with torch.inference_mode():
            encoded = model.appearance_features(rgb).float().cpu().numpy().astype(np.float16)
        for (n, path), array in zip(chunk, encoded):
            atomic_save_npz(path, {"features": array})
            features[n] = array
        bar.update(len(chunk))
    bar.close()
    return torch.from_numpy(np.stack(features).astype(np.float32))


def mirror_clips(batch: Tensors, mirror: Tensor, motion_kinds: Sequence[str]) -> Tensors:
    """The batch with the clips where ``mirror`` is set flipped left-right, every stream alike:
    the frames, the frozen features (those of the flipped frames) and the motion maps (flipped,
    dx negated: the flow of the mirrored clip). Mirroring only the frames would pair a
    mirrored scene with motion in the original direction."""
    out = replace(batch)
    if batch.rgb is not None:
        out.rgb = torch.where(mirror[:, None, None, None, None], batch.rgb.flip(3), batch.rgb)
    if batch.appearance is not None:
        assert batch.appearance_mirrored is not None, "stack_inputs(mirrored=True) computes the mirrored features"
        out.appearance = torch.where(mirror[:, None, None], batch.appearance_mirrored, batch.appearance)
    if batch.motion is not None:
        signs = torch.tensor([sign for kind in motion_kinds for sign in mirror_signs(kind)], dtype=batch.motion.dtype)
        flipped = batch.motion.flip(4) * signs[None, None, :, None, None]
        out.motion = torch.where(mirror[:, None, None, None, None], flipped, batch.motion)
    return out


def _random_resized_crop(rgb: Tensor, generator: torch.Generator) -> Tensor:
    """Same random crop (area 50–100%, aspect 3:4–4:3) on every frame of each clip."""
    batch, steps, size = rgb.shape[0], rgb.shape[1], rgb.shape[2]
    out = torch.empty_like(rgb)
    for b in range(batch):
        area = float(torch.empty(1).uniform_(0.5, 1.0, generator=generator))
        aspect = float(torch.empty(1).uniform_(0.75, 1.333, generator=generator))
        h = min(size, max(8, round(size * (area / aspect) ** 0.5)))
        w = min(size, max(8, round(size * (area * aspect) ** 0.5)))
        top = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        crop = rgb[b, :, top : top + h, left : left + w].permute(0, 3, 1, 2).float()
        resized = nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out[b] = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _head_logits(model: VideoClassifier, batch: Tensors, device: torch.device) -> list[Tensor]:
    to = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
    return model.stream_logits(batch.lengths, rgb=to(batch.rgb), motion=to(batch.motion),
                               appearance=to(batch.appearance))


def head_logits(model: VideoClassifier, data: Tensors, device: torch.device, batch_size: int = 64) -> list[Tensor]:
    """Every head's logits for every row (eval mode): see ``VideoClassifier.stream_logits``."""
    model.eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(data.targets), batch_size):
            parts.append(_head_logits(model, data.select(torch.arange(start, min(start + batch_size, len(data.targets)))), device))
    return [torch.cat(head) for head in zip(*parts)]


def fused_scores(model: VideoClassifier, heads: list[Tensor], targets: Tensor) -> tuple[float, Tensor]:
    """Mean cross-entropy and the class probabilities of every row, from the heads' logits."""
    logits = model.fuse(heads)
    loss = nn.functional.cross_entropy(logits, targets.to(logits.device)).item()
    return loss, torch.softmax(logits.float(), dim=1).cpu()


def evaluate(model: VideoClassifier, data: Tensors, device: torch.device) -> tuple[float, Tensor]:
    """Mean cross-entropy and the class probabilities of every row."""
    return fused_scores(model, head_logits(model, data, device), data.targets)


def weight_grid(streams: int, steps: int = 4) -> list[tuple[float, ...]]:
    """Late-fusion weightings to try: every split of 1 into quarters among the streams,
    nearest to equal first (a later one must do strictly better on validation to win)."""
    def splits(left: int, parts: int) -> list[tuple[int, ...]]:
        if parts == 1:
            return [(left,)]
        return [(first, *rest) for first in range(left + 1) for rest in splits(left - first, parts - 1)]

    grid = [tuple(q / steps for q in split) for split in splits(steps, streams)]
    return sorted(grid, key=lambda w: sum((x - 1 / streams) ** 2 for x in w))


def head_weights(heads: list[tuple[str, str]], stream_share: dict[str, float], only: str | None = None) -> tuple[float, ...]:
    """Each head's weight: its stream's share, split evenly among the stream's heads, or all on
    the stream's ``only`` head ("lstm" or "mean") where it has one."""
    weights = []
    for name, part in heads:
        parts = [p for n, p in heads if n == name]
        kept = [p for p in parts if p == only] or parts
        weights.append(stream_share[name] / len(kept) if part in kept else 0.0)
    return tuple(weights)


def choose_stream_weights(model: VideoClassifier, heads: list[Tensor], targets: Tensor) -> tuple[float, ...]:
    """Late fusion: weigh the streams by validation accuracy (then loss), given their heads'
    validation logits. A stream may carry no signal for a task (motion for object classes,
    appearance for direction classes), or one flow may suit the footage better than another;
    this lets the others decide.

    A stream with an LSTM and a mean head ("lstm+mean") splits its weight evenly between them
    unless the LSTM heads alone, or the mean heads alone, are strictly more accurate on
    validation. At equal accuracy the loss would pick the more confident LSTM heads, which
    generalise worse where order does not matter (suite, round 7)."""
    targets = targets.to(heads[0].device)
    config_heads = model.config.heads
    streams = list(dict.fromkeys(name for name, _ in config_heads))
    splits_heads = len(config_heads) > len(streams)

    def best_weights(only: str | None) -> tuple[tuple[float, float], tuple[float, ...]]:
        best: tuple[tuple[float, float], tuple[float, ...]] | None = None
        for split in weight_grid(len(streams)):
            weights = head_weights(config_heads, dict(zip(streams, split)), only)
            model.set_stream_weights(weights)
            fused = model.fuse(heads)
            key = ((fused.argmax(1) == targets).float().mean().item(),
                   -nn.functional.cross_entropy(fused, targets).item())
            if best is None or key > best[0]:
                best = (key, weights)
        assert best is not None
        return best

    chosen = best_weights(None)
    for only in ("lstm", "mean") if splits_heads else ():
        candidate = best_weights(only)
        if candidate[0][0] > chosen[0][0]:  # accuracy alone: see the docstring
            chosen = candidate
    model.set_stream_weights(chosen[1])
    return chosen[1]


def checkpoint_path(out: Path, stage: str = "train") -> Path:
    return out.with_name(out.name + (".ckpt" if stage == "train" else f".{stage}.ckpt"))


def _save_checkpoint(path: Path, state: dict[str, object]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, temp)
    os.replace(temp, path)  # atomic: a kill -9 leaves the previous epoch's checkpoint intact


def _epoch_batches(rows: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    order = torch.randperm(rows, generator=generator)
    return [order[i : i + batch_size] for i in range(0, rows, batch_size)]


def _pick_views(train: Tensors, generator: torch.Generator) -> Tensor:
    """One random cached view of each training clip for this epoch."""
    rows = []
    for clip in train.clip_index.unique().tolist():
        candidates = (train.clip_index == clip).nonzero().flatten()
        rows.append(candidates[torch.randint(len(candidates), (1,), generator=generator)])
    return torch.cat(rows)


def make_optimizer(model: VideoClassifier, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW over the trainable weights; a pretrained backbone being fine-tuned learns at
    ``lr × backbone_lr_scale`` (a backbone trained from scratch learns at ``lr`` like the rest)."""
    pretrained = {id(p) for p in model.backbone.parameters()} if model.config.backbone == "lite0" else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in pretrained], "lr": options.lr},
              {"params": [p for p in params if id(p) in pretrained], "lr": options.lr * options.backbone_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=options.weight_decay)


def fit(model: VideoClassifier, train: Tensors, val: Tensors, options: TrainOptions, labels: Sequence[str],
        device: torch.device, log: Log, stage: Stage, history: Sequence[EpochRecord] = (),
        best: Best | None = None) -> tuple[Best, list[EpochRecord]]:
    """One stage of training: AdamW + cosine decay over ``stage.epochs``, early stopping, a
    checkpoint after every epoch. ``history`` and ``best`` carry over from an earlier stage
    (epochs are numbered on from it), so the best epoch is the best of all stages.

    Each epoch's randomness comes from (seed, epoch), so a resumed run continues exactly as
    the uninterrupted one would have.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, options)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=stage.epochs)
    counts = torch.bincount(train.targets, minlength=len(labels)).float()
    weight = (counts.sum() / (len(labels) * counts.clamp(min=1))).to(device) if options.class_weights else None
    history, best, done = list(history), best or Best(), 0
    if options.resume and stage.checkpoint.is_file():
        state = torch.load(stage.checkpoint, map_location="cpu", weights_only=True)
        if state["config"] != model.config.to_dict() or state["epochs"] != stage.epochs:
            raise DatasetError(f"{stage.checkpoint}: was made with other settings (model options, labels or "
                               "--epochs); rerun with the same options, or drop --resume")
        if "best_correct" not in state:
            raise DatasetError(f"{stage.checkpoint}: was made by an older vidclf; drop --resume to start afresh")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [EpochRecord(**record) for record in state["history"]]
        best = Best(int(state["best_epoch"]), (float(state["best_key"][0]), float(state["best_key"][1])),
                    state["best_state"], state["best_correct"], state["best_baseline"], float(state["best_max_p"]))
        done = int(state["stage_epochs_done"])
        log(f"resuming from {stage.checkpoint} after epoch {len(history)}")
    before = len(history) - done  # epochs of earlier stages
    prefix = "" if stage.name == "train" else f"{stage.name} "
    steps = tqdm(range(done + 1, stage.epochs + 1), desc=stage.name, unit="epoch",
                 disable=not sys.stderr.isatty(), initial=done, total=stage.epochs)
    for step in steps:
        epoch = before + step
        if best.epoch > 0 and epoch - max(best.epoch, before) > stage.patience:
            log(f"{prefix}early stop: no val improvement for {stage.patience} epochs")
            break
        started = time.perf_counter()
        train_loss, train_acc = _train_epoch(model, train, options, epoch, weight, optimizer, params, device)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        heads = head_logits(model, val, device)
        if model.mixes_heads:
            choose_stream_weights(model, heads, val.targets)
        val_loss, val_prob = fused_scores(model, heads, val.targets)
        correct = val_prob.argmax(1) == val.targets
        val_acc = float(correct.float().mean())
        record = EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, lr,
                             time.perf_counter() - started, stage.name)
        history.append(record)
        if best.beaten_by(val_acc, val_loss, correct):
            best = best.replaced_by(epoch, val_acc, val_loss,
                                    {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, correct)
        log(f"{prefix}epoch {step}/{stage.epochs}  train loss {train_loss:.3f} acc {train_acc:.3f}  "
            f"val loss {val_loss:.3f} acc {val_acc:.3f}  {record.seconds:.1f}s"
            + ("  *best" if best.epoch == epoch else ""))
        _write_metrics_csv(options.out, history)
        _save_checkpoint(stage.checkpoint, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": [asdict(r) for r in history], "best_epoch": best.epoch, "best_key": list(best.key),
            "best_state": best.state, "best_correct": best.correct, "best_baseline": best.baseline,
            "best_max_p": best.max_p, "config": model.config.to_dict(), "epochs": stage.epochs,
            "stage_epochs_done": step})
    assert best.state is not None, "no epoch ran"
    return best, history


def _train_epoch(model: VideoClassifier, train: Tensors, options: TrainOptions, epoch: int, weight: Tensor | None,
                 optimizer: torch.optim.Optimizer, params: list[Tensor], device: torch.device) -> tuple[float, float]:
    """One pass over one random view of every training clip; returns (mean loss, accuracy)."""
    generator = torch.Generator().manual_seed(options.seed * 100_003 + epoch)
    torch.manual_seed(options.seed * 100_003 + epoch)  # dropout
    model.train()
    epoch_rows = _pick_views(train, generator)
    total_loss = correct = seen = 0.0
    batches = _epoch_batches(len(epoch_rows), options.batch_size, generator)
    batch_bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not sys.stderr.isatty())
    for rows in batch_bar:
        batch = train.select(epoch_rows[rows])
        if options.hflip:
            batch = mirror_clips(batch, torch.rand(len(rows), generator=generator) < 0.5, model.config.motion_kinds)
        if batch.rgb is not None:
            batch.rgb = _random_resized_crop(batch.rgb, generator)
        heads = _head_logits(model, batch, device)
        targets = batch.targets.to(device)
        loss = sum(nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=0.05)
                   for logits in heads)
        logits = model.fuse([h.detach() for h in heads])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        total_loss += loss.item() * len(rows)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(rows)
        batch_bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.2f}")
    return total_loss / seen, correct / seen


def metrics_csv_path(out: Path) -> Path:
    return out.with_name(out.name + ".metrics.csv")


def _write_metrics_csv(out: Path, history: Sequence[EpochRecord]) -> None:
    path = metrics_csv_path(out)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(history[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in history)
    os.replace(temp, path)


def train(options: TrainOptions, config_overrides: dict[str, object], log: Log) -> TrainResult:
    """The whole ``vidclf train`` job; ``config_overrides`` are ModelConfig fields."""
    if options.out.exists() and not options.force:
        raise ModelFileError(f"{options.out}: already exists; pass --force to overwrite it")
    if options.finetune_epochs and config_overrides.get("backbone", "lite0") != "lite0":
        raise DatasetError("--finetune-epochs needs --backbone lite0: only a pretrained backbone is fine-tuned")
    if options.resume and not checkpoint_path(options.out).is_file():
        log(f"note: no checkpoint at {checkpoint_path(options.out)}; starting from scratch")
    torch.manual_seed(options.seed)
    device = resolve_device(options.device)
    splits = plan_splits(options.data, options.val_split, options.seed)
    for name, counts in splits.counts().items():
        log(f"{name}: {sum(counts.values())} clips  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    config = ModelConfig(labels=splits.labels, **config_overrides)  # type: ignore[arg-type]
    spec = config.sampling()
    model = VideoClassifier(config).to(device)
    train_views, train_failed = prepare_views(splits.train, spec, options.views, options.seed,
                                              options.workers, log, "decoding train")
    val_views, val_failed = prepare_views(splits.val, spec, 1, options.seed, options.workers, log, "decoding val")
    skipped = train_failed + val_failed
    for line in skipped:
        log(f"skipped: {line}")
    _check_still_trainable(train_views, val_views, splits, skipped)
    stack = lambda views, items, mirrored=False: stack_inputs(  # noqa: E731
        model, views, items, splits.labels, spec, options.seed, device, log, mirrored)
    val_by_form: dict[bool, Tensors] = {}  # features for a frozen backbone, frames otherwise: stacked once each

    def val_tensors() -> Tensors:
        if model.config.frozen not in val_by_form:
            val_by_form[model.config.frozen] = stack(val_views, splits.val)
        return val_by_form[model.config.frozen]

    best, history = Best(), []
    finetune = Stage("finetune", options.finetune_epochs, checkpoint_path(options.out, "finetune"),
                     options.finetune_patience or options.finetune_epochs)
    resuming_finetune = options.resume and finetune.epochs > 0 and finetune.checkpoint.is_file()
    if not resuming_finetune:
        best, history = fit(model, stack(train_views, splits.train, options.hflip), val_tensors(), options,
                            splits.labels, device, log, Stage("train", options.epochs, checkpoint_path(options.out), options.patience))
    if finetune.epochs and not resuming_finetune and not best.can_be_beaten_significantly(options.finetune_p):
        log(f"fine-tuning skipped: the frozen-backbone model misses {best.val_misses()} of {len(best.correct)} "
            f"validation clips, too few for a fine-tuned one to beat it significantly (--finetune-p {options.finetune_p:g})")
    elif finetune.epochs:
        if best.state is not None:
            model.load_state_dict(best.state)  # fine-tune from the best frozen-backbone epoch
        model.set_backbone_frozen(False)
        log(f"fine-tuning the {config.backbone} backbone (all but its stem and first {Lite0Features.fixed_blocks} blocks) "
            f"for {finetune.epochs} epochs")
        to_beat = None if resuming_finetune else best.to_beat_significantly(options.finetune_p)  # else: in the checkpoint
        best, history = fit(model, stack(train_views, splits.train, options.hflip), val_tensors(), options,
                            splits.labels, device, log, finetune, history, to_beat)
        if history[best.epoch - 1].stage != "finetune":
            model.set_backbone_frozen(True)  # its weights are the pretrained ones: keep the file small
            log("fine-tuning did not beat the frozen-backbone model significantly on validation "
                f"(--finetune-p {options.finetune_p:g}): keeping the frozen-backbone model")
    model.load_state_dict(best.state)
    val = val_tensors()
    _, val_prob = evaluate(model, val, device)
    report = evaluate_scores(splits.labels, [str(splits.val[c].path) for c, _, _ in val_views],
                             [splits.labels[t] for t in val.targets.tolist()], val_prob.numpy())
    best_record = history[best.epoch - 1]
    summary = {
        "data": str(options.data), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": options.seed, "counts": splits.counts(), "skipped": skipped, "best_epoch": best.epoch,
        "best_stage": best_record.stage, "epochs_run": len(history), "best_val_acc": best_record.val_acc,
        "best_val_loss": best_record.val_loss,
        "val_mean_class_accuracy": report.mean_class_accuracy,
        "val_per_class_recall": {label: m.recall for label, m in report.per_class.items()},
        "options": {k: str(v) for k, v in asdict(options).items()},
    }
    if model.mixes_heads:
        summary["stream_weights"] = dict(zip(config.head_names, model.stream_weights.tolist()))
        log("late fusion: head weights " + ", ".join(f"{name} {w:g}" for name, w in summary["stream_weights"].items())
            + " (chosen on validation)")
    save_model(model, options.out, summary, force=options.force)
    checkpoint_path(options.out).unlink(missing_ok=True)
    finetune.checkpoint.unlink(missing_ok=True)
    return TrainResult(best.epoch, best_record.val_acc, report, history, skipped, options.out)


def _check_still_trainable(train_views: list, val_views: list, splits: Splits, skipped: list[str]) -> None:
    left = Counter(splits.train[c].label for c, v, _ in train_views if v == 0)
    empty = [label for label in splits.labels if left[label] == 0]
    if empty:
        raise DatasetError(f"no decodable training clips left for class(es) {', '.join(empty)} "
                           f"({len(skipped)} clip(s) failed to decode)")
    if not val_views:
        raise DatasetError("no decodable validation clips left")
