"""The fast gradient sign method (FGSM) and fast gradient method (FGM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_positive_float,
)
from .._core.guard import detached_copy, model_guard
from ._checks import check_inputs
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import ce_objective_and_grad, is_success, projected_step, sample_ball

__all__ = ["fgsm"]


# long: signature and docstring (the algorithm's reference) alone are 49 lines
def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    random_start: bool = False,
    alpha: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    generator: torch.Generator | None = None,
    on_masking: str = "warn",
) -> Tensor:
    """One-step attack: FGSM (L∞), FGM (L2) and the "fast" random-start variant.

    With the objective ``J(x) = CE(f(x), y)`` (untargeted; ``J = −CE(f(x), t)`` when targeted),
    the first-order model ``J(x + δ) ≈ J(x) + ⟨∇J(x), δ⟩`` is maximised over ``‖δ‖ ≤ ε`` by the
    dual-norm direction, giving ::

        L∞:  x' = clip_[lo, hi](x + ε · sign(∇ₓJ(x)))
        L2:  x' = clip_[lo, hi](x + ε · ∇ₓJ(x) / ‖∇ₓJ(x)‖₂)

    With ``random_start=True`` (Wong, Rice & Kolter 2020, "Fast is better than free") the step
    starts from a uniform point of the ε-ball, ``x₀ = clip(x + δ₀)``, and takes a step of size
    ``α`` (default ``1.25·ε``) followed by the projection ``Π_ε`` onto the ball::

        x' = clip_[lo, hi](x + Π_ε(x₀ − x + α · d(∇ₓJ(x₀))))

    Derived in the book, section :ref:`sec-fgsm` of chapter *Adversarial examples*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        eps: radius of the perturbation ball (``≥ 0``).
        norm: ``"linf"`` (FGSM) or ``"l2"`` (FGM).
        random_start: start from a uniform point of the ball (fast adversarial training).
        alpha: step size; defaults to ``eps`` without and ``1.25·eps`` with a random start.
        bounds: valid input range ``(lo, hi)``; the result is clipped to it.
        targeted: move towards the class ``y`` instead of away from it.
        generator: source of the random start.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the input
            gradient is exactly zero for samples the step does not fool (gradient masking,
            :ref:`sec-gradient-masking`): :class:`GradientMaskingWarning` or ``Error``.

    Returns:
        ``x_adv`` with x's shape, dtype and device, ``‖x_adv − x‖ ≤ ε`` and inside ``bounds``.
    """
    name = "fgsm"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    norm = check_choice(norm, "norm", NORMS)
    step_size = _step_size(alpha, eps_, random_start)
    generator = check_generator(generator, name)
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone()
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        start = (x0 + sample_ball(x0, eps_, norm, generator)).clamp(lo, hi) if random_start else x0
        _, logits, grad = ce_objective_and_grad(model, start, y, targeted, check=(y_max, name))
        with torch.no_grad():
            x_adv = projected_step(x0, start, grad, step_size, eps_, norm, (lo, hi))
            # a vanished gradient leaves the start in place: fooled iff the start is
            unfooled = ~is_success(logits, y, targeted)
            masked = and_vanished(unfooled, grad)
    report_masking(name, masked, unfooled, x.shape[0], on_masking)
    return x_adv


def _step_size(alpha: object, eps: float, random_start: bool) -> float:
    """The checked ``alpha``; by default ``ε``, or ``1.25·ε`` after a random start."""
    step_size = check_positive_float(alpha, "alpha", allow_none=True)
    if step_size is None:
        return 1.25 * eps if random_start else eps
    return step_size
