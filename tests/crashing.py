"""Jobs for tests of the worker engine's recovery. A video whose name starts with "crash"
kills the process decoding it, as a crashing decoder or the out-of-memory killer would; one
whose name starts with "stall" decodes nothing, ever, as a decoder that spins."""

from __future__ import annotations

import gc
import os
import signal
import struct
import time
from multiprocessing.queues import SimpleQueue
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


def die_mid_send() -> None:
    """Die as a worker killed while sending a large result: the message's length and the first
    of its bytes are on the result pipe, the rest never comes."""
    results = next(obj for obj in gc.get_objects() if isinstance(obj, SimpleQueue))
    os.write(results._writer.fileno(), struct.pack("!i", 1 << 20) + bytes(1000))
    os.kill(os.getpid(), signal.SIGKILL)


def square_or_die(n: int) -> int:
    """``n``², except that 3 kills its process, 5 stalls and 10 dies halfway through sending its
    result, for tests of ``data.pool_map``."""
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    if n == 10:
        die_mid_send()
    if n == 5:
        video.DECODE_STALL_S = 1.0
        video._watched(time.sleep)(600)
    return n * n
