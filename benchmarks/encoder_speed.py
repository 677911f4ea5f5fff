"""Frame-encoder speed: milliseconds per 16-frame clip, with and without channels_last.

Usage: python benchmarks/encoder_speed.py [--repeats 15]
Runs each encoder (eval mode, torch.inference_mode) on a batch of 4 clips × 16 frames and
prints the median time per clip; then a Lite0 fine-tuning step (forward + backward) with every
layer trained against vidclf's (the first layers fixed), each also with BatchNorm run as its own
layer instead of folded into the convs (as before vidclf folded it), and the cost of each kind
of motion map per clip. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vidclf.config import ModelConfig
from vidclf.lite0 import ConvBN
from vidclf.model import VideoClassifier
from vidclf.motion import FLOWS, clip_motion


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@contextlib.contextmanager
def batchnorm_unfolded() -> Iterator[None]:
    """Lite0's convs followed by BatchNorm as a layer of its own, as before vidclf folded it."""
    folded = ConvBN.forward

    def forward(self: ConvBN, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.convolve(x, self.conv.weight, None))
        return F.relu6(x, inplace=True) if self.act else x

    ConvBN.forward = forward
    try:
        yield
    finally:
        ConvBN.forward = folded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch of 4 clips × 16 frames")
    print("| encoder | size | layout | ms per clip |")
    print("|---|---:|---|---:|")
    clips = 4
    for size in (112, 160):
        model = VideoClassifier(ModelConfig(labels=["a", "b"], size=size), pretrained=False).eval()
        rgb = torch.randint(0, 256, (clips, 16, size, size, 3), dtype=torch.uint8)
        for layout, batchnorm in (("channels_last", "folded"), ("channels_last", "unfolded"), ("contiguous", "folded")):
            def run() -> None:
                with torch.inference_mode():
                    x = rgb.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255)
                    x = x.contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
                    model.backbone(x)
            with batchnorm_unfolded() if batchnorm == "unfolded" else contextlib.nullcontext():
                print(f"| lite0 | {size} | {layout}, BatchNorm {batchnorm} | {median_ms(run, args.repeats) / clips:.1f} |",
                      flush=True)
    finetune_step_table(clips, args.repeats)
    frames = sample_clip_frames()
    print("\n| motion maps, 16 frames at 112 px → 32×32 | ms per clip |\n|---|---:|")
    for flows in [(flow,) for flow in FLOWS] + [FLOWS]:
        print(f"| {' + '.join(flows)} | {median_ms(lambda: clip_motion(frames, 32, flows), args.repeats):.1f} |")


def finetune_step_table(clips: int, repeats: int) -> None:
    """Forward + backward through Lite0 at 112 px, as in a fine-tuning epoch."""
    model = VideoClassifier(ModelConfig(labels=["a", "b"]), pretrained=False).train()
    x = torch.rand(clips * 16, 3, 112, 112).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model.backbone(x).mean().backward()

    print("\n| Lite0 fine-tuning step, 112 px | BatchNorm folded | unfolded | ratio |\n|---|---:|---:|---:|")
    for name, every_layer in ((f"stem + first {model.backbone.fixed_blocks} blocks fixed (vidclf)", False),
                              ("every layer trained", True)):
        model.freeze_backbone(False)  # vidclf's: all but the fixed layers learn
        if every_layer:
            model.backbone.requires_grad_(True)
        folded = median_ms(step, repeats) / clips
        with batchnorm_unfolded():
            unfolded = median_ms(step, repeats) / clips
        print(f"| {name} | {folded:.1f} | {unfolded:.1f} | {folded / unfolded:.2f} |", flush=True)


def sample_clip_frames() -> np.ndarray:
    """16 frames of a synthetic moving-object clip at 112 px (flow cost depends on content)."""
    import cv2

    from vidclf.samples import render_clip

    clip = render_clip("rotate_cw", np.random.default_rng(0), 16, 112, 112)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in clip])

if __name__ == "__main__":
    main()
