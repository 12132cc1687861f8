"""Adversarial attacks and robustness evaluation (chapters *Adversarial examples* and
*Evaluating robustness*).

Every attack is a plain function with one shared signature::

    x_adv = attack(model, x, y, *, bounds=(0.0, 1.0), targeted=False, ...)

where ``model(x)`` returns logits ``(N, K)``, ``y`` holds the true labels (the target labels
when ``targeted=True`` for :func:`fgsm`, :func:`pgd`, :func:`deepfool` and
:func:`carlini_wagner`; :func:`apgd` and :func:`fab` take the true labels and pick their targets
themselves, as the reference implementation) and ``x_adv`` has x's shape, dtype and device and
lies inside ``bounds``. Attacks validate their inputs before any work, run the model in eval mode
and leave it exactly as it was (training flags, parameters, ``.grad``, BatchNorm statistics),
never mutate ``x`` or ``y``, and are batched (no per-sample Python loops).

* :func:`fgsm` — FGSM / FGM and the random-start "fast" variant;
* :func:`pgd` — projected gradient descent (L∞ and L2) with restarts;
* :func:`deepfool` — minimal-perturbation DeepFool (L2 and L∞);
* :func:`carlini_wagner` — the Carlini–Wagner L2 attack;
* :func:`apgd` — Auto-PGD with the CE or DLR loss, and APGD-T;
* :func:`fab` — the fast adaptive boundary attack (minimum norm), FAB-T;
* :func:`square` — the Square attack, score-based black-box random search;
* :func:`auto_attack` — the AutoAttack ensemble, with :func:`auto_attack_report`;
* :func:`transfer_attack` and :class:`BPDA` — transfer attacks and differentiable
  approximations of non-differentiable defences;
* :func:`robust_accuracy`, :func:`accuracy_vs_eps`, :func:`min_norm_distances` — evaluation;
* :func:`ce_objective`, :func:`dlr_objective`, :func:`targeted_dlr_objective`,
  :func:`margin_objective` — the attack objectives.

The gradient attacks warn with :class:`GradientMaskingWarning` (or raise
:class:`GradientMaskingError`, ``on_masking="raise"``) when the input gradient was exactly zero
at every step for samples they did not fool: their failure there is no evidence of robustness.
"""

from __future__ import annotations

from .._core.objectives import (
    ce_objective,
    dlr_objective,
    margin_objective,
    targeted_dlr_objective,
)
from ._masking import GradientMaskingError, GradientMaskingWarning
from .apgd import apgd, checkpoints
from .auto_attack import AutoAttackReport, AutoAttackWarning, auto_attack, auto_attack_report
from .bpda import BPDA
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
from .fab import fab, fab_distances, project_hyperplane_box
from .fgsm import fgsm
from .pgd import pgd
from .square import SquareResult, p_schedule, square, square_with_queries
from .transfer import TransferResult, transfer_attack

__all__ = [
    "BPDA",
    "Attack",
    "AutoAttackReport",
    "AutoAttackWarning",
    "GradientMaskingError",
    "GradientMaskingWarning",
    "MinNormResult",
    "RobustAccuracyResult",
    "SquareResult",
    "TransferResult",
    "accuracy_vs_eps",
    "apgd",
    "auto_attack",
    "auto_attack_report",
    "carlini_wagner",
    "ce_objective",
    "checkpoints",
    "deepfool",
    "dlr_objective",
    "fab",
    "fab_distances",
    "fgsm",
    "margin_objective",
    "min_norm_distances",
    "p_schedule",
    "pgd",
    "project_hyperplane_box",
    "robust_accuracy",
    "square",
    "square_with_queries",
    "targeted_dlr_objective",
    "transfer_attack",
]
