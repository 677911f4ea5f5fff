"""A seeded mutator of video files, for fuzzing the reader: byte-level (bit flips, truncation,
spliced, duplicated and zeroed ranges, a scrambled header) and container-aware (an MP4 box's
or an AVI chunk's size or type damaged, a box dropped or repeated)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

# Boxes whose children are boxes (MP4/MOV), and RIFF lists (AVI): where structure is found.
_MP4_PARENTS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta"}


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(offset, size) of every MP4 box, depth first."""
    end = len(data) if end is None else end
    offset = start
    while offset + 8 <= end:
        size = int.from_bytes(data[offset : offset + 4], "big")
        if size < 8 or offset + size > end:
            return
        yield offset, size
        if data[offset + 4 : offset + 8] in _MP4_PARENTS:
            yield from _mp4_boxes(data, offset + 8, offset + size)
        offset += size


def _riff_chunks(data: bytes) -> Iterator[tuple[int, int]]:
    """(offset, size) of every AVI chunk and list, depth first."""
    offset = 12
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        yield offset, size + 8
        offset += 12 if data[offset : offset + 4] == b"LIST" else size + 8 + (size & 1)


def _structure(data: bytes) -> list[tuple[int, int, str]]:
    """The file's boxes or chunks as (offset, size, byte order)."""
    if data[4:8] == b"ftyp":
        return [(offset, size, "big") for offset, size in _mp4_boxes(data)]
    if data[:4] == b"RIFF":
        return [(offset, size, "little") for offset, size in _riff_chunks(data)]
    return []


def _range(data: bytes, rng: np.random.Generator) -> tuple[int, int]:
    start = int(rng.integers(0, len(data)))
    return start, min(len(data), start + int(rng.integers(1, max(2, len(data) // 8))))


def _flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for position in rng.integers(0, len(out), int(rng.integers(1, 64))):
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(len(data) * rng.uniform(0.0, 0.98))]


def _splice(data: bytes, rng: np.random.Generator) -> bytes:
    start, stop = _range(data, rng)
    at = int(rng.integers(0, len(data)))
    return data[:at] + data[start:stop] + data[at + stop - start :]


def _duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    start, stop = _range(data, rng)
    return data[:stop] + data[start:stop] + data[stop:]


def _zero(data: bytes, rng: np.random.Generator) -> bytes:
    start, stop = _range(data, rng)
    return data[:start] + bytes(stop - start) + data[stop:]


def _scramble_header(data: bytes, rng: np.random.Generator) -> bytes:
    size = min(len(data), int(rng.integers(8, 512)))
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes() + data[size:]


def _damage_size(data: bytes, rng: np.random.Generator) -> bytes:
    """A box's or chunk's size field set to 0, 1, a few bytes, its neighbour's, or huge."""
    boxes = _structure(data)
    if not boxes:
        return _flip_bits(data, rng)
    offset, size, order = boxes[int(rng.integers(0, len(boxes)))]
    field = offset if order == "big" else offset + 4
    value = int(rng.choice([0, 1, 7, 9, size // 2, size * 2, 0xFFFFFFFF, int(rng.integers(0, 1 << 32))]))
    return data[:field] + value.to_bytes(4, order) + data[field + 4 :]


def _damage_type(data: bytes, rng: np.random.Generator) -> bytes:
    boxes = _structure(data)
    if not boxes:
        return _scramble_header(data, rng)
    offset, _, order = boxes[int(rng.integers(0, len(boxes)))]
    field = offset + 4 if order == "big" else offset
    other = boxes[int(rng.integers(0, len(boxes)))][0]
    kind = data[other + 4 : other + 8] if order == "big" else data[other : other + 4]
    return data[:field] + (kind if rng.random() < 0.5 else rng.bytes(4)) + data[field + 4 :]


def _drop_or_repeat_box(data: bytes, rng: np.random.Generator) -> bytes:
    boxes = _structure(data)
    if not boxes:
        return _duplicate(data, rng)
    offset, size, _ = boxes[int(rng.integers(0, len(boxes)))]
    box = data[offset : offset + size]
    return data[:offset] + (box + box if rng.random() < 0.5 else b"") + data[offset + size :]


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "flip_bits": _flip_bits, "truncate": _truncate, "splice": _splice, "duplicate": _duplicate, "zero": _zero,
    "scramble_header": _scramble_header, "box_size": _damage_size, "box_type": _damage_type,
    "box_drop_or_repeat": _drop_or_repeat_box,
}


def mutants(sources: list[Path], count: int, out: Path, seed: int) -> list[tuple[Path, str]]:
    """``count`` mutated copies of ``sources`` (round robin) in ``out``, one to three mutations
    each, seeded: (path, the mutations applied)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for n in range(count):
        source = sources[n % len(sources)]
        data, applied = source.read_bytes(), []
        for _ in range(int(rng.integers(1, 4))):
            name = list(MUTATIONS)[int(rng.integers(0, len(MUTATIONS)))]
            data = MUTATIONS[name](data, rng) if data else data
            applied.append(name)
        path = out / f"{n:05d}_{source.stem[:40]}{source.suffix}"
        path.write_bytes(data)
        made.append((path, "+".join(applied)))
    return made
