"""Classify a list of videos with Ray Data, on one machine or a Ray cluster.

    pip install 'vidclf[ray]'
    python examples/ray_predict.py paths.txt results/ [--model mine.vidclf] [--actors 4]

``paths.txt`` holds one video path (or URL) per line, readable from every Ray node (shared
storage). Each actor loads the model once and runs vidclf's prediction engine on the batches
it is given; ``results/`` receives JSON-lines files with vidclf's records (one per video;
failures carry ``error`` and null labels), e.g. ``cat results/*.json | jq -r .top``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

# The fields of vidclf's records; a failed video has ``error`` set and null labels.
FIELDS = ("video", "top", "labels", "frames_used", "duration_s", "model", "error")


class Classify:
    """A Ray Data callable class: one ``vidclf.Predictor`` per actor, records out."""

    def __init__(self, model: str | None, top_k: int) -> None:
        from vidclf import DEFAULT_MODEL, Predictor

        self.predictor = Predictor(Path(model) if model else DEFAULT_MODEL)
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        records = [prediction.to_dict(self.top_k)
                   for prediction in self.predictor.predict_all([str(path) for path in batch["text"]])]
        return {field: [record.get(field) for record in records] for field in FIELDS}


def classify(paths_file: str, out: str, model: str | None = None, actors: int = 2, top_k: int = 5) -> None:
    import ray

    records = ray.data.read_text(paths_file).map_batches(
        Classify, fn_constructor_kwargs={"model": model, "top_k": top_k}, batch_size=16, concurrency=actors)
    records.write_json(out)  # one JSON object per line and video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths_file")
    parser.add_argument("out")
    parser.add_argument("--model")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    classify(args.paths_file, args.out, args.model, args.actors, args.top_k)


if __name__ == "__main__":
    main()
