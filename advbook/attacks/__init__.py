"""Adversarial attacks and robustness evaluation (chapter *Adversarial examples*).

Every attack is a plain function with one shared signature::

    x_adv = attack(model, x, y, *, bounds=(0.0, 1.0), targeted=False, ...)

where ``model(x)`` returns logits ``(N, K)``, ``y`` holds the true labels (the target labels
when ``targeted=True``) and ``x_adv`` has x's shape, dtype and device and lies inside
``bounds``. Attacks validate their inputs before any work, run the model in eval mode and leave
it exactly as it was (training flags, parameters, ``.grad``, BatchNorm statistics), never mutate
``x`` or ``y``, and are batched (no per-sample Python loops).

* :func:`fgsm` — FGSM / FGM and the random-start "fast" variant;
* :func:`pgd` — projected gradient descent (L∞ and L2) with restarts;
* :func:`deepfool` — minimal-perturbation DeepFool (L2 and L∞);
* :func:`carlini_wagner` — the Carlini–Wagner L2 attack;
* :func:`robust_accuracy`, :func:`accuracy_vs_eps`, :func:`min_norm_distances` — evaluation.

The gradient attacks warn with :class:`GradientMaskingWarning` (or raise
:class:`GradientMaskingError`, ``on_masking="raise"``) when the input gradient was exactly zero
at every step for samples they did not fool: their failure there is no evidence of robustness.
"""

from __future__ import annotations

from ._masking import GradientMaskingError, GradientMaskingWarning
from .carlini_wagner import carlini_wagner
from .deepfool import deepfool
from .evaluation import (
    Attack,
    MinNormResult,
    RobustAccuracyResult,
    accuracy_vs_eps,
    min_norm_distances,
    robust_accuracy,
)
from .fgsm import fgsm
from .pgd import pgd

__all__ = [
    "Attack",
    "GradientMaskingError",
    "GradientMaskingWarning",
    "MinNormResult",
    "RobustAccuracyResult",
    "accuracy_vs_eps",
    "carlini_wagner",
    "deepfool",
    "fgsm",
    "min_norm_distances",
    "pgd",
    "robust_accuracy",
]
