"""The CLI as users run it: real subprocesses, stdout for results, stderr for the rest."""

from __future__ import annotations

import json
import os
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
    text = " ".join(run_cli("train", "--help").stdout.split())
    assert "[default: models/<DATA name>.vidclf]" in text and "[default: lite0]" in text
    assert "[default: 8; fast and motion presets: 0]" in text
    assert "[default: as --temporal; appearance preset: mean]" in text


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
    assert "is a directory" in result.stderr


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
    from vidclf.cli import UserFacingError, apply_preset

    def preset(name: str, **given: object) -> tuple[object, ...]:
        return apply_preset(name, **{"backbone": None, "finetune_epochs": None, "epochs": None,
                                     "appearance_temporal": None, **given})

    assert preset("balanced") == ("lite0", 8, 60, None)
    assert preset("motion") == ("none", 0, 60, None)
    assert preset("fast") == ("lite0", 0, 60, None)
    assert preset("fast", finetune_epochs=3, epochs=30) == ("lite0", 3, 30, None)
    assert preset("balanced", backbone="small") == ("small", 0, 60, None)
    assert preset("balanced", backbone="none", finetune_epochs=2) == ("none", 2, 60, None)
    assert preset("appearance") == ("lite0", 8, 60, "mean")
    assert preset("appearance", appearance_temporal="lstm") == ("lite0", 8, 60, "lstm")
    with pytest.raises(UserFacingError, match="--preset must be one of balanced, motion, fast, appearance"):
        preset("objects")
