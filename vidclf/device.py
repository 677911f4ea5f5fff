"""Which device runs the network: ``--device auto`` is CUDA when present, else the CPU."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from vidclf.errors import VidclfError

if TYPE_CHECKING:
    import torch


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DeviceError(VidclfError):
    """The requested device is not available here."""


def resolve_device(device: Device | str) -> torch.device:
    import torch

    device = Device(device)
    if device is Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device is Device.CUDA and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return torch.device(device.value)


def autocast(device: torch.device) -> torch.autocast:
    """bfloat16 autocast on a CUDA device that has it (no loss scaling needed); float32 elsewhere."""
    import torch

    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
