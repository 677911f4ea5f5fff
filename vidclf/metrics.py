"""Classification metrics for ``vidclf eval``: accuracy, per-class scores, confusion matrix.

Numpy only, so that evaluation can be tested (and reused) without a model or videos: the
caller scores the videos and hands in one probability row per video.

Conventions (same as scikit-learn with ``zero_division=0`` where there is a choice):

* precision of a class that was never predicted is 0.0, not undefined;
* recall of a class with no samples (support 0) is undefined (``None``), and such classes
  are left out of the mean class accuracy rather than counted as 0 or 1;
* F1 is 0.0 when precision + recall is 0, and ``None`` when recall is undefined;
* samples whose true label is not one of the model's labels are listed in ``unknown`` and
  excluded from every other number (a model cannot be right about a class it doesn't know).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassMetrics:
    """One class's scores; ``recall`` and ``f1`` are ``None`` when the class has no samples."""

    precision: float
    recall: float | None
    f1: float | None
    support: int

    def to_dict(self) -> dict[str, object]:
        return {"precision": _json_float(self.precision), "recall": _json_float(self.recall),
                "f1": _json_float(self.f1), "support": self.support}


@dataclass
class EvalReport:
    """Everything ``vidclf eval`` reports about one model on one labelled set of videos.

    ``top1``/``topk`` are ``None`` only when no sample was scored (``count == 0``), and
    ``mean_class_accuracy`` is ``None`` when no class has samples.
    """

    labels: list[str]
    k: int
    top1: float | None
    topk: float | None
    mean_class_accuracy: float | None
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    misclassified: list[dict] = field(default_factory=list)
    unknown: list[dict] = field(default_factory=list)
    count: int = 0

    @property
    def top1_correct(self) -> int:
        return round((self.top1 or 0.0) * self.count)

    @property
    def top1_interval(self) -> tuple[float, float] | None:
        """The 95% Wilson interval of top-1 accuracy: how sure a score on ``count`` clips is."""
        return wilson_interval(self.top1_correct, self.count) if self.count else None

    def top1_line(self) -> str:
        """E.g. "3/3 = 1.00 [0.44, 1.00]": the count an accuracy rests on and its 95% interval."""
        if not self.count:
            return "-"
        low, high = self.top1_interval
        return f"{self.top1_correct}/{self.count} = {self.top1:.2f} [{low:.2f}, {high:.2f}]"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: plain Python numbers, undefined values as ``None`` (null), never NaN."""
        return {
            "count": self.count,
            "k": self.k,
            "top1": _json_float(self.top1),
            "top1_correct": self.top1_correct,
            "top1_ci95": None if self.top1_interval is None else [round(x, 4) for x in self.top1_interval],
            "topk": _json_float(self.topk),
            "mean_class_accuracy": _json_float(self.mean_class_accuracy),
            "per_class": {label: m.to_dict() for label, m in self.per_class.items()},
            "confusion": {"labels": list(self.labels),
                          "matrix": [[int(n) for n in row] for row in self.confusion]},
            "misclassified": [dict(item, score=_json_float(item["score"])) for item in self.misclassified],
            "unknown": [dict(item) for item in self.unknown],
        }


def evaluate_scores(labels: Sequence[str], videos: Sequence[str], true_labels: Sequence[str],
                    scores: np.ndarray, k: int | None = None) -> EvalReport:
    """Metrics for ``scores`` (N, C): row i holds the class probabilities of ``videos[i]``,
    columns in ``labels`` order; ``true_labels[i]`` is that video's correct label.

    ``k`` defaults to ``min(5, C)``. Ranking is stable: equal scores rank the lower class
    index first, for top-1 as well as top-k, so results don't depend on sort internals.
    """
    labels = list(labels)
    scores = np.asarray(scores, dtype=np.float64)
    _validate(labels, videos, true_labels, scores)
    k = min(5, len(labels)) if k is None else k
    if not 1 <= k <= len(labels):
        raise ValueError(f"k must be between 1 and the number of classes ({len(labels)}), got {k}")

    index = {label: i for i, label in enumerate(labels)}
    known = [i for i, label in enumerate(true_labels) if label in index]
    unknown = [{"video": str(videos[i]), "label": str(true_labels[i])}
               for i in range(len(videos)) if true_labels[i] not in index]

    known_scores = scores[known]
    true_idx = np.array([index[true_labels[i]] for i in known], dtype=np.int64)
    ranked = _rank(known_scores)
    pred_idx = ranked[:, 0]
    confusion = _confusion_matrix(true_idx, pred_idx, len(labels))
    per_class = _per_class(labels, confusion)
    count = len(known)

    return EvalReport(
        labels=labels,
        k=k,
        top1=_fraction(int((pred_idx == true_idx).sum()), count),
        topk=_fraction(int((ranked[:, :k] == true_idx[:, None]).any(axis=1).sum()), count),
        mean_class_accuracy=_mean_recall(per_class),
        per_class=per_class,
        confusion=confusion.tolist(),
        misclassified=_misclassified(labels, [str(videos[i]) for i in known], true_idx, pred_idx,
                                     known_scores),
        unknown=unknown,
        count=count,
    )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% at z = 1.96): unlike the normal
    approximation it stays inside [0, 1] and is honest at small n (3/3 → [0.44, 1.00])."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_flip_p(gains: Sequence[int]) -> float:
    """One-sided exact randomization (sign-flip) test for two classifiers scored on the same
    clips, in groups: ``gains[g]`` is group g's net gain of the challenger (its clips only the
    challenger gets right, less those only the incumbent does). The chance that random signs on
    the gains sum to the observed total or more, if both were equally good (each group's gain
    as likely a loss). With each clip its own group (gains of ±1) this is the exact sign test,
    McNemar's exact test."""
    magnitudes = Counter(abs(int(g)) for g in gains if g)
    chance = np.ones(1)  # chance[i]: P(sum of the signed gains so far = i - their total)
    for size, count in sorted(magnitudes.items()):
        kernel = np.zeros(2 * size * count + 1)
        kernel[:: 2 * size] = [math.exp(math.lgamma(count + 1) - math.lgamma(k + 1) - math.lgamma(count - k + 1)
                                        - count * math.log(2)) for k in range(count + 1)]
        chance = np.convolve(chance, kernel)
    total = sum(size * count for size, count in magnitudes.items())
    return min(1.0, float(chance[sum(int(g) for g in gains) + total :].sum()))


def _validate(labels: list[str], videos: Sequence[str], true_labels: Sequence[str],
              scores: np.ndarray) -> None:
    if not labels:
        raise ValueError("labels must not be empty")
    if len(set(labels)) != len(labels):
        # Duplicates would make a true label map to two columns.
        raise ValueError("labels must be unique")
    if len(videos) != len(true_labels):
        raise ValueError(f"{len(videos)} videos but {len(true_labels)} true labels")
    if scores.ndim != 2 or scores.shape != (len(videos), len(labels)):
        raise ValueError(f"scores must have shape ({len(videos)}, {len(labels)}) "
                         f"(videos, labels), got {scores.shape}")
    if not np.isfinite(scores).all():
        # NaN compares false with everything, which would make the ranking meaningless.
        raise ValueError("scores contain NaN or infinite values")


def _rank(scores: np.ndarray) -> np.ndarray:
    """Class indices per row, best first; a stable sort of the negated scores keeps ties in
    index order (plain argsort's default quicksort does not promise that)."""
    return np.argsort(-scores, axis=1, kind="stable")


def _confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (true_idx, pred_idx), 1)  # add.at, unlike +=, counts repeated pairs
    return matrix


def _per_class(labels: list[str], confusion: np.ndarray) -> dict[str, ClassMetrics]:
    hits = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    result: dict[str, ClassMetrics] = {}
    for i, label in enumerate(labels):
        # Never predicted: 0.0 rather than undefined (scikit-learn's zero_division=0).
        precision = float(hits[i] / predicted[i]) if predicted[i] else 0.0
        # No samples: recall is genuinely unknown, so it stays None.
        recall = _fraction(int(hits[i]), int(support[i]))
        result[label] = ClassMetrics(precision, recall, _f1(precision, recall), int(support[i]))
    return result


def _f1(precision: float, recall: float | None) -> float | None:
    if recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _mean_recall(per_class: dict[str, ClassMetrics]) -> float | None:
    """Mean class accuracy over classes that have samples; absent classes would otherwise
    count as 0 (or 1) and move the number for reasons unrelated to the model."""
    recalls = [m.recall for m in per_class.values() if m.recall is not None]
    return sum(recalls) / len(recalls) if recalls else None


def _misclassified(labels: list[str], videos: list[str], true_idx: np.ndarray,
                   pred_idx: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Wrong predictions, most confident first (those are the ones worth looking at);
    equal scores keep input order because ``sorted`` is stable."""
    wrong = [{"video": videos[i], "true": labels[true_idx[i]], "predicted": labels[pred_idx[i]],
              "score": float(scores[i, pred_idx[i]])}
             for i in range(len(videos)) if true_idx[i] != pred_idx[i]]
    return sorted(wrong, key=lambda item: -item["score"])


def _fraction(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _json_float(value: float | None) -> float | None:
    """Python float, or None for undefined / non-finite values (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
