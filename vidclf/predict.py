"""Prediction: a model file and videos in, ranked labels out (one record per video)."""

from __future__ import annotations

import functools
import hashlib
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidclf.config import FLOWS
from vidclf.data import ClipInputs, PreparedVideo, clip_inputs, init_worker, prepare_video
from vidclf.modelfile import LoadedModel, load_model
from vidclf.video import Clip, Source, VideoError, find_videos, is_stream_url, iter_windows, source_name

# Where the shipped default model lives: inside the package (a wheel installs it), which in a
# clone is a link to models/default.vidclf.
DEFAULT_MODEL = Path(__file__).parent / "default.vidclf"


@dataclass
class Segment:
    """One window of a timeline: its time span and ranked labels."""

    start_s: float
    end_s: float
    labels: list[tuple[str, float]]

    def to_dict(self, top_k: int | None = None) -> dict[str, object]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "top": self.labels[0][0],
                "labels": [{"label": label, "score": round(score, 6)} for label, score in self.labels[:top_k]]}


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
    segments: list[Segment] | None = None  # set by timeline prediction (--window)

    @property
    def top(self) -> str | None:
        return self.labels[0][0] if self.labels else None

    def to_dict(self, top_k: int | None = None) -> dict[str, object]:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        ranked = self.labels[:top_k] if top_k else self.labels
        record: dict[str, object] = {
            "video": self.video, "top": self.top,
            "labels": [{"label": label, "score": round(score, 6)} for label, score in ranked],
            "frames_used": self.frames_used, "duration_s": self.duration_s, "model": self.model}
        if self.segments is not None:
            record["segments"] = [segment.to_dict(top_k) for segment in self.segments]
        return record


def expand_inputs(inputs: Iterable[str], stdin: Iterable[str] = sys.stdin) -> Iterator[Path | str]:
    """Files as given, folders searched recursively for videos (a folder with none, as itself: it
    fails as an input), stream URLs as they are, ``-`` = one path per stdin line."""
    for item in inputs:
        if item == "-":
            yield from (Path(line.rstrip("\n")) for line in stdin if line.strip())
            continue
        if is_stream_url(item):
            yield item
            continue
        path = Path(item)
        videos = find_videos(path) if path.is_dir() else []
        yield from videos or [path]  # missing or bad files, and folders without videos, fail later with their own message


def _in_workers(job: Callable[[Source], PreparedVideo], sources: Iterable[Source], workers: int) -> Iterator[PreparedVideo]:
    """``map(job, sources)`` in ``workers`` spawned processes, in order, at most 2 × workers
    videos ahead (memory stays bounded however many inputs)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # not fork: torch's threads are running here
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        pending: deque = deque()
        try:
            for source in sources:
                pending.append(pool.submit(job, source))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early (SIGTERM, Ctrl-C, a closed pipe): drop the videos not yet started
            pool.shutdown(cancel_futures=True)


def in_shard(source: Path | str, shard: tuple[int, int]) -> bool:
    """Whether input ``source`` falls in shard (i, n) (1 ≤ i ≤ n): by a hash of its name, so a
    video's shard never depends on the other inputs, their order or the machine."""
    index, count = shard
    return int.from_bytes(hashlib.sha256(str(source).encode()).digest()[:8], "big") % count == index - 1


class Predictor:
    """Loads a model once and classifies videos one by one."""

    def __init__(self, model_path: Path, device: str | torch.device = "cpu") -> None:
        self.loaded: LoadedModel = load_model(model_path, device)
        self.device = torch.device(device)
        config = self.loaded.model.config
        self.labels = list(config.labels)
        self.spec = config.sampling()

    @property
    def flows(self) -> list[str]:
        """The optical flows the model reads (a stream whose heads all weigh 0 is not computed)."""
        return [flow for flow in FLOWS if flow in self.loaded.model.used_streams]

    def scores(self, path: Source, clips: int = 1) -> tuple[np.ndarray, int, float | None, tuple[str, ...]]:
        """Class probabilities (summing to 1) for one video, plus frames used and duration.

        With ``clips`` > 1, that many clips are sampled (see ``sample_indices``) and their
        probabilities averaged: multi-clip testing.
        """
        prepared = prepare_video(path, self.spec, clips, self.flows)
        if prepared.error is not None:
            raise VideoError(path, prepared.error)
        return self.network(prepared.inputs).mean(axis=0), prepared.frames_used, prepared.duration_s, prepared.warnings

    def probabilities(self, clips: Sequence[Clip]) -> np.ndarray:
        """Class probabilities ``(len(clips), C)`` for sampled clips, in one batch."""
        return self.network([clip_inputs(clip, self.spec, self.flows) for clip in clips])

    def network(self, inputs: Sequence[ClipInputs]) -> np.ndarray:
        """Class probabilities ``(len(inputs), C)`` for clips' model inputs, in one batch."""
        model = self.loaded.model
        lengths = torch.tensor([i.length for i in inputs])
        motion = torch.from_numpy(np.stack([i.motion for i in inputs]).astype(np.float32)).to(self.device)
        rgb = (torch.from_numpy(np.stack([i.rgb for i in inputs])).to(self.device)
               if "appearance" in model.used_streams else None)
        with torch.inference_mode():
            logits = model(lengths, rgb=rgb, motion=motion)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_all(self, sources: Iterable[Source], clips: int = 1, workers: int = 0) -> Iterator[Prediction]:
        """Predictions in input order. With ``workers``, videos are decoded, sampled and their
        flow computed in that many processes while the network runs here."""
        job = functools.partial(prepare_video, spec=self.spec, clips=clips, flows=self.flows)
        for prepared in (_in_workers(job, sources, workers) if workers else map(job, sources)):
            if prepared.error is not None:
                yield Prediction(video=prepared.source, model=self.loaded.name, error=prepared.error)
                continue
            yield Prediction(video=prepared.source, labels=self.ranked(self.network(prepared.inputs).mean(axis=0)),
                             frames_used=prepared.frames_used, model=self.loaded.name, warnings=prepared.warnings,
                             duration_s=round(prepared.duration_s, 3) if prepared.duration_s else None)

    def ranked(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        order = np.argsort(-probabilities, kind="stable")
        return [(self.labels[i], float(probabilities[i])) for i in order]

    def timeline(self, source: Source, window_s: float, stride_s: float, smooth: int = 1,
                 min_score: float = 0.0, on_segment: Callable[[Segment], None] = lambda segment: None
                 ) -> Prediction:
        """Classify a long video or a live stream window by window, in one decoding pass.

        Each window's segment goes to ``on_segment`` as soon as the window completes (live
        output; Ctrl-C stops after the last completed window); with ``smooth`` K a segment's scores are the mean of its window and the K-1
        before it. Segments whose top score is below ``min_score`` are dropped. The video-level
        ranking is the mean over all windows.
        """
        name = source_name(source)
        recent: deque[np.ndarray] = deque(maxlen=max(1, smooth))
        segments: list[Segment] = []
        total = np.zeros(len(self.labels))
        windows = 0
        end_s = 0.0
        try:
            for window in iter_windows(source, window_s, stride_s, self.spec.frames, self.spec.size):
                probabilities = self.probabilities([window.clip])[0]
                total += probabilities
                windows += 1
                end_s = window.end_s
                recent.append(probabilities)
                segment = Segment(window.start_s, window.end_s, self.ranked(np.mean(recent, axis=0)))
                if segment.labels[0][1] >= min_score:
                    segments.append(segment)
                    on_segment(segment)
        except VideoError as exc:
            return Prediction(video=name, model=self.loaded.name, error=exc.reason)
        return Prediction(video=name, labels=self.ranked(total / max(1, windows)),
                          frames_used=self.spec.frames, duration_s=round(end_s, 3), model=self.loaded.name,
                          segments=segments)

    def predict(self, path: Source, clips: int = 1) -> Prediction:
        """One video's prediction (a failure is a record, not an exception)."""
        return next(self.predict_all([path], clips))
