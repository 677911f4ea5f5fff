"""`vidclf train --hflip`: half the training clips mirrored left-right, every stream alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cached import cached_clips
from vidclf.config import ModelConfig, TrainOptions
from vidclf.data import FEATURES
from vidclf.dataset import Key, mirror_motion
from vidclf.model import VideoClassifier
from vidclf.motion import FLOWS, MIRROR_SIGNS, clip_motion
from vidclf.samples import render_clip
from vidclf.train import Stage, encode_features, fit


def moving_clip(label: str, seed: int) -> np.ndarray:
    """A real generated clip (textured background, a moving shape), 8 frames at 64 px."""
    frames = render_clip(label, np.random.default_rng(seed), 8, 64, 64)
    return np.ascontiguousarray(frames[:, :, :, ::-1])  # the generator draws BGR for OpenCV's writer


@pytest.mark.parametrize("flow", FLOWS)
def test_mirrored_flow_maps_are_the_flow_of_the_mirrored_clip(flow: str) -> None:
    assert MIRROR_SIGNS == (-1.0, 1.0)  # (dx, dy): a mirror negates dx only
    frames = moving_clip("move_left", seed=3)
    data = cached_clips(torch.from_numpy(clip_motion(frames, 16))[None], torch.tensor([0]), torch.tensor([8]), flow)
    channels = slice(2 * FLOWS.index(flow), 2 * FLOWS.index(flow) + 2)  # this flow's (dx, dy)
    maps = data[Key(0)].motion[:, :, channels]
    of_mirrored_clip = torch.from_numpy(clip_motion(np.ascontiguousarray(frames[:, :, ::-1]), 16, flows=(flow,)))[None]

    mirrored = data[Key(0, mirror=True)].motion[:, :, channels]
    error = (mirrored - of_mirrored_clip).abs().mean() / of_mirrored_clip.abs().mean()
    flipped_only = (maps.flip(4) - of_mirrored_clip).abs().mean() / of_mirrored_clip.abs().mean()
    assert error < 0.25, error  # OpenCV's flows are nearly, not exactly, mirror-symmetric
    assert flipped_only > 4 * error  # a shape moving left moves right in the mirror: dx's sign matters


def test_frames_and_frozen_features_are_mirrored_with_the_clip() -> None:
    """The frozen backbone's features of the mirrored frames, and of the mirrored clip's flow
    images, are computed (and cached) once; a mirrored clip takes them, its frames and its
    motion together."""
    model = VideoClassifier(ModelConfig(labels=("a", "b"), frames=8, size=64, motion_size=16))
    frames = np.stack([moving_clip(label, seed=n) for n, label in enumerate(["move_left", "rotate_cw"])])
    motion = torch.from_numpy(np.stack([clip_motion(f, 16) for f in frames]))
    data = cached_clips(motion, torch.tensor([0, 1]), torch.tensor([8, 8]), "frames", rgb=frames)

    log: list[str] = []
    for name in FEATURES:
        encode_features(model, data, data.missing_features(1, True, name), name, 0, torch.device("cpu"), log.append)
        assert not data.missing_features(1, True, name)  # cached: nothing left to encode
    assert sum("encoding 4 clip views" in line for line in log) == 1
    assert sum("encoding 4 flow images of clip views" in line for line in log) == 1
    features = data.reading("features")
    with torch.inference_mode():
        expected = model.appearance_features(torch.from_numpy(frames).flip(3))
        flow_images = model.flow_image_features(mirror_motion(motion.half().float()))  # as cached
    for clip in (0, 1):
        mirrored, plain = features[Key(clip, mirror=True)], features[Key(clip)]
        assert torch.allclose(mirrored.appearance[0], expected[clip].half().float(), atol=1e-3)
        assert not torch.allclose(mirrored.appearance, plain.appearance, atol=1e-2)
        assert torch.allclose(mirrored.flow_images[0], flow_images[clip].half().float(), atol=1e-3)
        assert not torch.allclose(mirrored.flow_images, plain.flow_images, atol=1e-2)
        assert torch.equal(mirrored.motion, plain.motion.flip(4) * torch.tensor([-1.0, 1.0] * 2)[None, None, :, None, None])
        assert torch.equal(data[Key(clip, mirror=True)].rgb[0], torch.from_numpy(frames[clip]).flip(2))
        assert torch.equal(data[Key(clip)].rgb[0], torch.from_numpy(frames[clip]))


def test_training_with_hflip_cannot_tell_mirror_twins_apart(tmp_path: Path) -> None:
    """Labels in the sign of dx (left/right) are mirror twins: with --hflip each is shown as
    the other half the time, so training cannot fit them. Labels in the sign of dy (up/down)
    survive the mirror. Mirroring the frames alone (not the motion) would leave both learnable."""
    def make(n: int, seed: int, channel: int):
        gen = torch.Generator().manual_seed(seed)
        targets = torch.arange(n) % 2
        motion = 0.3 * torch.randn(n, 6, 2 * len(FLOWS), 8, 8, generator=gen)
        for flow in range(len(FLOWS)):  # the same signal in both flows' dx (channel 0) or dy (channel 1)
            motion[:, :, 2 * flow + channel] += (targets * 2 - 1).float()[:, None, None, None]
        return cached_clips(motion, targets, torch.full((n,), 6), f"twins-{n}-{seed}-{channel}")

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
