"""The network: shapes, masking of padded steps, frozen backbone, and the model file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from vidclf.model import Lite0Features, ModelConfig, VideoClassifier
from vidclf.modelfile import ModelFileError, load_model, read_metadata, save_model

LABELS = ["a", "b", "c"]


def make_inputs(batch: int, steps: int, size: int = 32, motion_size: int = 16, seed: int = 0, channels: int = 2):
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (batch, steps, size, size, 3), generator=gen, dtype=torch.uint8)
    motion = torch.randn(batch, steps, channels, motion_size, motion_size, generator=gen)
    return rgb, motion


def small_config(**overrides) -> ModelConfig:
    base = dict(labels=LABELS, backbone="small", motion="farneback", frames=6, size=32, motion_size=16,
                hidden=16, appearance_dim=8, motion_dim=8, temporal="lstm")
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize("backbone", ["small", "lite0", "none"])
@pytest.mark.parametrize("motion", ["farneback", "farneback+dis", "diff", "none"])
@pytest.mark.parametrize("pooling", ["global", "grid"])
def test_every_option_gives_logits(backbone: str, motion: str, pooling: str) -> None:
    if backbone == "none" and motion == "none":
        with pytest.raises(ValueError, match="needs an appearance backbone, motion, or both"):
            small_config(backbone=backbone, motion=motion)
        return
    model = VideoClassifier(small_config(backbone=backbone, motion=motion, pooling=pooling), pretrained=False).eval()
    rgb, motion_maps = make_inputs(2, 6, channels={"diff": 1, "farneback+dis": 4}.get(motion, 2))
    logits = model(torch.tensor([6, 4]), rgb=rgb, motion=motion_maps)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_flow_derivatives_per_flow_pair() -> None:
    from vidclf.model import flow_derivatives

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    expanding = torch.stack([xs, ys])[None]  # flow pointing away from the origin: divergence 2
    turning = torch.stack([-ys, xs])[None]  # counter-clockwise rotation: curl 2
    both = flow_derivatives(torch.cat([expanding, turning], dim=1))
    assert both.shape == (1, 8, 8, 8)
    assert torch.allclose(both[:, :4], flow_derivatives(expanding))
    assert torch.allclose(both[0, 2], torch.full((8, 8), 2.0)) and torch.allclose(both[0, 3], torch.zeros(8, 8))
    assert torch.allclose(both[0, 6], torch.zeros(8, 8)) and torch.allclose(both[0, 7], torch.full((8, 8), 2.0))


@pytest.mark.parametrize("fusion", ["project", "concat", "late"])
@pytest.mark.parametrize("encoder", ["cnn", "grid"])
def test_fusions_and_motion_encoders_give_logits_and_learn(fusion: str, encoder: str) -> None:
    """Every fusion/encoder pair runs, and one optimiser step lowers the loss on a batch."""
    torch.manual_seed(0)
    model = VideoClassifier(small_config(fusion=fusion, motion_encoder=encoder, dropout=0.0, stream_dropout=0.0))
    rgb, motion = make_inputs(4, 6)
    lengths, targets = torch.tensor([6, 5, 6, 4]), torch.tensor([0, 1, 2, 0])
    assert len(model.heads) == (2 if fusion == "late" else 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(lengths, rgb=rgb, motion=motion), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lstm_readouts_differ_and_last_ignores_earlier_outputs_only_through_state() -> None:
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 4])
    torch.manual_seed(0)
    mean = VideoClassifier(small_config(readout="mean")).eval()
    torch.manual_seed(0)
    last = VideoClassifier(small_config(readout="last")).eval()
    assert not torch.allclose(mean(lengths, rgb=rgb, motion=motion), last(lengths, rgb=rgb, motion=motion))


@pytest.mark.parametrize("temporal,readout,fusion", [("lstm", "mean", "project"), ("lstm", "last", "project"),
                                                     ("mean", "mean", "project"), ("lstm", "mean", "late")])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_steps_are_never_read(temporal: str, readout: str, fusion: str, bidirectional: bool) -> None:
    model = VideoClassifier(small_config(temporal=temporal, readout=readout, fusion=fusion,
                                         bidirectional=bidirectional, layers=2)).eval()
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([4, 6])
    before = model(lengths, rgb=rgb, motion=motion)
    rgb2, motion2 = rgb.clone(), motion.clone()
    rgb2[0, 4:] = 255 - rgb2[0, 4:]  # change only the padding of clip 0
    motion2[0, 4:] = 50.0
    after = model(lengths, rgb=rgb2, motion=motion2)
    assert torch.allclose(before, after, atol=1e-5)
    # ... and equals running the clip alone, unpadded.
    alone = model(torch.tensor([4]), rgb=rgb[:1, :4], motion=motion[:1, :4])
    assert torch.allclose(before[:1], alone, atol=1e-5)


def test_lstm_sees_order_but_mean_does_not() -> None:
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    lstm = VideoClassifier(small_config()).eval()
    mean = VideoClassifier(small_config(temporal="mean")).eval()
    lengths = torch.tensor([6])
    assert not torch.allclose(lstm(lengths, rgb=rgb, motion=motion), lstm(lengths, rgb=rgb[:, reverse], motion=motion[:, reverse]))
    assert torch.allclose(mean(lengths, rgb=rgb, motion=motion), mean(lengths, rgb=rgb[:, reverse], motion=motion[:, reverse]), atol=1e-5)


def test_appearance_head_can_average_while_motion_heads_read_order() -> None:
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    model = VideoClassifier(small_config(appearance_temporal="mean")).eval()
    lengths = torch.tensor([6])
    assert model.config.late_fusion and model.mixes_heads
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), model(lengths, rgb=rgb[:, reverse], motion=motion), atol=1e-5)
    assert not torch.allclose(model(lengths, rgb=rgb, motion=motion), model(lengths, rgb=rgb, motion=motion[:, reverse]))


@pytest.mark.parametrize("fusion", ["late", "project"])
def test_lstm_plus_mean_gives_both_heads_and_the_weights_decide_if_order_counts(tmp_path: Path, fusion: str) -> None:
    config = small_config(temporal="lstm+mean", fusion=fusion)
    model = VideoClassifier(config).eval()
    if fusion == "late":
        assert config.head_names == ["appearance/lstm", "appearance/mean", "farneback/lstm", "farneback/mean"]
    else:
        assert config.head_names == ["fused/lstm", "fused/mean"]
    assert len(model.heads) == len(model.stream_weights) == len(config.heads)
    rgb, motion = make_inputs(1, 6)
    reverse = torch.arange(5, -1, -1)
    lengths = torch.tensor([6])

    def order_blind(weights: list[float]) -> bool:
        model.set_stream_weights(weights)
        return torch.allclose(model(lengths, rgb=rgb, motion=motion),
                              model(lengths, rgb=rgb[:, reverse], motion=motion[:, reverse]), atol=1e-5)

    means = [part == "mean" for _, part in config.heads]
    assert order_blind([m / sum(means) for m in means])
    assert not order_blind([(not m) / (len(means) - sum(means)) for m in means])
    save_model(model, tmp_path / "hybrid.vidclf", {})
    loaded = load_model(tmp_path / "hybrid.vidclf").model
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded(lengths, rgb=rgb, motion=motion), atol=1e-6)


def test_appearance_head_names_stay_plain_when_it_has_one_head() -> None:
    config = small_config(temporal="lstm+mean", appearance_temporal="mean")
    assert config.head_names == ["appearance", "farneback/lstm", "farneback/mean"]
    assert small_config().head_names == ["appearance", "farneback"]
    assert small_config(backbone="none").head_names == ["fused"]


def test_appearance_temporal_follows_temporal_unless_given() -> None:
    assert small_config(temporal="mean").appearance_temporal == "mean"
    saved = small_config().to_dict()
    del saved["appearance_temporal"]  # a model file from before the option
    assert ModelConfig.from_dict(saved).appearance_temporal == "lstm"
    with pytest.raises(ValueError, match="appearance_temporal must be one of"):
        small_config(appearance_temporal="gru")


def test_frozen_backbone_stays_frozen_in_train_mode() -> None:
    model = VideoClassifier(small_config(backbone="lite0", frozen=True))
    model.train()
    assert not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    finetune = VideoClassifier(small_config(backbone="lite0", frozen=False), pretrained=False).train()
    assert finetune.backbone.training and all(p.requires_grad for p in finetune.backbone.net.head.parameters())


def test_fine_tuning_trains_lite0_but_not_its_first_layers() -> None:
    from vidclf.train import TrainOptions, make_optimizer

    model = VideoClassifier(small_config(backbone="lite0", frozen=True))
    model.set_backbone_frozen(False)
    model.train()
    fixed = model.backbone.fixed_layers()
    fixed_ids = {id(p) for p in fixed.parameters()}
    assert len(fixed) == 1 + Lite0Features.fixed_blocks and not any(m.training for layer in fixed for m in layer.modules())
    before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    optimizer = make_optimizer(model, TrainOptions(data=Path("."), out=Path("m.vidclf")))
    rgb, motion = make_inputs(2, 6)
    model(torch.tensor([6, 6]), rgb=rgb, motion=motion).logsumexp(1).sum().backward()
    optimizer.step()
    changed = {id(p) for name, p in model.backbone.named_parameters() if not torch.equal(before[name], p)}
    assert changed and not changed & fixed_ids  # the later layers learn, the first keep ImageNet's weights
    model.set_backbone_frozen(True)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_fine_tuning_keeps_lite0_batchnorm_statistics() -> None:
    model = VideoClassifier(small_config(backbone="lite0", frozen=False), pretrained=False).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    rgb, motion = make_inputs(2, 6)
    model(torch.tensor([6, 6]), rgb=rgb, motion=motion).sum().backward()
    assert model.backbone.training and not any(m.training for m in norms)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms))
    assert any(p.grad is not None for p in model.backbone.parameters())  # the weights still learn
    scratch = VideoClassifier(small_config(backbone="small")).train()
    assert all(m.training for m in scratch.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_normalisation_is_inside_the_model() -> None:
    model = VideoClassifier(small_config(motion="none")).eval()
    rgb, _ = make_inputs(1, 6)
    manual = model.backbone(rgb[0].permute(0, 3, 1, 2).float() / 255 * 2 - 1).mean(dim=(2, 3))
    assert torch.allclose(model.appearance_features(rgb)[0], manual, atol=1e-5)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="at least 2 labels"):
        ModelConfig(labels=["only"])
    with pytest.raises(ValueError, match="backbone must be one of"):
        small_config(backbone="resnet")
    assert small_config(backbone="small", frozen=True).frozen is False


# --- model file -------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,frozen", [("small", False), ("lite0", True), ("lite0", False)])
def test_save_load_round_trip_gives_same_logits(tmp_path: Path, backbone: str, frozen: bool) -> None:
    model = VideoClassifier(small_config(backbone=backbone, frozen=frozen)).eval()
    path = tmp_path / "m.vidclf"
    save_model(model, path, {"best_val_acc": 0.5, "seed": 3})
    loaded = load_model(path)
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 3])
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded.model(lengths, rgb=rgb, motion=motion), atol=1e-6)
    meta = loaded.metadata
    assert meta["labels"] == LABELS and meta["training"]["seed"] == 3
    assert meta["config"]["backbone"] == backbone
    stored = torch.load(path, weights_only=True)["state_dict"]
    has_backbone = any(k.startswith("backbone.") for k in stored)
    assert has_backbone == (not frozen)
    if backbone == "lite0":
        assert meta["backbone"]["weights_sha256"].startswith("5793442")
    assert [p.name for p in tmp_path.iterdir()] == ["m.vidclf"]  # no temp files left


def test_frozen_lite0_file_is_small(tmp_path: Path) -> None:
    model = VideoClassifier(ModelConfig(labels=LABELS, backbone="lite0", frozen=True))
    save_model(model, tmp_path / "m.vidclf", {})
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


def _rewrite_metadata(path: Path, change) -> None:
    payload = torch.load(path, weights_only=True)
    metadata = json.loads(payload["metadata"])
    change(metadata, payload)
    payload["metadata"] = json.dumps(metadata)
    torch.save(payload, path)


def test_newer_format_and_backbone_mismatch_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config(backbone="lite0", frozen=True)), path, {})
    _rewrite_metadata(path, lambda meta, payload: meta["backbone"].update(weights_sha256="0" * 64))
    with pytest.raises(ModelFileError, match="backbone weights"):
        load_model(path)
    _rewrite_metadata(path, lambda meta, payload: payload.update(format_version=99))
    with pytest.raises(ModelFileError, match="newer than this vidclf"):
        load_model(path)


def test_weights_that_do_not_match_config_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vidclf"
    save_model(VideoClassifier(small_config()), path, {})
    _rewrite_metadata(path, lambda meta, payload: meta["config"].update(hidden=32))
    with pytest.raises(ModelFileError, match="do not match the saved config"):
        load_model(path)



def test_late_fusion_weights_are_saved_with_the_model(tmp_path: Path) -> None:
    model = VideoClassifier(small_config(fusion="late", motion="farneback+dis")).eval()
    assert model.config.streams == ["appearance", "farneback", "dis"] and len(model.heads) == 3
    model.set_stream_weights([0.25, 0.25, 0.5])
    save_model(model, tmp_path / "late.vidclf", {})
    loaded = load_model(tmp_path / "late.vidclf").model
    assert loaded.stream_weights.tolist() == [0.25, 0.25, 0.5]
    rgb, motion = make_inputs(2, 6, channels=4)
    lengths = torch.tensor([6, 3])
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded(lengths, rgb=rgb, motion=motion), atol=1e-6)
    heads = model.stream_logits(lengths, rgb=rgb, motion=motion)
    expected = sum(w * h.log_softmax(1) for w, h in zip([0.25, 0.25, 0.5], heads))
    assert torch.allclose(model.fuse(heads), expected)


def test_format_1_model_files_still_load(tmp_path: Path) -> None:
    """Format 1 had one motion encoder and a scalar appearance weight; such files load as
    the same network (DIS models excepted: that flow's preset changed, so they must retrain)."""
    model = VideoClassifier(small_config(fusion="late")).eval()
    model.set_stream_weights([0.25, 0.75])
    save_model(model, tmp_path / "v2.vidclf", {})
    payload = torch.load(tmp_path / "v2.vidclf", weights_only=True)
    state = {k.replace("motion_encoders.0.", "motion_encoder."): v for k, v in payload["state_dict"].items()
             if k != "stream_weights"}
    payload.update(format_version=1, state_dict={**state, "appearance_weight": torch.tensor(0.25)})
    torch.save(payload, tmp_path / "v1.vidclf")
    loaded = load_model(tmp_path / "v1.vidclf").model
    rgb, motion = make_inputs(2, 6)
    lengths = torch.tensor([6, 3])
    assert torch.allclose(model(lengths, rgb=rgb, motion=motion), loaded(lengths, rgb=rgb, motion=motion), atol=1e-6)
    metadata = json.loads(payload["metadata"])
    metadata["config"]["motion"] = "dis"
    payload["metadata"] = json.dumps(metadata)
    torch.save(payload, tmp_path / "v1-dis.vidclf")
    with pytest.raises(ModelFileError, match="DIS 'ultrafast' flow.*retrain it"):
        load_model(tmp_path / "v1-dis.vidclf")


def test_lstm_plus_mean_files_with_shared_encoders_are_refused_with_a_retrain_message(tmp_path: Path) -> None:
    save_model(VideoClassifier(small_config(temporal="lstm+mean")), tmp_path / "new.vidclf", {})
    assert len(load_model(tmp_path / "new.vidclf").model.mean_encoders) == 2
    payload = torch.load(tmp_path / "new.vidclf", weights_only=True)
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("mean_encoders.")}
    torch.save(payload, tmp_path / "shared.vidclf")
    with pytest.raises(ModelFileError, match="shared.vidclf: an 'lstm\\+mean' model .*retrain it"):
        load_model(tmp_path / "shared.vidclf")


def test_training_weighs_late_fusion_towards_the_stream_that_carries_the_label(tmp_path: Path) -> None:
    """Labels live only in the motion maps' sign; frames are noise. Validation must make the
    motion head count more than the appearance head, and the fused model must be right."""
    from vidclf.train import Stage, Tensors, TrainOptions, choose_stream_weights, evaluate, fit, head_logits

    def make(n: int, seed: int) -> Tensors:
        targets = torch.arange(n) % 2
        rgb, motion = make_inputs(n, 6, seed=seed)
        motion = motion * 0.3 + (targets * 2 - 1).float()[:, None, None, None, None]
        return Tensors(lengths=torch.full((n,), 6), targets=targets, rgb=rgb, motion=motion,
                       clip_index=torch.arange(n))

    torch.manual_seed(0)
    model = VideoClassifier(small_config(labels=["neg", "pos"], fusion="late"))
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", epochs=8, batch_size=8, lr=5e-3)
    train, val = make(32, 1), make(16, 2)
    stage = Stage("train", options.epochs, tmp_path / "m.ckpt", options.patience)
    best, _ = fit(model, train, val, options, ["neg", "pos"], torch.device("cpu"), lambda line: None, stage)
    model.load_state_dict(best.state)
    appearance, motion = choose_stream_weights(model, head_logits(model, val, torch.device("cpu")), val.targets)
    assert appearance < 0.5 < motion
    _, probabilities = evaluate(model, val, torch.device("cpu"))
    assert (probabilities.argmax(1) == val.targets).float().mean() == 1.0


def _train_lstm_plus_mean(tmp_path: Path, labels: list[str], first_half: int, second_half: int) -> tuple[dict[str, float], list[float], float]:
    """Train ``lstm+mean`` on clips whose motion is +1 or -1 (by label) times ``first_half``
    for three steps, then ``second_half`` for three, over noise; return the head weights
    chosen on validation, each head's own validation accuracy and the fused model's."""
    from vidclf.train import Stage, Tensors, TrainOptions, choose_stream_weights, evaluate, fit, head_logits

    def make(n: int, seed: int) -> Tensors:
        targets = torch.arange(n) % 2
        rgb, motion = make_inputs(n, 6, seed=seed)
        sign = (targets * 2 - 1).float()[:, None]
        direction = torch.cat([first_half * sign.expand(n, 3), second_half * sign.expand(n, 3)], dim=1)
        motion = motion * 0.3 + direction[:, :, None, None, None]
        return Tensors(lengths=torch.full((n,), 6), targets=targets, rgb=rgb, motion=motion,
                       clip_index=torch.arange(n))

    torch.manual_seed(0)
    config = small_config(labels=labels, temporal="lstm+mean")
    model = VideoClassifier(config)
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", epochs=12, batch_size=8, lr=5e-3)
    train, val = make(32, 1), make(16, 2)
    stage = Stage("train", options.epochs, tmp_path / "m.ckpt", options.patience)
    best, _ = fit(model, train, val, options, labels, torch.device("cpu"), lambda line: None, stage)
    model.load_state_dict(best.state)
    logits = head_logits(model, val, torch.device("cpu"))
    weights = choose_stream_weights(model, logits, val.targets)
    per_head = [float((head.argmax(1) == val.targets).float().mean()) for head in logits]
    _, probabilities = evaluate(model, val, torch.device("cpu"))
    return dict(zip(config.head_names, weights)), per_head, float((probabilities.argmax(1) == val.targets).float().mean())


def test_lstm_plus_mean_is_right_when_only_order_carries_the_label(tmp_path: Path) -> None:
    """Motion goes one way, then back; the label is which way first, so a mean over time sees
    the same clip for both labels: the mean head cannot tell them apart, the fused model must."""
    weights, per_head, accuracy = _train_lstm_plus_mean(tmp_path, ["there", "back"], 1, -1)
    assert per_head[list(weights).index("farneback/mean")] <= 0.75, per_head  # it cannot see the order
    assert weights["farneback/lstm"] > weights["appearance/lstm"], weights
    assert accuracy == 1.0


def test_lstm_plus_mean_splits_each_stream_evenly_when_order_does_not_matter(tmp_path: Path) -> None:
    """Motion one way throughout: both heads get every validation clip right, and then the
    LSTM's lower loss must not take the mean head's share."""
    weights, _, accuracy = _train_lstm_plus_mean(tmp_path, ["neg", "pos"], 1, 1)
    assert weights["farneback/lstm"] == weights["farneback/mean"] > 0.0, weights
    assert accuracy == 1.0


@pytest.mark.parametrize("fusion", ["late", "project"])
def test_lstm_plus_mean_gives_the_mean_heads_encoders_of_their_own(fusion: str) -> None:
    """An LSTM model and an order-blind model side by side: each head's loss trains its own
    encoders only (sharing them cost the suite's order task), and the backbone serves both."""
    config = small_config(temporal="lstm+mean", fusion=fusion)
    model = VideoClassifier(config)
    assert list(model.mean_encoders) == ["appearance", "farneback"]
    rgb, motion = make_inputs(2, 6)
    logits = model.stream_logits(torch.tensor([6, 6]), rgb=rgb, motion=motion)
    means = [part == "mean" for _, part in config.heads]
    lstm_encoders = [*model.motion_encoders.parameters(), *model.appearance_proj.parameters()]
    for trained, untouched, loss_on_mean in ((model.mean_encoders, lstm_encoders, True),
                                             (lstm_encoders, model.mean_encoders, False)):
        model.zero_grad(set_to_none=True)
        sum(head.sum() for head, mean in zip(logits, means) if mean == loss_on_mean).backward(retain_graph=True)
        params = trained.parameters() if isinstance(trained, nn.Module) else trained
        assert all(p.grad is not None for p in params)
        params = untouched.parameters() if isinstance(untouched, nn.Module) else untouched
        assert all(p.grad is None for p in params)
        assert any(p.grad is not None for p in model.backbone.parameters())
    assert len(VideoClassifier(small_config()).mean_encoders) == 0  # plain LSTM models are unchanged


def test_lstm_plus_mean_leaves_the_even_split_only_for_a_strictly_more_accurate_one() -> None:
    """The rule on given validation logits: the mean heads confidently wrong on a quarter of the
    clips (order partners) → the LSTM heads alone; both right → an even split."""
    from vidclf.train import choose_stream_weights

    model = VideoClassifier(small_config(labels=["there", "back"], temporal="lstm+mean", backbone="none"))
    targets = torch.arange(8) % 2
    right = nn.functional.one_hot(targets, 2).float() * 4
    wrong = right.clone()
    wrong[:2] = right[:2].flip(1) * 2  # confidently the partner class
    assert choose_stream_weights(model, [right, wrong], targets) == (1.0, 0.0)
    assert choose_stream_weights(model, [right, right], targets) == (0.5, 0.5)


def test_head_weights_share_a_stream_evenly_or_give_it_to_one_kind_of_head() -> None:
    from vidclf.train import head_weights

    heads = [("appearance", "mean"), ("farneback", "lstm"), ("farneback", "mean")]
    share = {"appearance": 0.5, "farneback": 0.5}
    assert head_weights(heads, share) == (0.5, 0.25, 0.25)
    assert head_weights(heads, share, "lstm") == (0.5, 0.5, 0.0)  # appearance keeps its only head
    assert head_weights(heads, share, "mean") == (0.5, 0.0, 0.5)


def test_frozen_features_do_not_depend_on_mode_or_batch() -> None:
    """The feature cache is filled before training and read back at every epoch; prediction
    computes the same features in eval mode, one clip at a time. They must agree exactly —
    batch statistics or drop-path in a 'frozen' backbone would make them differ."""
    model = VideoClassifier(small_config(backbone="lite0", motion="none"))  # as training builds it
    rgb, _ = make_inputs(3, 4)
    with torch.inference_mode():
        batched = model.appearance_features(rgb)
        model.eval()
        alone = model.appearance_features(rgb[1:2])
    assert torch.allclose(batched[1:2], alone, atol=1e-5)


def test_fine_tuning_gives_the_pretrained_backbone_its_own_learning_rate(tmp_path: Path) -> None:
    from vidclf.train import TrainOptions, make_optimizer

    def lr_of(model: VideoClassifier, options: TrainOptions) -> dict[str, float]:
        optimizer = make_optimizer(model, options)
        group_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        return {name: group_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}

    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", lr=1e-3, backbone_lr_scale=0.1)
    lite0 = VideoClassifier(small_config(backbone="lite0", frozen=False), pretrained=False)
    rates = lr_of(lite0, options)
    backbone = [lr for name, lr in rates.items() if name.startswith("backbone.")]
    assert backbone and backbone == pytest.approx([1e-4] * len(backbone))
    assert {lr for name, lr in rates.items() if not name.startswith("backbone.")} == {1e-3}
    frozen = lr_of(VideoClassifier(small_config(backbone="lite0", frozen=True), pretrained=False), options)
    assert frozen and not any(name.startswith("backbone.") for name in frozen)
    scratch = lr_of(VideoClassifier(small_config(backbone="small")), options)
    assert set(scratch.values()) == {1e-3}  # a backbone trained from scratch is not slowed


def test_fine_tuning_must_beat_the_frozen_model_significantly_to_replace_it() -> None:
    from vidclf.train import Best

    def clips(right: int, of: int = 64, first_wrong: int = 0) -> torch.Tensor:
        """``right`` of ``of`` clips right: wrong ones start at ``first_wrong``."""
        correct = torch.ones(of, dtype=torch.bool)
        correct[first_wrong : first_wrong + of - right] = False
        return correct

    frozen = Best(51, (0.953, -0.281), {}, clips(61))  # clips 0-2 wrong
    assert frozen.beaten_by(0.953, 0.252, clips(61))  # within one stage, a lower loss breaks an accuracy tie
    to_beat = frozen.to_beat_significantly(0.05)
    assert to_beat.epoch == 51 and to_beat.state is frozen.state
    assert not to_beat.beaten_by(0.969, 0.1, clips(62))  # one more clip right: noise
    assert not to_beat.beaten_by(1.0, 0.1, clips(64))  # three more: p = 1/8
    assert Best(1, (0.9, -1.0), {}, clips(57)).to_beat_significantly(0.05).beaten_by(1.0, 1.0, clips(64))  # 7: p < 0.01
    # disagreements count, not accuracy alone: 5 won and 4 lost is no evidence
    frozen9 = Best(1, (0.86, -1.0), {}, clips(55))  # clips 0-8 wrong
    assert not frozen9.to_beat_significantly(0.05).beaten_by(0.92, 0.5, clips(59, first_wrong=4))
    assert frozen9.to_beat_significantly(0.05).beaten_by(1.0, 0.5, clips(64))  # p = 1/512
    # max_p 1: any higher accuracy wins, as long as the loss tie-break does not decide it
    loose = frozen.to_beat_significantly(1.0)
    assert loose.beaten_by(0.969, 0.4, clips(62)) and not loose.beaten_by(0.953, 0.0, clips(61, first_wrong=5))
    # once fine-tuning has won, later fine-tuned epochs are still measured against the frozen model
    won = frozen9.to_beat_significantly(0.05).replaced_by(60, 1.0, 0.9, {}, clips(64))
    assert won.epoch == 60 and won.baseline is frozen9.correct and won.max_p == 0.05
    assert won.beaten_by(1.0, 0.1, clips(64)) and not won.beaten_by(0.98, 0.0, clips(63))


def test_fine_tuning_is_skipped_when_it_could_not_win_significantly() -> None:
    from vidclf.train import Best

    correct = torch.ones(64, dtype=torch.bool)
    assert not Best(1, (1.0, 0.0), {}, correct).can_be_beaten_significantly(1.0)  # perfect: nothing to win
    correct[:4] = False  # 4 wrong: winning all 4 is p = 1/16
    assert not Best(1, (0.94, 0.0), {}, correct).can_be_beaten_significantly(0.05)
    assert Best(1, (0.94, 0.0), {}, correct).can_be_beaten_significantly(1 / 16)
    correct[:5] = False
    assert Best(1, (0.92, 0.0), {}, correct).can_be_beaten_significantly(0.05)


@pytest.mark.parametrize("patience", [1, 2])
def test_a_stage_stops_after_its_own_patience_without_a_new_best(tmp_path: Path, patience: int) -> None:
    """Fine-tuning that cannot beat the frozen model stops after ``finetune_patience`` epochs
    (here the frozen model already has validation accuracy 1.0, so nothing can beat it)."""
    from vidclf.train import Best, EpochRecord, Stage, Tensors, TrainOptions, fit

    def make(n: int, seed: int) -> Tensors:
        rgb, motion = make_inputs(n, 6, seed=seed)
        return Tensors(lengths=torch.full((n,), 6), targets=torch.arange(n) % 3, rgb=rgb, motion=motion,
                       clip_index=torch.arange(n))

    model = VideoClassifier(small_config())
    options = TrainOptions(data=tmp_path, out=tmp_path / "m.vidclf", batch_size=8, patience=100, finetune_patience=patience)
    frozen_history = [EpochRecord(e, 1.0, 0.5, 0.5, 1.0 if e == 4 else 0.5, 1e-3, 0.1) for e in range(1, 6)]
    frozen = Best(4, (1.0, -0.5), {k: v.clone() for k, v in model.state_dict().items()},
                  torch.ones(6, dtype=torch.bool)).to_beat_significantly(1.0)
    lines: list[str] = []
    stage = Stage("finetune", 8, tmp_path / "ft.ckpt", options.finetune_patience)
    best, history = fit(model, make(12, 1), make(6, 2), options, LABELS, torch.device("cpu"), lines.append,
                        stage, frozen_history, frozen)
    assert best.epoch == 4 and len(history) == 5 + patience
    assert [r.stage for r in history[5:]] == ["finetune"] * patience
    assert any(f"finetune early stop: no val improvement for {patience} epochs" in line for line in lines)
