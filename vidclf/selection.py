"""Model selection: the late-fusion weights and the number of epochs, chosen on held-out clips.

The held-out clips are the validation split when it is big enough to decide on (at least
``VAL_ENOUGH`` clips in its smallest class); otherwise k-fold cross-validation by group over the
training clips supplies them (``cross_validated_choice``): each clip is scored by a model that
never saw its group (person, scene). Why the threshold and the significance rule: docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidclf.metrics import sign_flip_p
from vidclf.model import fuse

MAX_P = 0.05  # a choice replaces the default only with a win this significant (``significantly_better``)
VAL_ENOUGH = 5  # validation clips in the smallest class below which decisions are cross-validated
CV_FOLDS = 2
# Cross-validation scores its held-out clips after every 5th epoch and the last: the epochs it
# may choose. Scoring every epoch took 17% of the cross-validation's time (400 clips).
CV_SCORE_EVERY = 5


def significantly_better(correct: Tensor, baseline: Tensor, groups: Tensor | None = None) -> bool:
    """``correct`` beats ``baseline`` (per-clip right/wrong on the same clips): more clips right,
    with a one-sided p-value of at most ``MAX_P`` by the sign-flip test of each group's net gain
    (``groups[i]``: clip i's group number; by default each clip is its own, and the test is the
    sign test): the clips of one person or video are not independent evidence."""
    gains = by_group(correct.long() - baseline.long(), groups)
    return int(gains.sum()) > 0 and sign_flip_p(gains.tolist()) <= MAX_P


def evidence(groups: Tensor) -> str:
    """What ``significantly_better`` counts, in words: "7 groups", or "80 clips" where each is its own."""
    count = len(groups.unique())
    return f"{count} groups" if count < len(groups) else f"{count} clips"


def by_group(values: Tensor, groups: Tensor | None) -> Tensor:
    """Per-clip ``values`` summed over each group (as they are where ``groups`` is None)."""
    if groups is None:
        return values
    summed = torch.zeros(int(groups.max()) + 1, dtype=values.dtype, device=values.device)
    return summed.index_add_(0, groups.to(values.device), values)


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


def choose_stream_weights(heads: list[tuple[str, str]], logits: list[Tensor], targets: Tensor) -> tuple[float, ...]:
    """Weigh the streams by validation accuracy (then loss), given their heads' validation
    logits: a stream that carries nothing for a task is turned down.

    A stream with an LSTM and a mean head splits its weight evenly between them unless the LSTM
    heads alone, or the mean heads alone, are strictly more accurate: at equal accuracy the loss
    would pick the more confident LSTM heads, which generalise worse where order does not matter."""
    targets = targets.to(logits[0].device)
    streams = list(dict.fromkeys(name for name, _ in heads))

    def best_weights(only: str | None) -> tuple[tuple[float, float], tuple[float, ...]]:
        scored = []
        for split in weight_grid(len(streams)):
            weights = head_weights(heads, dict(zip(streams, split)), only)
            fused = fuse(logits, weights)
            scored.append((((fused.argmax(1) == targets).float().mean().item(),
                            -nn.functional.cross_entropy(fused, targets).item()), weights))
        return max(scored, key=lambda s: s[0])  # max keeps the first of equals: nearest to equal

    chosen = best_weights(None)
    for only in ("lstm", "mean") if len(heads) > len(streams) else ():
        candidate = best_weights(only)
        if candidate[0][0] > chosen[0][0]:  # accuracy alone: see the docstring
            chosen = candidate
    return chosen[1]


def weights_beating(default: tuple[float, ...], heads: list[tuple[str, str]], logits: list[Tensor], targets: Tensor,
                    groups: Tensor | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The fusion weights to keep: the best weighting found (``choose_stream_weights``) where it
    beats the ``default`` significantly on these clips (of ``groups``), else the default; and
    that best weighting. Among 35 weightings of 4 streams one often wins a few clips by chance."""
    def right(weights: tuple[float, ...]) -> Tensor:
        return fuse(logits, weights).argmax(1) == targets.to(logits[0].device)

    candidate = choose_stream_weights(heads, logits, targets)
    return (candidate if significantly_better(right(candidate), right(default), groups) else default), candidate


def even_weights(heads: list[tuple[str, str]]) -> tuple[float, ...]:
    """The default fusion: every head the same weight."""
    return tuple(1.0 / len(heads) for _ in heads)


@dataclass
class Choice:
    """What cross-validation chose, and the out-of-fold evidence for it."""

    epochs: int
    weights: tuple[float, ...]
    logits: list[Tensor]  # every head's out-of-fold logits after ``epochs``
    notes: list[str]  # one line per decision, for the log


def scored_epochs(epochs: int) -> list[int]:
    """The epochs after which cross-validation scores its held-out clips, of a schedule of ``epochs``."""
    return sorted({*range(CV_SCORE_EVERY, epochs + 1, CV_SCORE_EVERY), epochs})


def cross_validated_choice(heads: list[tuple[str, str]], epoch_logits: dict[int, list[Tensor]], targets: Tensor,
                           default: tuple[float, ...], groups: Tensor | None = None) -> Choice:
    """The number of epochs and the fusion weights from out-of-fold logits (``epoch_logits[e]``:
    every head's logits after epoch e, for the ``scored_epochs``; the last is the full schedule).
    The full schedule and the ``default`` weights stand unless another choice beats them
    significantly on the out-of-fold clips (of ``groups``)."""
    def right(logits: list[Tensor], weights: tuple[float, ...]) -> Tensor:
        return fuse(logits, weights).argmax(1) == targets

    correct = {epoch: right(logits, default) for epoch, logits in epoch_logits.items()}
    full, n = max(epoch_logits), len(targets)
    groups = torch.arange(n) if groups is None else groups
    best = max(correct, key=lambda e: (float(correct[e].float().mean()), e))  # ties: the later epoch
    epochs = best if significantly_better(correct[best], correct[full], groups) else full
    notes = [f"epochs: {epochs} of {full}: out of fold, {int(correct[full].sum())}/{n} right after all {full} "
             f"and {int(correct[best].sum())}/{n} at best (epoch {best}), even weights"]
    logits = epoch_logits[epochs]
    weights, candidate = weights_beating(default, heads, logits, targets, groups)
    notes.append(f"fusion weights: {'even' if weights == default else 'chosen'}: out of fold, "
                 f"{int(correct[epochs].sum())}/{n} right with even weights and "
                 f"{int(right(logits, candidate).sum())}/{n} with the best weighting found")
    notes = [note + f" (a choice must win a paired test over {evidence(groups)}, p ≤ {MAX_P:g})" for note in notes]
    return Choice(epochs, weights, logits, notes)
