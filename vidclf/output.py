"""Writers that turn results into tables for people and JSON/CSV for scripts."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

_PROBE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "video"),
    ("frame_count", "frames"),
    ("header_frame_count", "header"),
    ("fps", "fps"),
    ("duration_s", "seconds"),
    ("width", "width"),
    ("height", "height"),
    ("fourcc", "codec"),
    ("rotation", "rotation"),
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def probe_table(records: Sequence[dict[str, object]]) -> Table:
    """A table of ``probe`` results; failed files show their error across the row."""
    table = Table(show_lines=False)
    for key, title in _PROBE_COLUMNS:
        table.add_column(title, justify="left" if key in ("path", "fourcc") else "right",
                         overflow="fold")
    for record in records:
        if "error" in record:
            table.add_row(_cell(record["path"]), f"[red]error: {record['error']}[/red]")
        else:
            table.add_row(*(_cell(record[key]) for key, _ in _PROBE_COLUMNS))
    return table
