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
    from vidclf.check import CheckReport
    from vidclf.metrics import EvalReport
    from vidclf.predict import Prediction, Segment

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


def result_console(stream: TextIO) -> Console:
    """Console for results; wide when not a terminal so tables don't fold into narrow columns."""
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 200)


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


def check_tables(report: "CheckReport") -> list[Table]:
    """``vidclf check`` for people: clips with problems, class counts, identical files."""
    problems = Table(title=f"{report.problems} problem(s) in {len(report.clips)} clips")
    for name in ("video", "label", "split", "problem"):
        problems.add_column(name, overflow="fold")
    for clip in report.clips:
        for problem in clip.problems:
            problems.add_row(escape(clip.path), escape(clip.label), clip.split, escape(problem))
    for duplicate in report.duplicates:
        problems.add_row(escape("\n".join(duplicate["paths"])), escape(", ".join(duplicate["labels"])),
                         ", ".join(duplicate["splits"]), f"the same video {duplicate['why']}")
    counts = Table(title="clips per class")
    counts.add_column("label")
    splits = list(report.counts)
    for split in splits:
        counts.add_column(split, justify="right")
    for label in sorted({label for c in report.counts.values() for label in c}):
        counts.add_row(escape(label), *(str(report.counts[split].get(label, 0)) for split in splits))
    counts.add_row("largest / smallest", *(f"{report.imbalance[split]:.1f}" for split in splits))
    return [problems, counts]


class PredictionWriter:
    """Writes prediction records to a text stream; one subclass per ``--format``."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        self.stream = stream
        self.top_k = top_k

    def write(self, prediction: Prediction) -> None:
        raise NotImplementedError

    def write_segment(self, video: str, segment: Segment) -> None:
        """A timeline window as soon as it completes; formats that stream override this."""

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
        result_console(self.stream).print(table)
        super().close()


class TimelineJsonlWriter(JsonlWriter):
    """One line per window, flushed at once: ``predict rtsp://cam --window 2 | jq ...``."""

    def write_segment(self, video: str, segment: Segment) -> None:
        self.stream.write(json.dumps({"video": video, **segment.to_dict(self.top_k)}, ensure_ascii=False) + "\n")
        self.stream.flush()

    def write(self, prediction: Prediction) -> None:
        if prediction.error is not None:  # windows were written already; only failures remain
            super().write(prediction)


class TimelineCsvWriter(PredictionWriter):
    """``video,start_s,end_s,rank,label,score`` rows, top-k per window, flushed per window."""

    def __init__(self, stream: TextIO, top_k: int) -> None:
        super().__init__(stream, top_k)
        self.rows = csv.writer(stream, lineterminator="\n")
        self.rows.writerow(["video", "start_s", "end_s", "rank", "label", "score"])

    def write_segment(self, video: str, segment: Segment) -> None:
        for rank, (label, score) in enumerate(segment.labels[: self.top_k], start=1):
            self.rows.writerow([video, f"{segment.start_s:.3f}", f"{segment.end_s:.3f}", rank, label, f"{score:.6f}"])
        self.stream.flush()

    def write(self, prediction: Prediction) -> None:
        pass  # everything was written per window


def srt_time(seconds: float) -> str:
    """SubRip timestamp ``HH:MM:SS,mmm``."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


class SrtWriter(PredictionWriter):
    """A SubRip subtitle track: the top label of each window, to watch over the video.

    Overlapping windows would stack subtitles, so each cue ends where the next window starts.
    """

    def __init__(self, stream: TextIO, top_k: int) -> None:
        super().__init__(stream, top_k)
        self.cue = 0
        self.pending: Segment | None = None

    def write_segment(self, video: str, segment: Segment) -> None:
        if self.pending is not None:
            self._emit(self.pending, min(self.pending.end_s, segment.start_s))
        self.pending = segment

    def write(self, prediction: Prediction) -> None:
        if self.pending is not None:
            self._emit(self.pending, self.pending.end_s)
            self.pending = None

    def _emit(self, segment: Segment, end_s: float) -> None:
        self.cue += 1
        label, score = segment.labels[0]
        self.stream.write(f"{self.cue}\n{srt_time(segment.start_s)} --> {srt_time(end_s)}\n{label} ({score:.2f})\n\n")
        self.stream.flush()


class TimelineTableWriter(TableWriter):
    """Per video: one row per window (start, end, top label, score, top-k)."""

    def close(self) -> None:
        console = result_console(self.stream)
        for p in self.predictions:
            if p.error is not None:
                console.print(f"{escape(p.video)}: [red]error[/red] {escape(p.error)}")
                continue
            table = Table(title=f"{escape(p.video)}: {escape(p.top or '')} overall", title_justify="left")
            for column in ("start s", "end s", "top", "score", f"top {self.top_k}"):
                table.add_column(column, justify="right" if column in ("start s", "end s", "score") else "left")
            for seg in p.segments or []:
                ranked = ", ".join(f"{escape(label)} {score:.2f}" for label, score in seg.labels[: self.top_k])
                table.add_row(f"{seg.start_s:.2f}", f"{seg.end_s:.2f}", escape(seg.labels[0][0]),
                              f"{seg.labels[0][1]:.3f}", ranked)
            console.print(table)
        self.stream.flush()


WRITERS: dict[str, type[PredictionWriter]] = {
    "table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter,
}
# With --window: per-window output; json keeps one record per video with its segments.
TIMELINE_WRITERS: dict[str, type[PredictionWriter]] = {
    "table": TimelineTableWriter, "json": JsonWriter, "jsonl": TimelineJsonlWriter,
    "csv": TimelineCsvWriter, "srt": SrtWriter,
}


def get_writer(fmt: str, stream: TextIO, top_k: int, timeline: bool = False) -> PredictionWriter:
    """The writer for ``--format fmt`` (``timeline``: predictions made with ``--window``)."""
    return (TIMELINE_WRITERS if timeline else WRITERS)[fmt](stream, top_k)


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


def _metric(value: float | None) -> str:
    """A 0..1 metric to three decimals; '-' where it is undefined (e.g. recall with no samples)."""
    return "-" if value is None else f"{value:.3f}"


def eval_summary_table(report: "EvalReport") -> Table:
    """``vidclf eval``: the headline numbers, one per row."""
    table = Table(title="evaluation", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_row("top-1 accuracy", _metric(report.top1))
    table.add_row("top-1 correct [95% CI]", report.top1_line())
    table.add_row(f"top-{report.k} accuracy", _metric(report.topk))
    table.add_row("mean class accuracy", _metric(report.mean_class_accuracy))
    table.add_row("videos scored", str(report.count))
    # Unknown labels are excluded from every number above, so say how many there were.
    unknown = len(report.unknown)
    table.add_row("unknown labels", f"[yellow]{unknown}[/yellow]" if unknown else "0")
    return table


def per_class_table(report: "EvalReport") -> Table:
    """One row per model label: precision, recall, F1 and support."""
    table = Table(title="per class")
    table.add_column("label", overflow="fold")
    for title in ("precision", "recall", "f1", "support"):
        table.add_column(title, justify="right")
    for label in report.labels:
        m = report.per_class[label]
        table.add_row(escape(label), _metric(m.precision), _metric(m.recall), _metric(m.f1),
                      str(m.support))
    return table


def confusion_table(report: "EvalReport") -> Table:
    """Rows = true label, columns = predicted label; hits bold green, non-zero mistakes red."""
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("true / predicted", style="bold", overflow="fold")
    for label in report.labels:
        table.add_column(escape(label), justify="right", overflow="fold")
    for i, (label, row) in enumerate(zip(report.labels, report.confusion)):
        cells = []
        for j, n in enumerate(row):
            if i == j:
                cells.append(f"[bold green]{n}[/bold green]")
            elif n:
                cells.append(f"[red]{n}[/red]")
            else:
                cells.append(f"[dim]{n}[/dim]")  # zeros fade so the mistakes stand out
        table.add_row(escape(label), *cells)
    return table


def misclassified_table(report: "EvalReport", limit: int = 20) -> Table:
    """The ``limit`` most confident mistakes (the report keeps them sorted by score)."""
    shown = report.misclassified[:limit]
    hidden = len(report.misclassified) - len(shown)
    table = Table(title="misclassified", caption=f"... and {hidden} more" if hidden > 0 else None)
    table.add_column("video", overflow="fold")
    table.add_column("true", overflow="fold")
    table.add_column("predicted", overflow="fold")
    table.add_column("score", justify="right")
    for item in shown:
        table.add_row(escape(item["video"]), escape(item["true"]), escape(item["predicted"]),
                      f"{item['score']:.3f}")
    return table
