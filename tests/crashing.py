"""A prediction job for tests of the engine's recovery: a video whose name starts with "crash"
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
