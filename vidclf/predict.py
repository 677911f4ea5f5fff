"""Prediction: a model file and videos in, ranked labels out (one record per video)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidclf.data import SamplingSpec, clip_inputs
from vidclf.modelfile import LoadedModel, load_model
from vidclf.video import VideoError, find_videos, sample_frames

# Where the shipped default model lives: inside the package (a wheel installs it), which in a
# clone is a link to models/default.vidclf.
DEFAULT_MODEL = Path(__file__).parent / "default.vidclf"


@dataclass
class Prediction:
    """One video's result; ``error`` is set instead of labels when the video failed."""

    video: str
    labels: list[tuple[str, float]] = field(default_factory=list)
    frames_used: int = 0
    duration_s: float | None = None
    model: str = ""
    warnings: tuple[str, ...] = ()
    error: str | None = None

    @property
    def top(self) -> str | None:
        return self.labels[0][0] if self.labels else None

    def to_dict(self, top_k: int | None = None) -> dict[str, object]:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        ranked = self.labels[:top_k] if top_k else self.labels
        return {"video": self.video, "top": self.top,
                "labels": [{"label": label, "score": round(score, 6)} for label, score in ranked],
                "frames_used": self.frames_used, "duration_s": self.duration_s, "model": self.model}


def expand_inputs(inputs: Iterable[str], stdin: Iterable[str] = sys.stdin) -> Iterator[Path]:
    """Files as given, folders searched recursively for videos, ``-`` = one path per stdin line."""
    for item in inputs:
        if item == "-":
            yield from (Path(line.rstrip("\n")) for line in stdin if line.strip())
            continue
        path = Path(item)
        if path.is_dir():
            yield from find_videos(path)
        else:
            yield path  # missing or bad files fail later with their own message


class Predictor:
    """Loads a model once and classifies videos one by one."""

    def __init__(self, model_path: Path, device: str | torch.device = "cpu") -> None:
        self.loaded: LoadedModel = load_model(model_path, device)
        self.device = torch.device(device)
        config = self.loaded.model.config
        self.labels = list(config.labels)
        self.spec = SamplingSpec(config.frames, config.size, config.flow_size if config.uses_flow else None)

    def scores(self, path: Path) -> tuple[np.ndarray, int, float | None, tuple[str, ...]]:
        """Class probabilities (summing to 1) for one video, plus frames used and duration."""
        clip = sample_frames(path, self.spec.frames, self.spec.size, "uniform")
        inputs = clip_inputs(clip, self.spec)
        model = self.loaded.model
        to_batch = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))[None].to(self.device)  # noqa: E731
        flow = to_batch(inputs.flow.astype(np.float32) if inputs.flow is not None else None)
        rgb = to_batch(inputs.rgb) if model.backbone is not None else None
        with torch.inference_mode():
            logits = model(torch.tensor([inputs.length]), rgb=rgb, flow=flow)
        probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        return probabilities, inputs.length, clip.duration_s, clip.warnings

    def predict(self, path: Path) -> Prediction:
        try:
            probabilities, used, duration, warnings = self.scores(path)
        except VideoError as exc:
            return Prediction(video=str(path), model=self.loaded.name, error=exc.reason)
        order = np.argsort(-probabilities, kind="stable")
        return Prediction(
            video=str(path), labels=[(self.labels[i], float(probabilities[i])) for i in order],
            frames_used=used, duration_s=round(duration, 3) if duration else None,
            model=self.loaded.name, warnings=warnings)
