"""Atomic file writes: every file vidclf writes appears whole or not at all."""

from __future__ import annotations

import errno
import os
import tempfile
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
