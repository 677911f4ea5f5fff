"""Jobs for tests of the worker engine's recovery. A video whose name starts with "crash"
kills the process decoding it, as a crashing decoder or the out-of-memory killer would; one
whose name starts with "stall" decodes nothing, ever, as a decoder that spins."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from vidclf import video
from vidclf.data import PreparedVideo, prepare_video


def prepare_or_die(source: str, **options: object) -> PreparedVideo:
    if Path(source).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    if Path(source).name.startswith("stall"):
        video.DECODE_STALL_S = 1.0  # the watchdog's patience, shortened for the test
        video._watched(time.sleep)(600)
    return prepare_video(source, **options)


def square_or_die(n: int) -> int:
    """``n``², except that 3 kills its process and 5 stalls, for tests of ``data.pool_map``."""
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if n == 5:
        video.DECODE_STALL_S = 1.0
        video._watched(time.sleep)(600)
    return n * n
