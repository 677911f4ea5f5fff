"""Clip inputs given as arrays, written into the real cache, so training reads them as it reads
decoded clips (the cache directory comes from VIDCLF_CACHE_DIR: point it at a tmp folder)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import torch

from vidclf.config import Fit, SamplingSpec
from vidclf.data import FEATURES, feature_cache_path, save_npz, view_cache_path
from vidclf.dataset import CachedClips


def cached_clips(motion: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, name: str,
                 appearance: torch.Tensor | None = None, rgb: np.ndarray | None = None, seed: int = 0,
                 views: int = 1, flow_images: torch.Tensor | None = None) -> CachedClips:
    """A dataset of N clips: flow maps (N, T, 4, M, M), and the frozen features of the frames
    and of the flow images (N, T, 1280 each) or the frames (N, T, S, S, 3) if given, the same
    in each of ``views`` views; ``name`` keeps datasets apart."""
    steps, size = motion.shape[1], 32 if rgb is None else rgb.shape[2]
    spec = SamplingSpec(steps, size, motion.shape[-1], Fit.CROP)  # training's default
    digests = [hashlib.sha256(f"{name}-{n}".encode()).hexdigest() for n in range(len(targets))]
    for (n, digest), view in itertools.product(enumerate(digests), range(views)):
        frames = np.zeros((steps, size, size, 3), np.uint8) if rgb is None else rgb[n]
        save_npz(view_cache_path(digest, spec, view, seed), {"rgb": frames, "motion": motion[n].numpy().astype(np.float16),
                                                             "length": np.array(int(lengths[n]))})
        for feature, values in zip(FEATURES, (appearance, flow_images)):
            if values is not None:
                save_npz(feature_cache_path(digest, spec, view, seed, False, feature),
                         {feature: values[n].numpy().astype(np.float16)})
    read = "features" if appearance is not None else "frames" if rgb is not None else "motion"
    return CachedClips(digests, targets.tolist(), spec, seed, views, read)
