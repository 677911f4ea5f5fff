"""vidclf.metrics: numbers checked against values worked out by hand, plus the eval tables."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from rich.console import Console

from vidclf.metrics import ClassMetrics, EvalReport, evaluate_scores, sign_flip_p
from vidclf.output import confusion_table, eval_summary_table, misclassified_table, per_class_table

LABELS = ["cat", "dog", "bird", "fish"]

# Hand-made set: 7 known samples + 1 unknown. Columns: cat, dog, bird, fish.
#
#   video  true   scores                     predicted (top-1)   top-2           top-2 hit
#   v1     cat    .70 .20 .05 .05            cat  (right)        cat, dog        yes
#   v2     cat    .60 .30 .10 .00            cat  (right)        cat, dog        yes
#   v3     cat    .30 .50 .10 .10            dog  (wrong, .50)   dog, cat        yes
#   v4     dog    .10 .80 .05 .05            dog  (right)        dog, cat        yes
#   v5     dog    .20 .10 .00 .70            fish (wrong, .70)   fish, cat       no
#   v6     bird   .10 .20 .30 .40            fish (wrong, .40)   fish, bird      yes
#   v7     bird   .18 .46 .18 .18            dog  (wrong, .46)   dog, cat (tie:  no
#                                                                 cat index 0 beats bird 2, fish 3)
#   v8     horse  (not a model label -> unknown, excluded from everything else)
#
# top-1 = 3/7 (v1, v2, v4); top-2 = 5/7 (all but v5, v7).
#
# Confusion (rows true, columns predicted: cat dog bird fish):
#   cat  [2, 1, 0, 0]
#   dog  [0, 1, 0, 1]
#   bird [0, 1, 0, 1]
#   fish [0, 0, 0, 0]
#
# Per class (precision = hits / column sum, recall = hits / row sum):
#   cat : P = 2/2 = 1.0,  R = 2/3,        F1 = 2*1*(2/3) / (1 + 2/3) = (4/3)/(5/3) = 0.8,  support 3
#   dog : P = 1/3,        R = 1/2,        F1 = 2*(1/6) / (5/6) = 0.4,                      support 2
#   bird: P = 0.0 (never predicted),      R = 0/2 = 0.0, F1 = 0.0 (P + R = 0),            support 2
#   fish: P = 0/2 = 0.0,  R = undefined (no samples) -> None, F1 None,                    support 0
#
# Mean class accuracy = mean of recall over classes with samples (cat, dog, bird)
#   = (2/3 + 1/2 + 0) / 3 = (7/6) / 3 = 7/18 ~ 0.3889  (fish left out, not counted as 0).
#
# Misclassified, most confident first: v5 (.70) dog->fish, v3 (.50) cat->dog,
#   v7 (.46) bird->dog, v6 (.40) bird->fish.
VIDEOS = ["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8"]
TRUE = ["cat", "cat", "cat", "dog", "dog", "bird", "bird", "horse"]
SCORES = np.array([
    [0.70, 0.20, 0.05, 0.05],
    [0.60, 0.30, 0.10, 0.00],
    [0.30, 0.50, 0.10, 0.10],
    [0.10, 0.80, 0.05, 0.05],
    [0.20, 0.10, 0.00, 0.70],
    [0.10, 0.20, 0.30, 0.40],
    [0.18, 0.46, 0.18, 0.18],
    [0.25, 0.25, 0.25, 0.25],
])


@pytest.fixture
def report() -> EvalReport:
    return evaluate_scores(LABELS, VIDEOS, TRUE, SCORES, k=2)


def test_accuracy(report: EvalReport) -> None:
    assert report.count == 7
    assert report.k == 2
    assert report.top1 == pytest.approx(3 / 7)
    assert report.topk == pytest.approx(5 / 7)
    assert report.mean_class_accuracy == pytest.approx(7 / 18)


def test_per_class(report: EvalReport) -> None:
    assert list(report.per_class) == LABELS
    cat, dog, bird, fish = (report.per_class[label] for label in LABELS)
    assert cat == ClassMetrics(pytest.approx(1.0), pytest.approx(2 / 3), pytest.approx(0.8), 3)
    assert dog == ClassMetrics(pytest.approx(1 / 3), pytest.approx(0.5), pytest.approx(0.4), 2)
    assert bird == ClassMetrics(0.0, 0.0, 0.0, 2)       # never predicted: precision 0.0
    assert fish == ClassMetrics(0.0, None, None, 0)     # no samples: recall/F1 undefined


def test_confusion(report: EvalReport) -> None:
    assert report.labels == LABELS
    assert report.confusion == [[2, 1, 0, 0],
                                [0, 1, 0, 1],
                                [0, 1, 0, 1],
                                [0, 0, 0, 0]]


def test_misclassified_most_confident_first(report: EvalReport) -> None:
    assert report.misclassified == [
        {"video": "v5", "true": "dog", "predicted": "fish", "score": pytest.approx(0.70)},
        {"video": "v3", "true": "cat", "predicted": "dog", "score": pytest.approx(0.50)},
        {"video": "v7", "true": "bird", "predicted": "dog", "score": pytest.approx(0.46)},
        {"video": "v6", "true": "bird", "predicted": "fish", "score": pytest.approx(0.40)},
    ]


def test_unknown_reported_not_dropped(report: EvalReport) -> None:
    assert report.unknown == [{"video": "v8", "label": "horse"}]


def test_default_k_and_topk_of_all_classes() -> None:
    report = evaluate_scores(LABELS, VIDEOS, TRUE, SCORES)
    assert report.k == 4                     # min(5, 4 classes)
    assert report.topk == 1.0                # every true label is somewhere in all 4


def test_to_dict_is_strict_json(report: EvalReport) -> None:
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["top1"] == pytest.approx(3 / 7)
    assert data["topk"] == pytest.approx(5 / 7)
    assert data["k"] == 2
    assert data["count"] == 7
    assert data["mean_class_accuracy"] == pytest.approx(7 / 18)
    assert data["per_class"]["fish"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
    assert data["per_class"]["dog"]["support"] == 2
    assert data["confusion"] == {"labels": LABELS, "matrix": [[2, 1, 0, 0], [0, 1, 0, 1],
                                                              [0, 1, 0, 1], [0, 0, 0, 0]]}
    assert [m["video"] for m in data["misclassified"]] == ["v5", "v3", "v7", "v6"]
    assert data["unknown"] == [{"video": "v8", "label": "horse"}]


def test_perfect_predictions() -> None:
    labels = ["a", "b", "c"]
    scores = np.eye(3)[[0, 1, 2, 1]] * 0.9 + 0.1 / 3
    report = evaluate_scores(labels, ["w", "x", "y", "z"], ["a", "b", "c", "b"], scores, k=1)
    assert report.top1 == 1.0
    assert report.topk == 1.0
    assert report.mean_class_accuracy == 1.0
    assert report.per_class["b"] == ClassMetrics(1.0, 1.0, 1.0, 2)
    assert report.confusion == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert report.misclassified == []
    assert report.unknown == []


def test_top1_tie_goes_to_lower_index() -> None:
    # Equal scores: "a" (index 0) wins, so a true "b" counts as a miss, not a coin flip.
    report = evaluate_scores(["a", "b"], ["v"], ["b"], np.array([[0.5, 0.5]]), k=1)
    assert report.top1 == 0.0
    assert report.misclassified == [{"video": "v", "true": "b", "predicted": "a", "score": 0.5}]


def test_only_unknown_labels_gives_nulls_not_nan() -> None:
    report = evaluate_scores(["a", "b"], ["v"], ["zebra"], np.array([[0.3, 0.7]]))
    assert report.count == 0
    assert report.top1 is None and report.mean_class_accuracy is None
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["top1"] is None
    assert data["unknown"] == [{"video": "v", "label": "zebra"}]


@pytest.mark.parametrize("labels, videos, true, scores", [
    (LABELS, VIDEOS, TRUE, SCORES[:, :3]),              # too few columns
    (LABELS, VIDEOS, TRUE, SCORES[:7]),                 # too few rows
    (LABELS, VIDEOS, TRUE[:7], SCORES),                 # videos vs true labels
    (LABELS, VIDEOS, TRUE, SCORES.ravel()),             # not 2-D
    (LABELS, VIDEOS[:1], TRUE[:1], SCORES[:1, None]),   # 3-D
])
def test_shape_mismatch(labels, videos, true, scores) -> None:
    with pytest.raises(ValueError):
        evaluate_scores(labels, videos, true, scores)


@pytest.mark.parametrize("k", [0, 5])
def test_k_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match="k must be"):
        evaluate_scores(LABELS, VIDEOS, TRUE, SCORES, k=k)


def test_nan_scores_rejected() -> None:
    scores = SCORES.copy()
    scores[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(LABELS, VIDEOS, TRUE, scores)


def _render(table) -> str:
    stream = io.StringIO()
    Console(file=stream, width=150).print(table)
    return stream.getvalue()


def test_tables_render(report: EvalReport) -> None:
    summary = _render(eval_summary_table(report))
    assert "0.429" in summary          # top-1 3/7
    assert "top-2" in summary and "0.714" in summary   # top-2 5/7
    assert "0.389" in summary          # mean class accuracy 7/18
    assert "7" in summary and "unknown" in summary

    per_class = _render(per_class_table(report))
    for label in LABELS:
        assert label in per_class
    assert "0.667" in per_class        # cat recall 2/3
    assert "0.333" in per_class        # dog precision 1/3
    assert "0.800" in per_class        # cat F1
    fish_row = next(line for line in per_class.splitlines() if "fish" in line)
    assert fish_row.count("-") >= 2    # undefined recall and F1

    confusion = _render(confusion_table(report))
    for label in LABELS:
        assert label in confusion
    cat_row = next(line for line in confusion.splitlines() if "cat" in line and "2" in line)
    assert [c for c in cat_row if c.isdigit()] == ["2", "1", "0", "0"]

    mistakes = _render(misclassified_table(report))
    assert mistakes.index("v5") < mistakes.index("v3") < mistakes.index("v7") < mistakes.index("v6")
    assert "0.700" in mistakes and "fish" in mistakes

    limited = _render(misclassified_table(report, limit=2))
    assert "v5" in limited and "v3" in limited and "v6" not in limited
    assert "2 more" in limited


def test_sign_flip_p_is_the_sign_test_on_clips_and_counts_a_group_once() -> None:
    assert sign_flip_p([1] * 5) == pytest.approx(1 / 32)  # five coin flips all one way
    assert sign_flip_p([1] * 4) == pytest.approx(1 / 16)  # four are not enough at p <= 0.05
    assert sign_flip_p([1, 1, 0, 0]) == pytest.approx(1 / 4)  # ties carry no evidence
    assert sign_flip_p([1] * 6 + [-1]) == pytest.approx(8 / 128)  # 6 or 7 of 7 go the challenger's way
    assert sign_flip_p([-1] * 3) == 1.0 and sign_flip_p([]) == 1.0
    assert sign_flip_p([1] * 26) < 1e-7 and 0 < sign_flip_p([1] * 1100 + [-1] * 1000) < 0.05
    # groups: 40 clips won in one video are one piece of evidence, however many clips
    assert sign_flip_p([40, 1, 1, 1, 1, -1, -1]) == pytest.approx(11 / 64)  # +40 and 4 or more of 6 ±1
    assert sign_flip_p([8, 1, 1, -1]) == pytest.approx(4 / 16)
    rng = np.random.default_rng(0)  # exact: every sign pattern counted
    for _ in range(20):
        gains = rng.integers(-4, 6, size=int(rng.integers(1, 9))).tolist()
        flips = [sum(sign * abs(g) for sign, g in zip(signs, gains))
                 for signs in itertools.product((1, -1), repeat=len(gains))]
        assert sign_flip_p(gains) == pytest.approx(sum(f >= sum(gains) for f in flips) / len(flips)), gains


def test_wilson_interval_is_honest_at_small_counts() -> None:
    from vidclf.metrics import wilson_interval

    assert wilson_interval(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)  # 3 of 3 says little
    assert wilson_interval(0, 3) == pytest.approx((0.0, 0.5615), abs=1e-4)
    assert wilson_interval(20, 24) == pytest.approx((0.6415, 0.9332), abs=1e-4)
    low, high = wilson_interval(300, 400)
    assert low < 0.75 < high and high - low < 0.09  # narrows with more clips


def test_reports_give_the_count_and_interval_behind_top1() -> None:
    report = evaluate_scores(["a", "b"], ["v1", "v2", "v3"], ["a", "b", "a"],
                             np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    assert report.top1_line() == "3/3 = 1.00 [0.44, 1.00]"
    data = report.to_dict()
    assert data["top1_correct"] == 3 and data["top1_ci95"] == [0.4385, 1.0]
    console = Console(file=io.StringIO(), width=120)
    console.print(eval_summary_table(report))
    assert "3/3 = 1.00 [0.44, 1.00]" in console.file.getvalue()
