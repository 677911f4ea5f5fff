"""`vidclf check DATA`: what would go wrong in a training run, found before it starts.

Every clip of a dataset (any layout ``train`` accepts) is probed in parallel worker processes:
whether it opens, how many frames really decode against the container's claim, its size and
frame rate. Then, over the whole set: clips too short for T frames, sizes and frame rates far
from the dataset's own, class counts and their imbalance, and the same video (identical
content) twice: in two classes (its label is ambiguous) or in two splits (leakage: validation
or test would score clips the model trained on).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidclf.data import DIED, LabelledVideo, clip_digests, discover, file_digest, pool_map
from vidclf.video import VideoError, VideoInfo, probe

UNUSUAL = 3.0  # a size or frame rate this many times off the dataset's median is worth a look (30 vs 60 fps is not)
IMBALANCED = 3.0  # the largest class this many times the smallest


@dataclass
class ClipCheck:
    """One clip: where it is, what it decodes to, and what is wrong with it."""

    path: str
    label: str
    split: str
    frames: int | None = None
    header_frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    clips: list[ClipCheck]
    counts: dict[str, dict[str, int]]  # split → label → clips
    imbalance: dict[str, float]  # split → largest class / smallest
    duplicates: list[dict[str, object]]  # identical files: paths, labels, splits, and why it matters

    @property
    def problems(self) -> int:
        return sum(bool(clip.problems) for clip in self.clips) + len(self.duplicates)

    def to_dict(self) -> dict[str, object]:
        return {"clips": len(self.clips), "problems": self.problems, "counts": self.counts, "imbalance": self.imbalance,
                "duplicates": self.duplicates, "files": [asdict(clip) for clip in self.clips]}


def _probe(path: Path) -> VideoInfo | str:
    """A worker's job: the probe, or why the clip cannot be used."""
    try:
        return probe(path)
    except VideoError as exc:
        return exc.reason


def check_dataset(data: Path, frames: int, workers: int) -> CheckReport:
    """Probe every clip of ``data`` (``workers`` processes) and check the set (see the module)."""
    found = discover(data)
    items = [(split, item) for split, listed in found.items() for item in listed]
    infos = pool_map(_probe, [item.path for _, item in items], workers, "checking", "clip", died=lambda path: DIED)
    clips = [_clip(split, item, info, frames) for (split, item), info in zip(items, infos)]
    _flag_unusual(clips)
    counts = {split: dict(sorted(Counter(item.label for item in listed).items())) for split, listed in found.items()}
    imbalance = {split: max(c.values()) / min(c.values()) for split, c in counts.items() if c}
    paths = [item.path for _, item in items]
    return CheckReport(clips, counts, imbalance, duplicates(items, clip_digests(paths, [file_digest(p) for p in paths])))


def _clip(split: str, item: LabelledVideo, info: VideoInfo | str, frames: int) -> ClipCheck:
    clip = ClipCheck(str(item.path), item.label, split)
    if isinstance(info, str):
        clip.problems.append(info)
        return clip
    clip.frames, clip.header_frames, clip.width, clip.height, clip.fps = (
        info.frame_count, info.header_frame_count, info.width, info.height, info.fps)
    if 0 < info.frame_count < 0.9 * info.header_frame_count:
        clip.problems.append(f"decoding stops at frame {info.frame_count} of the {info.header_frame_count} the "
                             "header announces: truncated or damaged")
    if info.frame_count < frames:
        clip.problems.append(f"{info.frame_count} frames, fewer than the {frames} sampled: frames will repeat")
    return clip


def _flag_unusual(clips: Sequence[ClipCheck]) -> None:
    """Mark sizes and frame rates ``UNUSUAL`` times off the dataset's median."""
    decoded = [clip for clip in clips if clip.frames]
    if not decoded:
        return
    side = statistics.median(min(clip.width, clip.height) for clip in decoded)
    rates = [clip.fps for clip in decoded if clip.fps]
    fps = statistics.median(rates) if rates else None
    for clip in decoded:
        if not side / UNUSUAL <= min(clip.width, clip.height) <= side * UNUSUAL:
            clip.problems.append(f"unusual size {clip.width}x{clip.height} (the dataset's median shorter side is {side:g})")
        if fps and clip.fps and not fps / UNUSUAL <= clip.fps <= fps * UNUSUAL:
            clip.problems.append(f"unusual frame rate {clip.fps:g} fps (the dataset's median is {fps:g})")


def duplicates(items: Sequence[tuple[str, LabelledVideo]], digests: Sequence[str]) -> list[dict[str, object]]:
    """Sets of identical files among (split, clip) ``items`` (by their ``clip_digests``), each
    with why it matters."""
    by_content: dict[str, list[tuple[str, LabelledVideo]]] = defaultdict(list)
    for key, entry in zip(digests, items):
        by_content[key].append(entry)
    out = []
    for entries in by_content.values():
        if len(entries) < 2:
            continue
        labels, splits = sorted({i.label for _, i in entries}), sorted({s for s, _ in entries})
        why = ("in several classes: its label is ambiguous" if len(labels) > 1 else
               "in several splits: leakage, the held-out clips include training clips" if len(splits) > 1 else
               "twice in one class: it counts double")
        out.append({"paths": [str(i.path) for _, i in entries], "labels": labels, "splits": splits, "why": why})
    return out
