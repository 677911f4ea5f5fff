"""The CLI as users run it: real subprocesses, stdout for results, stderr for the rest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from indexed import write_indexed_video

from vidclf import __version__


def run_cli(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "vidclf", *args], capture_output=True, text=True,
                          cwd=cwd, input=stdin, env=env, timeout=300)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"vidclf {__version__}"


def test_help_does_not_import_torch_or_opencv() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom vidclf.cli import app\n"
            "result = CliRunner().invoke(app, ['--help'])\nassert result.exit_code == 0, result.output\n"
            "assert 'predict' in result.output or 'probe' in result.output\n"
            "heavy = [m for m in ('torch', 'cv2') if m in sys.modules]\nprint(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_shows_defaults_written_in_the_text() -> None:
    """Rich markup must not swallow '[default: ...]' in an option's help (it reads as a tag)."""
    text = " ".join(run_cli("train", "--help").stdout.replace("│", " ").split())  # help wrapped in the panel
    assert "[default: models/<DATA name>.vidclf]" in text and "[default: balanced]" in text
    assert "[default: balanced 8, fast 0, motion 0, appearance 8]" in text


def train_help_options() -> dict[str, str]:
    """The Options panel of ``vidclf train --help``: each option's long name (or short one, if
    it has no long one) → the rest of its first line (metavar, help)."""
    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if "─ Options ─" in line)
    end = next(n for n, line in enumerate(lines) if n > start and line.lstrip().startswith("╰"))
    options = {}
    for line in lines[start + 1 : end]:
        match = re.match(r"│ (--[\w-]+|-\w)\s+(?:-\w\s+)?(.*)", line)
        if match:  # else a continuation line of the help text
            options[match[1]] = match[2]
    return options


def test_train_help_lists_the_enum_choices_and_few_options() -> None:
    from vidclf.config import PresetName, Temporal
    from vidclf.device import Device

    options = train_help_options()
    for name, enum in (("--preset", PresetName), ("--temporal", Temporal), ("--device", Device)):
        metavar = re.match(r"<([^>]*)>", options[name])
        assert metavar, f"{name}: no <choices> metavar in {options[name]!r}"
        assert metavar[1].split("|") == [member.value for member in enum]
    assert {"--out", "--preset", "--temporal", "--finetune-epochs", "--resume", "--help"} <= set(options)
    assert not {"--backbone", "--motion", "--fusion", "--hidden", "--finetune-p"} & set(options)
    assert len(options) <= 22, sorted(options)


def test_console_script_and_module_agree() -> None:
    script = Path(sys.executable).with_name("vidclf")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.stdout == run_cli("--version").stdout


def test_probe_json_on_stdout_only(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "clip one.mp4", 30, fps=15)
    result = run_cli("probe", str(video), "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records[0]["frame_count"] == 30
    assert records[0]["fps"] == 15
    assert records[0]["duration_s"] == 2.0
    assert records[0]["path"] == str(video)


def test_probe_table(tmp_path: Path) -> None:
    video = write_indexed_video(tmp_path / "clip.avi", 12)
    result = run_cli("probe", str(video))
    assert result.returncode == 0
    assert "clip.avi" in result.stdout and "MJPG" in result.stdout and "12" in result.stdout


def test_probe_batch_reports_failures_and_keeps_going(tmp_path: Path) -> None:
    good = write_indexed_video(tmp_path / "good.avi", 10)
    bad = tmp_path / "bad.mp4"
    bad.write_text("hello")
    result = run_cli("probe", str(bad), str(good), str(tmp_path / "gone.mp4"), "--json")
    assert result.returncode == 4  # partial failure
    records = json.loads(result.stdout)
    assert [("error" in r) for r in records] == [True, False, True]
    assert records[1]["frame_count"] == 10
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "bad.mp4: not a video" in errors[0] and "gone.mp4: no such file" in errors[1]
    assert "Traceback" not in result.stderr


def test_probe_all_failed_exit_code(tmp_path: Path) -> None:
    result = run_cli("probe", str(tmp_path))
    assert result.returncode == 3
    assert "no videos found in this folder" in result.stderr


def test_usage_error_exit_code() -> None:
    result = run_cli("probe", "--no-such-option")
    assert result.returncode == 2


def test_make_samples_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = run_cli("make-samples", str(tmp_path))
    assert result.returncode == 3
    assert "not empty" in result.stderr and "--force" in result.stderr
    assert result.stdout == ""


def test_presets_fill_only_what_was_not_given() -> None:
    from vidclf.config import PRESETS, Backbone, PresetName, Temporal, TrainOptions

    def options(preset: str, **given: object) -> TrainOptions:
        return TrainOptions(Path("DATA"), Path("m.vidclf"), preset=preset, **given)

    def model(preset: str, **given: object) -> tuple[object, ...]:
        config = options(preset, **given).model_config(["a", "b"])
        return config.backbone, config.temporal, config.appearance_temporal, config.extra

    assert [(name.value, options(name.value).finetune_epochs) for name in PresetName] == [
        ("balanced", 8), ("fast", 0), ("motion", 0), ("appearance", 8)]
    assert options("fast", finetune_epochs=3).finetune_epochs == 3  # given explicitly: it wins
    assert options("balanced", finetune_epochs=0).finetune_epochs == 0
    assert options("motion", finetune_epochs=0).finetune_epochs == 0
    assert model("balanced") == (Backbone.LITE0, Temporal.LSTM_MEAN, Temporal.LSTM_MEAN, {"preset": "balanced"})
    assert model("motion", temporal="lstm") == (Backbone.NONE, Temporal.LSTM, Temporal.LSTM, {"preset": "motion"})
    assert model("appearance") == (Backbone.LITE0, Temporal.LSTM_MEAN, Temporal.MEAN, {"preset": "appearance"})
    assert model("appearance", temporal="lstm")[1:3] == (Temporal.LSTM, Temporal.MEAN)
    assert set(PRESETS) == set(PresetName)
    with pytest.raises(ValueError, match="--finetune-epochs needs an appearance backbone; --preset motion has none"):
        options("motion", finetune_epochs=2)
    with pytest.raises(ValueError):
        options("objects")


def test_finetuning_a_motion_only_network_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "m.vidclf"
    result = run_cli("train", str(tmp_path), "--preset", "motion", "--finetune-epochs", "2", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "--finetune-epochs needs an appearance backbone; --preset motion has none" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


SAMPLES = Path(__file__).resolve().parents[1] / "sample_clips"


def test_device_cuda_without_cuda_is_one_clear_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot happen here")
    result = run_cli("predict", str(SAMPLES / "grow" / "grow_000.mp4"), "--device", "cuda")
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr == "error: --device cuda: no CUDA device is available; use --device cpu or auto\n"


def test_a_reader_that_goes_away_stops_predict_quietly_with_141(tmp_path: Path) -> None:
    """`vidclf predict dir/ | head -1`: exit 141 (128 + SIGPIPE), no error message."""
    process = subprocess.Popen([sys.executable, "-m", "vidclf", "predict", str(SAMPLES), "-f", "jsonl"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path)})
    assert json.loads(process.stdout.readline())["top"]
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=120) == 141 and errors == "", errors


def test_an_output_that_cannot_be_written_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """A folder given as -o was an internal error (exit 1): now one line naming it (exit 3).
    --debug keeps the traceback, and then Python's exit status 1."""
    video = write_indexed_video(tmp_path / "v.avi", 20)
    folder = tmp_path / "results"
    folder.mkdir()
    result = run_cli("predict", str(video), "-o", str(folder))
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert f"{folder}: cannot write or read it (Is a directory)" in result.stderr
    debug = run_cli("--debug", "predict", str(video), "-o", str(folder))
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("IsADirectoryError")
