"""`vidclf train --hflip`: half the training clips mirrored left-right, every stream alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidclf.config import ModelConfig, TrainOptions
from vidclf.data import ClipInputs, LabelledVideo
from vidclf.model import VideoClassifier
from vidclf.motion import FLOWS, MIRROR_SIGNS, clip_motion
from vidclf.samples import render_clip
from vidclf.train import Inputs, Splits, Stage, Tensors, fit, mirror_clips


def moving_clip(label: str, seed: int) -> np.ndarray:
    """A real generated clip (textured background, a moving shape), 8 frames at 64 px."""
    frames = render_clip(label, np.random.default_rng(seed), 8, 64, 64)
    return np.ascontiguousarray(frames[:, :, :, ::-1])  # the generator draws BGR for OpenCV's writer


def one_clip_batch(maps: np.ndarray) -> Tensors:
    return Tensors(lengths=torch.tensor([8]), targets=torch.tensor([0]), motion=torch.from_numpy(maps)[None],
                   clip_index=torch.tensor([0]))


@pytest.mark.parametrize("flow", FLOWS)
def test_mirrored_flow_maps_are_the_flow_of_the_mirrored_clip(flow: str) -> None:
    assert MIRROR_SIGNS == (-1.0, 1.0)  # (dx, dy): a mirror negates dx only
    frames = moving_clip("move_left", seed=3)
    batch = one_clip_batch(clip_motion(frames, 16))
    channels = slice(2 * FLOWS.index(flow), 2 * FLOWS.index(flow) + 2)  # this flow's (dx, dy)
    maps = batch.motion[:, :, channels]
    of_mirrored_clip = torch.from_numpy(clip_motion(np.ascontiguousarray(frames[:, :, ::-1]), 16, flows=(flow,)))[None]

    mirrored = mirror_clips(batch, torch.tensor([True])).motion[:, :, channels]
    error = (mirrored - of_mirrored_clip).abs().mean() / of_mirrored_clip.abs().mean()
    flipped_only = (maps.flip(4) - of_mirrored_clip).abs().mean() / of_mirrored_clip.abs().mean()
    assert error < 0.25, error  # OpenCV's flows are nearly, not exactly, mirror-symmetric
    assert flipped_only > 4 * error  # a shape moving left moves right in the mirror: dx's sign matters
    kept = mirror_clips(batch, torch.tensor([False]))
    assert torch.equal(kept.motion, batch.motion)


def test_frames_and_frozen_features_are_mirrored_with_the_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frozen backbone's features of the mirrored frames are computed (and cached) once;
    a mirrored clip takes them, its frames and its motion together."""
    monkeypatch.setenv("VIDCLF_CACHE_DIR", str(tmp_path / "cache"))
    config = ModelConfig(labels=("a", "b"), frames=8, size=64, motion_size=16)
    model = VideoClassifier(config)
    views, items = [], []
    for n, label in enumerate(["move_left", "rotate_cw"]):
        frames = moving_clip(label, seed=n)
        path = tmp_path / f"{label}.mp4"
        path.write_bytes(label.encode())  # only a cache key: the frames are given
        items.append(LabelledVideo(path, "ab"[n]))
        views.append((n, 0, ClipInputs(frames, clip_motion(frames, 16), 8)))

    def stacked_train_inputs(log: list[str], hflip: bool = True) -> Tensors:
        options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", hflip=hflip)
        inputs = Inputs(model, Splits(items, [], [], ["a", "b"]), options, torch.device("cpu"), log.append,
                        train_views=views, val_views=[], skipped=[])
        return inputs.train()

    log: list[str] = []
    stacked = stacked_train_inputs(log)
    rgb = torch.from_numpy(np.stack([v[2].rgb for v in views]))
    with torch.inference_mode():
        expected = model.appearance_features(rgb.flip(3))
    assert torch.allclose(stacked.appearance_mirrored, expected.half().float(), atol=1e-3)
    assert not torch.allclose(stacked.appearance_mirrored, stacked.appearance, atol=1e-2)
    assert sum("mirrored clip views" in line for line in log) == 1

    log.clear()
    again = stacked_train_inputs(log)
    assert not log and torch.equal(again.appearance_mirrored, stacked.appearance_mirrored)  # from the cache
    assert stacked_train_inputs(log, hflip=False).appearance_mirrored is None  # only --hflip needs them

    stacked.rgb = rgb
    mirror = torch.tensor([True, False])
    out = mirror_clips(stacked, mirror)
    assert torch.equal(out.appearance[0], stacked.appearance_mirrored[0])
    assert torch.equal(out.appearance[1], stacked.appearance[1])
    assert torch.equal(out.rgb[0], rgb[0].flip(2)) and torch.equal(out.rgb[1], rgb[1])
    assert torch.equal(out.motion[1], stacked.motion[1]) and not torch.equal(out.motion[0], stacked.motion[0])


def test_training_with_hflip_cannot_tell_mirror_twins_apart(tmp_path: Path) -> None:
    """Labels in the sign of dx (left/right) are mirror twins: with --hflip each is shown as
    the other half the time, so training cannot fit them. Labels in the sign of dy (up/down)
    survive the mirror. Mirroring the frames alone (not the motion) would leave both learnable."""
    def make(n: int, seed: int, channel: int) -> Tensors:
        gen = torch.Generator().manual_seed(seed)
        targets = torch.arange(n) % 2
        motion = 0.3 * torch.randn(n, 6, 2 * len(FLOWS), 8, 8, generator=gen)
        for flow in range(len(FLOWS)):  # the same signal in both flows' dx (channel 0) or dy (channel 1)
            motion[:, :, 2 * flow + channel] += (targets * 2 - 1).float()[:, None, None, None]
        return Tensors(lengths=torch.full((n,), 6), targets=targets, motion=motion, clip_index=torch.arange(n))

    def train_accuracy(channel: int, hflip: bool) -> float:
        """Training accuracy over the last 4 epochs, on the clips as shown (mirrored or not)."""
        torch.manual_seed(0)
        config = ModelConfig(labels=("neg", "pos"), backbone="none", frames=6, motion_size=8, hidden=16,
                             motion_dim=16, temporal="lstm", appearance_temporal="lstm")
        options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", epochs=8, lr=5e-3, hflip=hflip)
        stage = Stage("train", options.epochs, tmp_path / f"m{channel}{hflip}.ckpt", options.patience)
        _, history = fit(VideoClassifier(config), make(64, 1, channel), make(16, 2, channel), options,
                         torch.device("cpu"), lambda line: None, stage)
        return float(np.mean([record.train_acc for record in history[-4:]]))

    assert train_accuracy(channel=0, hflip=False) > 0.95  # dx's sign is learnt without mirroring
    assert train_accuracy(channel=1, hflip=True) > 0.95  # dy's sign survives the mirror
    assert train_accuracy(channel=0, hflip=True) < 0.7  # each label is shown with both signs of dx
