"""``vidclf eval``: score a labelled folder with a model and measure how good it is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vidclf.data import LabelledVideo, discover
from vidclf.metrics import EvalReport, evaluate_scores
from vidclf.predict import Predictor
from vidclf.video import VideoError


def eval_items(data: Path) -> tuple[list[LabelledVideo], str]:
    """The clips to evaluate and which part of DATA they are: ``test/`` if present, else all."""
    found = discover(data)
    if found.get("test"):
        return found["test"], "test"
    return [item for items in found.values() for item in items], "all"


def evaluate_folder(predictor: Predictor, items: Sequence[LabelledVideo], clips: int = 1, k: int | None = None,
                    workers: int = 0,
                    on_video: Callable[[LabelledVideo, str | None], None] = lambda item, error: None
                    ) -> tuple[EvalReport, list[str]]:
    """Predict every clip (on the prediction engine: ``workers`` decoding processes, batched
    network) and compare with its folder label.

    Returns the report and one line per clip that failed to decode (left out of the metrics;
    the others still count). ``on_video`` is called after each clip (progress, errors).
    """
    videos, truths, scores, failures = [], [], [], []
    for item, prediction in zip(items, predictor.predict_all([item.path for item in items], clips, workers)):
        if prediction.error is not None:
            failures.append(f"{prediction.video}: {prediction.error}")
            on_video(item, failures[-1])
            continue
        videos.append(str(item.path))
        truths.append(item.label)
        ranked = dict(prediction.labels)
        scores.append([ranked[label] for label in predictor.labels])
        on_video(item, None)
    if not scores:
        raise VideoError(items[0].path if items else "DATA", "no clip could be decoded; nothing to evaluate")
    return evaluate_scores(predictor.labels, videos, truths, np.array(scores), k), failures
