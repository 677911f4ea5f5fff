"""Training: data folder → cached clip views → fitted classifier → model file.

The stages, in order: ``plan_splits`` (find, split, count) → ``prepare_inputs`` (decode and
flow into the cache, in parallel; frozen Lite0 features, cached) → ``frozen_stage`` (epochs on
cached features; the last kept unless beaten significantly) → ``finetune_stage`` (Lite0's
later layers learn; kept only if it wins significantly) → ``summarise`` → the model file; or,
with too few validation clips, ``cross_validate`` → ``final_stage``. Every epoch streams its
batches from the cache (``vidclf.dataset``) and writes a ``Checkpoint``, so an interrupted run
resumes where it stopped. Under torchrun each rank trains on its share (``vidclf.parallel``).
Why two stages: docs/design.md.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from torch.utils.data import DataLoader

from vidclf import parallel
from vidclf.check import duplicates
from vidclf.config import SamplingSpec, TrainOptions
from vidclf.data import (
    DIED, FEATURES, DatasetError, LabelledVideo, cache_views, check_trainable, clip_digests, discover, feature_cache_path,
    file_digest, group_folds, group_key, group_numbers, pool_map, save_npz, stratified_split,
)
from vidclf.dataset import CachedClips, EpochSampler, Key, Tensors, loader, to_device
from vidclf.device import autocast, resolve_device
from vidclf.files import atomic_write, remove_leftovers
from vidclf.metrics import EvalReport, evaluate_scores, sign_flip_p
from vidclf.model import Lite0Features, VideoClassifier, fuse
from vidclf.modelfile import ModelFileError, save_model
from vidclf.selection import (
    CV_FOLDS, MAX_P, VAL_ENOUGH, Choice, by_group, cross_validated_choice, even_weights, evidence, scored_epochs,
    significantly_better, weights_beating,
)
from vidclf.progress import progress

Log = Callable[[str], None]
STAGES = ("train", "finetune", "cv")  # each with its checkpoint file
VIEWS = 4  # cached samplings per training clip: 1 uniform + 3 seeded random
WEIGHT_DECAY = 1e-2
# Fine-tuning: Lite0 learns at lr × this, the heads at lr; a full lr wrecks the ImageNet features.
BACKBONE_LR_SCALE = 0.1
# Fine-tuning stops after this many epochs without beating the frozen model significantly (once
# it has, after this many without a new best that the best beats significantly): where it was
# kept it won in its first epoch; where it lost it never came back; an epoch costs ~15 frozen ones.
FINETUNE_PATIENCE = 2


@dataclass
class Splits:
    train: list[LabelledVideo]
    val: list[LabelledVideo]
    test: list[LabelledVideo]
    labels: list[str]

    def parts(self) -> dict[str, list[LabelledVideo]]:
        return {name: items for name, items in (("train", self.train), ("val", self.val), ("test", self.test)) if items}

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: {label: Counter(i.label for i in items)[label] for label in self.labels}
                for name, items in self.parts().items()}

    def groups(self) -> dict[str, int] | None:
        """Groups (people, scenes, source videos) on each side, or None when clips have none."""
        if not any(item.group is not None for items in self.parts().values() for item in items):
            return None
        return {name: len({group_key(item) for item in items}) for name, items in self.parts().items()}

    def log(self, log: Log) -> None:
        groups = self.groups()
        for name, counts in self.counts().items():
            log(f"{name}: {sum(counts.values())} clips" + (f" ({groups[name]} groups)" if groups else "")
                + "  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
        if groups is None:
            log("note: clips have no groups, so validation (or a cross-validation fold) may share people or scenes "
                "with training and overrate the model on new ones; give --group REGEX or a manifest's group column")


def run_identity(options: TrainOptions, splits: Splits) -> dict[str, object]:
    """What a checkpoint must match to be resumed: every option that changes the model (not
    --out, --workers, --device, --force, --resume) and the clips: their paths relative to DATA,
    labels, groups, splits and sizes."""
    kept = {name: str(getattr(value, "value", value)) for name, value in asdict(options).items()
            if name not in ("data", "out", "workers", "device", "force", "resume")}
    root = options.data if options.data.is_dir() else options.data.parent
    clips = sorted((split, os.path.relpath(item.path, root), item.label, item.group or "", item.path.stat().st_size)
                   for split, items in splits.parts().items() for item in items)
    return {"options": kept, "data": {"clips": len(clips), "sha256": hashlib.sha256(json.dumps(clips).encode()).hexdigest()}}


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    stage: str = "train"  # "train" (backbone frozen, or none), or "finetune"


@dataclass
class Stage:
    """A run of epochs with its own optimiser, schedule and checkpoint file."""

    name: str
    epochs: int
    checkpoint: Path | None  # None: a cross-validation fold's model, never resumed
    # Early stop after this many epochs without a new best, if the best beats the latest
    # significantly or the stage has none of its own (fine-tuning that never beat the frozen model).
    patience: int
    identity: dict[str, object] = field(default_factory=dict)  # what resuming must match: Inputs.identity
    # With validation: the last epoch is kept unless the best beats it significantly (the full
    # schedule is the default a choice must beat); else the best (fine-tuning: see ``Best.baseline``).
    keeps_last: bool = True


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

    def beaten_by(self, val_acc: float, val_loss: float, correct: Tensor, groups: Tensor) -> bool:
        if self.baseline is not None and not significantly_better(correct, self.baseline, groups):
            return False
        return (val_acc, -val_loss) > self.key

    def replaced_by(self, epoch: int, val_acc: float, val_loss: float, state: dict[str, Tensor], correct: Tensor) -> Best:
        return Best(epoch, (val_acc, -val_loss), state, correct, self.baseline)

    def to_beat_significantly(self) -> Best:
        """This epoch as the baseline a fine-tuned epoch must beat (see ``significantly_better``)."""
        assert self.correct is not None
        return replace(self, baseline=self.correct)

    def val_misses(self) -> int:
        assert self.correct is not None
        return int((~self.correct).sum())

    def can_be_beaten_significantly(self, groups: Tensor) -> bool:
        """Whether any model could: at best it wins every group where this one misses a clip,
        and loses none."""
        assert self.correct is not None
        misses = by_group((~self.correct).long(), groups)
        return int(misses.sum()) > 0 and sign_flip_p(misses.tolist()) <= MAX_P

    def to_dict(self) -> dict[str, object]:
        return {"epoch": self.epoch, "key": list(self.key), "state": self.state, "correct": self.correct,
                "baseline": self.baseline}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Best:
        return cls(int(data["epoch"]), tuple(float(k) for k in data["key"]), data["state"], data["correct"],
                   data["baseline"])


@dataclass
class Checkpoint:
    """Everything a stage needs to resume after its last finished epoch."""

    config: dict[str, object]
    identity: dict[str, object]
    epochs: int
    stage_epochs_done: int
    model: dict[str, Tensor]
    optimizer: dict[str, object]
    scheduler: dict[str, object]
    history: list[EpochRecord]
    best: Best

    def save(self, path: Path) -> None:
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state.update(history=[asdict(r) for r in self.history], best=self.best.to_dict())
        with atomic_write(path) as handle:
            torch.save(state, handle)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state["history"] = [EpochRecord(**r) for r in state["history"]]
            state["best"] = Best.from_dict(state["best"])
            return cls(**state)
        except Exception as exc:  # damaged, or written by another vidclf version
            raise DatasetError(f"{path}: not a checkpoint this vidclf can resume ({type(exc).__name__}); "
                               "drop --resume to start afresh") from None


@dataclass
class TrainResult:
    report: EvalReport  # on the validation split, or out of fold when choices were cross-validated
    title: str  # what the report is on
    history: list[EpochRecord]
    skipped: list[str]
    out: Path


def checkpoint_path(out: Path, stage: str = "train") -> Path:
    return out.with_name(out.name + (".ckpt" if stage == "train" else f".{stage}.ckpt"))


def metrics_csv_path(out: Path) -> Path:
    return out.with_name(out.name + ".metrics.csv")


# --- planning the splits and preparing the inputs ------------------------------------------------

def plan_splits(data: Path, val_split: float, seed: int, group: str | None = None) -> Splits:
    """Find clips and split them: the dataset's own train/val(/test), or a seeded split that
    keeps each group (``--group``) on one side (see ``_auto_split``)."""
    found = discover(data, group)
    if "all" in found:
        labels = check_trainable(found["all"], data)
        return Splits(*_auto_split(found["all"], val_split, seed), [], labels)
    labels = check_trainable(found.get("train", []), data / "train")
    if not found.get("val"):
        return Splits(*_auto_split(found["train"], val_split, seed), found.get("test", []), labels)
    unknown = sorted({i.label for i in found["val"]} - set(labels))
    if unknown:
        raise DatasetError(f"{data / 'val'}: label(s) {', '.join(unknown)} have no training clips")
    return Splits(found["train"], found["val"], found.get("test", []), labels)


def _auto_split(items: list[LabelledVideo], val_split: float, seed: int) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    """A validation split of ``val_split``, or none (every clip trains, choices are
    cross-validated by group) when it is 0, would hold fewer than ``VAL_ENOUGH`` clips of some
    class, or cannot have every class on both sides without splitting a group."""
    if val_split == 0:
        return items, []
    try:
        train, val = stratified_split(items, val_split, seed)
    except DatasetError:  # no split by group has every class on both sides (e.g. scenes of one class each)
        if len({group_key(item) for item in items}) < 2:
            raise
        return items, []
    return (items, []) if too_few_to_decide(val, {item.label for item in items}) else (train, val)


def too_few_to_decide(val: Sequence[LabelledVideo], labels: Iterable[str]) -> bool:
    """Whether validation holds fewer than ``VAL_ENOUGH`` clips of some class (or none at all):
    then choices are cross-validated instead (docs/design.md)."""
    held = Counter(item.label for item in val)
    return min(held[label] for label in labels) < VAL_ENOUGH


def decode_views(items: Sequence[LabelledVideo], digests: Sequence[str], spec: SamplingSpec, views: int, seed: int,
                 workers: int, log: Log, desc: str) -> tuple[list[int], list[str]]:
    """Cache ``views`` samplings of every clip, decoded in one pass a clip (each rank decodes
    its share, in ``workers`` processes; only small results travel back). Returns the indices
    of the clips whose views all decoded, and one line per clip that failed — the rest still
    go through."""
    jobs = [(item.path, digest, spec, views, seed) for item, digest in zip(items, digests)]
    run = functools.partial(pool_map, cache_views, workers=workers, desc=desc, unit="clip",
                            died=lambda job: ((), f"{job[0]}: {DIED}"))
    failures: list[str] = []
    kept = []
    for n, (warnings, error) in enumerate(parallel.shared_map(run, jobs)):
        if error is not None:
            failures.append(error)
            continue
        kept.append(n)
        if warnings:  # the first is enough: the clip's views share one decoding
            log(f"warning: {items[n].path}: {warnings[0]}")
    return kept, failures


@dataclass
class Inputs:
    """The clips that decoded, as datasets over the cache. ``train()`` and ``val()`` carry what
    the model reads now: the frozen Lite0 features (computed and cached first where missing)
    while the backbone is frozen, the frames while it is fine-tuned."""

    model: VideoClassifier
    splits: Splits
    options: TrainOptions
    device: torch.device
    log: Log
    train_items: list[LabelledVideo]  # the training clips that decoded, in ``train_clips`` order
    train_clips: CachedClips
    val_items: list[LabelledVideo]
    val_clips: CachedClips | None
    skipped: list[str]
    _encoded: set[tuple[int, bool, str]] = field(default_factory=set)  # (id of the clips, mirrored, FEATURES name): cached

    def identity(self) -> dict[str, object]:
        return run_identity(self.options, self.splits)

    def train(self) -> CachedClips:
        return self._reading(self.train_clips, VIEWS, self.options.hflip)

    def val(self) -> CachedClips | None:
        return None if self.val_clips is None else self._reading(self.val_clips, 1, False)

    def _reading(self, data: CachedClips, views: int, mirrored: bool) -> CachedClips:
        if self.model.backbone is None:
            return data.reading("motion")
        # Features of the frames only while the backbone is frozen: fine-tuning changes them.
        for name in FEATURES if self.model.backbone_frozen else ("flow_images",):
            if (id(data), mirrored, name) not in self._encoded:
                encode_features(self.model, data, data.missing_features(views, mirrored, name), name,
                                self.options.workers, self.device, self.log)
                self._encoded.add((id(data), mirrored, name))
        return data.reading("features" if self.model.backbone_frozen else "finetune")


def encode_features(model: VideoClassifier, data: CachedClips, missing: list[Key], name: str, workers: int,
                    device: torch.device, log: Log) -> None:
    """Compute and cache the frozen Lite0 features ``name`` (of the frames, or of the flow
    images: ``FEATURES``) of the ``missing`` views, each rank its share, in batches streamed
    from the cache."""
    missing = parallel.gather(missing)[0]  # rank 0's list: others may list after its first writes
    if not missing:
        return
    what = "clip views" if name == "features" else "flow images of clip views"
    log(f"encoding {len(missing)} {what} with the frozen lite0 backbone (cached for next time)")
    model.eval()  # the features must be exactly what prediction computes, whatever the batch
    mine = parallel.share(missing)
    bar = progress(total=len(mine), desc="features" if name == "features" else "flow images", unit="view")
    for batch in loader(data.reading("frames" if name == "features" else "motion"), mine, 8, workers, device):
        with torch.inference_mode():
            encoded = (distinct_frame_features(model, batch.rgb.to(device)) if name == "features"
                       else model.flow_image_features(batch.motion.to(device)))
        for key, array in zip(batch.keys, encoded.float().cpu().numpy().astype(np.float16)):
            path = feature_cache_path(data.digests[key.clip], data.spec, key.view, data.seed, key.mirror, name)
            save_npz(path, {name: array})
        bar.update(len(batch.keys))
    bar.close()
    parallel.barrier()


def distinct_frame_features(model: VideoClassifier, rgb: Tensor) -> Tensor:
    """``model.appearance_features`` of frames (N, T, S, S, 3), each distinct frame encoded
    once: the views of a short clip share most of their frames."""
    frames = rgb.flatten(0, 1)
    distinct, where = torch.unique(frames.flatten(1), dim=0, return_inverse=True)
    features = model.appearance_features(distinct.reshape(1, -1, *frames.shape[1:]))[0]
    return features[where].reshape(*rgb.shape[:2], -1)


def prepare_inputs(model: VideoClassifier, splits: Splits, options: TrainOptions, device: torch.device,
                   log: Log) -> Inputs:
    """Cache the training clips' views and the validation clips' (one uniform view each)."""
    spec, index = model.config.sampling(), {label: i for i, label in enumerate(splits.labels)}
    paths = [item.path for item in splits.train + splits.val]
    digests = clip_digests(paths, parallel.shared_map(lambda share: [file_digest(p) for p in share], paths))
    splits_of = [("train", item) for item in splits.train] + [("val", item) for item in splits.val]
    for twins in duplicates(splits_of, digests):  # what `vidclf check` finds that costs nothing more here
        log(f"warning: the same video {twins['why']}: {', '.join(twins['paths'])}")
    parts, skipped = [], []
    for items, views, keys, name in ((splits.train, VIEWS, digests[: len(splits.train)], "train"),
                                     (splits.val, 1, digests[len(splits.train) :], "val")):
        kept, failed = decode_views(items, keys, spec, views, options.seed, options.workers, log, f"decoding {name}")
        skipped += failed
        clips = [items[n] for n in kept]
        parts.append((clips, CachedClips([keys[n] for n in kept], [index[item.label] for item in clips], spec,
                                         options.seed, views, "motion", groups=group_numbers(clips))))
    for line in skipped:
        log(f"skipped: {line}")
    (train_items, train_clips), (val_items, val_clips) = parts
    left = Counter(item.label for item in train_items)
    empty = [label for label in splits.labels if left[label] == 0]
    if empty:
        raise DatasetError(f"no decodable training clips left for class(es) {', '.join(empty)} "
                           f"({len(skipped)} clip(s) failed to decode)")
    if splits.val and not val_items:
        raise DatasetError("no decodable validation clips left")
    return Inputs(model, splits, options, device, log, train_items, train_clips, val_items,
                  val_clips if val_items else None, skipped)


# --- the heads' scores and the late-fusion weights ---------------------------------------------

class Heads(nn.Module):
    """The model's per-head logits as ``forward``, so DistributedDataParallel can wrap it."""

    def __init__(self, model: VideoClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Tensors) -> list[Tensor]:
        return self.model.head_logits(batch.lengths, rgb=batch.rgb, motion=batch.motion, appearance=batch.appearance,
                                      flow_images=batch.flow_images)


def eval_loader(data: CachedClips, workers: int, device: torch.device) -> DataLoader:
    """This rank's share of ``data``, the uniform view of each clip, in order."""
    return loader(data, parallel.share(range(len(data))), 64, workers, device)


def head_logits(model: VideoClassifier, batches: DataLoader, device: torch.device) -> list[Tensor]:
    """Every head's logits (float32, on the CPU) for every clip of an ``eval_loader``'s
    dataset, in eval mode; gathered from all ranks."""
    model.eval()
    parts = []
    with torch.inference_mode(), autocast(device):
        for batch in batches:
            parts.append([logits.float().cpu() for logits in Heads(model)(to_device(batch, device))])
    mine = [torch.cat(head) for head in zip(*parts)] if parts else None
    shares = parallel.gather(mine)  # rank r holds rows r, r + world, …
    heads = []
    for n, first in enumerate(next(share for share in shares if share is not None)):
        out = torch.empty(sum(len(share[n]) for share in shares if share is not None), first.shape[1])
        for rank, share in enumerate(shares):
            if share is not None:
                out[rank :: parallel.world()] = share[n]
        heads.append(out)
    return heads


def fused_scores(heads: list[Tensor], weights: Tensor, targets: Tensor) -> tuple[float, Tensor]:
    """Mean cross-entropy and the class probabilities of every row, from the heads' logits."""
    logits = fuse(heads, weights)
    loss = nn.functional.cross_entropy(logits, targets.to(logits.device)).item()
    return loss, torch.softmax(logits.float(), dim=1).cpu()


# --- the epoch loop -----------------------------------------------------------------------------

def make_optimizer(model: VideoClassifier, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW over the trainable weights; Lite0, when fine-tuned, at ``lr × BACKBONE_LR_SCALE``."""
    pretrained = {id(p) for p in model.backbone.parameters()} if model.backbone is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in pretrained], "lr": options.lr},
              {"params": [p for p in params if id(p) in pretrained], "lr": options.lr * BACKBONE_LR_SCALE}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=WEIGHT_DECAY)


def _train_epoch(model: VideoClassifier, net: nn.Module, batches: DataLoader, options: TrainOptions, epoch: int,
                 weight: Tensor | None, optimizer: torch.optim.Optimizer, device: torch.device) -> tuple[float, float]:
    """One pass over one random view of every training clip (``net``: the model's ``Heads``,
    wrapped for distributed training); returns (mean loss, accuracy) over all ranks. Its
    randomness comes from (seed, epoch): a resumed run continues as the uninterrupted one."""
    batches.sampler.set_epoch(epoch)
    torch.manual_seed((options.seed * 100_003 + epoch) * parallel.world() + parallel.rank())  # dropout
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    total_loss = correct = seen = 0.0
    bar = progress(batches, desc=f"epoch {epoch}", unit="batch")
    for batch in bar:
        batch = to_device(batch, device)
        with autocast(device):
            heads = [logits.float() for logits in net(batch)]
        loss = sum(nn.functional.cross_entropy(logits, batch.targets, weight=weight, label_smoothing=0.05)
                   for logits in heads)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        total_loss += loss.item() * len(batch.targets)
        correct += (fuse([h.detach() for h in heads], model.stream_weights).argmax(1) == batch.targets).sum().item()
        seen += len(batch.targets)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.2f}")
    total_loss, correct, seen = parallel.total(total_loss, correct, seen)
    return total_loss / seen, correct / seen


def _validate(model: VideoClassifier, val: DataLoader, device: torch.device
              ) -> tuple[float, float, tuple[float, ...], Tensor]:
    """Validation loss and accuracy with even fusion weights (what picks the epoch, as
    cross-validation does), and the weights this epoch would keep (``weights_beating``) with
    the clips right under them."""
    logits, targets = head_logits(model, val, device), val.dataset.targets
    even = even_weights(model.config.heads)
    loss, probabilities = fused_scores(logits, torch.tensor(even), targets)
    weights = weights_beating(even, model.config.heads, logits, targets, val.dataset.groups)[0]
    correct = fuse(logits, weights).argmax(1).cpu() == targets
    return loss, float((probabilities.argmax(1) == targets).float().mean()), weights, correct


def _resume(stage: Stage, model: VideoClassifier, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, log: Log) -> Checkpoint:
    """The stage's checkpoint, loaded into the model, optimiser and schedule (``check_resumable``
    has refused, or removed, one of other options or data)."""
    checkpoint = Checkpoint.load(stage.checkpoint)
    if checkpoint.config != model.config.to_dict() or checkpoint.epochs != stage.epochs:
        raise DatasetError(f"{stage.checkpoint}: was made with another network, labels or number of epochs; "
                           "drop --resume to start afresh")
    model.load_state_dict(checkpoint.model)
    optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.scheduler)
    log(f"resuming from {stage.checkpoint} after epoch {len(checkpoint.history)}")
    return checkpoint


def _identity_difference(then: dict[str, object], now: dict[str, object]) -> str | None:
    """The first option that differs between two ``identity`` records, or the data, in words."""
    for name in sorted(set(then.get("options", {})) | set(now.get("options", {}))):
        old, new = then.get("options", {}).get(name), now.get("options", {}).get(name)
        if old != new:
            return f"with --{name.replace('_', '-')} {old}, not {new}"
    if then.get("data") != now.get("data"):
        return f"from other data ({then.get('data', {}).get('clips')} clips then, {now['data']['clips']} now, or other files)"
    return None


def check_resumable(options: TrainOptions, splits: Splits, log: Log) -> None:
    """Before any decoding: refuse ``--resume`` from a checkpoint of other options or data, or
    with ``--force`` remove it (that stage starts over)."""
    for stage in ("train", "finetune"):
        path = checkpoint_path(options.out, stage)
        if not (options.resume and path.is_file()):
            continue
        difference = _identity_difference(Checkpoint.load(path).identity, run_identity(options, splits))
        if difference is not None and not options.force:
            raise _refused(path, difference)
        if difference is not None:
            log(f"note: {path} was made {difference}; --force: starting over")
            parallel.barrier()  # every rank has read it
            if parallel.is_main():
                path.unlink()
    parallel.barrier()


def _refused(path: Path, difference: str) -> DatasetError:
    return DatasetError(f"{path}: was made {difference}; rerun with the same options and data, or add --force "
                        "to start over")


def fit(model: VideoClassifier, train: CachedClips, val: CachedClips | None, options: TrainOptions, device: torch.device,
        log: Log, stage: Stage, history: Sequence[EpochRecord] = (), best: Best | None = None,
        after_epoch: Callable[[int], None] = lambda step: None) -> tuple[Best, list[EpochRecord]]:
    """One stage: AdamW + cosine decay over ``stage.epochs``, a checkpoint after every epoch
    (unless ``stage.checkpoint`` is None). With ``val``: the fusion weights chosen on it, and
    the best epoch on it where it beats the last significantly (``Stage.keeps_last``; early stop
    only when it beats the latest so); without: the full schedule, and the model as it ends.
    ``history`` and ``best`` carry over from an earlier stage (epochs are numbered on from it),
    so the best epoch is the best of all stages. Under torchrun, each rank trains on its share
    of every epoch's clips and sees the same metrics; rank 0 writes the checkpoints."""
    optimizer = make_optimizer(model, options)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=stage.epochs)
    counts = torch.bincount(train.targets, minlength=len(model.config.labels)).float()
    weight = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(device) if options.class_weights else None
    history, best, done = list(history), best or Best(), 0
    if options.resume and stage.checkpoint is not None and stage.checkpoint.is_file():
        checkpoint = _resume(stage, model, optimizer, scheduler, log)
        history, best, done = checkpoint.history, checkpoint.best, checkpoint.stage_epochs_done
    before = len(history) - done  # epochs of earlier stages
    net = parallel.wrap(Heads(model), device)
    batches = loader(train, EpochSampler(train, options.hflip), options.batch_size, options.workers, device)
    val_batches = None if val is None else eval_loader(val, options.workers, device)
    prefix = "" if stage.name == "train" else f"{stage.name} "
    latest: tuple[tuple[float, ...], Tensor] | None = None  # the last epoch's kept weights and right clips
    stopped = False
    for step in progress(range(done + 1, stage.epochs + 1), desc=stage.name, unit="epoch", initial=done,
                         total=stage.epochs):
        epoch = before + step
        if best.epoch > 0 and epoch - max(best.epoch, before) > stage.patience:
            latest = latest or _validate(model, val_batches, device)[2:]
            if best.epoch <= before or significantly_better(best.correct, latest[1], val.groups):
                log(f"{prefix}early stop: no val improvement for {stage.patience} epochs, and "
                    + ("none beat the earlier stage's model significantly" if best.epoch <= before
                       else f"epoch {best.epoch} beats the latest significantly"))
                stopped = True
                break
        started = time.perf_counter()
        train_loss, train_acc = _train_epoch(model, net, batches, options, epoch, weight, optimizer, device)
        parallel.same_buffers(model)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        val_loss, val_acc, weights, correct = ((math.nan, math.nan, None, None) if val_batches is None
                                               else _validate(model, val_batches, device))
        history.append(EpochRecord(epoch, train_loss, train_acc, val_loss, val_acc, lr,
                                   time.perf_counter() - started, stage.name))
        if correct is not None and best.beaten_by(val_acc, val_loss, correct, val.groups):
            model.stream_weights.copy_(torch.tensor(weights))
            best = best.replaced_by(epoch, val_acc, val_loss, _snapshot(model), correct)
        latest = None if correct is None else (weights, correct)
        after_epoch(step)
        log(f"{prefix}epoch {step}/{stage.epochs}  train loss {train_loss:.3f} acc {train_acc:.3f}"
            + (f"  val loss {val_loss:.3f} acc {val_acc:.3f}" if val is not None else "")
            + f"  {history[-1].seconds:.1f}s" + ("  *best" if best.epoch == epoch else ""))
        if stage.checkpoint is not None and parallel.is_main():
            write_metrics_csv(metrics_csv_path(options.out), history)
            Checkpoint(model.config.to_dict(), stage.identity, stage.epochs, step, model.state_dict(), optimizer.state_dict(),
                       scheduler.state_dict(), history, best).save(stage.checkpoint)
    if val is None:
        best = Best(len(history), state=_snapshot(model))
    elif stage.keeps_last and not stopped and best.epoch != len(history):
        best = _last_unless_beaten(model, best, history, latest or _validate(model, val_batches, device)[2:], val.groups,
                                   log)
    assert best.state is not None, "no epoch ran"
    return best, history


def _snapshot(model: VideoClassifier) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _last_unless_beaten(model: VideoClassifier, best: Best, history: list[EpochRecord],
                        last: tuple[tuple[float, ...], Tensor], groups: Tensor, log: Log) -> Best:
    """The model as the schedule left it (``model``, with ``last``: its weights and right
    validation clips, of ``groups``), unless the ``best`` epoch beats it significantly on validation."""
    weights, correct = last
    if significantly_better(best.correct, correct, groups):
        return best
    log(f"keeping the last epoch, {len(history)}: the best on validation (epoch {best.epoch}) "
        f"did not beat it significantly (paired test over {evidence(groups)}, p ≤ {MAX_P:g})")
    model.stream_weights.copy_(torch.tensor(weights))
    record = history[-1]
    return Best(record.epoch, (record.val_acc, -record.val_loss), _snapshot(model), correct)


def write_metrics_csv(path: Path, history: Sequence[EpochRecord]) -> None:
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(history[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in history)


# --- the stages ---------------------------------------------------------------------------------

def frozen_stage(inputs: Inputs) -> tuple[Best, list[EpochRecord]]:
    """Epochs with Lite0 frozen (its features cached), or the motion-only network."""
    options = inputs.options
    stage = Stage("train", options.epochs, checkpoint_path(options.out), options.patience, inputs.identity())
    return fit(inputs.model, inputs.train(), inputs.val(), options, inputs.device, inputs.log, stage)


def finetune_stage(inputs: Inputs, best: Best, history: list[EpochRecord], resuming: bool
                   ) -> tuple[Best, list[EpochRecord]]:
    """Fine-tune Lite0 from the best frozen epoch; a fine-tuned epoch is kept only if it beats
    the frozen model significantly on validation."""
    model, options, log = inputs.model, inputs.options, inputs.log
    if not resuming and not best.can_be_beaten_significantly(inputs.val_clips.groups):
        log(f"fine-tuning skipped: the frozen-backbone model misses {best.val_misses()} of {len(best.correct)} "
            f"validation clips, too few (or in too few groups) for a fine-tuned one to beat it significantly (p ≤ {MAX_P:g})")
        return best, history
    if best.state is not None:
        model.load_state_dict(best.state)
    model.freeze_backbone(False)
    log(f"fine-tuning the lite0 backbone (all but its stem and first {Lite0Features.fixed_blocks} blocks) "
        f"for {options.finetune_epochs} epochs")
    stage = Stage("finetune", options.finetune_epochs, checkpoint_path(options.out, "finetune"), FINETUNE_PATIENCE,
                  inputs.identity(), keeps_last=False)
    to_beat = None if resuming else best.to_beat_significantly()  # else: in the checkpoint
    best, history = fit(model, inputs.train(), inputs.val(), options, inputs.device, log, stage, history, to_beat)
    if history[best.epoch - 1].stage != "finetune":
        model.freeze_backbone(True)  # its weights are the pretrained ones: keep the file small
        log("fine-tuning did not beat the frozen-backbone model significantly on validation: "
            "keeping the frozen-backbone model")
    return best, history


def cross_validate(inputs: Inputs) -> tuple[Choice, EvalReport]:
    """Choose the epochs and fusion weights by k-fold cross-validation (whole groups per fold)
    over the training clips (their cached inputs): a model per fold trains the full schedule on
    the other folds and scores its held-out clips after every epoch. Returns the choice and the
    out-of-fold report at it. Each finished fold is checkpointed for ``--resume``."""
    model, options, splits, log = inputs.model, inputs.options, inputs.splits, inputs.log
    data, clips = inputs.train(), inputs.train_items
    folds = min(CV_FOLDS, len({group_key(item) for item in clips}))
    clip_fold = torch.tensor(group_folds(clips, folds, options.seed))
    path, scored = checkpoint_path(options.out, "cv"), scored_epochs(options.epochs)
    key = [model.config.to_dict(), inputs.identity(), clip_fold.tolist(), scored]
    done = _load_folds(path, key) if options.resume else {}
    if done:
        log(f"resuming cross-validation from {path} with {len(done)} of {folds} folds done")
    targets = data.targets
    groups = len(data.groups.unique())
    log(f"choosing epochs and fusion weights by {folds}-fold cross-validation over {len(clips)} clips"
        + (f", whole groups per fold ({groups} groups)" if groups < len(clips) else ""))
    for fold in range(folds):
        if fold not in done:
            held = (clip_fold == fold).nonzero().flatten().tolist()
            rest = (clip_fold != fold).nonzero().flatten().tolist()
            done[fold] = _fold_logits(inputs, data.subset(rest), data.subset(held), scored)
            if parallel.is_main():
                with atomic_write(path) as handle:
                    torch.save({"key": key, "folds": done}, handle)
        right = fuse(done[fold][options.epochs], model.stream_weights).argmax(1) == targets[clip_fold == fold]
        log(f"fold {fold + 1}/{folds}: {int(right.sum())}/{len(right)} held-out clips right after the full schedule")
    choice = cross_validated_choice(model.config.heads, _pooled(done, clip_fold), targets,
                                    even_weights(model.config.heads), data.groups)
    for note in choice.notes:
        log(note)
    _, probabilities = fused_scores(choice.logits, torch.tensor(choice.weights), targets)
    report = evaluate_scores(splits.labels, [str(item.path) for item in clips],
                             [splits.labels[t] for t in targets.tolist()], probabilities.numpy())
    return choice, report


def _fold_logits(inputs: Inputs, train: CachedClips, held: CachedClips, scored: list[int]) -> dict[int, list[Tensor]]:
    """A fresh copy of the untrained model fits ``train`` for the full schedule; every head's
    logits on ``held`` after each epoch in ``scored``, by epoch."""
    model, logits, epochs = copy.deepcopy(inputs.model), {}, inputs.options.epochs
    held_batches = eval_loader(held, inputs.options.workers, inputs.device)

    def score(step: int) -> None:
        if step in scored:
            logits[step] = head_logits(model, held_batches, inputs.device)

    fit(model, train, None, inputs.options, inputs.device, lambda line: None, Stage("fold", epochs, None, epochs),
        after_epoch=score)
    return logits


def _pooled(done: dict[int, dict[int, list[Tensor]]], clip_fold: Tensor) -> dict[int, list[Tensor]]:
    """Every clip's out-of-fold logits, in clip order: ``[epoch][head]`` of shape (clips, classes)."""
    pooled = {epoch: [torch.empty(len(clip_fold), head.shape[1]) for head in heads] for epoch, heads in done[0].items()}
    for fold, epochs in done.items():
        for epoch, heads in epochs.items():
            for into, logits in zip(pooled[epoch], heads):
                into[clip_fold == fold] = logits
    return pooled


def _load_folds(path: Path, key: list[object]) -> dict[int, dict[int, list[Tensor]]]:
    """The finished folds of an interrupted cross-validation with the same ``key``, if any."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state["folds"] if state["key"] == key else {}
    except (OSError, RuntimeError, KeyError, EOFError):
        return {}


def final_stage(inputs: Inputs, choice: Choice) -> tuple[Best, list[EpochRecord]]:
    """Every training clip, the cross-validated number of epochs, no early stop."""
    options = inputs.options
    stage = Stage("train", choice.epochs, checkpoint_path(options.out), options.patience, inputs.identity())
    return fit(inputs.model, inputs.train(), None, options, inputs.device, inputs.log, stage)


def _weights_source(model: VideoClassifier, cross_validated: bool) -> str:
    """Where the model's fusion weights came from, for the log."""
    if cross_validated:
        return "cross-validated"
    if torch.allclose(model.stream_weights, torch.tensor(even_weights(model.config.heads))):
        return "even: no other weighting beat them significantly on validation"
    return "chosen on validation"


def summarise(inputs: Inputs, best: Best, history: list[EpochRecord], cv: tuple[Choice, EvalReport] | None
              ) -> tuple[EvalReport, str, dict[str, object]]:
    """The report to print (out-of-fold when choices were cross-validated and there is no
    validation split, else the final model on validation), its title, and the training
    summary stored in the model file."""
    model, splits, options, val = inputs.model, inputs.splits, inputs.options, inputs.val()
    grouped = "" if splits.groups() is not None else "; may share people or scenes with training: no groups"
    if val is not None:
        logits = head_logits(model, eval_loader(val, options.workers, inputs.device), inputs.device)
        _, probabilities = fused_scores(logits, model.stream_weights, val.targets)
        report = evaluate_scores(splits.labels, [str(item.path) for item in inputs.val_items],
                                 [splits.labels[t] for t in val.targets.tolist()], probabilities.numpy())
        title = (f"epoch {best.epoch} of {len(history)} kept: validation split ({report.count} clips{grouped})" if cv is None
                 else f"validation split ({report.count} clips{grouped}; too few to choose on: choices cross-validated)")
    if cv is not None:
        choice, cv_report = cv
        if val is None:
            report, title = cv_report, (f"cross-validated, out of fold ({cv_report.count} clips{grouped}); "
                                        f"the model trained on all of them for {choice.epochs} epochs")
    weights = dict(zip(model.config.head_names, model.stream_weights.tolist()))
    inputs.log("late fusion: head weights " + ", ".join(f"{name} {w:g}" for name, w in weights.items())
               + f" ({_weights_source(model, cv is not None)})")
    record = history[best.epoch - 1]
    summary = {
        "data": str(options.data), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": options.seed, "counts": splits.counts(), "groups": splits.groups(), "skipped": inputs.skipped,
        "chosen_by": "validation" if cv is None else "cross-validation", "best_epoch": best.epoch,
        "best_stage": record.stage, "epochs_run": len(history),
        "best_val_acc": None if val is None else report.top1, "top1": report.top1_line(), "top1_on": title,
        "mean_class_accuracy": report.mean_class_accuracy,
        "per_class_recall": {label: m.recall for label, m in report.per_class.items()},
        "options": {k: str(getattr(v, "value", v)) for k, v in asdict(options).items()},
        "stream_weights": weights,
    }
    return report, title, summary


def train(options: TrainOptions, log: Log) -> TrainResult:
    """The whole ``vidclf train`` job."""
    if options.out.exists() and not options.force:
        raise ModelFileError(f"{options.out}: already exists; pass --force to overwrite it")
    if options.resume and not checkpoint_path(options.out).is_file():
        log(f"note: no checkpoint at {checkpoint_path(options.out)}; starting from scratch")
    if parallel.is_main():
        for path in (options.out, metrics_csv_path(options.out), *(checkpoint_path(options.out, s) for s in STAGES)):
            remove_leftovers(path)
    torch.manual_seed(options.seed)
    with parallel.session(resolve_device(options.device)) as device:
        return _train(options, device, log)


def _train(options: TrainOptions, device: torch.device, log: Log) -> TrainResult:
    splits = plan_splits(options.data, options.val_split, options.seed, options.group)
    splits.log(log)
    check_resumable(options, splits, log)
    model = VideoClassifier(options.model_config(splits.labels)).to(device)
    inputs = prepare_inputs(model, splits, options, device, log)
    if too_few_to_decide(splits.val, splits.labels):
        cv = cross_validate(inputs)
        best, history = final_stage(inputs, cv[0])
        model.load_state_dict(best.state)
        model.stream_weights.copy_(torch.tensor(cv[0].weights))
        if options.finetune_epochs:
            log("fine-tuning skipped: no validation split big enough to judge it on")
    else:
        cv = None
        resuming_finetune = options.resume and options.finetune_epochs > 0 and checkpoint_path(options.out, "finetune").is_file()
        best, history = (Best(), []) if resuming_finetune else frozen_stage(inputs)
        if options.finetune_epochs:
            best, history = finetune_stage(inputs, best, history, resuming_finetune)
        model.load_state_dict(best.state)
    report, title, summary = summarise(inputs, best, history, cv)
    if parallel.is_main():
        save_model(model, options.out, summary, force=options.force)
        for stage in STAGES:
            checkpoint_path(options.out, stage).unlink(missing_ok=True)
    parallel.barrier()
    return TrainResult(report, title, history, inputs.skipped, options.out)
