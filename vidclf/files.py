"""Atomic file writes: every file vidclf writes appears whole or not at all."""

from __future__ import annotations

import errno
import glob
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from vidclf.errors import VidclfError

# Why a write can fail for want of room, as the user should hear it.
NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "the file-size limit (ulimit -f) was reached"}


class NoRoomError(VidclfError):
    """A write failed for want of disk space (or quota, or the file-size limit)."""


@contextmanager
def atomic_write(path: Path, mode: str = "wb", **open_args: object) -> Iterator[IO]:
    """Open a uniquely named temp file beside ``path``; on success fsync it and rename it over
    ``path``, on failure remove it. A crash or ``kill -9`` leaves the old file (or none); a
    full disk raises ``NoRoomError``, one line that says so."""
    with _signals_deferred():
        yield from _write_then_rename(path, mode, **open_args)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the write is whole (every write is short): stopping inside
    ``torch.save`` would lose the checkpoint being written, and stop with an internal error.
    (Blocking the signals would not do: torch's threads would take them.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])  # now, to the handler it was meant for


def _write_then_rename(path: Path, mode: str, **open_args: object) -> Iterator[IO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # as open() would make it: mkstemp's 0600 would hide models from the group
    try:
        with open(handle, mode, **open_args) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        reason = _no_room(temp, exc) if isinstance(exc, Exception) else None
        Path(temp).unlink(missing_ok=True)
        if reason is not None:
            raise NoRoomError(f"{path}: cannot write: {NO_ROOM[reason]}; free some space or write "
                              "elsewhere (any earlier file there is intact)") from None
        raise


def remove_leftovers(path: Path) -> None:
    """Remove the temp files that writes of ``path`` killed mid-way (``kill -9``) left beside it.
    Only for a file one process owns (a model, its checkpoints): a shared cache entry's temp
    file may be another process's write under way."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        temp.unlink(missing_ok=True)


def _no_room(temp: str, exc: BaseException | None) -> int | None:
    """The errno in ``NO_ROOM`` behind a failed write, if that is why it failed: from the
    exception chain, else (torch.save reports a short write as its own RuntimeError) from trying
    to grow the temp file by 1 MiB."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    try:
        with open(temp, "ab") as probe:
            probe.write(bytes(1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        return error.errno if error.errno in NO_ROOM else None
    return None
