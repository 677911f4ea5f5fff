"""Clips whose frames carry their own index as a barcode, so tests can check decoded pixels.

The barcode fills the video's centre square (the part a centre crop keeps) with 8 horizontal
stripes, one bit each, black or white: lossy codecs keep that readable.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BITS = 8


def indexed_frame(index: int, width: int, height: int) -> np.ndarray:
    """A BGR frame whose centre square encodes ``index`` in 8 stripes (MSB on top)."""
    frame = np.full((height, width, 3), 128, np.uint8)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    edges = np.linspace(0, side, BITS + 1).round().astype(int)
    for bit in range(BITS):
        value = 255 if (index >> (BITS - 1 - bit)) & 1 else 0
        frame[top + edges[bit] : top + edges[bit + 1], left : left + side] = value
    return frame


def read_index(frame: np.ndarray) -> int:
    """Decode the index from a frame that shows the centre square (any size, RGB or BGR)."""
    gray = frame.mean(axis=2) if frame.ndim == 3 else frame
    side = min(gray.shape)
    top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
    square = gray[top : top + side, left : left + side]
    edges = np.linspace(0, side, BITS + 1).round().astype(int)
    index = 0
    for bit in range(BITS):
        band = square[edges[bit] : edges[bit + 1]]
        margin = max(1, band.shape[0] // 4)  # stay clear of blurred stripe borders
        index = index * 2 + int(band[margin:-margin].mean() > 128)
    return index


def write_indexed_video(path: Path, num_frames: int, width: int = 96, height: int = 64,
                        fps: float = 25.0, fourcc: str | None = None) -> Path:
    """Write frames 0..num_frames-1 with cv2 (mp4v for .mp4, MJPG for .avi)."""
    fourcc = fourcc or {".mp4": "mp4v", ".avi": "MJPG"}[path.suffix.lower()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for index in range(num_frames):
        writer.write(indexed_frame(index, width, height))
    writer.release()
    return path
