"""`vidclf check DATA`: damaged, short and odd clips, class counts, and the same video twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from indexed import write_indexed_video
from vidclf.samples import make_samples


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidclf", "check", *args], capture_output=True, text=True, timeout=300)


def test_a_clean_dataset_passes(tmp_path: Path) -> None:
    make_samples(tmp_path / "clips", clips_per_class=3, seed=1, classes=("grow", "shrink"))
    result = check(str(tmp_path / "clips"), "--frames", "8")
    assert result.returncode == 0, result.stderr
    assert "0 problem(s) in 6 clips" in result.stdout and "largest / smallest" in result.stdout


def test_every_kind_of_problem_is_named_and_the_exit_code_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for split, seed in (("train", 1), ("val", 2)):
        make_samples(data / split, clips_per_class=3, seed=seed, classes=("grow", "shrink"))
    grow = sorted((data / "train" / "grow").iterdir())
    shutil.copy(grow[0], data / "val" / "grow" / "copied.mp4")  # leakage: a training clip validates
    shutil.copy(grow[1], data / "train" / "shrink" / "also_shrink.mp4")  # one video, two labels
    (data / "train" / "grow" / "notes.mp4").write_text("not a video")
    whole = write_indexed_video(tmp_path / "whole.avi", 40, width=160, height=120, fps=12)
    (data / "train" / "shrink" / "cut.avi").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    write_indexed_video(data / "train" / "grow" / "short.avi", 5, width=160, height=120, fps=12)
    write_indexed_video(data / "train" / "grow" / "odd.avi", 20, width=640, height=480, fps=60)

    result = check(str(data), "--frames", "8", "--json")
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    problems = {Path(f["path"]).name: " | ".join(f["problems"]) for f in report["files"] if f["problems"]}
    assert "cannot" in problems["notes.mp4"] or "not a video" in problems["notes.mp4"]
    assert "decoding stops at frame" in problems["cut.avi"] and "of the 40 the header announces" in problems["cut.avi"]
    assert "5 frames, fewer than the 8 sampled" in problems["short.avi"]
    assert "unusual size 640x480" in problems["odd.avi"] and "unusual frame rate 60 fps" in problems["odd.avi"]
    assert set(problems) == {"notes.mp4", "cut.avi", "short.avi", "odd.avi"}
    why = {frozenset(Path(p).name for p in d["paths"]): d["why"] for d in report["duplicates"]}
    assert why[frozenset({grow[0].name, "copied.mp4"})].startswith("in several splits: leakage")
    assert why[frozenset({grow[1].name, "also_shrink.mp4"})].startswith("in several classes")
    assert report["counts"]["train"] == {"grow": 6, "shrink": 5} and report["counts"]["val"] == {"grow": 4, "shrink": 3}
    assert report["problems"] == 6 and report["imbalance"]["train"] == 6 / 5

    table = check(str(data), "--frames", "8")
    assert table.returncode == 4 and "6 problem(s) in 18 clips" in table.stdout and "leakage" in table.stdout


def test_data_that_cannot_be_checked_is_one_line(tmp_path: Path) -> None:
    result = check(str(tmp_path / "nowhere"))
    assert result.returncode == 3 and result.stderr.count("\n") == 1 and "no such folder" in result.stderr


def test_train_warns_of_the_same_video_twice_at_no_extra_cost(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for split, seed in (("train", 1), ("val", 2)):
        make_samples(data / split, clips_per_class=3, seed=seed, classes=("grow", "shrink"))
    grow = sorted((data / "train" / "grow").iterdir())
    shutil.copy(grow[0], data / "val" / "grow" / "copied.mp4")
    result = subprocess.run([sys.executable, "-m", "vidclf", "train", str(data), "--out", str(tmp_path / "m.vidclf"),
                             "--preset", "motion", "--epochs", "1", "--frames", "4", "--size", "32", "--workers", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: the same video in several splits: leakage") == 1
    assert f"{grow[0]}, {data / 'val' / 'grow' / 'copied.mp4'}" in result.stderr
