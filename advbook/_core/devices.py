"""Where a model lives."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["model_device", "model_devices"]


def model_devices(model: nn.Module) -> set[torch.device]:
    """The devices of all parameters and buffers of ``model`` (empty for a stateless model)."""
    devices = {p.device for p in model.parameters()}
    devices |= {b.device for b in model.buffers()}
    return devices


def model_device(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of ``model``'s first parameter (else its first buffer, else ``fallback``)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device(fallback)
