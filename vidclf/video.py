"""Decode videos with OpenCV and sample the frames a model sees.

Everything here works on the frames that really decode: container headers lie about frame
counts (too many, too few, zero, negative), so indices are chosen from the decoded count.
Decoding is one forward pass: ``grab()`` every frame, ``retrieve()`` only the chosen ones.
Long MP4/MOV files are sampled by seeking instead, where that is measured to be cheaper than
decoding through the gap; their sample tables make OpenCV's seeking frame-exact (checked on the
corpus), other containers keep the forward pass.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import numpy as np

from vidclf.config import STREAM_TIMEOUT_S, Fit
from vidclf.errors import VidclfError

# Lower-case suffixes that directory scans treat as videos (matched case-insensitively).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".ogg",
        ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts", ".mxf", ".asf", ".divx", ".vob",
    }
)

SampleMode = Literal["uniform", "random"]
Resize = Callable[[np.ndarray], np.ndarray]  # a decoded BGR frame → the model's RGB square (``square_resize``)
T = TypeVar("T")
# FFmpeg's decoding threads per video; 0: its own choice (all cores: one video at a time).
DECODE_THREADS = 0
# A decode that reads no frame for this long is stuck (a decoder that spins): in a worker
# process, the watchdog ends the process, and the engine fails that video alone.
DECODE_STALL_S = 60.0
# Seek only when samples lie this many frames apart on average: below it, decoding through is
# cheaper than a seek (which decodes from the keyframe before its target).
SEEK_MIN_GAP = 64

# Leading bytes of common video containers: used only to explain why OpenCV failed to open a
# file ("truncated MP4" versus "not a video at all"), never to refuse a file OpenCV can read.
_CONTAINER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MOV"),
    (4, b"mdat", "MOV"),
    (4, b"wide", "MOV"),
    (0, b"RIFF", "AVI"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
    (0, b"\x00\x00\x01\xb3", "MPEG video"),
    (0, b"FLV", "FLV"),
    (0, b"\x30\x26\xb2\x75", "ASF/WMV"),
    (0, b"\x47", "MPEG transport stream"),
)


class VideoError(VidclfError):
    """A video could not be used; the message names the file and what to do."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class VideoNotFoundError(VideoError):
    """The path does not exist."""


class NotAFileError(VideoError):
    """The path exists but is a directory or another non-regular file."""


class UnreadableVideoError(VideoError):
    """The file exists but cannot be read (permissions, I/O error)."""


class NotAVideoError(VideoError):
    """OpenCV cannot open the file as a video: empty, not a video, truncated or corrupt."""


class NoFramesDecodedError(VideoError):
    """The file opens as a video but not a single frame decodes."""


class StreamStalledError(VideoError):
    """A stream sent nothing for longer than its timeout."""


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video; ``frame_count`` is what decodes, not what the header claims."""

    path: str
    frame_count: int
    header_frame_count: int
    fps: float | None
    duration_s: float | None
    width: int
    height: int
    fourcc: str
    rotation: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Clip:
    """Frames sampled from one video, ready for a model.

    ``frames`` is uint8 RGB ``(T, size, size, 3)``; ``indices[t]`` is the decoded-frame index
    that ``frames[t]`` came from. ``repeated`` is set when the video had fewer than T frames
    and frames were repeated evenly; ``warnings`` lists anything a user should hear about.
    """

    path: str
    frames: np.ndarray
    indices: np.ndarray
    frame_count: int
    fps: float | None
    repeated: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def duration_s(self) -> float | None:
        return self.frame_count / self.fps if self.fps else None

    def split(self, clips: int) -> list[Clip]:
        """Cut a multi-clip sample (``clips × T`` frames, clip by clip) into its clips."""
        steps = len(self.indices) // clips
        return [Clip(self.path, self.frames[c * steps : (c + 1) * steps], self.indices[c * steps : (c + 1) * steps],
                     self.frame_count, self.fps, self.repeated, self.warnings) for c in range(clips)]

    @property
    def timestamps_s(self) -> np.ndarray | None:
        return self.indices / self.fps if self.fps else None


def is_video_path(path: Path) -> bool:
    """True for a visible file whose suffix is a known video extension (any case)."""
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def find_videos(root: Path) -> list[Path]:
    """All video files under ``root`` (recursive, hidden files and folders skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in filenames if is_video_path(Path(name)))
    return sorted(found)


def sample_indices(
    frame_count: int,
    num_frames: int,
    mode: SampleMode = "uniform",
    rng: np.random.Generator | None = None,
    clips: int = 1,
) -> np.ndarray:
    """Pick ``num_frames`` frame indices out of ``frame_count`` decoded frames.

    The video is cut into ``num_frames`` equal segments. ``uniform`` takes the centre frame of
    each segment (test time); ``random`` takes a random frame within each segment (training
    augmentation, reproducible through ``rng``). With fewer frames than segments, both modes
    repeat frames evenly: segment centres map onto the frames that exist, in order.

    ``clips`` > 1 (uniform only) returns ``clips × num_frames`` indices, clip by clip: clip c
    takes the frame at fraction (c + 0.5) / clips of every segment. Each clip spans the whole
    video like a training sample does, so motion between its frames has the scale the model
    learnt; together they cover the segments evenly (multi-clip testing).
    """
    if clips < 1:
        raise ValueError("clips must be at least 1")
    if clips > 1 and mode != "uniform":
        raise ValueError("several clips per video are for uniform (test-time) sampling")
    if frame_count < 1:
        raise ValueError("frame_count must be at least 1")
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    bounds = np.arange(num_frames + 1) * frame_count / num_frames
    if mode == "random" and frame_count >= num_frames:
        rng = rng if rng is not None else np.random.default_rng()
        starts = np.floor(bounds[:-1]).astype(np.int64)
        stops = np.floor(bounds[1:]).astype(np.int64)
        return starts + (rng.random(num_frames) * (stops - starts)).astype(np.int64)
    if mode not in ("uniform", "random"):
        raise ValueError(f"unknown sampling mode {mode!r}; use 'uniform' or 'random'")
    fractions = (np.arange(clips) + 0.5) / clips
    positions = bounds[None, :-1] + fractions[:, None] * (bounds[1:] - bounds[:-1])[None, :]
    return np.minimum(np.floor(positions).astype(np.int64), frame_count - 1).reshape(-1)


def square_resize(frame_bgr: np.ndarray, size: int | None, fit: Fit) -> np.ndarray:
    """The frame as ``size``×``size`` RGB: its centre square (``crop``), or all of it scaled to
    the square (``stretch``). ``size=None`` keeps the frame as decoded.

    Cropping the centre square first and then resizing gives the same picture as resizing the
    shorter side and cropping, with less work.
    """
    if size is not None:
        height, width = frame_bgr.shape[:2]
        if fit is Fit.CROP:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            frame_bgr, height, width = frame_bgr[top : top + side, left : left + side], side, side
        interpolation = cv2.INTER_AREA if min(height, width) > size else cv2.INTER_LINEAR
        frame_bgr = cv2.resize(frame_bgr, (size, size), interpolation=interpolation)
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def _describe_container(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(16)
    for offset, magic, name in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def _check_file(path: Path) -> None:
    """Raise the specific VideoError for paths that cannot even be attempted."""
    if not path.exists():
        raise VideoNotFoundError(path, "no such file; check the path")
    if path.is_dir():
        raise NotAFileError(path, "is a folder; pass its video files" if find_videos(path) else
                            "no videos found in this folder (searched recursively by file extension)")
    if not path.is_file():
        raise NotAFileError(path, "is not a regular file; pass a video file")
    try:
        with path.open("rb") as handle:
            first = handle.read(1)
    except OSError as exc:
        raise UnreadableVideoError(path, f"cannot read the file ({exc.strerror}); check permissions") from exc
    if not first:
        raise NotAVideoError(path, "file is empty (0 bytes); re-copy or re-export the video")


Source = str | os.PathLike[str] | int  # a file, a stream URL (http, https, rtsp...) or a camera


class Stream(str):
    """A stream URL with how long to wait for it to open and for each frame (``--stream-timeout``);
    wherever a string is expected, it is its URL."""

    timeout_s: float

    def __new__(cls, url: str, timeout_s: float = STREAM_TIMEOUT_S) -> Stream:
        stream = super().__new__(cls, url)
        stream.timeout_s = timeout_s
        return stream


def _timeout_s(source: Path | str | int) -> float | None:
    """How long a stream may send nothing; None for files and cameras."""
    return getattr(source, "timeout_s", STREAM_TIMEOUT_S) if isinstance(source, str) else None


def is_stream_url(source: object) -> bool:
    """True for URLs OpenCV's FFmpeg backend can open (``scheme://...``)."""
    return isinstance(source, str) and "://" in source[:16]


def source_name(source: Source) -> str:
    """How a source is named in results and messages: the path, the URL, or 'camera N'."""
    return f"camera {source}" if isinstance(source, int) else os.fspath(source)


def as_source(source: Source) -> Path | str | int:
    """Files become Paths; URLs stay strings (a Path would fold their '//'); cameras stay ints."""
    if isinstance(source, int):
        return source
    text = os.fspath(source)
    return text if is_stream_url(text) else Path(text)


def _open(path: Path | str | int) -> cv2.VideoCapture:
    """Open a video with the FFmpeg backend, frames auto-rotated upright."""
    if isinstance(path, int):
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise NotAVideoError(source_name(path), "cannot open the camera; check the device index and permissions")
        return capture
    if isinstance(path, str):
        timeout_ms = round(1000 * _timeout_s(path))
        started = time.monotonic()
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        if not capture.isOpened():
            waited = time.monotonic() - started
            raise NotAVideoError(path, f"cannot open the stream: nothing came for {waited:.0f} s (--stream-timeout)"
                                 if waited >= 0.9 * timeout_ms / 1000 else
                                 "cannot open the stream (unreachable, unsupported protocol or not a video)")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return capture
    _check_file(path)
    # FFmpeg only: the image-sequence backend would treat names like 'a%d.mp4' as patterns.
    threads = [cv2.CAP_PROP_N_THREADS, DECODE_THREADS] if DECODE_THREADS else []
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, threads)
    if not capture.isOpened():
        container = _describe_container(path)
        if container is None:
            reason = "not a video: OpenCV cannot open it and it has no known video container header"
        else:
            reason = (f"looks like {container} but OpenCV cannot open it; the file is probably "
                      "truncated or corrupt (re-download or re-export it)")
        raise NotAVideoError(path, reason)
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    return capture


def _fourcc(capture: cv2.VideoCapture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip("\x00") else "?"


def _header_frame_count(capture: cv2.VideoCapture) -> int:
    claimed = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(claimed) if math.isfinite(claimed) and 0 < claimed < 2**31 else 0


def _fps(capture: cv2.VideoCapture) -> float | None:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 0 < fps < 10_000 else None


def _no_frames(path: Path | str | int) -> NoFramesDecodedError:
    if isinstance(path, str) and path.lower().startswith(("http://", "https://")) and _index_unreachable(path):
        return NoFramesDecodedError(path, "opened but decoded 0 frames: this MP4's index is at the end of the file "
                                          "and the server cannot seek to it (no range requests); download the file "
                                          "first, or re-mux it with the index first: "
                                          "ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4")
    return NoFramesDecodedError(path, "opened but decoded 0 frames — codec may be unsupported "
                                      "(re-encode it, e.g. to H.264)")


def _index_unreachable(url: str) -> bool:
    """Whether ``url`` serves an MP4/MOV whose index ('moov') comes after its media ('mdat')
    from a server that ignores range requests: FFmpeg cannot reach the index without seeking."""
    import urllib.request

    request = urllib.request.Request(url, headers={"Range": "bytes=0-65535"})
    try:
        with urllib.request.urlopen(request, timeout=_timeout_s(url)) as response:
            if response.status == 206:  # the server seeks: not the cause
                return False
            head = response.read(65536)
    except (OSError, ValueError):
        return False
    return next((kind for kind in _top_level_boxes(head) if kind in (b"moov", b"mdat")), None) == b"mdat"


def _top_level_boxes(head: bytes) -> Iterator[bytes]:
    """The types of an MP4's top-level boxes that start within ``head`` (its first bytes)."""
    offset = 0
    while offset + 8 <= len(head):
        size, kind = int.from_bytes(head[offset : offset + 4], "big"), head[offset + 4 : offset + 8]
        yield kind
        if size == 1 and offset + 16 <= len(head):  # a 64-bit size follows the type
            size = int.from_bytes(head[offset + 8 : offset + 16], "big")
        if size < 8:
            return
        offset += size


@dataclass
class _Watch:
    """Whether this process is decoding, and when it last read a frame (``time.monotonic``)."""

    busy: bool = False
    beat: float = 0.0


_WATCH = _Watch()


def _watched(function: Callable[..., T]) -> Callable[..., T]:
    """Mark ``function`` as decoding, for the watchdog (``watch_decoding``)."""
    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> T:
        _WATCH.busy, _WATCH.beat = True, time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            _WATCH.busy = False
    return wrapper


def watch_decoding() -> None:
    """For worker processes: a thread that ends this process when a decode reads no frame for
    ``DECODE_STALL_S``. A decoder that spins cannot be interrupted from Python; the engine sees
    the process die and fails that video alone (``data.in_workers``)."""
    def watch() -> None:
        while True:
            time.sleep(min(1.0, DECODE_STALL_S / 4))
            if _WATCH.busy and time.monotonic() - _WATCH.beat > DECODE_STALL_S:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="vidclf-decode-watchdog").start()


@_watched
def probe(path: Source) -> VideoInfo:
    """Read a video's metadata, counting the frames that really decode (grab-only pass)."""
    path = as_source(path)
    capture = _open(path)
    try:
        header = _header_frame_count(capture)
        fps = _fps(capture)
        fourcc = _fourcc(capture)
        rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
        ok, first = capture.read()
        if not ok or first is None:
            raise _no_frames(path)
        count = 1 + _count_rest(capture, path)
    finally:
        capture.release()
    height, width = first.shape[:2]
    return VideoInfo(
        path=str(path), frame_count=count, header_frame_count=header, fps=fps,
        duration_s=count / fps if fps else None, width=width, height=height,
        fourcc=fourcc, rotation=rotation,
    )


def _grabbed(capture: cv2.VideoCapture, source: Path | str | int) -> Iterator[int]:
    """Grab frame after frame until the video ends, yielding each one's index; a stream that
    sends nothing for its timeout raises ``StreamStalledError`` instead of ending quietly."""
    timeout, index = _timeout_s(source), 0
    while True:
        started = time.monotonic()
        _WATCH.beat = started
        if not capture.grab():
            if timeout is not None and time.monotonic() - started >= 0.9 * timeout:
                raise StreamStalledError(source, f"the stream stalled: no frame for {timeout:g} s after frame {index} "
                                                 "(--stream-timeout); what came before was used")
            return
        yield index
        index += 1


def _decode_chosen(capture: cv2.VideoCapture, wanted: np.ndarray, resize: Resize, source: Path | str | int
                   ) -> tuple[dict[int, np.ndarray], int]:
    """One forward pass: grab every frame, retrieve those in ``wanted``. Returns (frames, count)."""
    wanted_set = set(int(i) for i in wanted)
    last_wanted = max(wanted_set)
    frames: dict[int, np.ndarray] = {}
    index = 0
    for _ in _grabbed(capture, source):
        if index in wanted_set:
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                frames[index] = resize(frame)
        index += 1
        if index > last_wanted and len(frames) == len(wanted_set):
            break  # Everything needed is in hand; the caller counts the rest only if asked.
    return frames, index


@_watched
def sample_frames(
    path: Source,
    num_frames: int,
    size: int | None = 112,
    mode: SampleMode = "uniform",
    rng: np.random.Generator | None = None,
    frame_count: int | None = None,
    clips: int = 1,
    fit: Fit = Fit.CROP,
) -> Clip:
    """Sample ``num_frames`` RGB frames from a video (see ``sample_indices`` for the scheme).

    ``frame_count`` is a known decodable count (from ``probe``); without it the header's count
    is tried first and, when decoding proves the header wrong, the video is decoded again with
    the true count — so indices always refer to frames that exist. With ``clips`` > 1 the
    result holds ``clips × num_frames`` frames (see ``sample_indices``; ``Clip.split``). Frames
    are ``size``×``size`` as ``fit`` says (``square_resize``).
    """
    return _sample(path, lambda count: sample_indices(count, num_frames, mode, rng, clips), num_frames, size, fit,
                   frame_count)


def sample_views(path: Source, num_frames: int, size: int | None, rngs: Sequence[np.random.Generator | None],
                 fit: Fit = Fit.CROP) -> list[Clip]:
    """Several samplings of one video in one decoding pass: a uniform one for each None in
    ``rngs``, a random one (``sample_frames``'s "random" with that generator) for each other;
    each the clip ``sample_frames`` gives alone, pixel for pixel."""
    def chosen(count: int) -> np.ndarray:
        return np.concatenate([sample_indices(count, num_frames, "uniform" if rng is None else "random", rng)
                               for rng in rngs])

    return _sample(path, chosen, num_frames, size, fit).split(len(rngs))


def _sample(path: Source, choose: Callable[[int], np.ndarray], num_frames: int, size: int | None, fit: Fit,
            frame_count: int | None = None) -> Clip:
    """The frames at ``choose(frame count)`` in one pass (seeking where it pays), as one Clip."""
    path = as_source(path)
    resize = functools.partial(square_resize, size=size, fit=fit)
    warnings: list[str] = []
    capture = _open(path)
    try:
        fps = _fps(capture)
        header = _header_frame_count(capture)
        guess = frame_count or header
        if guess > 0:
            chosen = choose(guess)
            if _worth_seeking(path, guess, len(chosen)):
                frames = _seek_chosen(capture, chosen, resize, guess, _Costs())
                if frames is not None:
                    return _assemble(path, frames, chosen, guess, fps, num_frames, warnings)
                capture.release()  # seeking failed (the header's count is wrong): one pass from the start
                capture = _open(path)
            frames, decoded = _decode_chosen(capture, chosen, resize, path)
            if len(frames) == len(set(chosen.tolist())):
                # All chosen frames decoded; make sure no frames lie beyond the guess.
                decoded += _count_rest(capture, path)
                if decoded == guess:
                    return _assemble(path, frames, chosen, decoded, fps, num_frames, warnings)
        else:
            decoded = _count_rest(capture, path)
    finally:
        capture.release()

    if decoded == 0:
        raise _no_frames(path)
    # A frame or two short of the header is common and harmless; more means decoding stopped.
    if frame_count is None and decoded < header - max(1, header // 50):
        warnings.append(f"decoded only {decoded} of the {header} frames the header claims "
                        "(file may be truncated); sampled from the frames that decode")
    # Second pass with the true count: rare, only when the header lied.
    chosen = choose(decoded)
    capture = _open(path)
    try:
        frames, _ = _decode_chosen(capture, chosen, resize, path)
    finally:
        capture.release()
    if len(frames) < len(set(chosen.tolist())):
        raise VideoError(path, "decoding is not repeatable (frames vanished on a second pass); "
                               "the file may be corrupt")
    return _assemble(path, frames, chosen, decoded, fps, num_frames, warnings)


def one_decode_thread() -> None:
    """For worker processes, which are the parallelism: FFmpeg's own threads would oversubscribe
    the cores (measured: 2 workers on 2 cores, 15% less wall time and CPU with one each)."""
    global DECODE_THREADS
    DECODE_THREADS = 1


def _worth_seeking(path: Path | str | int, count: int, samples: int) -> bool:
    """Whether to try seeking: an MP4/MOV file whose samples lie more than ``SEEK_MIN_GAP``
    frames apart on average (a short clip decodes through faster than any seek lands)."""
    return (isinstance(path, Path) and count >= SEEK_MIN_GAP * samples
            and _describe_container(path) in ("MP4/MOV", "MOV"))


@dataclass
class _Costs:
    """Seconds measured in this video: to grab one frame, and the slowest seek so far."""

    per_frame: float | None = None
    per_seek: float = 0.0
    seeks: int = 0


def _move_to(capture: cv2.VideoCapture, position: int, target: int, costs: _Costs) -> bool:
    """Make frame ``target`` the next one read (frame ``position`` is now): seek, or grab
    through the gap, whichever the costs measured say is cheaper (the first gap is grabbed, to
    measure decoding; the first seek is tried, to measure seeking). False when that fails."""
    gap = target - position
    started = time.perf_counter()
    _WATCH.beat = time.monotonic()
    if gap > 0 and costs.per_frame is not None and costs.per_seek < gap * costs.per_frame:
        moved = capture.set(cv2.CAP_PROP_POS_FRAMES, target)
        costs.per_seek = max(costs.per_seek, time.perf_counter() - started)
        costs.seeks += 1
        return moved
    grabbed = sum(1 for _ in itertools.takewhile(bool, (capture.grab() for _ in range(gap))))
    if gap > 0:
        costs.per_frame = (time.perf_counter() - started) / gap
    return grabbed == gap


def _seek_chosen(capture: cv2.VideoCapture, wanted: np.ndarray, resize: Resize, count: int, costs: _Costs
                 ) -> dict[int, np.ndarray] | None:
    """The frames in ``wanted``, each reached by seeking or grabbing (``_move_to``, costs
    measured into ``costs``); None when that fails or the video does not have exactly ``count``
    frames (then decode in one pass)."""
    frames: dict[int, np.ndarray] = {}
    position = 0
    for target in sorted(set(wanted.tolist())):
        ok, frame = capture.read() if _move_to(capture, position, target, costs) else (False, None)
        if not ok or frame is None:
            return None
        frames[target] = resize(frame)
        position = target + 1
    if position < count and not (_move_to(capture, position, count - 1, costs) and capture.grab()):
        return None  # the header's last frame is not there
    return None if capture.grab() else frames  # a frame after it: the header undercounts


def _count_rest(capture: cv2.VideoCapture, source: Path | str | int) -> int:
    return sum(1 for _ in _grabbed(capture, source))


def _assemble(path: Path | str | int, frames: dict[int, np.ndarray], chosen: np.ndarray, decoded: int,
              fps: float | None, num_frames: int, warnings: list[str]) -> Clip:
    repeated = decoded < num_frames
    if repeated:
        warnings.append(f"only {decoded} frame(s) decode, fewer than the {num_frames} sampled; "
                        "frames were repeated evenly")
    stack = np.stack([frames[int(i)] for i in chosen])
    return Clip(path=str(path), frames=stack, indices=chosen, frame_count=decoded, fps=fps,
                repeated=repeated, warnings=tuple(warnings))


@dataclass(frozen=True)
class Window:
    """One window of a long video or stream: T frames sampled from [start_s, end_s)."""

    start_s: float
    end_s: float
    clip: Clip


def iter_windows(source: Source, window_s: float, stride_s: float, num_frames: int,
                 size: int | None, fit: Fit, default_fps: float = 25.0) -> Iterator[Window]:
    """Slide a window over a video in one decoding pass, yielding each window as it completes.

    Window k covers frames [k·stride, k·stride + window); each is sampled to T frames like a
    whole clip (segment centres). The last window is aligned to the end so no tail is dropped;
    a video shorter than one window gives one window over all of it. Memory holds one window's
    worth of resized frames, whatever the video's length — files, URLs and cameras alike.
    """
    source = as_source(source)
    capture = _open(source)
    try:
        fps = _fps(capture) or default_fps
        span = max(1, round(window_s * fps))
        step = max(1, round(stride_s * fps))
        offsets = sample_indices(span, num_frames)
        recent: deque[np.ndarray] = deque(maxlen=span)  # frames index-span+1 .. index
        index = next_start = covered = 0
        for _ in _grabbed(capture, source):
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                break
            recent.append(square_resize(frame, size, fit))
            index += 1
            while next_start + span <= index:
                yield _window(source, recent, index, next_start, next_start + span, next_start + offsets, fps)
                covered, next_start = next_start + span, next_start + step
    finally:
        capture.release()
    if index == 0:
        raise _no_frames(source)
    if index < span:  # shorter than one window: one window over everything
        yield _window(source, recent, index, 0, index, sample_indices(index, num_frames), fps)
    elif covered < index:  # the tail after the last full stride
        yield _window(source, recent, index, index - span, index, index - span + offsets, fps)


def _window(source: Path | str | int, recent: deque[np.ndarray], decoded: int, start: int, end: int,
            chosen: np.ndarray, fps: float) -> Window:
    """Frames ``chosen`` (decoded-frame indices) out of the ``recent`` buffer, as a Window."""
    first = decoded - len(recent)  # decoded-frame index of recent[0]
    frames = np.stack([recent[int(i) - first] for i in chosen])
    clip = Clip(path=str(source), frames=frames, indices=chosen, frame_count=end - start, fps=fps,
                repeated=len(np.unique(chosen)) < len(chosen))
    return Window(start_s=start / fps, end_s=end / fps, clip=clip)
