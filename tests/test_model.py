"""The network: shapes, masking of padded steps, frozen backbone, late fusion, and the model file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from vidclf.config import REMOVED_OPTIONS, Fit, ModelConfig, TrainOptions
from vidclf.model import (
    FLOW_IMAGE_FULL_SCALE, Lite0Features, VideoClassifier, flops_per_clip, flow_derivatives, flow_image, fuse,
)
from vidclf.modelfile import ModelFileError, load_model, model_info, read_metadata, save_model

LABELS = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data" / "models"


def make_inputs(batch: int, steps: int, size: int = 32, motion_size: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (batch, steps, size, size, 3), generator=gen, dtype=torch.uint8)
    motion = torch.randn(batch, steps, 4, motion_size, motion_size, generator=gen)
    return rgb, motion


def small_config(**overrides) -> ModelConfig:
    base = dict(labels=LABELS, backbone="none", frames=6, size=32, motion_size=16, hidden=16, appearance_dim=8,
                motion_dim=8, temporal="lstm")
    return ModelConfig(**{**base, **overrides})


def lite0(pretrained: bool = False, **overrides) -> VideoClassifier:
    return VideoClassifier(small_config(backbone="lite0", **overrides), pretrained=pretrained)


@pytest.mark.parametrize("backbone", ["lite0", "none"])
@pytest.mark.parametrize("temporal", ["lstm+mean", "lstm", "mean"])
def test_every_choice_gives_logits(backbone: str, temporal: str) -> None:
    model = VideoClassifier(small_config(backbone=backbone, temporal=temporal, appearance_temporal=temporal),
                            pretrained=False).eval()
    rgb, motion = make_inputs(2, 6)
    logits = model(torch.tensor([6, 4]), rgb=rgb, motion=motion)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert len(model.heads) == len(model.config.heads) == len(model.stream_weights)


def test_flow_images_draw_dx_dy_and_speed_as_colour_at_the_frame_size() -> None:
    """Red and green are dx and dy, blue the speed (-1 at rest), saturating at the full scale."""
    full = FLOW_IMAGE_FULL_SCALE
    flow = torch.zeros(4, 2, 8, 8)
    flow[1, 0], flow[2, 1], flow[3, 0] = full / 2, -full, 3 * full  # right at half scale; up; far right
    images = flow_image(flow, 32)
    assert images.shape == (4, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    centre = images[:, :, 16, 16]
    assert torch.allclose(centre, torch.tensor([[0.0, 0.0, -1.0], [0.5, 0.0, 0.0], [0.0, -1.0, 1.0], [1.0, 0.0, 1.0]]))


def test_a_model_file_from_before_flow_images_rebuilds_without_them() -> None:
    recorded = {k: v for k, v in ModelConfig(labels=LABELS).to_dict().items() if k != "flow_image"}
    assert "flow-image" not in ModelConfig.from_dict(recorded).streams
    assert "flow-image" in ModelConfig.from_dict(ModelConfig(labels=LABELS).to_dict()).streams
    assert "flow-image" not in ModelConfig(labels=LABELS, backbone="none").streams  # it needs Lite0


def test_flow_derivatives_give_divergence_and_curl() -> None:
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    expanding = flow_derivatives(torch.stack([xs, ys])[None])  # away from the origin: divergence 2
    turning = flow_derivatives(torch.stack([-ys, xs])[None])  # counter-clockwise: curl 2
    assert expanding.shape == (1, 4, 8, 8)
    assert torch.allclose(expanding[0, 2], torch.full((8, 8), 2.0)) and torch.allclose(expanding[0, 3], torch.zeros(8, 8))
    assert torch.allclose(turning[0, 2], torch.zeros(8, 8)) and torch.allclose(turning[0, 3], torch.full((8, 8), 2.0))


def test_one_optimiser_step_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = VideoClassifier(small_config(dropout=0.0, temporal="lstm+mean"))
    rgb, motion = make_inputs(4, 6)
    lengths, targets = torch.tensor([6, 5, 6, 4]), torch.tensor([0, 1, 2, 0])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = sum(nn.functional.cross_entropy(h, targets) for h in model.head_logits(lengths, rgb=rgb, motion=motion))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("temporal", ["lstm", "mean", "lstm+mean"])
def test_padded_steps_are_never_read(temporal: str) -> None:
    model = lite0(temporal=temporal, appearance_temporal=temporal).eval()
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([4, 6])
    before = model(lengths, rgb=rgb, motion=motion)
    rgb2, motion2 = rgb.clone(), motion.clone()
    rgb2[0, 4:] = 255 - rgb2[0, 4:]  # change only the padding of clip 0
    motion2[0, 4:] = 50.0
    assert torch.allclose(before, model(lengths, rgb=rgb2, motion=motion2), atol=1e-5)
    # ... and equals running the clip alone, unpadded.
    assert torch.allclose(before[:1], model(torch.tensor([4]), rgb=rgb[:1, :4], motion=motion[:1, :4]), atol=1e-5)


def test_lstm_sees_order_but_mean_does_not() -> None:
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    lengths = torch.tensor([6])
    lstm = VideoClassifier(small_config()).eval()
    mean = VideoClassifier(small_config(temporal="mean")).eval()
    assert not torch.allclose(lstm(lengths, motion=motion), lstm(lengths, motion=motion[:, reverse]))
    assert torch.allclose(mean(lengths, motion=motion), mean(lengths, motion=motion[:, reverse]), atol=1e-5)


def test_appearance_head_can_average_while_motion_heads_read_order() -> None:
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    model = lite0(appearance_temporal="mean").eval()
    lengths = torch.tensor([6])
    same = model(lengths, rgb=rgb, motion=motion)
    assert torch.allclose(same, model(lengths, rgb=rgb[:, reverse], motion=motion), atol=1e-5)
    assert not torch.allclose(same, model(lengths, rgb=rgb, motion=motion[:, reverse]))


def test_lstm_plus_mean_gives_both_heads_and_the_weights_decide_if_order_counts(tmp_path: Path) -> None:
    config = small_config(backbone="lite0", temporal="lstm+mean", appearance_temporal="lstm+mean")
    model = VideoClassifier(config).eval()  # pretrained: a frozen Lite0 is rebuilt from its weights on load
    assert config.head_names == ["appearance/lstm", "appearance/mean", "farneback/lstm", "farneback/mean",
                                 "dis/lstm", "dis/mean", "flow-image/lstm", "flow-image/mean"]
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    lengths = torch.tensor([6])

    def order_blind(weights: list[float]) -> bool:
        model.stream_weights.copy_(torch.tensor(weights))
        return torch.allclose(model(lengths, rgb=rgb, motion=motion),
                              model(lengths, rgb=rgb[:, reverse], motion=motion[:, reverse]), atol=1e-5)

    means = [kind == "mean" for _, kind in config.heads]
    assert order_blind([m / sum(means) for m in means])
    assert not order_blind([(not m) / (len(means) - sum(means)) for m in means])
    save_model(model, tmp_path / "hybrid.vidclf", {})
    loaded = load_model(tmp_path / "hybrid.vidclf").model
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded(lengths, rgb=rgb, motion=motion), atol=1e-6)


def test_head_names_name_the_kind_only_where_a_stream_has_two_heads() -> None:
    config = small_config(backbone="lite0", temporal="lstm+mean", appearance_temporal="mean")
    assert config.head_names == ["appearance", "farneback/lstm", "farneback/mean", "dis/lstm", "dis/mean",
                                 "flow-image/lstm", "flow-image/mean"]
    assert small_config().head_names == ["farneback", "dis"]


def test_config_validation_and_removed_variants() -> None:
    with pytest.raises(ValueError, match="at least 2 labels"):
        ModelConfig(labels=["only"])
    with pytest.raises(ValueError, match="'small' is not a valid Backbone"):
        small_config(backbone="small")
    with pytest.raises(ValueError, match="not a valid Temporal"):
        small_config(temporal="gru")
    saved = small_config().to_dict()
    assert ModelConfig.from_dict(json.loads(json.dumps(saved))) == small_config()
    stretched = small_config(fit="stretch").to_dict()
    assert stretched["fit"] == "stretch" and ModelConfig.from_dict(json.loads(json.dumps(stretched))).fit is Fit.STRETCH
    assert ModelConfig.from_dict(stretched).sampling().fit is Fit.STRETCH  # what prediction will read
    with pytest.raises(ValueError, match="not a valid Fit"):
        small_config(fit="pad")
    with pytest.raises(ValueError, match="--fusion concat, which vidclf no longer supports; retrain"):
        ModelConfig.from_dict({**saved, "fusion": "concat"})


def test_frozen_backbone_stays_frozen_in_train_mode() -> None:
    model = lite0().train()
    assert not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.net.head.parameters())


def test_fine_tuning_trains_lite0_but_not_its_first_layers(tmp_path: Path) -> None:
    from vidclf.train import make_optimizer

    model = lite0(pretrained=True)
    model.freeze_backbone(False)
    model.train()
    fixed = model.backbone.fixed_layers()
    fixed_ids = {id(p) for p in fixed.parameters()}
    assert len(fixed) == 1 + Lite0Features.fixed_blocks and not any(m.training for layer in fixed for m in layer.modules())
    before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    optimizer = make_optimizer(model, TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf"))
    rgb, motion = make_inputs(2, 6)
    model(torch.tensor([6, 6]), rgb=rgb, motion=motion).logsumexp(1).sum().backward()
    optimizer.step()
    changed = {id(p) for name, p in model.backbone.named_parameters() if not torch.equal(before[name], p)}
    assert changed and not changed & fixed_ids  # the later layers learn, the first keep ImageNet's weights
    model.freeze_backbone(True)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_fine_tuning_keeps_lite0_batchnorm_statistics() -> None:
    model = lite0()
    model.freeze_backbone(False)
    model.train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    rgb, motion = make_inputs(2, 6)
    model(torch.tensor([6, 6]), rgb=rgb, motion=motion).sum().backward()
    assert model.backbone.training and not any(m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert any(p.grad is not None for p in model.backbone.parameters())  # the weights still learn


def test_fine_tuning_gives_the_pretrained_backbone_its_own_learning_rate(tmp_path: Path) -> None:
    from vidclf.train import BACKBONE_LR_SCALE, make_optimizer

    def lr_of(model: VideoClassifier) -> dict[str, float]:
        optimizer = make_optimizer(model, TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", lr=1e-3))
        group_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        return {name: group_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}

    model = lite0()
    assert lr_of(model) and not any(name.startswith("backbone.") for name in lr_of(model))  # frozen
    model.freeze_backbone(False)
    rates = lr_of(model)
    backbone = [lr for name, lr in rates.items() if name.startswith("backbone.")]
    assert backbone and backbone == pytest.approx([1e-3 * BACKBONE_LR_SCALE] * len(backbone))
    assert {lr for name, lr in rates.items() if not name.startswith("backbone.")} == {1e-3}


def test_normalisation_is_inside_the_model() -> None:
    model = lite0().eval()
    rgb, _ = make_inputs(1, 6)
    manual = model.backbone(rgb[0].permute(0, 3, 1, 2).float() / 255 * 2 - 1).mean(dim=(2, 3))
    assert torch.allclose(model.appearance_features(rgb)[0], manual, atol=1e-5)


def test_frozen_features_do_not_depend_on_mode_or_batch() -> None:
    """The feature cache is filled before training and read back at every epoch; prediction
    computes the same features in eval mode, one clip at a time. They must agree exactly."""
    model = lite0(pretrained=True)  # as training builds it
    rgb, _ = make_inputs(3, 4)
    with torch.inference_mode():
        batched = model.appearance_features(rgb)
        model.eval()
        alone = model.appearance_features(rgb[1:2])
    assert torch.allclose(batched[1:2], alone, atol=1e-5)


def test_fuse_is_the_weighted_sum_of_log_probabilities_and_forward_uses_the_saved_weights() -> None:
    model = lite0(temporal="lstm").eval()
    weights = [0.25, 0.125, 0.5, 0.125]
    model.stream_weights.copy_(torch.tensor(weights))
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 3])
    heads = model.head_logits(lengths, rgb=rgb, motion=motion)
    expected = sum(w * h.log_softmax(1) for w, h in zip(weights, heads))
    assert torch.allclose(fuse(heads, weights), expected)
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), expected)
    assert model.stream_weights.tolist() == weights  # fuse with other weights left the model alone
    fuse(heads, [1.0, 0.0, 0.0, 0.0])
    assert model.stream_weights.tolist() == weights


@pytest.mark.parametrize("weighing", ["farneback", "flow-image"])
def test_heads_of_weight_0_are_not_computed_and_their_inputs_never_read(weighing: str) -> None:
    """Only Farneback's heads, or only the flow images' (drawn from Farneback's maps), at
    nonzero weight: the same scores, the appearance Lite0 never runs, and the DIS maps (what
    prediction leaves at zero) do not matter."""
    model = lite0(temporal="lstm+mean").eval()
    names = model.config.head_names
    model.stream_weights.copy_(torch.tensor([0.5 if name.startswith(weighing + "/") else 0.0 for name in names]))
    assert model.used_streams == {weighing} and model.used_flows == ["farneback"]
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 4])
    expected = fuse(model.head_logits(lengths, rgb=rgb, motion=motion), model.stream_weights)
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    no_dis = motion.clone()
    no_dis[:, :, 2:] = 0
    assert torch.allclose(model(lengths, rgb=None, motion=no_dis), expected, atol=1e-6) and not calls


# --- model file -------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,frozen", [("none", True), ("lite0", True), ("lite0", False)])
def test_save_load_round_trip_gives_same_logits(tmp_path: Path, backbone: str, frozen: bool) -> None:
    model = VideoClassifier(small_config(backbone=backbone), pretrained=True).eval()
    model.freeze_backbone(frozen)
    model.stream_weights.copy_(torch.linspace(0.1, 1.0, len(model.heads)) / torch.linspace(0.1, 1.0, len(model.heads)).sum())
    path = tmp_path / "m.vidclf"
    save_model(model, path, {"best_val_acc": 0.5, "seed": 3})
    loaded = load_model(path)
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 3])
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded.model(lengths, rgb=rgb, motion=motion), atol=1e-6)
    assert torch.equal(loaded.model.stream_weights, model.stream_weights)
    meta = loaded.metadata
    assert meta["labels"] == LABELS and meta["training"]["seed"] == 3 and meta["config"]["backbone"] == backbone
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert any(k.startswith("backbone.") for k in stored) == (backbone == "lite0" and not frozen)
    assert not any(k.startswith("flow_image_backbone.") for k in stored)  # ImageNet's, rebuilt on load
    if backbone == "lite0":
        assert meta["backbone"]["weights_sha256"].startswith("5793442")
    assert [p.name for p in tmp_path.iterdir()] == ["m.vidclf"]  # no temp files left


def test_frozen_lite0_file_is_small(tmp_path: Path) -> None:
    save_model(VideoClassifier(ModelConfig(labels=LABELS)), tmp_path / "m.vidclf", {})
    assert (tmp_path / "m.vidclf").stat().st_size < 3_000_000  # encoders and heads only, not the 13 MB backbone


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    model = VideoClassifier(small_config())
    path = tmp_path / "m.vidclf"
    path.write_bytes(b"precious")
    with pytest.raises(ModelFileError, match="already exists; pass --force"):
        save_model(model, path, {})
    assert path.read_bytes() == b"precious"
    save_model(model, path, {}, force=True)
    assert read_metadata(path)["labels"] == LABELS


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_loading_never_executes_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.vidclf"
    torch.save({"format": "vidclf-model", "format_version": 1, "metadata": "{}", "state_dict": Exploit()}, path)
    with pytest.raises(ModelFileError, match="refused to load"):
        load_model(path)


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.vidclf")
    text = tmp_path / "text.vidclf"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable vidclf model file"):
        load_model(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not a vidclf model file"):
        load_model(other)
    good = tmp_path / "good.vidclf"
    save_model(VideoClassifier(small_config()), good, {})
    cut = tmp_path / "cut.vidclf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(cut)


def _rewrite_metadata(source: Path, path: Path, change) -> Path:
    payload = torch.load(source, weights_only=True)
    metadata = json.loads(payload["metadata"])
    change(metadata, payload)
    payload["metadata"] = json.dumps(metadata)
    torch.save(payload, path)
    return path


def test_newer_format_and_backbone_mismatch_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config(backbone="lite0")), path, {})
    _rewrite_metadata(path, path, lambda meta, payload: meta["backbone"].update(weights_sha256="0" * 64))
    with pytest.raises(ModelFileError, match="backbone weights"):
        load_model(path)
    _rewrite_metadata(path, path, lambda meta, payload: payload.update(format_version=99))
    with pytest.raises(ModelFileError, match="newer than this vidclf"):
        load_model(path)


def test_weights_that_do_not_match_config_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config()), path, {})
    _rewrite_metadata(path, path, lambda meta, payload: meta["config"].update(hidden=32))
    with pytest.raises(ModelFileError, match="do not match the saved config"):
        load_model(path)


def test_lstm_plus_mean_files_with_shared_encoders_are_refused_with_a_retrain_message(tmp_path: Path) -> None:
    save_model(VideoClassifier(small_config(temporal="lstm+mean")), tmp_path / "new.vidclf", {})
    assert len(load_model(tmp_path / "new.vidclf").model.mean_encoders) == 2
    payload = torch.load(tmp_path / "new.vidclf", weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("mean_encoders.")}
    torch.save(payload, tmp_path / "shared.vidclf")
    with pytest.raises(ModelFileError, match="shared.vidclf: an 'lstm\\+mean' model .*retrain it"):
        load_model(tmp_path / "shared.vidclf")


@pytest.mark.parametrize("name", ["v2_motion", "v2_appearance"])
def test_model_files_of_the_previous_version_load_and_predict_the_same(name: str) -> None:
    """Fixtures written by vidclf before the simplification (its full config schema: fusion,
    pooling, readout, ... and 'frozen'), with the predictions that version made: the current
    code must give the same records, score for score."""
    expected = (FIXTURES / f"{name}.expected.jsonl").read_text()
    videos = [json.loads(line)["video"] for line in expected.splitlines()]
    result = subprocess.run([sys.executable, "-m", "vidclf", "predict", *videos, "-m", str(FIXTURES / f"{name}.vidclf"),
                             "-f", "jsonl", "-k", "3"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    config = read_metadata(FIXTURES / f"{name}.vidclf")["config"]
    assert {"fusion", "pooling", "readout", "frozen"} <= set(config)  # really the old schema
    assert ModelConfig.from_dict(config).fit is Fit.CROP  # as it was trained: no "fit" recorded, centre crop


@pytest.mark.parametrize("option,value", [(name, value) for name, value in
                                          {"fusion": "concat", "motion": "diff", "motion_encoder": "grid",
                                           "pooling": "grid", "readout": "last", "layers": 2,
                                           "bidirectional": True, "backbone": "small"}.items()])
def test_a_file_that_used_a_removed_variant_is_refused_naming_the_option(tmp_path: Path, option: str, value: object) -> None:
    assert option in REMOVED_OPTIONS or option == "backbone"
    path = _rewrite_metadata(FIXTURES / "v2_motion.vidclf", tmp_path / "old.vidclf",
                             lambda meta, payload: meta["config"].update({option: value}))
    flag = f"--{option.replace('_', '-')} {value}"
    with pytest.raises(ModelFileError, match=f"old.vidclf: trained with {flag}, which vidclf no longer supports; retrain"):
        load_model(path)
    result = subprocess.run([sys.executable, "-m", "vidclf", "info", str(path)], capture_output=True, text=True)
    assert result.returncode == 0  # the metadata itself can still be read


# --- late-fusion weights and model selection ----------------------------------------------------

def _sign_task(n: int, seed: int, first_half: int = 1, second_half: int = 1, shortcut: float = 0.0,
               mislabelled: int = 0):
    """Clips whose label is the sign of the flow (times ``first_half`` for three steps, then
    ``second_half``; reversed in the first ``mislabelled`` clips), over noise; the appearance and
    flow-image features are noise plus a pattern times ``shortcut`` × the label's sign (a scene,
    and its camera shake, filmed for one label: reversed in validation, those heads are
    confidently wrong there)."""
    from cached import cached_clips

    targets = torch.arange(n) % 2
    _, motion = make_inputs(n, 6, seed=seed)
    sign = (targets * 2 - 1).float()[:, None]
    flow = sign * torch.where(torch.arange(n)[:, None] < mislabelled, -1.0, 1.0)
    direction = torch.cat([first_half * flow.expand(n, 3), second_half * flow.expand(n, 3)], dim=1)
    scene = torch.randn(2, 1, 1, 1280, generator=torch.Generator().manual_seed(7)).sign()
    appearance, flow_images = torch.randn(2, n, 6, 1280, generator=torch.Generator().manual_seed(seed + 100)) \
        + shortcut * sign[:, :, None] * scene
    return cached_clips(motion * 0.3 + direction[:, :, None, None, None], targets, torch.full((n,), 6),
                        f"sign-{n}-{seed}-{first_half}-{second_half}-{shortcut}-{mislabelled}", appearance=appearance,
                        flow_images=flow_images)


def _fit_sign_task(tmp_path: Path, labels: list[str], temporal: str, first_half: int, second_half: int
                   ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Train on the sign task, the appearance and flow images a shortcut that validation
    reverses; return the head weights kept, the best weighting found on validation (which
    the kept one is unless it is no significant win over even weights), and the validation
    accuracy of each head, of the kept fusion and of even weights."""
    from vidclf.selection import choose_stream_weights, even_weights, significantly_better
    from vidclf.train import Stage, eval_loader, fit, head_logits

    torch.manual_seed(0)
    config = small_config(labels=labels, backbone="lite0", temporal=temporal, appearance_temporal=temporal)
    model = VideoClassifier(config, pretrained=False)
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", epochs=12, batch_size=8, lr=5e-3)
    train, val = _sign_task(32, 1, first_half, second_half, 1.0), _sign_task(48, 2, first_half, second_half, -1.0)
    stage = Stage("train", options.epochs, tmp_path / "m.ckpt", options.patience)
    best, _ = fit(model, train, val, options, torch.device("cpu"), lambda line: None, stage)
    model.load_state_dict(best.state)
    logits = head_logits(model, eval_loader(val, 0, torch.device("cpu")), torch.device("cpu"))
    kept, even = tuple(model.stream_weights.tolist()), even_weights(config.heads)
    candidate = choose_stream_weights(config.heads, logits, val.targets)
    right = {name: fuse(logits, weights).argmax(1) == val.targets for name, weights in (("kept", kept), ("even", even))}
    assert kept == (candidate if significantly_better(fuse(logits, candidate).argmax(1) == val.targets, right["even"])
                    else pytest.approx(even))
    accuracy = {name: float(r.float().mean()) for name, r in right.items()}
    accuracy |= {name: float((head.argmax(1) == val.targets).float().mean()) for name, head in zip(config.head_names, logits)}
    return dict(zip(config.head_names, kept)), dict(zip(config.head_names, candidate)), accuracy


def test_validation_keeps_even_fusion_weights_unless_another_weighting_wins_significantly(tmp_path: Path) -> None:
    """The appearance and flow-image heads learn a shortcut that validation reverses: wrong on
    every validation clip. Weighing the motion streams alone is no worse than even weights
    there, though, and at least as good is not enough: even weights stay."""
    kept, candidate, accuracy = _fit_sign_task(tmp_path, ["neg", "pos"], "lstm", 1, 1)
    assert accuracy["appearance"] == accuracy["flow-image"] == 0.0 and accuracy["even"] == 1.0, accuracy
    assert candidate["appearance"] == candidate["flow-image"] == 0.0, candidate  # what the old rule kept
    assert set(kept.values()) == {0.25}, kept


def test_lstm_plus_mean_is_right_when_only_order_carries_the_label(tmp_path: Path) -> None:
    """Motion goes one way, then back; the label is which way first, so a mean over time sees
    the same clip for both labels: the mean heads cannot tell them apart, and with the shortcut
    heads, even weights miss clips. The weighting found wins significantly and is kept."""
    kept, candidate, accuracy = _fit_sign_task(tmp_path, ["there", "back"], "lstm+mean", 1, -1)
    assert accuracy["farneback/mean"] <= 0.75, accuracy  # it cannot see the order
    assert kept == candidate and kept["farneback/lstm"] + kept["dis/lstm"] > kept["appearance/lstm"], kept
    assert accuracy["even"] < accuracy["kept"] == 1.0, accuracy


def test_lstm_plus_mean_gives_the_mean_heads_encoders_of_their_own() -> None:
    """An LSTM model and an order-blind model side by side: each head's loss trains its own
    encoders only, and the backbone serves both."""
    config = small_config(backbone="lite0", temporal="lstm+mean", appearance_temporal="lstm+mean")
    model = VideoClassifier(config, pretrained=False)
    model.freeze_backbone(False)
    assert list(model.mean_encoders) == ["appearance", "farneback", "dis", "flow-image"]
    rgb, motion = make_inputs(2, 6)
    logits = model.head_logits(torch.tensor([6, 6]), rgb=rgb, motion=motion)
    means = [kind == "mean" for _, kind in config.heads]
    lstm_encoders = [*model.motion_encoders.parameters(), *model.appearance_proj.parameters(),
                     *model.flow_image_proj.parameters()]
    for trained, untouched, loss_on_mean in ((list(model.mean_encoders.parameters()), lstm_encoders, True),
                                             (lstm_encoders, list(model.mean_encoders.parameters()), False)):
        model.zero_grad(set_to_none=True)
        sum(head.sum() for head, mean in zip(logits, means) if mean == loss_on_mean).backward(retain_graph=True)
        assert all(p.grad is not None for p in trained) and all(p.grad is None for p in untouched)
        assert any(p.grad is not None for p in model.backbone.parameters())
        assert all(p.grad is None for p in model.flow_image_backbone.parameters())  # ImageNet's, never trained
    assert len(VideoClassifier(small_config()).mean_encoders) == 0  # plain LSTM models have none


def test_lstm_plus_mean_leaves_the_even_split_only_for_a_strictly_more_accurate_one() -> None:
    """The rule on given validation logits: the mean heads confidently wrong on a quarter of the
    clips (order partners) → the LSTM heads alone; both right → an even split."""
    from vidclf.selection import choose_stream_weights

    heads = small_config(labels=["there", "back"], temporal="lstm+mean").heads
    targets = torch.arange(8) % 2
    right = nn.functional.one_hot(targets, 2).float() * 4
    wrong = right.clone()
    wrong[:2] = right[:2].flip(1) * 2  # confidently the partner class
    assert choose_stream_weights(heads, [right, wrong, right, wrong], targets) == (0.5, 0.0, 0.5, 0.0)
    assert choose_stream_weights(heads, [right] * 4, targets) == (0.25, 0.25, 0.25, 0.25)


def test_head_weights_share_a_stream_evenly_or_give_it_to_one_kind_of_head() -> None:
    from vidclf.selection import head_weights

    heads = [("appearance", "mean"), ("farneback", "lstm"), ("farneback", "mean")]
    share = {"appearance": 0.5, "farneback": 0.5}
    assert head_weights(heads, share) == (0.5, 0.25, 0.25)
    assert head_weights(heads, share, "lstm") == (0.5, 0.5, 0.0)  # appearance keeps its only head
    assert head_weights(heads, share, "mean") == (0.5, 0.0, 0.5)


def test_cross_validation_keeps_the_full_schedule_and_even_weights_unless_beaten_significantly() -> None:
    """Out-of-fold logits of two streams (one head each) over 3 epochs, 12 clips: epoch 2 wins
    5 clips the last epoch misses (p = 1/32) or only 4 (p = 1/16); the weighting that trusts
    stream "a" wins 6 or 2 clips over the even one."""
    from vidclf.selection import cross_validated_choice, scored_epochs

    heads, targets = [("a", "lstm"), ("b", "lstm")], torch.arange(12) % 3
    right = nn.functional.one_hot(targets, 3).float()
    partner = right.roll(1, dims=1)

    def outputs(a_right: int, b_wrong: int) -> list[torch.Tensor]:
        """Stream a right (weakly) on the first ``a_right`` clips; b confidently wrong on the first ``b_wrong``."""
        a = torch.where(torch.arange(12)[:, None] < a_right, right, partner)
        b = torch.where(torch.arange(12)[:, None] < b_wrong, partner * 3, right * 3)
        return [a, b]

    even = (0.5, 0.5)
    late = outputs(12, 0)  # after the last epoch: both streams right everywhere
    chosen = cross_validated_choice(heads, {1: outputs(12, 0), 2: outputs(12, 0), 3: late}, targets, even)
    assert (chosen.epochs, chosen.weights) == (3, even)  # ties go to the full schedule
    # even weights are right only where b is: b wrong on the first 6 clips, a right on all of them
    beaten = cross_validated_choice(heads, {1: outputs(12, 6), 2: outputs(12, 6), 3: outputs(12, 6)}, targets, even)
    assert beaten.epochs == 3 and beaten.weights[0] > beaten.weights[1]
    narrow = cross_validated_choice(heads, {1: outputs(2, 2), 2: outputs(2, 2), 3: outputs(2, 2)}, targets, even)
    assert narrow.weights == even  # another weighting could win 2 clips at most: noise
    early = {1: outputs(0, 0), 2: outputs(12, 0), 3: outputs(12, 5)}  # the last epoch lost 5 clips epoch 2 had
    assert cross_validated_choice(heads, early, targets, even).epochs == 2
    four = {1: outputs(0, 0), 2: outputs(12, 0), 3: outputs(12, 4)}
    assert cross_validated_choice(heads, four, targets, even).epochs == 3
    assert all("paired test over 12 clips, p ≤ 0.05" in note for note in chosen.notes)
    # only scored epochs can be chosen: every 5th and the last
    assert scored_epochs(60) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]
    assert scored_epochs(12) == [5, 10, 12] and scored_epochs(3) == [3]
    sparse = {5: outputs(0, 0), 10: outputs(12, 0), 12: outputs(12, 5)}
    assert cross_validated_choice(heads, sparse, targets, even).epochs == 10
    # with groups: the 5 clips epoch 2 won, and the 6 the weighting won, are one person's
    people = torch.arange(12) // 6
    assert cross_validated_choice(heads, early, targets, even, people).epochs == 3
    assert cross_validated_choice(heads, {3: outputs(12, 6)}, targets, even, people).weights == even


def test_significance_counts_groups_not_clips() -> None:
    from vidclf.selection import significantly_better

    baseline = torch.zeros(40, dtype=torch.bool)
    better = baseline.clone()
    better[:10] = True  # 10 clips won, none lost
    assert significantly_better(better, baseline)
    assert not significantly_better(better, baseline, torch.arange(40) // 10)  # one video: one win
    assert significantly_better(better, baseline, torch.arange(40) // 2)  # 5 pairs won of 5: p = 1/32
    baseline[1], better[1] = True, False  # clip 0 won, clip 1 lost: their group is a tie
    assert significantly_better(better, baseline)  # 9 clips won, 1 lost: p = 0.011
    assert not significantly_better(better, baseline, torch.arange(40) // 2)  # 4 groups won of 4: p = 1/16


EACH = torch.arange(64)  # every clip a group of its own


def test_fine_tuning_must_beat_the_frozen_model_significantly_to_replace_it() -> None:
    from vidclf.train import Best

    def clips(right: int, of: int = 64, first_wrong: int = 0) -> torch.Tensor:
        """``right`` of ``of`` clips right: wrong ones start at ``first_wrong``."""
        correct = torch.ones(of, dtype=torch.bool)
        correct[first_wrong : first_wrong + of - right] = False
        return correct

    frozen = Best(51, (0.953, -0.281), {}, clips(61))  # clips 0-2 wrong
    assert frozen.beaten_by(0.953, 0.252, clips(61), EACH)  # within one stage, a lower loss breaks an accuracy tie
    to_beat = frozen.to_beat_significantly()
    assert to_beat.epoch == 51 and to_beat.state is frozen.state
    assert not to_beat.beaten_by(0.969, 0.1, clips(62), EACH)  # one more clip right: noise
    assert not to_beat.beaten_by(1.0, 0.1, clips(64), EACH)  # three more: p = 1/8
    assert Best(1, (0.9, -1.0), {}, clips(57)).to_beat_significantly().beaten_by(1.0, 1.0, clips(64), EACH)  # 7: p < 0.01
    # disagreements count, not accuracy alone: 5 won and 4 lost is no evidence
    frozen9 = Best(1, (0.86, -1.0), {}, clips(55))  # clips 0-8 wrong
    assert not frozen9.to_beat_significantly().beaten_by(0.92, 0.5, clips(59, first_wrong=4), EACH)
    assert frozen9.to_beat_significantly().beaten_by(1.0, 0.5, clips(64), EACH)  # p = 1/512
    # once fine-tuning has won, later fine-tuned epochs are still measured against the frozen model
    won = frozen9.to_beat_significantly().replaced_by(60, 1.0, 0.9, {}, clips(64))
    assert won.epoch == 60 and won.baseline is frozen9.correct
    assert won.beaten_by(1.0, 0.1, clips(64), EACH) and not won.beaten_by(0.98, 0.0, clips(63), EACH)
    # clips of one group (a person, a video) count once: 7 more right in one video is one win
    videos = torch.arange(64) // 8
    assert not Best(1, (0.9, -1.0), {}, clips(57)).to_beat_significantly().beaten_by(1.0, 1.0, clips(64), videos)
    assert Best(1, (0.9, -1.0), {}, clips(59, first_wrong=3)).to_beat_significantly().beaten_by(
        1.0, 1.0, clips(64), torch.arange(64) % 8)  # clips 3-7 wrong: 5 groups won, p = 1/32


def test_fine_tuning_is_skipped_when_it_could_not_win_significantly() -> None:
    from vidclf.train import Best

    correct = torch.ones(64, dtype=torch.bool)
    assert not Best(1, (1.0, 0.0), {}, correct).can_be_beaten_significantly(EACH)  # perfect: nothing to win
    correct[:4] = False  # 4 wrong: winning all 4 is p = 1/16
    assert not Best(1, (0.94, 0.0), {}, correct).can_be_beaten_significantly(EACH)
    correct[:5] = False  # 5: p = 1/32
    assert Best(1, (0.92, 0.0), {}, correct).can_be_beaten_significantly(EACH)
    assert not Best(1, (0.92, 0.0), {}, correct).can_be_beaten_significantly(torch.arange(64) // 8)  # 1 group


@pytest.mark.parametrize("mislabelled, people, stops", [(12, None, False), (24, None, True), (24, 3, False)])
def test_the_last_epoch_is_kept_and_training_goes_on_unless_the_best_beats_it_significantly(
        tmp_path: Path, mislabelled: int, people: int | None, stops: bool) -> None:
    """Validation peaks at epoch 1, before the model has learnt anything (its loss is lowest
    there). With half the validation clips mislabelled, the later epochs are as accurate, on
    other clips: no significant loss, so training goes on past its patience and keeps the full
    schedule. With every one mislabelled, the later epochs lose every clip epoch 1 got right:
    early stop, and epoch 1 is kept; unless those clips are 3 people's, 3 wins at most."""
    from vidclf.train import Stage, eval_loader, fit, head_logits

    torch.manual_seed(0)
    model = VideoClassifier(small_config(labels=["neg", "pos"]))
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", epochs=8, batch_size=8, lr=5e-3, patience=2)
    lines: list[str] = []
    val = _sign_task(24, 2, mislabelled=mislabelled)
    if people:
        val.groups = torch.arange(24) % people
    best, history = fit(model, _sign_task(32, 1), val, options, torch.device("cpu"), lines.append,
                        Stage("train", options.epochs, None, options.patience))
    peak = max(history, key=lambda r: (r.val_acc, -r.val_loss))
    assert peak.epoch == 1 and history[-1].val_acc <= peak.val_acc, history  # the premise
    assert len(history) == (3 if stops else 8) and best.epoch == (1 if stops else 8), lines
    assert any("early stop" in line for line in lines) == stops
    assert any("keeping the last epoch, 8" in line for line in lines) != stops
    model.load_state_dict(best.state)  # the state and weights kept are that epoch's
    logits = head_logits(model, eval_loader(val, 0, torch.device("cpu")), torch.device("cpu"))
    assert torch.equal(fuse(logits, model.stream_weights).argmax(1) == val.targets, best.correct)


@pytest.mark.parametrize("patience", [1, 2])
def test_fine_tuning_stops_after_its_patience_unless_it_has_beaten_the_frozen_model(tmp_path: Path, patience: int) -> None:
    """Fine-tuning that has not beaten the frozen model significantly stops after its patience,
    though the frozen model does not beat it significantly either (here the frozen model is
    right on all 6 validation clips, so nothing can beat it)."""
    from vidclf.train import Best, Checkpoint, EpochRecord, Stage, fit

    model = VideoClassifier(small_config(labels=["neg", "pos"]))
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", batch_size=8, patience=100)
    frozen_history = [EpochRecord(e, 1.0, 0.5, 0.5, 1.0 if e == 4 else 0.5, 1e-3, 0.1) for e in range(1, 6)]
    frozen = Best(4, (1.0, -0.5), {k: v.clone() for k, v in model.state_dict().items()},
                  torch.ones(6, dtype=torch.bool)).to_beat_significantly()
    lines: list[str] = []
    stage = Stage("finetune", 8, tmp_path / "ft.ckpt", patience, keeps_last=False)
    best, history = fit(model, _sign_task(12, 1), _sign_task(6, 2), options, torch.device("cpu"), lines.append,
                        stage, frozen_history, frozen)
    assert best.epoch == 4 and len(history) == 5 + patience
    assert [r.stage for r in history[5:]] == ["finetune"] * patience
    assert any(f"finetune early stop: no val improvement for {patience} epochs, and none beat" in line for line in lines)
    saved = Checkpoint.load(stage.checkpoint)  # what --resume reads back
    assert saved.stage_epochs_done == patience and saved.best.epoch == 4 and len(saved.history) == len(history)
    assert torch.equal(saved.best.baseline, frozen.baseline)


def test_cost_per_clip_counts_only_the_heads_that_weigh() -> None:
    """Lite0 is most of a clip's cost and is not run when no appearance head counts; an LSTM
    head costs its matrix products: 2 flops per weight and step, and reads out from its hidden
    width instead of the features'."""
    model = VideoClassifier(small_config(backbone="lite0", temporal="lstm+mean", frames=4), pretrained=False)
    heads = model.config.head_names

    def flops(*weighing: str) -> int:
        model.stream_weights.copy_(torch.tensor([float(name in weighing) for name in heads]))
        return flops_per_clip(model)

    everything = flops(*heads)
    assert flops("farneback/lstm", "dis/lstm", "farneback/mean", "dis/mean") < everything / 10
    steps, width, hidden = 4, model.config.motion_dim, model.config.hidden
    lstm, readout = 2 * steps * 4 * hidden * (width + hidden), 2 * (hidden - width) * len(LABELS)  # wider linear
    assert flops("farneback/lstm") - flops("farneback/mean") == lstm + readout


def _rezip(source: Path, path: Path, compression: int = zipfile.ZIP_STORED,
           change: Callable[[str, bytes], bytes] = lambda name, data: data) -> Path:
    """``source``'s archive written again entry by entry, each through ``change``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", compression) as copy:
        for entry in original.infolist():
            copy.writestr(entry.filename, change(entry.filename, original.read(entry)))
    return path


def test_crafted_archives_are_refused_before_anything_is_inflated_or_allocated(tmp_path: Path) -> None:
    good = tmp_path / "good.vidclf"
    save_model(VideoClassifier(small_config()), good, {})
    assert load_model(_rezip(good, tmp_path / "copy.vidclf")).model.config == small_config()
    # a zip bomb: 1 GB of zeros deflated into an extra entry of about 1 MB
    bomb = _rezip(good, tmp_path / "bomb.vidclf", zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("good/extra", bytes(1 << 30))
    assert bomb.stat().st_size < 3 << 20
    with pytest.raises(ModelFileError, match="bomb.vidclf: refused to load: compressed or oversized entries"):
        load_model(bomb)
    # a tensor whose storage holds fewer bytes than its shape claims
    short = _rezip(good, tmp_path / "short.vidclf", change=lambda name, data: data[:8] if "/data/" in name else data)
    with pytest.raises(ModelFileError, match="short.vidclf: not a readable vidclf model file"):
        load_model(short)


@pytest.mark.parametrize("lie", [{"hidden": 10**6}, {"motion_dim": 10**7}, {"labels": [str(n) for n in range(10**6)]},
                                 {"frames": 10**6}, {"size": 10**5}, {"backbone": "lite0"}])
def test_a_config_that_lies_is_refused_before_the_network_is_built(tmp_path: Path, lie: dict) -> None:
    """A million-wide LSTM would need terabytes: it is refused by name and shape, on the meta
    device, before any of it is allocated; absurd inputs are refused by range."""
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config()), path, {})
    _rewrite_metadata(path, path, lambda meta, payload: meta["config"].update(lie))
    with pytest.raises(ModelFileError, match="m.vidclf: (weights do not match the saved config|its config is not one)"):
        load_model(path)
    assert "cost_per_clip" not in model_info(path)  # info still shows what the file says


def test_metadata_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config()), path, {})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "metadata": "{not json"}, path)
    with pytest.raises(ModelFileError, match="m.vidclf: not a vidclf model file"):
        read_metadata(path)


def test_frozen_features_encode_each_distinct_frame_once_with_the_same_result() -> None:
    """Training caches Lite0 features of a clip's views together: views of a short clip share
    most frames, and each distinct frame goes through Lite0 once, giving the features a frame
    by frame encoding gives."""
    from vidclf.train import distinct_frame_features

    model = VideoClassifier(ModelConfig(("a", "b")), pretrained=False).eval()
    frames = torch.randint(0, 256, (10, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = frames[torch.tensor([[0, 2, 4, 6], [1, 2, 5, 6], [0, 3, 4, 9]])]  # 3 views, 8 distinct frames
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    with torch.inference_mode():
        together = distinct_frame_features(model, views)
        alone = model.appearance_features(views)
    assert seen == [8, 12] and together.shape == alone.shape == (3, 4, 1280)
    assert torch.allclose(together, alone, atol=1e-5)
