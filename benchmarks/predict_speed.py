"""Prediction speed against the decode floor and two peer pipelines, side by side in one run.

Usage: python benchmarks/predict_speed.py [--parts clip,folder,long] [--repeats 5]
       [--folder-clips 100] [--long-minutes 10] [--workdir DIR]

Test videos: H.264 (x264 through PyAV, a dev dependency), 25 fps, a moving test pattern.
- clip: one 10-s clip (keyframe every 250 frames, x264's default) at 320×240, 640×360 and
  1280×720; medians of ``--repeats`` runs in one warm process (2 threads), per clip:
  the floor (OpenCV one pass, ``grab()`` every frame), vidclf (``Predictor.predict``, the
  shipped default model), a TSN-style ResNet-50 (8 segment centres, short side 256, centre
  crop 224, random weights: MMAction2's validation pipeline shape) and a Keras-example-style
  pipeline (``read()`` every frame, centre crop, resize 224, Lite0 on the first 20, GRU).
- folder: ``vidclf predict DIR -f jsonl`` as a whole process on 20 and on N 640×360 clips (10
  distinct clips, copied); the marginal cost per clip is (t_N − t_20) / (N − 20), with the
  default workers and with ``--workers 0``, against a one-thread decode floor per clip.
- long: an N-minute 640×360 file with a keyframe every 5 s: vidclf in a warm process, with and
  without seeking, and ``vidclf predict`` as a whole process (and its start-up alone), against
  decoding every frame of it.
Not a test: prints only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from h264 import write_h264  # noqa: E402

from vidclf.lite0 import EfficientNetLite0  # noqa: E402
from vidclf.predict import DEFAULT_MODEL, Predictor  # noqa: E402
from vidclf import video  # noqa: E402
from vidclf.video import sample_indices  # noqa: E402

SIZES = ((320, 240), (640, 360), (1280, 720))


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def decode_floor(path: Path, threads: int | None = None) -> int:
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    count = 0
    while capture.grab():
        count += 1
    return count


class Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        out = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        self.skip = (nn.Identity() if stride == 1 and inputs == out else
                     nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=False), nn.BatchNorm2d(out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet50(classes: int = 400) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    inputs = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for n in range(blocks):
            layers.append(Bottleneck(inputs, width, stride if n == 0 else 1))
            inputs = 4 * width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, classes)).eval()


def centre_crop(frame: np.ndarray, side: int) -> np.ndarray:
    top, left = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
    return frame[top : top + side, left : left + side]


def short_side(frame: np.ndarray, short: int) -> np.ndarray:
    scale = short / min(frame.shape[:2])
    return cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)))


def tsn_resnet50(model: nn.Module) -> Callable[[Path], np.ndarray]:
    mean, std = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)

    def run(path: Path) -> np.ndarray:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted, frames, index = set(sample_indices(count, 8).tolist()), [], 0
        while capture.grab():
            if index in wanted:
                frame = cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
                frames.append((centre_crop(short_side(frame, 256), 224).astype(np.float32) - mean) / std)
            index += 1
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            return model(batch).softmax(1).mean(0).numpy()
    return run


class KerasStyle(nn.Module):
    """Lite0 features per frame → GRU(16) → GRU(8) → dense, as the Keras video example."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.cnn = EfficientNetLite0().eval()
        self.gru1, self.gru2 = nn.GRU(1280, 16, batch_first=True), nn.GRU(16, 8, batch_first=True)
        self.head = nn.Linear(8, classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.cnn.features(frames).mean(dim=(2, 3))[None]  # global average pooling
        return self.head(self.gru2(self.gru1(features)[0])[0][:, -1])


def keras_style(model: KerasStyle) -> Callable[[Path], np.ndarray]:
    def run(path: Path) -> np.ndarray:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        frames = []
        while (read := capture.read())[0]:
            square = centre_crop(read[1], min(read[1].shape[:2]))
            frames.append(cv2.cvtColor(cv2.resize(square, (224, 224)), cv2.COLOR_BGR2RGB))
        batch = torch.from_numpy(np.stack(frames[:20])).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            return model(batch).softmax(1)[0].numpy()
    return run


def clip_part(root: Path, repeats: int) -> None:
    predictor = Predictor(DEFAULT_MODEL)
    peers = {"TSN ResNet-50": tsn_resnet50(resnet50()), "Keras-style": keras_style(KerasStyle())}
    print("\n## Per clip: 10 s, 25 fps H.264, medians of", repeats, "runs, one warm process, 2 threads")
    print("| | " + " | ".join(f"{w}×{h}" for w, h in SIZES) + " |\n|---|" + "---:|" * len(SIZES))
    rows: dict[str, list[float]] = {"floor: one-pass grab()": [], "vidclf predict": [], **{k: [] for k in peers}}
    for width, height in SIZES:
        path = video_file(root / f"clip{width}.mp4", 250, width, height)
        rows["floor: one-pass grab()"].append(median_ms(lambda: decode_floor(path), repeats))
        rows["vidclf predict"].append(median_ms(lambda: predictor.predict(path), repeats))
        for name, run in peers.items():
            rows[name].append(median_ms(lambda: run(path), repeats))
    floor = rows["floor: one-pass grab()"]
    for name, times in rows.items():
        cells = [f"{t:,.0f} ms" + ("" if times is floor else f" ({t / f:.2f}×)") for t, f in zip(times, floor)]
        print(f"| {name} | " + " | ".join(cells) + " |")


def timed_process(args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vidclf", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return time.perf_counter() - started


def folder_part(root: Path, clips: int, repeats: int) -> None:
    distinct = [video_file(root / f"distinct{n}.mp4", 250, 640, 360) for n in range(10)]
    folders = {}
    for count in (20, clips):
        folder = root / f"folder{count}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for n in range(count):
            shutil.copy(distinct[n % len(distinct)], folder / f"clip{n:04d}.mp4")
        folders[count] = folder
    one_thread = median_ms(lambda: decode_floor(distinct[0], threads=1), repeats)
    print(f"\n## Folder of {clips} 640×360 clips: whole `vidclf predict DIR -f jsonl` processes, medians of {repeats}")
    print(f"one-thread decode floor: {one_thread:.0f} ms per clip")
    print("| workers | 20 clips | %d clips | marginal per clip | vs floor |\n|---|---:|---:|---:|---:|" % clips)
    marginal = {}
    for workers in ("auto", "0"):
        option = [] if workers == "auto" else ["--workers", workers]
        totals = {count: statistics.median(timed_process(["predict", str(folder), "-f", "jsonl", *option])
                                           for _ in range(repeats)) for count, folder in folders.items()}
        marginal[workers] = 1000 * (totals[clips] - totals[20]) / (clips - 20)
        print(f"| {workers} | {totals[20]:.1f} s | {totals[clips]:.1f} s | {marginal[workers]:.0f} ms "
              f"| {marginal[workers] / one_thread:.2f}× |")
    print(f"speed-up of the default workers over --workers 0: {marginal['0'] / marginal['auto']:.2f}×")


def long_part(root: Path, minutes: float, repeats: int) -> None:
    frames = round(minutes * 60 * 25)
    path = video_file(root / "long.mp4", frames, 640, 360, gop=125, preset="ultrafast")
    short = video_file(root / "short.mp4", 25, 640, 360)
    predictor = Predictor(DEFAULT_MODEL)
    decode = statistics.median(_seconds(lambda: decode_floor(path)) for _ in range(repeats))
    warm = median_ms(lambda: predictor.predict(path), repeats) / 1000
    with_one_pass = _one_pass_only(lambda: median_ms(lambda: predictor.predict(path), repeats) / 1000)
    process = statistics.median(timed_process(["predict", str(path), "-f", "jsonl"]) for _ in range(repeats))
    start = statistics.median(timed_process(["predict", str(short), "-f", "jsonl"]) for _ in range(repeats))
    print(f"\n## A {minutes:g}-minute 640×360 file ({frames} frames, keyframe every 5 s), medians of {repeats}")
    print("| | seconds | vs decoding every frame |\n|---|---:|---:|")
    for name, seconds in (("decode every frame (one pass)", decode), ("vidclf, warm process", warm),
                          ("vidclf, warm process, one pass (seeking off)", with_one_pass),
                          ("`vidclf predict` whole process", process), ("… of which start-up (a 1-s clip)", start)):
        print(f"| {name} | {seconds:.2f} | {seconds / decode:.2f}× |")


def _one_pass_only(run: Callable[[], float]) -> float:
    """``run()`` with seeking switched off (as before it existed)."""
    saved, video.SEEK_MIN_GAP = video.SEEK_MIN_GAP, 10**12
    try:
        return run()
    finally:
        video.SEEK_MIN_GAP = saved


def video_file(path: Path, frames: int, width: int, height: int, **options: object) -> Path:
    """A test video, reused when ``--workdir`` already holds it."""
    return path if path.exists() else write_h264(path, frames, width, height, **options)


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="clip,folder,long")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder-clips", type=int, default=100)
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--workdir", type=Path, help="keep the generated videos here and reuse them")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        parts = args.parts.split(",")
        if "clip" in parts:
            clip_part(root, args.repeats)
        if "folder" in parts:
            folder_part(root, args.folder_clips, min(args.repeats, 3))
        if "long" in parts:
            long_part(root, args.long_minutes, min(args.repeats, 3))


if __name__ == "__main__":
    main()
