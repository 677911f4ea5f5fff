"""The ``vidclf`` command line: a thin Typer layer that parses, calls and prints.

Results go to stdout; progress, warnings and errors go to stderr. Heavy modules (OpenCV,
torch) are imported inside commands so ``vidclf --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vidclf import __version__


class ExitCode(IntEnum):
    """Documented exit codes (README, 'Exit codes')."""

    OK = 0
    INTERNAL = 1  # a bug: please report it (run again with --debug for the traceback)
    USAGE = 2  # bad command line (Click's convention)
    INPUT = 3  # an input (video, data folder, model file) cannot be used; nothing was produced
    PARTIAL = 4  # batch work: some inputs failed, results for the others were written
    INTERRUPTED = 130  # Ctrl-C


app = typer.Typer(
    name="vidclf",
    help="Classify videos with a CNN + optical-flow + LSTM model (OpenCV + PyTorch).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
stderr = Console(stderr=True, highlight=False)
_state = {"debug": False}


class UserFacingError(Exception):
    """An error whose message is complete for the user; exits with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.INPUT) -> None:
        super().__init__(message)
        self.code = code


def _version(value: bool) -> None:
    if value:
        print(f"vidclf {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Classify videos: [bold]vidclf predict clip.mp4[/bold]. Exit codes: 0 ok, 1 internal
    error, 2 usage, 3 unusable input, 4 some inputs failed, 130 interrupted."""
    _state["debug"] = debug


def stdout_console() -> Console:
    """Console for results; wide when piped so tables don't fold into narrow columns."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def error_line(message: str) -> None:
    stderr.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True, emoji=False)


def warning_line(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True, markup=True, emoji=False)


@contextmanager
def _handled() -> Iterator[None]:
    """Turn exceptions into one clear stderr line and a documented exit code."""
    from vidclf.video import VideoError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except (UserFacingError, VideoError) as exc:
        if _state["debug"]:
            raise
        error_line(_escape(str(exc)))
        raise typer.Exit(getattr(exc, "code", ExitCode.INPUT)) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        error_line(_escape(f"internal error: {type(exc).__name__}: {exc} (run with --debug for "
                           "the traceback and please report it)"))
        raise typer.Exit(ExitCode.INTERNAL) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def command(func: Callable[..., None]) -> Callable[..., None]:
    """Register ``func`` as a subcommand whose errors are reported by ``_handled``."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> None:
        with _handled():
            func(*args, **kwargs)

    name = func.__name__.replace("_", "-").removesuffix("-command")
    return app.command(name)(wrapper)


def batch_exit_code(failures: int, total: int) -> ExitCode:
    if failures == 0:
        return ExitCode.OK
    return ExitCode.INPUT if failures == total else ExitCode.PARTIAL


@command
def probe(
    videos: Annotated[list[Path], typer.Argument(help="Video files to inspect.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")] = False,
) -> None:
    """Show video metadata; the frame count is what decodes, not the header's claim.

    Example: [bold]vidclf probe clip.mp4 --json | jq '.[0].frame_count'[/bold]
    """
    from vidclf.output import probe_table
    from vidclf.video import VideoError, probe as probe_video

    records: list[dict[str, object]] = []
    failures = 0
    for path in videos:
        try:
            records.append(probe_video(path).to_dict())
        except VideoError as exc:
            failures += 1
            error_line(_escape(str(exc)))
            records.append({"path": str(path), "error": exc.reason})
    if as_json:
        json.dump(records, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        stdout_console().print(probe_table(records))
    raise typer.Exit(batch_exit_code(failures, len(videos)))


@command
def make_samples(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create: OUT_DIR/<label>/<clip>.", show_default=False)],
    clips_per_class: Annotated[int, typer.Option("--clips-per-class", min=1, help="Clips per class.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same clips.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder.")] = False,
) -> None:
    """Generate labelled synthetic motion clips (classes differ only in how things move).

    Example: [bold]vidclf make-samples ./clips --clips-per-class 40 --seed 1[/bold]
    """
    from vidclf.samples import make_samples as generate

    if out_dir.exists() and not out_dir.is_dir():
        raise UserFacingError(f"{out_dir}: exists and is not a folder; choose another OUT_DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserFacingError(f"{out_dir}: folder is not empty; pass --force to write into it")
    written = generate(out_dir, clips_per_class=clips_per_class, seed=seed)
    labels = sorted({path.parent.name for path in written})
    stderr.print(f"wrote {len(written)} clips in {len(labels)} classes to {out_dir}")
    for path in written:
        print(path)
