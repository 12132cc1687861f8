"""Reproducibility and device helpers used by every chapter."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ._core.progress import progress_enabled
from ._core.random import generator_from_seed

__all__ = ["get_device", "progress_enabled", "seed_everything"]


def seed_everything(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) and return a seeded CPU generator.

    With ``deterministic=True`` PyTorch is asked for deterministic algorithms (``warn_only``, so an
    operation without a deterministic kernel warns instead of failing) and cuDNN autotuning is
    switched off, which makes CPU runs bit-for-bit repeatable on one machine.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global NumPy users too
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return generator_from_seed(seed)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return ``prefer`` if given, else ``cuda`` when a GPU is available, else ``cpu``.

    Asking for ``"cuda"`` on a machine without a GPU raises a ``RuntimeError`` instead of failing
    later inside a kernel.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
