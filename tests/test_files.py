"""The one atomic-write helper every writer uses, and the progress-bar helper."""

from __future__ import annotations

from pathlib import Path

import pytest

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
