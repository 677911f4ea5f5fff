"""Datasets: find labelled clips, split them, and turn each clip into cached model inputs.

A *view* of a clip is one sampling of it: T frames (view 0 = uniform, views ≥ 1 = seeded random
segment sampling for augmentation) plus the optical-flow maps between them. Views are computed once
and cached on disk, keyed by the clip's content (``file_digest``) and every sampling parameter;
training reads them back in batches (``vidclf.dataset``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import multiprocessing
import os
import re
import signal
import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from vidclf.config import FLOWS, MOTION, SamplingSpec
from vidclf.errors import VidclfError
from vidclf.files import atomic_write
from vidclf.motion import clip_motion
from vidclf.progress import progress
from vidclf.video import Clip, VideoError, find_videos, one_decode_thread, sample_frames, sample_views, watch_decoding

T = TypeVar("T")
U = TypeVar("U")
CACHE_VERSION = 5  # bump when the cached arrays' meaning (or their key) changes
DIGEST_BLOCK = 1 << 20
SPLIT_NAMES = ("train", "val", "test")
DEAD_WORKER_CHECK_S = 5.0  # waiting on a result, look this often for a worker that died mid-send


class DatasetError(VidclfError):
    """The data folder cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class LabelledVideo:
    path: Path
    label: str
    group: str | None = None  # the person, scene or source video: never on both sides of a split


@dataclass(frozen=True)
class ClipInputs:
    """One view of a clip: ``rgb`` uint8 (T,S,S,3) (None in prediction by a model that reads
    no appearance), ``motion`` float16 (T,4,M,M).

    Steps at and after ``length`` are padding (zeros): videos shorter than T keep their real
    length instead of repeated frames, and the model never reads the padding.
    """

    rgb: np.ndarray | None
    motion: np.ndarray
    length: int


def cache_dir() -> Path:
    """``$VIDCLF_CACHE_DIR``, else ``$XDG_CACHE_HOME/vidclf``, else ``~/.cache/vidclf``."""
    if os.environ.get("VIDCLF_CACHE_DIR"):
        return Path(os.environ["VIDCLF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidclf"


def file_digest(path: Path) -> str:
    """The cache key of a clip's content: SHA-256 of its size and its first and last MiB (the
    whole file when smaller), so keying a long video costs two reads. Renaming or touching a
    clip keeps its cache entries; ``clip_digests`` hashes whole files where these collide."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size, whole=False)


def full_digest(path: Path) -> str:
    """SHA-256 of the whole file."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size, whole=True)


@functools.lru_cache(maxsize=65536)
def _digest(path: str, mtime_ns: int, size: int, whole: bool) -> str:
    """Hash once per (file, modification time, size)."""
    digest = hashlib.sha256(f"{size}:{'whole' if whole else 'ends'}:".encode())
    with open(path, "rb") as handle:
        if whole or size <= 2 * DIGEST_BLOCK:
            for block in iter(lambda: handle.read(DIGEST_BLOCK), b""):
                digest.update(block)
        else:
            digest.update(handle.read(DIGEST_BLOCK))
            handle.seek(size - DIGEST_BLOCK)
            digest.update(handle.read(DIGEST_BLOCK))
    return digest.hexdigest()


def clip_digests(paths: Sequence[Path], digests: Sequence[str]) -> list[str]:
    """The clips' cache keys, from their ``file_digest``s: where two clips share one, their
    whole files are hashed (identical files keep sharing theirs: same content, same entries)."""
    shared = {d for d, n in Counter(digests).items() if n > 1}
    return [full_digest(path) if d in shared else d for path, d in zip(paths, digests)]


# --- finding and splitting ---------------------------------------------------------------------

def _labelled_videos(root: Path) -> list[LabelledVideo]:
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        items.extend(LabelledVideo(path, label_dir.name) for path in find_videos(label_dir))
    return items


def discover(data: Path, group: str | None = None) -> dict[str, list[LabelledVideo]]:
    """Labelled videos by split: ``{"all": ...}`` for ``data/<label>/``, or ``train``/``val``
    (and optional ``test``) when ``data/train/<label>/`` exists; or those of a CSV manifest.
    With ``group`` (a regular expression), each clip's group is its first capture group in the
    clip's file name."""
    if data.is_file():
        found = read_manifest(data)
    elif not data.is_dir():
        raise DatasetError(f"{data}: no such folder or manifest; pass DATA/<label>/<video> or a .csv manifest")
    elif (data / "train").is_dir():
        found = {name: _labelled_videos(data / name) for name in SPLIT_NAMES if (data / name).is_dir()}
    else:
        found = {"all": _labelled_videos(data)}
    if not any(found.values()):
        raise DatasetError(f"{data}: no videos found; expected DATA/<label>/<video> with video "
                           "extensions such as .mp4 .avi .mov .mkv .webm")
    if group is not None:
        found = {name: assign_groups(items, group) for name, items in found.items()}
    return found


def read_manifest(path: Path) -> dict[str, list[LabelledVideo]]:
    """A CSV with a header line ``path,label[,group][,split]`` (paths relative to the file;
    split train, val or test): labelled videos by split, as ``discover`` returns them."""
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"{path}: not a folder or a .csv manifest; pass DATA/<label>/<video> or clips.csv")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
        columns = set(rows[0]) if rows else set()
    if not {"path", "label"} <= columns:
        raise DatasetError(f"{path}: a manifest needs a header line path,label[,group][,split] and a row per clip")
    has_split = any((row.get("split") or "").strip() for row in rows)
    found: dict[str, list[LabelledVideo]] = {}
    for line, row in enumerate(rows, start=2):
        video, label = path.parent / (row["path"] or "").strip(), (row["label"] or "").strip()
        split = (row.get("split") or "").strip() if has_split else "all"
        if not label or split not in (*SPLIT_NAMES, "all"):
            raise DatasetError(f"{path}:{line}: needs a label and a split of train, val or test; got "
                               f"label {label!r}, split {split!r}")
        if not video.is_file():
            raise DatasetError(f"{path}:{line}: {video}: no such video file; fix the path (relative to the manifest)")
        found.setdefault(split, []).append(LabelledVideo(video, label, (row.get("group") or "").strip() or None))
    return found


def assign_groups(items: Sequence[LabelledVideo], pattern: str) -> list[LabelledVideo]:
    """Each clip's group: the first capture group of ``pattern`` in its file name."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"--group {pattern!r}: not a valid regular expression ({exc})") from None
    if regex.groups < 1:
        raise DatasetError(f"--group {pattern!r}: needs a capture group, e.g. '_g(\\d+)_' or '^([a-z]+)_'")
    grouped = []
    for item in items:
        match = regex.search(item.path.name)
        if match is None or match.group(1) is None:
            raise DatasetError(f"{item.path}: --group {pattern!r} finds no group in this file name; "
                               "fix the pattern or rename the file")
        grouped.append(replace(item, group=match.group(1)))
    return grouped


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
    """Seeded split; every class keeps ≥ 1 clip in each part. Clips with groups are split by
    group (see ``group_split``); without, per class."""
    if any(item.group is not None for item in items):
        return group_split(items, val_fraction, seed)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({item.label for item in items}):
        members = [item for item in items if item.label == label]
        order = rng.permutation(len(members))
        n_val = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    return train, val


def group_key(item: LabelledVideo) -> str:
    return item.group if item.group is not None else str(item.path)  # ungrouped: a group of its own


def group_numbers(items: Sequence[LabelledVideo]) -> list[int]:
    """Each clip's group as a number (0, 1, … in order of first appearance)."""
    numbers: dict[str, int] = {}
    return [numbers.setdefault(group_key(item), len(numbers)) for item in items]


def group_split(items: Sequence[LabelledVideo], val_fraction: float, seed: int, tries: int = 500
                ) -> tuple[list[LabelledVideo], list[LabelledVideo]]:
    """Whole groups to validation, in seeded random order, until it holds ``val_fraction`` of
    the clips; the first such draw that leaves every class on both sides."""
    groups = sorted({group_key(item) for item in items})
    sizes = Counter(group_key(item) for item in items)
    labels = {item.label for item in items}
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        val_groups: set[str] = set()
        held = 0
        for index in rng.permutation(len(groups)):
            if held >= val_fraction * len(items):
                break
            val_groups.add(groups[index])
            held += sizes[groups[index]]
        train = [item for item in items if group_key(item) not in val_groups]
        val = [item for item in items if group_key(item) in val_groups]
        if {item.label for item in train} == labels == {item.label for item in val}:
            return train, val
    raise DatasetError(f"cannot split {len(groups)} group(s) so that every class has clips on both sides; "
                       "add clips of more people or scenes, or give DATA/train and DATA/val folders")


def group_folds(items: Sequence[LabelledVideo], folds: int, seed: int) -> list[int]:
    """Each clip's fold (0 … folds-1) for cross-validation: whole groups to a fold, each class
    spread evenly. Groups go largest first (seeded order among equals) to the fold where the
    group's classes are scarcest."""
    groups = sorted({group_key(item) for item in items})
    classes = Counter((group_key(item), item.label) for item in items)
    rng = np.random.default_rng(seed)
    order = sorted(rng.permutation(len(groups)), key=lambda i: -sum(n for (g, _), n in classes.items() if g == groups[i]))
    held: list[Counter[str]] = [Counter() for _ in range(folds)]
    fold_of: dict[str, int] = {}
    for index in order:
        group = groups[index]
        counts = {label: n for (g, label), n in classes.items() if g == group}
        fold = min(range(folds), key=lambda f, counts=counts: (
            sum((held[f][label] + n) ** 2 for label, n in counts.items()), sum(held[f].values()), f))
        held[fold].update(counts)
        fold_of[group] = fold
    return [fold_of[group_key(item)] for item in items]


# --- views and their cache ---------------------------------------------------------------------

def clip_inputs(clip: Clip, spec: SamplingSpec, flows: Sequence[str] = FLOWS) -> ClipInputs:
    """The model inputs of a sampled clip; the motion maps of flows not in ``flows`` stay zero
    (a model that gives their heads no weight never reads them)."""
    frames = clip.frames
    length = spec.frames
    if len(np.unique(clip.indices)) < len(clip.indices):  # keep each real frame once and pad
        _, first = np.unique(clip.indices, return_index=True)
        real = frames[np.sort(first)]
        length = len(real)
        frames = np.zeros_like(frames)
        frames[:length] = real
    motion = np.zeros((spec.frames, 2 * len(FLOWS), spec.motion_size, spec.motion_size), np.float16)
    computed = clip_motion(frames[:length], spec.motion_size, flows)
    for k, flow in enumerate(flows):
        channel = 2 * FLOWS.index(flow)
        motion[:length, channel : channel + 2] = computed[:, 2 * k : 2 * k + 2]
    return ClipInputs(rgb=frames, motion=motion, length=length)


def compute_views(path: Path, digest: str, spec: SamplingSpec, views: Sequence[int], seed: int
                  ) -> tuple[list[ClipInputs], tuple[str, ...]]:
    """Decode views of a clip in one pass (no cache): view 0 uniform, the others random, each
    seeded by (seed, view, clip). Returns their inputs and any decode warnings."""
    rngs = [None if view == 0 else np.random.default_rng([seed, view, int(digest[:12], 16)]) for view in views]
    clips = sample_views(path, spec.frames, spec.size, rngs, spec.fit)
    return [clip_inputs(clip, spec) for clip in clips], clips[0].warnings


def view_cache_path(digest: str, spec: SamplingSpec, view: int, seed: int) -> Path:
    key = (f"v{CACHE_VERSION}-{digest}-{spec.frames}-{spec.size}-{spec.fit.value}-{MOTION}-{spec.motion_size}-{view}-"
           f"{seed if view else 0}")
    return cache_dir() / "views" / digest[:2] / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


# What the frozen Lite0 encodes, each cached apart: a view's frames ("features"), and its flow
# images (made from its flow maps; their Lite0 is never fine-tuned, so they are read in every stage).
FEATURES = ("features", "flow_images")


def feature_cache_path(digest: str, spec: SamplingSpec, view: int, seed: int, mirrored: bool,
                       name: str = "features") -> Path:
    """Where the frozen Lite0 features of a view (mirrored left-right, if ``mirrored``) are
    cached: ``name`` says of what (``FEATURES``)."""
    from vidclf.lite0 import LITE0_WEIGHTS_SHA256

    base = view_cache_path(digest, spec, view, seed)
    what = "lite0-global" if name == "features" else "flow-image-lite0-1"
    key = f"{base.stem}-{what}-{LITE0_WEIGHTS_SHA256[:16]}" + ("-mirrored" if mirrored else "")
    return cache_dir() / "features" / digest[:2] / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".npz")


def read_npz(path: Path, *names: str) -> list[np.ndarray] | None:
    """The named arrays of a cache entry, or None when it is absent or damaged (truncated, or
    failing the zip's CRC check)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return [arrays[name] for name in names]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def load_views(path: Path, digest: str, spec: SamplingSpec, views: int, seed: int
               ) -> tuple[list[ClipInputs], tuple[str, ...]]:
    """Views 0 … views-1 of a clip from the cache; those absent or damaged are decoded (in one
    pass) and cached. Returns them and any decode warnings."""
    paths = [view_cache_path(digest, spec, view, seed) for view in range(views)]
    loaded = [read_npz(cached, "rgb", "motion", "length") for cached in paths]
    found = [None if arrays is None else ClipInputs(arrays[0], arrays[1], int(arrays[2])) for arrays in loaded]
    missing = [view for view, inputs in enumerate(found) if inputs is None]
    computed, warnings = compute_views(path, digest, spec, missing, seed) if missing else ([], ())
    for view, inputs in zip(missing, computed):
        save_npz(paths[view], {"rgb": inputs.rgb, "motion": inputs.motion, "length": np.array(inputs.length)})
        found[view] = inputs
    return found, warnings


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


ViewsJob = tuple[Path, str, SamplingSpec, int, int]  # (path, digest, spec, views, seed)


def cache_views(job: ViewsJob) -> tuple[tuple[str, ...], str | None]:
    """Make sure a clip's views are in the cache, whole (for a worker process: only small
    results travel back). Returns (decode warnings, None) or ((), error line)."""
    path, digest, spec, views, seed = job
    try:
        return load_views(path, digest, spec, views, seed)[1], None
    except VideoError as exc:
        return (), str(exc)


@dataclass(frozen=True)
class PreparedVideo:
    """A video sampled and turned into model inputs, one per clip (what a worker sends back),
    or the reason it could not be."""

    source: str
    inputs: tuple[ClipInputs, ...] = ()
    frames_used: int = 0
    duration_s: float | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None


def prepare_video(source: Path | str, spec: SamplingSpec, clips: int, flows: Sequence[str], frames: bool
                  ) -> PreparedVideo:
    """Sample ``clips`` uniform clips of a video and compute their inputs: ``flows`` only, and
    the frames only if ``frames`` (a model that reads no appearance is not sent them)."""
    try:
        sample = sample_frames(source, spec.frames, spec.size, "uniform", clips=clips, fit=spec.fit)
    except VideoError as exc:
        return PreparedVideo(str(source), error=exc.reason)
    parts = sample.split(clips)
    inputs = (clip_inputs(part, spec, flows) for part in parts)
    return PreparedVideo(str(source), tuple(i if frames else replace(i, rgb=None) for i in inputs),
                         max(len(np.unique(part.indices)) for part in parts), sample.duration_s, sample.warnings)


# What a job whose process died twice gives, in the words of its error record or line.
DIED = "the process decoding it died, twice (a decoder that crashed or stalled, or killed for lack of memory)"


def pool_map(function: Callable[[T], U], items: Sequence[T], workers: int, desc: str, unit: str,
             died: Callable[[T], U]) -> list[U]:
    """``function`` over ``items`` in ``workers`` processes (``in_workers``; in this one for 0
    or 1), in order, with a progress bar; ``died(item)`` stands for an item whose process died."""
    if workers > 1 and len(items) > 1:
        results = (result for group in in_workers(function, items, workers, 2 * workers, 1, died) for result in group)
        return list(progress(results, total=len(items), desc=desc, unit=unit))
    return list(progress(map(function, items), total=len(items), desc=desc, unit=unit))


def in_workers(job: Callable[[T], U], items: Iterable[T], workers: int, ahead: int, most: int,
               died: Callable[[T], U]) -> Iterator[list[U]]:
    """``map(job, items)`` in ``workers`` spawned processes, in order, at most ``ahead`` items
    in flight (memory stays bounded however many items), in groups: the next result (waited
    for) and those after it already done, at most ``most``.

    A worker that dies (a decoder that crashes, or stalls and is ended by its watchdog, or the
    out-of-memory killer) loses no item: those in flight run again one at a time, and only one
    that kills its process again gives ``died(item)``."""
    pending: deque[tuple[T, Future]] = deque()
    todo = iter(items)
    pool = _spawn_pool(workers)
    try:
        while True:
            for item in itertools.islice(todo, ahead - len(pending)):
                pending.append((item, _submit(pool, job, item)))
            if not pending:
                return
            try:
                group = [_result(pool, pending[0][1])]
            except BrokenProcessPool:
                pool.shutdown(cancel_futures=True)
                yield from ([result] for result in _one_by_one(job, [item for item, _ in pending], died))
                pending.clear()
                pool = _spawn_pool(workers)
                continue
            pending.popleft()
            while pending and pending[0][1].done() and pending[0][1].exception() is None and len(group) < most:
                group.append(pending.popleft()[1].result())
            yield group
    finally:  # stopped early (SIGTERM, Ctrl-C, a closed pipe): the items in flight are dropped
        _stop(pool, bool(pending))


def _result(pool: ProcessPoolExecutor, future: Future) -> U:
    """``future.result()``, or BrokenProcessPool when a worker died in the middle of sending a
    result: the pool's manager thread then waits forever for the rest of the message (the parent
    holds the pipe's write end, so no EOF comes). Killing the other workers and closing that
    end gives the manager its EOF, and it breaks the pool as for any dead worker."""
    while True:
        try:
            return future.result(timeout=DEAD_WORKER_CHECK_S)
        except TimeoutError:
            if not any(process.exitcode is not None for process in _processes(pool)):
                continue
            _kill(pool)
            raise BrokenProcessPool("a worker died while sending its result") from None


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers and close the parent's copy of the result pipe's writer
    (private: the one way to unblock a manager thread reading half a message); the manager
    thread then breaks the pool and ends."""
    for process in _processes(pool):
        process.kill()
    if getattr(pool, "_result_queue", None) is not None:
        pool._result_queue._writer.close()


def _processes(pool: ProcessPoolExecutor) -> list[multiprocessing.Process]:
    """The pool's worker processes (private; none once it is shut down)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop(pool: ProcessPoolExecutor, running: bool) -> None:
    """Shut the pool down; with jobs still ``running`` (their results no longer wanted) kill
    them rather than wait: a worker may be an hour into a file's timeline."""
    if running:
        _kill(pool)
    pool.shutdown(cancel_futures=True)


def _submit(pool: ProcessPoolExecutor, job: Callable[[T], U], item: T) -> Future:
    """``pool.submit``; a pool broken by a dead worker gives a future that holds the error."""
    try:
        return pool.submit(job, item)
    except BrokenProcessPool as exc:
        future: Future = Future()
        future.set_exception(exc)
        return future


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    """Spawn, not fork: forking a process that has started torch threads can deadlock."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker)


def _one_by_one(job: Callable[[T], U], items: list[T], died: Callable[[T], U]) -> Iterator[U]:
    """``job`` over ``items``, each alone in a one-process pool: one that kills its process
    gives ``died(item)``, and a new process takes the next."""
    pool, running = _spawn_pool(1), False
    try:
        for item in items:
            running = True
            try:
                result = _result(pool, pool.submit(job, item))
            except BrokenProcessPool:
                result = died(item)
                pool.shutdown()
                pool = _spawn_pool(1)
            running = False
            yield result
    finally:
        _stop(pool, running)


def init_worker() -> None:
    """Worker processes: one OpenCV and one FFmpeg thread each, the processes are the
    parallelism; a decode that stalls ends the process (``in_workers`` recovers). Ctrl-C (sent
    to the whole process group) is the main process's to handle: it stops the workers."""
    cv2.setNumThreads(1)
    one_decode_thread()
    watch_decoding()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
