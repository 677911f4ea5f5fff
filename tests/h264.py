"""H.264 test videos with a chosen keyframe interval, written with PyAV (a dev dependency:
OpenCV's wheel has no H.264 encoder). Each frame is unique (a moving pattern and a moving
box), so a frame read from the wrong position shows up as different pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the test pattern (RGB, uint8): smooth gradients that drift, a box that moves."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (127 + 120 * np.sin((x + 3 * index) / 23.0)).astype(np.uint8)
    frame[..., 1] = (127 + 120 * np.cos((y - 2 * index) / 17.0)).astype(np.uint8)
    frame[..., 2] = ((x + y + 5 * index) % 256).astype(np.uint8)
    side = max(4, min(width, height) // 6)
    left = (7 * index) % max(1, width - side)
    top = (3 * index) % max(1, height - side)
    frame[top : top + side, left : left + side] = (255, 255 - (index % 256), index % 256)
    return frame


def write_h264(path: Path, frames: int, width: int = 320, height: int = 240, fps: int = 25, gop: int = 250,
               preset: str = "veryfast", faststart: bool = False) -> Path:
    """A ``frames``-long H.264 MP4 (yuv420p, a keyframe every ``gop`` frames; the index at the
    end of the file, FFmpeg's default, or first with ``faststart``)."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for index in range(frames):
            image = av.VideoFrame.from_ndarray(pattern(index, width, height), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path
