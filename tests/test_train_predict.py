"""End to end through the CLI: train on generated motion clips, predict, info, resume."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidclf.samples import PARTNER, make_samples, reverse_clip

CLASSES = ("move_left", "move_right", "grow", "shrink")


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidclf", *args], capture_output=True, text=True,
                          env=env, input=stdin, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train once (motion stream only: fast) on 4 classes; tests share the model."""
    root = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(root / "cache"), "COLUMNS": "200"}
    make_samples(root / "train", clips_per_class=20, seed=11, classes=CLASSES)
    make_samples(root / "test", clips_per_class=6, seed=12, classes=CLASSES)
    model = root / "motion.vidclf"
    result = run_cli("train", str(root / "train"), "--out", str(model), "--backbone", "none",
                     "--epochs", "60", "--patience", "60", "--batch-size", "8", "--seed", "1", env=env)
    assert result.returncode == 0, result.stderr
    return {"root": root, "env": env, "model": model, "train": result}


def predict_jsonl(workspace: dict, *inputs: str) -> list[dict]:
    result = run_cli("predict", *inputs, "--model", str(workspace["model"]), "--format", "jsonl", env=workspace["env"])
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_training_reports_counts_progress_and_writes_files(workspace: dict) -> None:
    result = workspace["train"]
    assert "train: 64 clips" in result.stderr and "val: 16 clips" in result.stderr
    assert "epoch 60/60" in result.stderr
    assert result.stdout.strip().endswith(str(workspace["model"]))
    assert "best epoch" in result.stdout
    rows = list(csv.DictReader(workspace["model"].with_name("motion.vidclf.metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 61))
    assert not workspace["model"].with_name("motion.vidclf.ckpt").exists()  # removed when done


def test_accuracy_well_above_chance_and_reversal_flips_the_class(workspace: dict) -> None:
    root = workspace["root"]
    records = predict_jsonl(workspace, str(root / "test"))
    assert len(records) == 24
    correct = sum(r["top"] == Path(r["video"]).parent.name for r in records)
    assert correct / len(records) >= 0.6, f"{correct}/24 correct (chance is 6/24)"
    reversed_dir = root / "reversed"
    for record in records:
        source = Path(record["video"])
        target = reversed_dir / PARTNER[source.parent.name] / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        reverse_clip(source, target)
    flipped = predict_jsonl(workspace, str(reversed_dir))
    partner = sum(r["top"] == Path(r["video"]).parent.name for r in flipped)
    assert partner / len(flipped) >= 0.6, f"{partner}/24 reversed clips went to the partner class"


def test_json_record_shape_and_scores(workspace: dict) -> None:
    clip = next((workspace["root"] / "test" / "grow").iterdir())
    result = run_cli("predict", str(clip), "-m", str(workspace["model"]), "-f", "json", "-k", "2", env=workspace["env"])
    assert result.returncode == 0
    [record] = json.loads(result.stdout)
    assert set(record) == {"video", "top", "labels", "frames_used", "duration_s", "model"}
    assert len(record["labels"]) == 2 and record["top"] == record["labels"][0]["label"]
    assert record["labels"][0]["score"] >= record["labels"][1]["score"]
    assert record["frames_used"] == 16 and record["model"] == "motion" and record["duration_s"] > 0
    full = predict_jsonl(workspace, str(clip))[0]
    assert abs(sum(item["score"] for item in full["labels"]) - 1) < 1e-4  # probabilities over all classes


def test_csv_table_stdin_and_output_file(workspace: dict) -> None:
    clips = sorted((workspace["root"] / "test" / "shrink").iterdir())[:2]
    stdin = "".join(f"{c}\n" for c in clips)
    result = run_cli("predict", "-", "-m", str(workspace["model"]), "-f", "csv", "-k", "3", env=workspace["env"], stdin=stdin)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert rows[0]["video"] == str(clips[0])
    table = run_cli("predict", str(clips[0]), "-m", str(workspace["model"]), "-f", "table", env=workspace["env"])
    assert clips[0].name in table.stdout and "top" in table.stdout
    out = workspace["root"] / "out.jsonl"
    quiet = run_cli("predict", str(clips[0]), "-m", str(workspace["model"]), "-o", str(out), env=workspace["env"])
    assert quiet.stdout == "" and json.loads(out.read_text())["video"] == str(clips[0])


def test_batch_with_bad_files_keeps_going(workspace: dict) -> None:
    root = workspace["root"]
    bad = root / "broken.mp4"
    bad.write_text("not a video")
    good = next((root / "test" / "move_left").iterdir())
    result = run_cli("predict", str(bad), str(good), str(root / "nope.avi"), "-m", str(workspace["model"]),
                     "-f", "jsonl", env=workspace["env"])
    assert result.returncode == 4
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in r) for r in records] == [True, False, True]
    assert "broken.mp4: not a video" in result.stderr and "2 of 3 video(s) failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_shows_the_model(workspace: dict) -> None:
    result = run_cli("info", str(workspace["model"]), "--json", env=workspace["env"])
    meta = json.loads(result.stdout)
    assert meta["labels"] == sorted(CLASSES)
    assert meta["config"]["backbone"] == "none" and meta["config"]["motion"] == "flow"
    assert meta["training"]["counts"]["train"]["grow"] == 16 and meta["training"]["seed"] == 1
    assert meta["preprocessing"]["frames"] == 16
    table = run_cli("info", str(workspace["model"]), env=workspace["env"])
    assert "best_val_acc" in table.stdout and "move_left" in table.stdout


def test_refusals_are_one_clear_line(workspace: dict, tmp_path: Path) -> None:
    env = workspace["env"]
    again = run_cli("train", str(workspace["root"] / "train"), "--out", str(workspace["model"]), env=env)
    assert again.returncode == 3 and "already exists; pass --force" in again.stderr
    one_class = tmp_path / "one"
    make_samples(one_class, clips_per_class=2, seed=0, classes=("grow",))
    refused = run_cli("train", str(one_class), "--out", str(tmp_path / "m.vidclf"), env=env)
    assert refused.returncode == 3 and "at least 2 label folders" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    missing = run_cli("predict", "x.mp4", "--model", str(tmp_path / "none.vidclf"), env=env)
    assert missing.returncode == 3 and "no such model file" in missing.stderr


def test_kill_9_then_resume_loses_at_most_one_epoch(workspace: dict, tmp_path: Path) -> None:
    env = workspace["env"]
    data = workspace["root"] / "train"
    out = tmp_path / "resumable.vidclf"
    args = ["train", str(data), "--out", str(out), "--backbone", "none", "--epochs", "120",
            "--patience", "120", "--batch-size", "4", "--seed", "1"]
    process = subprocess.Popen([sys.executable, "-m", "vidclf", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out.with_name(out.name + ".ckpt")
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not out.exists()
    epochs_done = len(list(csv.DictReader(out.with_name(out.name + ".metrics.csv").open())))
    resumed = run_cli(*args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    resumed_from = int(resumed.stderr.split("after epoch ")[1].split()[0])
    assert resumed_from >= epochs_done - 1 >= 0
    rows = list(csv.DictReader(out.with_name(out.name + ".metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 121))


def test_shipped_default_model_is_found_and_right_on_a_sample(tmp_path: Path) -> None:
    env = {**os.environ, "VIDCLF_CACHE_DIR": str(tmp_path / "cache")}
    clip = Path(__file__).resolve().parents[1] / "sample_clips" / "move_left" / "move_left_000.mp4"
    result = run_cli("predict", str(clip), "-f", "json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["model"] == "default" and record["top"] == "move_left"
    assert len(record["labels"]) == 5
