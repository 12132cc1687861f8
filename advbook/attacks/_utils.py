"""The attacks' view of the iterative core (:mod:`advbook._core.objectives`, ``balls``,
``worst_case``): re-exports, plus the logits check that only the attacks need."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn

from .._core.balls import (
    batch_norms,
    per_sample,
    project,
    projected_step,
    sample_ball,
    sample_start,
    steepest_ascent_direction,
)
from .._core.objectives import (
    ce_objective,
    input_gradient,
    is_success,
    objective_and_grad,
)
from ._checks import check_logits

__all__ = [
    "batch_norms",
    "ce_objective",
    "ce_objective_and_grad",
    "input_gradient",
    "is_success",
    "logits_check",
    "objective_and_grad",
    "per_sample",
    "project",
    "projected_step",
    "sample_ball",
    "sample_start",
    "steepest_ascent_direction",
]


def logits_check(check: tuple[int, str] | None) -> Callable[[Tensor, Tensor], None] | None:
    """``check=(y_max, name)`` as a callback validating the first logits (or ``None``)."""
    if check is None:
        return None
    y_max, name = check

    def _check(logits: Tensor, x: Tensor) -> None:
        check_logits(logits, x.shape[0], y_max, name=name)

    return _check


def ce_objective_and_grad(
    model: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    targeted: bool,
    *,
    check: tuple[int, str] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The CE objective ``J_i``, the logits and ``∇_x Σ_i J_i`` at ``x_adv`` (see
    :func:`advbook._core.objectives.objective_and_grad`); ``check=(y_max, name)`` validates the
    logits first."""
    objective = partial(ce_objective, y=y, targeted=targeted)
    return objective_and_grad(model, x_adv, objective, on_logits=logits_check(check))
