"""The choices vidclf offers, defined once: the CLI, the presets, the model config and the
help all read them from here. Pure dataclasses and Enums: importing this module is cheap (no
torch, no OpenCV), so ``vidclf --help`` answers at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path

from vidclf.device import Device


class Backbone(str, Enum):
    """The appearance stream's CNN: ImageNet EfficientNet-Lite0, or none (motion only)."""

    LITE0 = "lite0"
    NONE = "none"


class Temporal(str, Enum):
    """How a stream's per-step features become scores: an LSTM head, an order-blind mean head, or both."""

    LSTM_MEAN = "lstm+mean"
    LSTM = "lstm"
    MEAN = "mean"


class Fit(str, Enum):
    """How a frame becomes size×size: its centre square, or all of it scaled to the square
    (its aspect ratio not kept)."""

    CROP = "crop"
    STRETCH = "stretch"


class PresetName(str, Enum):
    BALANCED = "balanced"
    FAST = "fast"
    MOTION = "motion"
    APPEARANCE = "appearance"


@dataclass(frozen=True)
class Preset:
    """What a ``--preset`` sets; options given explicitly win."""

    backbone: Backbone
    finetune_epochs: int
    appearance_temporal: Temporal | None  # None: as --temporal
    when: str


PRESETS: dict[PresetName, Preset] = {
    PresetName.BALANCED: Preset(Backbone.LITE0, 8, None, "mixed or unknown data"),
    PresetName.FAST: Preset(Backbone.LITE0, 0, None, "classes told apart by how things move: ~3x faster"),
    PresetName.MOTION: Preset(Backbone.NONE, 0, None, "motion classes: no appearance stream, fastest"),
    PresetName.APPEARANCE: Preset(Backbone.LITE0, 8, Temporal.MEAN, "classes told apart by what is seen"),
}

STREAM_TIMEOUT_S = 30.0  # as OpenCV's own default: how long a stream URL may take to open or send a frame

# The motion streams: both OpenCV optical flows, a stream each (computed in vidclf.motion).
FLOWS: tuple[str, ...] = ("farneback", "dis")
MOTION = "+".join(FLOWS)  # as earlier model files and cache keys name it
# Farnebäck's flow drawn as a colour image and read by ImageNet Lite0 (frozen): motion features
# learnt on a million images, where the flow CNNs learn from the few clips given (docs/design.md).
FLOW_IMAGE = "flow-image"
# Options of earlier versions that a model file may record, with the only value still built:
# a file with any other value is refused, naming the option (see ModelConfig.from_dict).
REMOVED_OPTIONS: dict[str, object] = {
    "motion": MOTION, "motion_encoder": "cnn", "fusion": "late", "pooling": "global",
    "readout": "mean", "layers": 1, "bidirectional": False,
}


@dataclass(frozen=True)
class SamplingSpec:
    """How clips become model inputs; part of every cache key."""

    frames: int
    size: int
    motion_size: int  # the flow maps' side
    fit: Fit


# Bounds on what a config may ask of prediction: a model file's config is input like any other.
MAX_FRAMES = 512
MAX_SIZE = 1024


@dataclass(frozen=True)
class ModelConfig:
    """The network's architecture, saved in the model file so it rebuilds exactly."""

    labels: tuple[str, ...]
    backbone: Backbone = Backbone.LITE0
    temporal: Temporal = Temporal.LSTM_MEAN  # the motion streams' heads
    appearance_temporal: Temporal | None = None  # the appearance stream's heads; None: as temporal
    frames: int = 16  # T, frames sampled per clip
    size: int = 112  # frames are size×size, made so as ``fit`` says
    fit: Fit = Fit.CROP
    motion_size: int = 32  # flow maps are pooled to motion_size×motion_size
    appearance_dim: int = 16  # Lite0 features are projected this narrow
    motion_dim: int = 128
    hidden: int = 128  # LSTM width
    dropout: float = 0.3
    flow_image: bool = True  # a FLOW_IMAGE stream (with the backbone); files written before it lack one
    extra: dict[str, str] = field(default_factory=dict, compare=False)  # notes, e.g. the preset

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "backbone", Backbone(self.backbone))
        object.__setattr__(self, "temporal", Temporal(self.temporal))
        object.__setattr__(self, "fit", Fit(self.fit))
        object.__setattr__(self, "appearance_temporal", Temporal(self.appearance_temporal or self.temporal))
        if len(self.labels) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        if not (1 <= self.frames <= MAX_FRAMES and 16 <= self.size <= MAX_SIZE and 8 <= self.motion_size <= self.size):
            raise ValueError(f"frames must be 1–{MAX_FRAMES}, size 16–{MAX_SIZE} and motion_size 8–size")

    @property
    def streams(self) -> list[str]:
        """The input streams: "appearance" (with a backbone), one per optical flow, then
        FLOW_IMAGE (with a backbone, in models that have it)."""
        lite0 = self.backbone is Backbone.LITE0
        return ["appearance"] * lite0 + list(FLOWS) + [FLOW_IMAGE] * (lite0 and self.flow_image)

    @property
    def heads(self) -> list[tuple[str, str]]:
        """The classifier heads as (stream, "lstm" | "mean"), in the network's order."""
        return [(stream, kind) for stream in self.streams for kind in self.temporal_of(stream).value.split("+")]

    def temporal_of(self, stream: str) -> Temporal:
        return self.appearance_temporal if stream == "appearance" else self.temporal

    @property
    def head_names(self) -> list[str]:
        """Names for logs and summaries: the stream, plus "/lstm" or "/mean" where it has two."""
        return [f"{stream}/{kind}" if "+" in self.temporal_of(stream).value else stream for stream, kind in self.heads]

    def sampling(self) -> SamplingSpec:
        return SamplingSpec(self.frames, self.size, self.motion_size, self.fit)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(labels=list(self.labels), backbone=self.backbone.value, temporal=self.temporal.value,
                    appearance_temporal=self.appearance_temporal.value, fit=self.fit.value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        """The config a model file records; raises ``RemovedOptionError`` for a network that
        used an option vidclf no longer builds."""
        for name, kept in REMOVED_OPTIONS.items():
            if name in data and data[name] != kept:
                raise RemovedOptionError(name, data[name])
        if data.get("backbone") not in {b.value for b in Backbone}:
            raise RemovedOptionError("backbone", data.get("backbone"))
        data = {"flow_image": False, **data, "fit": recorded_fit(data)}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def recorded_fit(config: dict[str, object]) -> Fit:
    """The ``fit`` a model file's config records; files written before there was a choice cropped."""
    return Fit(config.get("fit", Fit.CROP.value))


class RemovedOptionError(ValueError):
    """A saved config uses a variant that vidclf no longer builds."""

    def __init__(self, option: str, value: object) -> None:
        super().__init__(f"trained with --{option.replace('_', '-')} {value}, which vidclf no longer "
                         "supports; retrain it with 'vidclf train'")
        self.option = option


@dataclass
class TrainOptions:
    """How to train: every ``vidclf train`` option, with its default, defined once."""

    data: Path
    out: Path
    preset: PresetName = PresetName.BALANCED
    group: str | None = None  # regex: a clip's group (person, scene) is its first capture group
    temporal: Temporal = Temporal.LSTM_MEAN
    frames: int = 16
    size: int = 112
    fit: Fit = Fit.CROP
    epochs: int = 60  # with the backbone frozen (features cached)
    finetune_epochs: int | None = None  # None: the preset's
    patience: int = 15
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    device: Device = Device.AUTO
    val_split: float = 0.2
    class_weights: bool = False
    hflip: bool = False
    force: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        self.preset, self.temporal, self.device = PresetName(self.preset), Temporal(self.temporal), Device(self.device)
        self.fit = Fit(self.fit)
        if self.finetune_epochs is None:
            self.finetune_epochs = PRESETS[self.preset].finetune_epochs
        elif self.finetune_epochs and PRESETS[self.preset].backbone is Backbone.NONE:
            raise ValueError(f"--finetune-epochs needs an appearance backbone; --preset {self.preset.value} has none")

    def model_config(self, labels: Sequence[str]) -> ModelConfig:
        preset = PRESETS[self.preset]
        return ModelConfig(tuple(labels), backbone=preset.backbone, temporal=self.temporal,
                           appearance_temporal=preset.appearance_temporal,
                           frames=self.frames, size=self.size, fit=self.fit, extra={"preset": self.preset.value})
