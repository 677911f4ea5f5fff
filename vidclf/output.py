"""Writers that turn results into tables for people and JSON/CSV for scripts."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from vidclf.predict import Prediction

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


class PredictionWriter:
    """Writes prediction records to a text stream; one subclass per ``--format``."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        self.stream = stream
        self.top_k = top_k

    def write(self, prediction: Prediction) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonlWriter(PredictionWriter):
    """One JSON object per line, flushed per video: ``vidclf predict dir/ | jq ...``."""

    def write(self, prediction: Prediction) -> None:
        self.stream.write(json.dumps(prediction.to_dict(self.top_k), ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonWriter(PredictionWriter):
    """A single JSON array of all records, written at the end."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        super().__init__(stream, top_k)
        self.records: list[dict[str, object]] = []

    def write(self, prediction: Prediction) -> None:
        self.records.append(prediction.to_dict(self.top_k))

    def close(self) -> None:
        json.dump(self.records, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")
        super().close()


class CsvWriter(PredictionWriter):
    """``video,rank,label,score`` rows, top-k per video; failed videos are left out (stderr)."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        super().__init__(stream, top_k)
        self.rows = csv.writer(stream, lineterminator="\n")
        self.rows.writerow(["video", "rank", "label", "score"])

    def write(self, prediction: Prediction) -> None:
        for rank, (label, score) in enumerate(prediction.labels[: self.top_k], start=1):
            self.rows.writerow([prediction.video, rank, label, f"{score:.6f}"])
        self.stream.flush()


class TableWriter(PredictionWriter):
    """A rich table for people: one row per video, top-k labels with scores."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        super().__init__(stream, top_k)
        self.predictions: list[Prediction] = []

    def write(self, prediction: Prediction) -> None:
        self.predictions.append(prediction)

    def close(self) -> None:
        table = Table()
        table.add_column("video", overflow="fold")
        table.add_column("top")
        table.add_column("score", justify="right")
        table.add_column(f"top {self.top_k}", overflow="fold")
        for p in self.predictions:
            if p.error is not None:
                table.add_row(escape(p.video), "[red]error[/red]", "", escape(p.error))
                continue
            ranked = ", ".join(f"{escape(label)} {score:.2f}" for label, score in p.labels[: self.top_k])
            table.add_row(escape(p.video), escape(p.top or ""), f"{p.labels[0][1]:.3f}", ranked)
        width = None if self.stream.isatty() else 200
        Console(file=self.stream, highlight=False, width=width).print(table)
        super().close()


WRITERS: dict[str, type[PredictionWriter]] = {
    "table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter,
}


def get_writer(fmt: str, stream: TextIO, top_k: int) -> PredictionWriter:
    """The writer for ``--format fmt``."""
    return WRITERS[fmt](stream, top_k)


def info_table(path: object, metadata: dict[str, object]) -> Table:
    """``vidclf info``: one row per metadata field, nested fields flattened with dots."""
    table = Table(title=str(path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")

    def add(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            table.add_row(escape(prefix), escape(_cell(value if not isinstance(value, list) else ", ".join(map(str, value)))))

    add("", metadata)
    return table
