"""A prediction job for tests of the engine's crash recovery: a video whose name starts with
"crash" kills the process decoding it, as a crashing decoder or the out-of-memory killer would."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from vidclf.data import PreparedVideo, prepare_video


def prepare_or_die(source: str, **options: object) -> PreparedVideo:
    if Path(source).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    return prepare_video(source, **options)
