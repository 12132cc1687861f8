"""Batched tensor helpers shared by the attacks: norms, projections, random starts, gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.balls import (
    batch_norms,
    per_sample,
    project,
    sample_ball,
    sample_start,
    steepest_ascent_direction,
)
from ._checks import check_logits

__all__ = [
    "batch_norms",
    "ce_objective",
    "ce_objective_and_grad",
    "input_gradient",
    "is_success",
    "per_sample",
    "project",
    "projected_step",
    "sample_ball",
    "sample_start",
    "steepest_ascent_direction",
]


def is_success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack success: ``argmax ≠ y`` (untargeted) or ``argmax = y`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def ce_objective(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack objective: ``CE(f(x), y)`` untargeted, ``−CE(f(x), t)`` targeted."""
    objective = F.cross_entropy(logits, y, reduction="none")
    return -objective if targeted else objective


def ce_objective_and_grad(
    model: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    targeted: bool,
    *,
    check: tuple[int, str] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The attack objective ``J_i``, the logits and ``∇_x Σ_i J_i`` at ``x_adv``.

    ``J_i = CE(f(x_i), y_i)`` untargeted (to be maximised) and ``J_i = −CE(f(x_i), t_i)``
    targeted. The loss is summed, not averaged, so each sample's gradient does not depend on the
    batch size. Only ``x_adv`` is differentiated (``torch.autograd.grad``): parameters and their
    ``.grad`` are untouched. ``check=(y_max, name)`` validates the logits first.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    if check is not None:
        check_logits(logits, x_adv.shape[0], check[0], name=check[1])
    objective = ce_objective(logits, y, targeted)
    if not objective.requires_grad:
        raise ValueError(
            "the model's output does not depend on x through autograd (does the model detach "
            "its input or run under torch.no_grad()?); gradient attacks need a differentiable "
            "model"
        )
    grad = input_gradient(objective.sum(), x_adv)
    return objective.detach(), logits.detach(), grad


def input_gradient(
    output: Tensor, x: Tensor, grad_output: Tensor | None = None, *, retain_graph: bool = False
) -> Tensor:
    """``∇ₓ`` of ``output`` (a vector-Jacobian product with ``grad_output`` if given).

    Zeros where ``output`` does not depend on ``x`` (``torch.autograd.grad`` with
    ``allow_unused=True`` returns ``None`` then).
    """
    grads: Sequence[Tensor | None] = torch.autograd.grad(
        output, x, grad_output, retain_graph=retain_graph, allow_unused=True
    )
    grad = grads[0]
    return torch.zeros_like(x) if grad is None else grad


def projected_step(
    x: Tensor, x_t: Tensor, grad: Tensor, step_size: float, eps: float, norm: str,
    bounds: tuple[float, float],
) -> Tensor:
    """``clip_[lo, hi](x + Π_ε(xᵗ − x + α · d(∇)))``, ``d`` the steepest-ascent direction."""
    delta = (x_t - x) + step_size * steepest_ascent_direction(grad, norm)
    return (x + project(delta, eps, norm)).clamp_(*bounds)
