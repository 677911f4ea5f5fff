"""Datasets: find labelled clips, split them, and turn each clip into cached model inputs.

A *view* of a clip is one sampling of it: T frames (view 0 = uniform, views ≥ 1 = seeded random
segment sampling for augmentation) plus the optical-flow maps between them. Views are computed once
and cached on disk, keyed by the file's content hash and every sampling parameter, so epochs
after the first only read small arrays.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidclf.config import MOTION, SamplingSpec
from vidclf.errors import VidclfError
from vidclf.files import atomic_write
from vidclf.motion import FLOWS, clip_motion
from vidclf.video import Clip, VideoError, find_videos, sample_frames

CACHE_VERSION = 3  # bump when the cached arrays' meaning changes
SPLIT_NAMES = ("train", "val", "test")


class DatasetError(VidclfError):
    """The data folder cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class LabelledVideo:
    path: Path
    label: str


@dataclass(frozen=True)
class ClipInputs:
    """One view of a clip: ``rgb`` uint8 (T,S,S,3), ``motion`` float16 (T,4,M,M).

    Steps at and after ``length`` are padding (zeros): videos shorter than T keep their real
    length instead of repeated frames, and the model never reads the padding.
    """

    rgb: np.ndarray
    motion: np.ndarray
    length: int


def cache_dir() -> Path:
    """``$VIDCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/vidclf``, else ``~/.cache/vidclf``."""
    if os.environ.get("VIDCLF_CACHE_DIR"):
        return Path(os.environ["VIDCLF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidclf"


def file_digest(path: Path) -> str:
    """SHA-256 of the file's content: renaming or touching a clip keeps its cache entries."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=65536)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    """Hash once per (file, modification time, size): views and features ask repeatedly."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- finding and splitting ---------------------------------------------------------------------

def _labelled_videos(root: Path) -> list[LabelledVideo]:
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items.extend(LabelledVideo(path, label_dir.name) for path in find_videos(label_dir))
    return items


def discover(root: Path) -> dict[str, list[LabelledVideo]]:
    """Labelled videos by split: ``{"all": ...}`` for ``root/<label>/``, or ``train``/``val``
    (and optional ``test``) when ``root/train/<label>/`` exists."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; pass a folder laid out as DATA/<label>/<video>")
    if (root / "train").is_dir():
        splits = {name: _labelled_videos(root / name) for name in SPLIT_NAMES if (root / name).is_dir()}
    else:
        splits = {"all": _labelled_videos(root)}
    if not any(splits.values()):
        raise DatasetError(f"{root}: no videos found; expected DATA/<label>/<video> with video "
                           "extensions such as .mp4 .avi .mov .mkv .webm")
    return splits


def check_trainable(items: Sequence[LabelledVideo], where: Path) -> list[str]:
    """The sorted labels, or a DatasetError saying why these clips cannot train a classifier."""
    counts = Counter(item.label for item in items)
    if len(counts) < 2:
        found = f"only class {next(iter(counts))!r}" if counts else "no classes"
        raise DatasetError(f"{where}: found {found}; a classifier needs at least 2 label folders")
    small = sorted(label for label, n in counts.items() if n < 2)
    if small:
        raise DatasetError(f"{where}: class(es) {', '.join(small)} have fewer than 2 clips; add "
                           "clips or remove the folder(s)")
    return sorted(counts)


def stratified_split(items: Sequence[LabelledVideo], val_fraction: float, seed: int
                     ) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    """Seeded per-class split; every class keeps ≥ 1 clip in each part."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({item.label for item in items}):
        members = [item for item in items if item.label == label]
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    return train, val


# --- views and their cache ---------------------------------------------------------------------

def clip_inputs(clip: Clip, spec: SamplingSpec) -> ClipInputs:
    frames = clip.frames
    length = spec.frames
    if len(np.unique(clip.indices)) < len(clip.indices):  # keep each real frame once and pad
        _, first = np.unique(clip.indices, return_index=True)
        real = frames[np.sort(first)]
        length = len(real)
        frames = np.zeros_like(frames)
        frames[:length] = real
    motion = np.zeros((spec.frames, 2 * len(FLOWS), spec.motion_size, spec.motion_size), np.float16)
    motion[:length] = clip_motion(frames[:length], spec.motion_size)
    return ClipInputs(rgb=frames, motion=motion, length=length)


def compute_view(path: Path, spec: SamplingSpec, view: int, seed: int) -> tuple[ClipInputs, tuple[str, ...]]:
    """Decode one view of a clip (no cache). Returns the inputs and any decode warnings."""
    if view == 0:
        clip = sample_frames(path, spec.frames, spec.size, "uniform")
    else:
        rng = np.random.default_rng([seed, view, int(file_digest(path)[:12], 16)])
        clip = sample_frames(path, spec.frames, spec.size, "random", rng)
    return clip_inputs(clip, spec), clip.warnings


def view_cache_path(digest: str, spec: SamplingSpec, view: int, seed: int) -> Path:
    key = f"v{CACHE_VERSION}-{digest}-{spec.frames}-{spec.size}-{MOTION}-{spec.motion_size}-{view}-{seed if view else 0}"
    return cache_dir() / "views" / digest[:2] / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


def load_view(path: Path, spec: SamplingSpec, view: int, seed: int) -> tuple[ClipInputs, tuple[str, ...]]:
    """A view from the cache, computing and caching it when absent."""
    cached = view_cache_path(file_digest(path), spec, view, seed)
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                return ClipInputs(arrays["rgb"], arrays["motion"], int(arrays["length"])), ()
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed below
    inputs, warnings = compute_view(path, spec, view, seed)
    save_npz(cached, {"rgb": inputs.rgb, "motion": inputs.motion, "length": np.array(inputs.length)})
    return inputs, warnings


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def view_job(job: tuple[Path, SamplingSpec, int, int]) -> tuple[ClipInputs | None, tuple[str, ...], str | None]:
    """``load_view`` for a worker process: (inputs, warnings, None) or (None, (), error line)."""
    path, spec, view, seed = job
    try:
        inputs, warnings = load_view(path, spec, view, seed)
        return inputs, warnings, None
    except VideoError as exc:
        return None, (), str(exc)


def init_worker() -> None:
    """Worker processes: one OpenCV thread each, the processes are the parallelism."""
    cv2.setNumThreads(1)
