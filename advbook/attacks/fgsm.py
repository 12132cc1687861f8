"""The fast gradient sign method (FGSM) and fast gradient method (FGM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_positive_float,
)
from ._checks import check_inputs, model_guard, plain
from ._utils import ce_objective_and_grad, project, sample_ball, steepest_ascent_direction

__all__ = ["fgsm"]


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

    Derived in the book, section ``sec-fgsm`` of chapter *Adversarial examples*.

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

    Returns:
        ``x_adv`` with x's shape, dtype and device, ``‖x_adv − x‖ ≤ ε`` and inside ``bounds``.
    """
    name = "fgsm"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    assert eps_ is not None
    norm = check_choice(norm, "norm", NORMS)
    alpha_ = check_positive_float(alpha, "alpha", allow_none=True)
    generator = check_generator(generator, name)
    if alpha_ is None:
        alpha_ = 1.25 * eps_ if random_start else eps_
    if x.shape[0] == 0:
        return x.detach().clone()
    with model_guard(model):
        x0, y = plain(x), plain(y).long()
        start = x0
        if random_start:
            start = (x0 + sample_ball(x0, eps_, norm, generator)).clamp(lo, hi)
        _, _, grad = ce_objective_and_grad(model, start, y, targeted, check=(y_max, name))
        with torch.no_grad():
            delta = (start - x0) + alpha_ * steepest_ascent_direction(grad, norm)
            x_adv = (x0 + project(delta, eps_, norm)).clamp_(lo, hi)
    return x_adv
