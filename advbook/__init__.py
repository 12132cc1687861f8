"""advbook: the companion library of the *advbook* textbook on robust deep learning.

Sub-modules are imported on demand so that ``import advbook`` stays cheap::

    from advbook import data, models, train, utils, plot
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "attacks", "augment", "calibration", "certify", "checkpoint", "data", "defenses",
    "distributed",
    "flatness", "label_smoothing", "models", "noise", "plot", "sam", "stats", "train",
    "train_robust", "utils",
}

__all__ = sorted(_SUBMODULES | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'advbook' has no attribute {name!r}")
