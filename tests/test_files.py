"""The one atomic-write helper every writer uses, and the progress-bar helper."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from vidclf.files import atomic_write
from vidclf.progress import progress


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "model.bin"
    with atomic_write(path) as handle:
        handle.write(b"new")
        assert not path.exists()  # nothing at the final name until the write completes
    assert path.read_bytes() == b"new"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("text")
    assert path.read_text(encoding="utf-8") == "text"
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the permissions open() gives, not mkstemp's 0600


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_during_a_write_waits_until_it_is_whole(tmp_path: Path, sig: int) -> None:
    """Stopped inside torch.save, a checkpoint was lost (and the run ended in an internal
    error): the signal now arrives once the file is complete."""
    class Stopped(Exception):
        pass

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    previous = signal.signal(sig, stop)
    path = tmp_path / "checkpoint.pt"
    try:
        with pytest.raises(Stopped):
            with atomic_write(path) as handle:
                os.kill(os.getpid(), sig)
                torch.save({"weights": torch.arange(100_000)}, handle)
    finally:
        signal.signal(sig, previous)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(100_000))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path) as handle:
            handle.write(b"half")
            raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_two_writers_of_one_path_never_share_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with atomic_write(path, "w") as first, atomic_write(path, "w") as second:
        assert first.name != second.name
        first.write("first")
        second.write("second")
    assert path.read_text() in {"first", "second"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_progress_bars_are_off_when_stderr_is_not_a_terminal() -> None:
    bar = progress(range(3), desc="x")
    assert bar.disable and list(bar) == [0, 1, 2]


def test_a_write_over_the_size_limit_says_so_in_a_line_and_keeps_the_previous_file(tmp_path: Path) -> None:
    """A real failing write: a child process under ``ulimit -f`` (SIGXFSZ ignored, as the CLI
    does) writes more than the limit through ``atomic_write``."""
    import resource
    import signal
    import subprocess
    import sys

    path = tmp_path / "model.bin"
    path.write_bytes(b"precious")

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    code = ("import sys; from pathlib import Path; from vidclf.files import atomic_write, NoRoomError\n"
            "try:\n    with atomic_write(Path(sys.argv[1])) as f: f.write(b'x' * 100_000)\n"
            "except NoRoomError as exc: print(exc)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                            preexec_fn=limited, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: cannot write: the file-size limit (ulimit -f) was reached; free some " \
                            "space or write elsewhere (any earlier file there is intact)\n"
    assert path.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_a_disk_that_fills_at_fsync_is_no_room_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Network and copy-on-write filesystems report ENOSPC late, at fsync: the same one line."""
    import errno
    import os

    from vidclf.files import NoRoomError

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "m.ckpt"
    with pytest.raises(NoRoomError, match="m.ckpt: cannot write: no space left on the device"):
        with atomic_write(path) as handle:
            handle.write(b"data")
    assert list(tmp_path.iterdir()) == []
