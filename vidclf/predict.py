"""Prediction: a model file and videos in, ranked labels out (one record per video)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidclf.device import autocast
from vidclf.data import DIED, ClipInputs, PreparedVideo, clip_inputs, in_workers, prepare_video
from vidclf.modelfile import LoadedModel, load_model
from vidclf.video import Clip, Source, VideoError, find_videos, is_stream_url, iter_windows, source_name

# Where the shipped default model lives: inside the package (a wheel installs it), which in a
# clone is a link to models/default.vidclf.
DEFAULT_MODEL = Path(__file__).parent / "default.vidclf"
# The most videos in one forward pass: enough to amortise a GPU launch, few enough that the
# first results are not held back.
BATCH_VIDEOS = 32


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


def prepared_in_batches(job: Callable[[Source], PreparedVideo], sources: Iterable[Source], workers: int,
                        batch_videos: int) -> Iterator[list[PreparedVideo]]:
    """``map(job, sources)`` in order, in groups for the network: the next result (waited for)
    and the ones after it already done, at most ``batch_videos``. With ``workers``, jobs run in
    that many processes, at most 2 × workers + batch_videos videos ahead, and a video whose
    process dies twice fails with a record saying so (``data.in_workers``); without, one by one
    here."""
    if not workers:
        yield from ([job(source)] for source in sources)
        return
    yield from in_workers(job, sources, workers, 2 * workers + batch_videos, batch_videos,
                          died=lambda source: PreparedVideo(str(source), error=DIED))


def in_shard(source: Path | str, shard: tuple[int, int]) -> bool:
    """Whether input ``source`` falls in shard (i, n) (1 ≤ i ≤ n): by a hash of its name, so a
    video's shard never depends on the other inputs, their order or the machine."""
    index, count = shard
    return int.from_bytes(hashlib.sha256(str(source).encode()).digest()[:8], "big") % count == index - 1


class Predictor:
    """Loads a model once and classifies videos one by one."""

    def __init__(self, model_path: Path, device: str | torch.device = "cpu") -> None:
        self.model_path = Path(model_path)
        self.loaded: LoadedModel = load_model(model_path, device)
        self.device = torch.device(device)
        config = self.loaded.model.config
        self.labels = list(config.labels)
        self.spec = config.sampling()

    @property
    def flows(self) -> list[str]:
        """The optical flows the model reads (a stream whose heads all weigh 0 is not computed)."""
        return self.loaded.model.used_flows

    @property
    def reads_frames(self) -> bool:
        """Whether the model reads the frames themselves (an appearance head of nonzero weight)."""
        return "appearance" in self.loaded.model.used_streams

    def probabilities(self, clips: Sequence[Clip]) -> np.ndarray:
        """Class probabilities ``(len(clips), C)`` for sampled clips, in one batch."""
        return self.network([clip_inputs(clip, self.spec, self.flows) for clip in clips])

    def network(self, inputs: Sequence[ClipInputs]) -> np.ndarray:
        """Class probabilities ``(len(inputs), C)`` for clips' model inputs, in one batch."""
        model = self.loaded.model
        lengths = torch.tensor([i.length for i in inputs])
        motion = torch.from_numpy(np.stack([i.motion for i in inputs]).astype(np.float32)).to(self.device)
        rgb = torch.from_numpy(np.stack([i.rgb for i in inputs])).to(self.device) if self.reads_frames else None
        with torch.inference_mode(), autocast(self.device):
            logits = model(lengths, rgb=rgb, motion=motion)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_all(self, sources: Iterable[Source], clips: int = 1, workers: int = 0,
                    batch_videos: int = BATCH_VIDEOS) -> Iterator[Prediction]:
        """Predictions in input order. With ``workers``, videos are decoded, sampled and their
        flow computed in that many processes while the network runs here, on every video that
        is ready (up to ``batch_videos``) in one forward pass."""
        job = functools.partial(prepare_video, spec=self.spec, clips=clips, flows=self.flows, frames=self.reads_frames)
        for group in prepared_in_batches(job, sources, workers, batch_videos):
            decoded = [prepared for prepared in group if prepared.error is None]
            scores = iter(self.network([i for prepared in decoded for i in prepared.inputs]).reshape(
                len(decoded), clips, len(self.labels)).mean(axis=1) if decoded else ())
            yield from (self.prediction(prepared, None if prepared.error else next(scores)) for prepared in group)

    def prediction(self, prepared: PreparedVideo, probabilities: np.ndarray | None) -> Prediction:
        """The record of a prepared video, with its class probabilities (None when it failed)."""
        if probabilities is None:
            return Prediction(video=prepared.source, model=self.loaded.name, error=prepared.error)
        return Prediction(video=prepared.source, labels=self.ranked(probabilities), frames_used=prepared.frames_used,
                          model=self.loaded.name, warnings=prepared.warnings,
                          duration_s=round(prepared.duration_s, 3) if prepared.duration_s else None)

    def ranked(self, probabilities: np.ndarray) -> list[tuple[str, float]]:
        order = np.argsort(-probabilities, kind="stable")
        return [(self.labels[i], float(probabilities[i])) for i in order]

    def timeline(self, source: Source, window_s: float, stride_s: float, smooth: int = 1,
                 min_score: float = 0.0, on_segment: Callable[[Segment], None] = lambda segment: None
                 ) -> Prediction:
        """Classify a long video or a live stream window by window, in one decoding pass.

        Each window's segment goes to ``on_segment`` as soon as the window completes (live
        output; Ctrl-C stops after the last completed window; a file's windows go through the
        network in batches); with ``smooth`` K a segment's scores are the mean of its window and the K-1
        before it. Segments whose top score is below ``min_score`` are dropped. The video-level
        ranking is the mean over all windows.
        """
        name = source_name(source)
        recent: deque[np.ndarray] = deque(maxlen=max(1, smooth))
        segments: list[Segment] = []
        total = np.zeros(len(self.labels))
        windows = 0
        end_s = 0.0
        live = isinstance(source, int) or is_stream_url(source)  # each window out as soon as it completes
        found = iter_windows(source, window_s, stride_s, self.spec.frames, self.spec.size, self.spec.fit)
        try:
            while batch := list(itertools.islice(found, 1 if live else BATCH_VIDEOS)):
                for window, probabilities in zip(batch, self.probabilities([window.clip for window in batch])):
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

    def timelines_in_workers(self, sources: Iterable[Source], workers: int, window_s: float, stride_s: float,
                             smooth: int = 1, min_score: float = 0.0) -> Iterator[Prediction]:
        """``timeline`` of each file (not streams: their windows go out live) in ``workers``
        processes, each with its own copy of the model on the CPU, one file at a time: memory
        stays a window's worth per process whatever the files' lengths. In input order; a file
        whose process dies twice fails with a record saying so (``data.in_workers``)."""
        job = functools.partial(_timeline_in_worker, str(self.model_path), window_s, stride_s, smooth, min_score)

        def died(source: Source) -> Prediction:
            return Prediction(video=source_name(source), model=self.loaded.name, error=DIED)

        for group in in_workers(job, sources, workers, 2 * workers, 1, died):
            yield from group

    def predict(self, path: Source, clips: int = 1) -> Prediction:
        """One video's prediction (a failure is a record, not an exception)."""
        return next(self.predict_all([path], clips))


@functools.cache
def _worker_predictor(model_path: str) -> Predictor:
    """A worker process's model, loaded once; one torch thread: the processes are the parallelism."""
    torch.set_num_threads(1)
    return Predictor(Path(model_path), "cpu")


def _timeline_in_worker(model_path: str, window_s: float, stride_s: float, smooth: int, min_score: float,
                        source: Source) -> Prediction:
    return _worker_predictor(model_path).timeline(source, window_s, stride_s, smooth, min_score)
