"""Training inputs streamed from the on-disk cache: memory bounded by batches, not by clips.

``CachedClips`` is a map-style ``torch.utils.data.Dataset`` over clips whose views are cached
(``vidclf.data``): an item is read from disk when asked for, by ``DataLoader`` worker
processes, with its augmentation (mirror, crop) applied there. What a batch carries depends on
the stage: the flow maps always; the frozen backbone's cached features (of the frames and of the
flow images) while it is frozen; the frames and the flow images' features while it is
fine-tuned; the frames alone while their features are computed. Which view of a clip an epoch
shows, and how it is augmented, comes from (seed, epoch, clip) in the sampler, so a run is the
same with any number of worker processes or ranks, and a resumed run continues as the
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from vidclf import parallel
from vidclf.config import FLOWS, SamplingSpec
from vidclf.data import FEATURES, feature_cache_path, read_npz, view_cache_path
from vidclf.errors import VidclfError
from vidclf.motion import MIRROR_SIGNS

# An item reads in 0.4–1.2 ms (motion; motion + features; motion + frames), so a few hundred
# items read in less time than worker processes take to start.
LOADER_MIN_ITEMS = 500
# What a batch carries besides the flow maps: nothing; both streams' features; the frames and the
# flow images' features (fine-tuning); the frames (to compute the features).
READS = ("motion", "features", "finetune", "frames")


class CacheError(VidclfError):
    """A cache entry vanished or was damaged while training read it."""

    def __init__(self, message: str) -> None:
        # DataLoader raises it again in the main process with the worker's traceback: keep the message.
        super().__init__(message.rstrip().splitlines()[-1].split("CacheError: ", 1)[-1])


class Key(NamedTuple):
    """Which item to read: a clip, its view, and the augmentation (``crop_seed`` None: none)."""

    clip: int
    view: int = 0
    mirror: bool = False
    crop_seed: int | None = None


@dataclass
class Tensors:
    """A batch of clip views: N views of T steps."""

    lengths: Tensor
    targets: Tensor
    motion: Tensor  # float32 (N, T, 4, M, M)
    keys: list[Key]
    appearance: Tensor | None = None  # cached frozen Lite0 features (N, T, 1280)
    rgb: Tensor | None = None  # uint8 frames (N, T, S, S, 3)
    flow_images: Tensor | None = None  # cached Lite0 features of the flow images (N, T, 1280)

    @staticmethod
    def collate(items: Sequence[Tensors]) -> Tensors:
        stack = lambda name: None if getattr(items[0], name) is None else torch.cat([getattr(i, name) for i in items])  # noqa: E731
        return Tensors(stack("lengths"), stack("targets"), stack("motion"), [k for i in items for k in i.keys],
                       stack("appearance"), stack("rgb"), stack("flow_images"))

    def pin_memory(self) -> Tensors:
        """Page-locked copies, so copies to the GPU can overlap compute (DataLoader calls this)."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Tensors(pin(self.lengths), pin(self.targets), pin(self.motion), self.keys, pin(self.appearance),
                       pin(self.rgb), pin(self.flow_images))


class CachedClips(Dataset):
    """Clips (their content digests, class indices and group numbers: by default each clip a
    group of its own) whose ``views`` views are cached; item ``Key(clip, ...)`` is one clip's
    view as a one-row ``Tensors``. ``ids`` number the clips for seeding, so a subset augments
    each clip as the whole set does."""

    def __init__(self, digests: Sequence[str], targets: Sequence[int], spec: SamplingSpec, seed: int, views: int,
                 read: str, ids: Sequence[int] | None = None, groups: Sequence[int] | None = None) -> None:
        assert read in READS, read
        self.digests, self.spec, self.seed, self.views, self.read = list(digests), spec, seed, views, read
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.ids = list(range(len(self.digests))) if ids is None else list(ids)
        self.groups = torch.as_tensor(range(len(self.digests)) if groups is None else groups, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.digests)

    def subset(self, clips: Sequence[int]) -> CachedClips:
        return CachedClips([self.digests[c] for c in clips], self.targets[list(clips)].tolist(), self.spec, self.seed,
                           self.views, self.read, [self.ids[c] for c in clips], self.groups[list(clips)].tolist())

    def reading(self, read: str) -> CachedClips:
        """The same clips, carrying ``read``."""
        return CachedClips(self.digests, self.targets.tolist(), self.spec, self.seed, self.views, read, self.ids,
                           self.groups.tolist())

    def __getitem__(self, key: Key | int) -> Tensors:
        key = Key(key) if isinstance(key, int) else key
        digest = self.digests[key.clip]
        path = view_cache_path(digest, self.spec, key.view, self.seed)
        reads_frames = self.read in ("frames", "finetune")
        arrays = _read(path, ("motion", "length") + ("rgb",) * reads_frames)
        motion = torch.from_numpy(arrays[0].astype(np.float32))[None]
        item = Tensors(torch.tensor([int(arrays[1])]), self.targets[key.clip : key.clip + 1],
                       mirror_motion(motion) if key.mirror else motion, [key])
        features = {name: torch.from_numpy(_read(feature_cache_path(digest, self.spec, key.view, self.seed, key.mirror,
                                                                    name), (name,))[0].astype(np.float32))[None]
                    for name in {"features": FEATURES, "finetune": ("flow_images",)}.get(self.read, ())}
        item.appearance, item.flow_images = features.get("features"), features.get("flow_images")
        if reads_frames:
            rgb = torch.from_numpy(arrays[2])[None]
            rgb = rgb.flip(3) if key.mirror else rgb
            item.rgb = rgb if key.crop_seed is None else random_resized_crop(rgb, torch.Generator().manual_seed(key.crop_seed))
        return item

    def missing_features(self, views: int, mirrored: bool, name: str = "features") -> list[Key]:
        """The keys (views 0 … views-1, and their mirror images if ``mirrored``) whose frozen
        features ``name`` (``FEATURES``) are not cached yet, or not whole."""
        keys = [Key(clip, view, mirror) for clip in range(len(self)) for view in range(views)
                for mirror in ((False, True) if mirrored else (False,))]
        return [key for key in keys if read_npz(feature_cache_path(self.digests[key.clip], self.spec, key.view,
                                                                   self.seed, key.mirror, name), name) is None]


def _read(path: Path, names: Sequence[str]) -> list[np.ndarray]:
    arrays = read_npz(path, *names)
    if arrays is None:
        path.unlink(missing_ok=True)  # so that the next run computes it again
        where = ("; under torchrun, VIDCLF_CACHE_DIR must be one folder every machine shares" if parallel.world() > 1
                 else "")
        raise CacheError(f"{path}: a cache entry is missing or damaged; run again (it will be recomputed) and do "
                         f"not clear the cache (VIDCLF_CACHE_DIR) while training{where}")
    return arrays


def mirror_motion(motion: Tensor) -> Tensor:
    """Flow maps (N, T, 4, M, M) of the clip mirrored left-right: flipped, dx negated."""
    signs = torch.tensor(MIRROR_SIGNS * len(FLOWS), dtype=motion.dtype)
    return motion.flip(4) * signs[None, None, :, None, None]


def random_resized_crop(rgb: Tensor, generator: torch.Generator) -> Tensor:
    """Same random crop (area 50–100%, aspect 3:4–4:3) on every frame of each clip (N, T, S, S, 3)."""
    batch, size = rgb.shape[0], rgb.shape[2]
    out = torch.empty_like(rgb)
    for b in range(batch):
        area = float(torch.empty(1).uniform_(0.5, 1.0, generator=generator))
        aspect = float(torch.empty(1).uniform_(0.75, 1.333, generator=generator))
        h = min(size, max(8, round(size * (area / aspect) ** 0.5)))
        w = min(size, max(8, round(size * (area * aspect) ** 0.5)))
        top = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        crop = rgb[b, :, top : top + h, left : left + w].permute(0, 3, 1, 2).float()
        resized = nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out[b] = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


class EpochSampler(Sampler[Key]):
    """This rank's share of the training clips in the epoch's seeded order
    (``DistributedSampler``), each as a key: a random cached view, mirrored half the time with
    ``hflip``, randomly cropped when frames are read; all drawn from (seed, epoch, clip id)."""

    def __init__(self, data: CachedClips, hflip: bool) -> None:
        self.data, self.hflip = data, hflip
        self.order = DistributedSampler(data, num_replicas=parallel.world(), rank=parallel.rank(), shuffle=True,
                                        seed=data.seed)

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[Key]:
        for clip in self.order:
            rng = np.random.default_rng([self.data.seed, self.order.epoch, self.data.ids[clip]])
            view, mirror, crop = int(rng.integers(self.data.views)), bool(rng.random() < 0.5), int(rng.integers(2**62))
            yield Key(clip, view, self.hflip and mirror, crop if self.data.read == "finetune" else None)


def loader(data: CachedClips, sampler: Sampler | Sequence[Key] | Sequence[int], batch_size: int, workers: int,
           device: torch.device) -> DataLoader:
    """Batches of ``data`` in ``sampler``'s order, read by ``workers`` processes kept alive
    across epochs (in this one when there are fewer than ``LOADER_MIN_ITEMS``: reading them
    takes less time than starting the processes); page-locked for a CUDA device."""
    workers = workers if len(sampler) >= LOADER_MIN_ITEMS else 0
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=Tensors.collate,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator())  # its seeds for the workers leave the global RNG (dropout) alone


def to_device(batch: Tensors, device: torch.device) -> Tensors:
    move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
    return replace(batch, targets=move(batch.targets), motion=move(batch.motion), appearance=move(batch.appearance),
                   rgb=move(batch.rgb), flow_images=move(batch.flow_images))  # lengths stay on the CPU, where sequence packing reads them
