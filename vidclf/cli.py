"""The ``vidclf`` command line: a thin Typer layer that parses, calls and prints.

Results go to stdout; progress, warnings and errors go to stderr. Heavy modules (OpenCV,
torch) are imported inside commands so ``vidclf --help`` answers at once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from vidclf import __version__
from vidclf.config import MAX_FRAMES, MAX_SIZE, PRESETS, STREAM_TIMEOUT_S, Fit, PresetName, Temporal, TrainOptions, recorded_fit
from vidclf.device import Device
from vidclf.errors import VidclfError
from vidclf.files import NO_ROOM


class ExitCode(IntEnum):
    """Documented exit codes (README, 'Exit codes')."""

    OK = 0
    INTERNAL = 1  # a bug: please report it (run again with --debug for the traceback)
    USAGE = 2  # bad command line (Click's convention)
    INPUT = 3  # an input (video, data folder, model file) cannot be used; nothing was produced
    PARTIAL = 4  # batch work: some inputs failed, results for the others were written
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # stdout closed by the reader (128 + SIGPIPE, as shells report it)
    TERMINATED = 143  # SIGTERM (Slurm, Kubernetes, timeout): 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM: work stops as on Ctrl-C (training keeps its last finished epoch's checkpoint)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class SigtermBetweenWrites:
    """In a batch, SIGTERM stops vidclf at once — the videos in flight are dropped, their worker
    processes killed (a worker may be an hour into a timeline) — unless a result is being
    written: then right after that write, so every record written is whole."""

    def __init__(self) -> None:
        self.writing = self.signalled = self.deferred = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.signalled:
            return
        self.signalled = True
        if not self.writing:
            raise Terminated
        self.deferred = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    @contextmanager
    def write(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False
        if self.deferred:
            raise Terminated


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


class UserFacingError(VidclfError):
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
    error, 2 usage, 3 unusable input, 4 some inputs failed, 130 interrupted, 143 terminated."""
    _state["debug"] = debug
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over `ulimit -f`, a write fails (and says so) instead of killing vidclf
    if not debug:
        # FFmpeg prints codec chatter ("non-intra slice in an IDR NAL unit") straight to stderr;
        # vidclf reports what matters itself. --debug (or setting the variable) shows it.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # e.g. V4L2 warnings for a missing camera


def stdout_console() -> Console:
    """Console for results on stdout (see ``output.result_console``)."""
    from vidclf.output import result_console

    return result_console(sys.stdout)


def error_line(message: str) -> None:
    stderr.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True, emoji=False)


def warning_line(message: str) -> None:
    stderr.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True, markup=True, emoji=False)


@contextmanager
def _handled() -> Iterator[None]:
    """Turn exceptions into one clear stderr line and a documented exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Terminated:
        error_line("terminated (SIGTERM)")
        raise typer.Exit(ExitCode.TERMINATED) from None
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except BrokenPipeError:
        # The reader went away (`vidclf predict ... | head`): stop quietly, as `yes | head` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(ExitCode.BROKEN_PIPE) from None
    except VidclfError as exc:
        if _state["debug"]:
            raise
        error_line(_escape(str(exc)))
        raise typer.Exit(getattr(exc, "code", ExitCode.INPUT)) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:  # a full disk under streamed output (-o, stdout)
            error_line(_escape(f"{exc.filename or 'output'}: cannot write: {NO_ROOM[exc.errno]}; free some space"))
            raise typer.Exit(ExitCode.INPUT) from None
        if isinstance(exc, OSError) and exc.filename:  # e.g. -o naming a folder, or a read-only place
            error_line(_escape(f"{exc.filename2 or exc.filename}: cannot write or read it ({exc.strerror}); "
                               "check the path and its permissions"))
            raise typer.Exit(ExitCode.INPUT) from None
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


DEVICE_HELP = "auto: CUDA when present, else the CPU."
PRESET_HELP = "Starting point: " + "; ".join(f"{name.value}: {preset.when}" for name, preset in PRESETS.items()) + "."
TEMPORAL_HELP = ("How each stream reads the frames in time: lstm+mean (an LSTM head and an order-blind mean head, "
                 "validation decides how much each counts), lstm (order matters) or mean (order-blind).")
DEFAULTS = TrainOptions(Path("DATA"), Path("OUT"))
DATA_HELP = ("DATA/<label>/<video>, DATA/train|val[|test]/<label>/<video>, or a CSV manifest with a header line "
             "path,label[,group][,split].")
# predict and eval: one definition of --workers.
PredictWorkers = Annotated[Optional[int], typer.Option(
    min=0, show_default=False, help="Processes decoding videos (and computing their flow) while the network runs on "
                                    "every video ready; 0: none \\[default: min(4, CPUs), 0 for one file].")]


def _workers(workers: int | None, one_video: bool) -> int:
    """``--workers`` of predict and eval: as given, else none for one video (starting processes
    costs more than it saves), else the default."""
    if workers is not None:
        return workers
    return 0 if one_video else DEFAULTS.workers


@command
def train(
    data: Annotated[Path, typer.Argument(help=DATA_HELP, show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Model file to write \\[default: models/<DATA name>.vidclf].",
                                                show_default=False)] = None,
    preset: Annotated[PresetName, typer.Option(help=PRESET_HELP)] = DEFAULTS.preset,
    group: Annotated[Optional[str], typer.Option(metavar="REGEX", show_default=False, help="A clip's group (person, scene, source video) is the first capture group of this regex in its file name, e.g. '_g(\\d+)_' or '^([a-z]+)_'; a group never sits on both sides of the split.")] = None,
    temporal: Annotated[Temporal, typer.Option(help=TEMPORAL_HELP)] = DEFAULTS.temporal,
    frames: Annotated[int, typer.Option("--frames", min=2, max=MAX_FRAMES, help="Frames sampled per clip (T).")] = DEFAULTS.frames,
    size: Annotated[int, typer.Option(min=32, max=MAX_SIZE, help="Frames become size×size pixels, as --fit says.")] = DEFAULTS.size,
    fit: Annotated[Fit, typer.Option(help="crop: the frame's centre square; stretch: the whole frame, scaled to the square (aspect not kept), for subjects near the edges.")] = DEFAULTS.fit,
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs with the backbone frozen (features cached).")] = DEFAULTS.epochs,
    finetune_epochs: Annotated[Optional[int], typer.Option(min=0, show_default=False, help="Then this many epochs fine-tuning Lite0's later layers, kept only if they win significantly on validation \\[default: "
                                                                                                + ", ".join(f"{n.value} {p.finetune_epochs}" for n, p in PRESETS.items()) + "].")] = None,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without validation improvement.")] = DEFAULTS.patience,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per batch (per process under torchrun).")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate (AdamW, cosine decay).")] = DEFAULTS.lr,
    seed: Annotated[int, typer.Option(help="Seed for split, sampling and initialisation.")] = DEFAULTS.seed,
    workers: Annotated[int, typer.Option(min=0, help="Processes decoding videos and reading the cache (per process under torchrun).")] = DEFAULTS.workers,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = DEFAULTS.device,
    val_split: Annotated[float, typer.Option(min=0.0, max=0.5, help="Validation share when DATA has no val/ folder; 0: none, choices cross-validated.")] = DEFAULTS.val_split,
    class_weights: Annotated[bool, typer.Option("--class-weights", help="Weight the loss by inverse class frequency (imbalanced data).")] = False,
    hflip: Annotated[bool, typer.Option("--hflip", help="Mirror half the training clips left-right, frames and flow alike; only for classes a mirror keeps (it turns 'left' into 'right').")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing model file.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last finished epoch.")] = False,
) -> None:
    """Train a classifier on labelled clips and write one model file.

    Examples:
      [bold]vidclf train sample_clips --out models/motion.vidclf[/bold]
      [bold]vidclf train ./clips --preset fast[/bold]   (no fine-tuning: ~3x faster; fine for classes told apart by motion)
      [bold]vidclf train ./clips --preset appearance[/bold]   (classes told apart by what is seen: objects, scenes)
      [bold]vidclf train ./clips --epochs 40 --class-weights[/bold]
      [bold]vidclf train ./clips --resume[/bold]   (after Ctrl-C or a crash)
    """
    from vidclf.train import train as run_training

    try:
        default_out = Path("models") / f"{data.stem if data.is_file() else data.resolve().name}.vidclf"
        options = TrainOptions(data=data, out=out or default_out, preset=preset,
                               group=group, temporal=temporal, frames=frames, size=size, fit=fit, epochs=epochs, finetune_epochs=finetune_epochs,
                               patience=patience, batch_size=batch_size, lr=lr, seed=seed, workers=workers, device=device,
                               val_split=val_split, class_weights=class_weights, hflip=hflip, force=force, resume=resume)
    except ValueError as exc:
        raise UserFacingError(f"invalid option: {exc}", ExitCode.USAGE) from None
    from vidclf import parallel

    main = parallel.is_main()  # under torchrun, rank 0 speaks for all
    result = run_training(options, log=lambda line: main and stderr.print(_escape(line), soft_wrap=True))
    if not main:
        return
    print_report(result.report, result.title)
    _write_curves(result)
    print(result.out)


def _write_curves(result: object) -> None:
    """``<out>.curves.png`` beside the model, when matplotlib (the 'plot' extra) is there."""
    from dataclasses import asdict

    from vidclf.plots import PlotDependencyError, training_curves

    path = result.out.with_name(result.out.name + ".curves.png")
    try:
        training_curves([asdict(record) for record in result.history], path)
        stderr.print(f"training curves: {_escape(str(path))}")
    except PlotDependencyError as exc:
        warning_line(_escape(f"no {path.name}: {exc}"))


def print_report(report: object, title: str, console: Console | None = None) -> None:
    """The evaluation report as tables (``eval``, and the end of ``train``); stdout by default."""
    from vidclf.output import confusion_table, eval_summary_table, misclassified_table, per_class_table

    console = console or stdout_console()
    console.print(f"[bold]{_escape(title)}[/bold]")
    for table in (eval_summary_table(report), per_class_table(report), confusion_table(report)):
        console.print(table)
    if report.misclassified:
        console.print(misclassified_table(report))


@command
def predict(
    videos: Annotated[Optional[list[str]], typer.Argument(
        help="Video files, folders (searched recursively), stream URLs (http, https, rtsp) or - to read paths from stdin.",
        show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Model file \\[default: the shipped default model].",
                                                  show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels to show per video.")] = 5,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="table, json, jsonl, csv, or srt with --window \\[default: table on a terminal, jsonl when piped].",
                                               show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file instead of stdout.")] = None,
    clips: Annotated[int, typer.Option("--clips", min=1, help="Clips sampled per video, probabilities averaged (multi-clip testing).")] = 1,
    window: Annotated[Optional[float], typer.Option("--window", min=0.05, help="Timeline: classify windows of this many seconds.", show_default=False)] = None,
    stride: Annotated[Optional[float], typer.Option("--stride", min=0.05, help="Seconds between window starts \\[default: half the window].", show_default=False)] = None,
    smooth: Annotated[int, typer.Option("--smooth", min=1, help="Timeline: average each window's scores with the K-1 before it.")] = 1,
    min_score: Annotated[float, typer.Option("--min-score", min=0.0, max=1.0, help="Timeline: drop windows whose top score is lower.")] = 0.0,
    camera: Annotated[Optional[int], typer.Option("--camera", min=0, help="Read a camera (device index) instead of files; needs --window.", show_default=False)] = None,
    stream_timeout: Annotated[float, typer.Option("--stream-timeout", min=0.5, metavar="SECONDS", help="A stream URL that takes longer to open, or to send its next frame, fails with this said.")] = STREAM_TIMEOUT_S,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = Device.AUTO,
    workers: PredictWorkers = None,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Only the inputs in shard I of N (1 ≤ I ≤ N), chosen by a hash of each input's name: run N jobs, concatenate their outputs.", show_default=False)] = None,
) -> None:
    """Rank labels for videos, or for each window of a long video or live stream (--window).

    Examples:
      [bold]vidclf predict clip.mp4[/bold]
      [bold]vidclf predict clips/ --format jsonl | jq -r 'select(.top == "grow") | .video'[/bold]
      [bold]find . -name '*.mp4' | vidclf predict - --format csv -o results.csv[/bold]
      [bold]vidclf predict long.mp4 --window 2 --format srt -o long.srt[/bold]
      [bold]vidclf predict rtsp://cam/stream --window 2 -f jsonl | jq -r 'select(.top == "fall") | .start_s'[/bold]
      [bold]vidclf predict archive/ --shard $SLURM_ARRAY_TASK_ID/16 -f jsonl -o part-$SLURM_ARRAY_TASK_ID.jsonl[/bold]
    """
    from vidclf.output import TIMELINE_WRITERS, WRITERS, get_writer
    from vidclf.predict import DEFAULT_MODEL, Predictor, expand_inputs, in_shard
    from vidclf.device import resolve_device
    from vidclf.video import Stream, is_stream_url, source_name

    if camera is not None and window is None:
        raise UserFacingError("--camera needs --window SECONDS (a camera never ends)", ExitCode.USAGE)
    if not videos and camera is None:
        raise UserFacingError("give videos, folders, URLs, - (stdin) or --camera N", ExitCode.USAGE)
    writers = TIMELINE_WRITERS if window else WRITERS
    if fmt is not None and fmt not in writers:
        raise UserFacingError(f"--format {fmt}: use one of {', '.join(writers)}"
                              + ("" if window else " (srt needs --window)"), ExitCode.USAGE)
    part = _parse_shard(shard) if shard is not None else None
    predictor = Predictor(model or DEFAULT_MODEL, resolve_device(device))
    stream = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    writer = get_writer(fmt or ("table" if stream.isatty() else "jsonl"), stream, top_k, timeline=bool(window))
    sources = [camera] if camera is not None else (Stream(source, stream_timeout) if is_stream_url(source) else source
                                                   for source in expand_inputs(videos or []))
    if part is not None:
        sources = (source for source in sources if in_shard(source, part))
    total = failures = 0
    sigterm = SigtermBetweenWrites()
    windows = [0]  # written: a stream that fails after some of them is a partial result

    def write_segment(name: str, segment: object) -> None:
        with sigterm.write():
            writer.write_segment(name, segment)
        windows[0] += 1

    def timelines() -> Iterator[object]:
        """Runs of files in worker processes (on the CPU), each file's windows written when it
        is done; streams and cameras here, each window written as it completes."""
        stride_s = stride or window / 2
        for files, run in itertools.groupby(sources, key=lambda source: not isinstance(source, (int, Stream))):
            if files and workers and predictor.device.type == "cpu":
                for prediction in predictor.timelines_in_workers(run, workers, window, stride_s, smooth, min_score):
                    for segment in prediction.segments or []:
                        write_segment(prediction.video, segment)
                    yield prediction
                continue
            for source in run:
                name = source_name(source)
                yield predictor.timeline(source, window, stride_s, smooth, min_score,
                                         on_segment=lambda segment: write_segment(name, segment))

    workers = _workers(workers, one_video=len(videos or []) == 1 and Path(videos[0]).is_file())
    try:
        with sigterm.installed():
            for prediction in timelines() if window else predictor.predict_all(sources, clips, workers):
                total += 1
                for warning in prediction.warnings:
                    warning_line(_escape(f"{prediction.video}: {warning}"))
                if prediction.error is not None:
                    failures += 1
                    error_line(_escape(f"{prediction.video}: {prediction.error}"))
                with sigterm.write():
                    writer.write(prediction)
    finally:
        writer.close()
        if output:
            stream.close()
    if total == 0 and part is None:
        raise UserFacingError("no videos found in the given inputs")
    if total == 0:
        stderr.print(f"shard {shard}: none of the inputs falls in this shard")
    if failures:
        stderr.print(f"{failures} of {total} video(s) failed")
    raise typer.Exit(ExitCode.PARTIAL if failures and windows[0] else batch_exit_code(failures, total))


def _parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N), or a usage error."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise UserFacingError(f"--shard {text}: expected I/N with 1 ≤ I ≤ N, e.g. 3/8", ExitCode.USAGE)
    return index, count


@command
def info(
    model: Annotated[Path, typer.Argument(help="A .vidclf model file.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metadata as JSON.")] = False,
) -> None:
    """Show what a model file holds: labels, config, preprocessing, training summary.

    Example: [bold]vidclf info models/default.vidclf --json | jq .labels[/bold]
    """
    from vidclf.modelfile import model_info
    from vidclf.output import info_table

    metadata = model_info(model)
    if as_json:
        json.dump(metadata, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        stdout_console().print(info_table(model, metadata))


@command
def check(
    data: Annotated[Path, typer.Argument(help=DATA_HELP, show_default=False)],
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames a clip must have (as train's --frames).")] = DEFAULTS.frames,
    workers: Annotated[int, typer.Option(min=0, help="Processes probing clips.")] = DEFAULTS.workers,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object instead of tables.")] = False,
) -> None:
    """Check a dataset before a long training: every clip decodes, is long enough, no video twice.

    Reports clips that cannot be opened or decode 0 frames, stop decoding early, are shorter than
    --frames, or have a size or frame rate far from the dataset's; class counts and imbalance; and
    identical files in two classes or in two splits (leakage). Exit 0: no problems; 4: problems.

    Example: [bold]vidclf check ./clips --json | jq '.duplicates'[/bold]
    """
    from vidclf.check import check_dataset
    from vidclf.output import check_tables

    report = check_dataset(data, frames, workers)
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        for table in check_tables(report):
            stdout_console().print(table)
    raise typer.Exit(ExitCode.PARTIAL if report.problems else ExitCode.OK)


@command
def eval(  # noqa: A001 - the command is called eval
    data: Annotated[Path, typer.Argument(help=DATA_HELP + " Its test split is used when present.", show_default=False)],
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Model file \\[default: the shipped default model].",
                                                  show_default=False)] = None,
    clips: Annotated[int, typer.Option("--clips", min=1, help="Clips sampled per video, probabilities averaged.")] = 1,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", min=1, help="k of top-k accuracy \\[default: 5 or the number of classes].",
                                                 show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a confusion-matrix heat map (PNG) here.")] = None,
    device: Annotated[Device, typer.Option(help=DEVICE_HELP)] = Device.AUTO,
    workers: PredictWorkers = None,
) -> None:
    """Measure a model on labelled clips: accuracy, per-class precision/recall/F1, confusions.

    Examples:
      [bold]vidclf eval ./clips --model models/mine.vidclf[/bold]
      [bold]vidclf eval ./clips -m models/mine.vidclf --clips 3 -f json | jq .top1[/bold]
      [bold]vidclf eval ./clips -m models/mine.vidclf --plot confusion.png[/bold]
    """
    from vidclf.evaluate import eval_items, evaluate_folder
    from vidclf.files import atomic_write
    from vidclf.output import result_console
    from vidclf.predict import DEFAULT_MODEL, Predictor
    from vidclf.device import resolve_device

    if fmt not in ("table", "json"):
        raise UserFacingError(f"--format {fmt}: use table or json", ExitCode.USAGE)
    predictor = Predictor(model or DEFAULT_MODEL, resolve_device(device))
    items, part = eval_items(data)
    stderr.print(f"evaluating {len(items)} clips ({part}) with {_escape(predictor.loaded.name)}"
                 + (f", {clips} clips per video" if clips > 1 else ""))
    from vidclf.progress import progress

    bar = progress(total=len(items), unit="video")

    def progress(item: object, error: str | None) -> None:
        bar.update(1)
        if error:
            error_line(_escape(error))

    workers = _workers(workers, one_video=len(items) <= 1)
    report, failures = evaluate_folder(predictor, items, clips, top_k, workers, progress)
    bar.close()
    title = f"{data} ({part}, {report.count} clips)"
    for entry in report.unknown:
        warning_line(_escape(f"{entry['video']}: label {entry['label']!r} is not one of the model's labels; not scored"))
    if fmt == "json":
        text = json.dumps({**report.to_dict(), "model": str(predictor.loaded.path), "data": str(data),
                           "clips": clips, "failed": failures}, indent=2, ensure_ascii=False)
        if output:
            with atomic_write(output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        else:
            print(text)
    elif output:
        with atomic_write(output, "w", encoding="utf-8") as handle:
            print_report(report, title, result_console(handle))
    else:
        print_report(report, title)
    if plot:
        from vidclf.plots import confusion_plot

        confusion_plot(report.labels, report.confusion, plot, title=f"{predictor.loaded.name} on {data.name}")
        stderr.print(f"confusion plot: {_escape(str(plot))}")
    raise typer.Exit(batch_exit_code(len(failures), len(items)))


@command
def frames(
    video: Annotated[Path, typer.Argument(help="A video file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("frames.png"),
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Take T and size from this model \\[default: the shipped default model].",
                                                  show_default=False)] = None,
    num_frames: Annotated[Optional[int], typer.Option("--frames", min=1, help="T, overriding the model's.", show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Frame size, overriding the model's.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing PNG.")] = False,
) -> None:
    """Contact sheet of exactly the frames a model sees (resized as the model's --fit says), with frame
    index and timestamp under each.

    Example: [bold]vidclf frames clip.mp4 --out sheet.png[/bold]
    """
    from vidclf.modelfile import read_metadata
    from vidclf.plots import contact_sheet
    from vidclf.predict import DEFAULT_MODEL
    from vidclf.video import sample_frames

    if out.exists() and not force:
        raise UserFacingError(f"{out}: already exists; pass --force to overwrite it")
    config = read_metadata(model or DEFAULT_MODEL)["config"]
    clip = sample_frames(video, num_frames or config["frames"], size or config["size"], "uniform", fit=recorded_fit(config))
    for warning in clip.warnings:
        warning_line(_escape(f"{video}: {warning}"))
    timestamps = clip.timestamps_s
    contact_sheet(clip.frames, clip.indices.tolist(), None if timestamps is None else timestamps.tolist(), out,
                  title=f"{video.name}: {len(clip.indices)} frames, {clip.frames.shape[1]} px")
    print(out)
