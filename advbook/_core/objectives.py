"""Per-sample attack objectives and their input gradients, shared by every iterative attack.

Each objective maps logits ``(N, K)`` to one value per sample that the attack *maximises*:

* ``ce_objective``: ``CE(f(x), y)``, or ``−CE(f(x), t)`` towards a target ``t``;
* ``dlr_objective``: the difference-of-logits ratio of Croce & Hein (2020),
  ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``, invariant to shifting and positively scaling
  the logits;
* ``targeted_dlr_objective``: ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``;
* ``margin_objective``: ``max_{i≠y} z_i − z_y`` (positive exactly when the model is fooled);
* ``kl_objective``: ``KL(p(x) ‖ p(x'))`` from reference logits (TRADES' inner maximisation).

``objective_and_grad`` evaluates one of them and ``∇ₓ Σ_i J_i`` in one forward and one
backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Objective",
    "ce_objective",
    "dlr_objective",
    "input_gradient",
    "is_success",
    "kl_objective",
    "margin_objective",
    "objective_and_grad",
    "targeted_dlr_objective",
]

#: ``objective(logits) -> (N,)``, the per-sample value an attack maximises.
Objective = Callable[[Tensor], Tensor]

# keeps the DLR denominator away from 0 when the top logits tie (as the reference code)
_DLR_TINY = 1e-12


def is_success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack success: ``argmax ≠ y`` (untargeted) or ``argmax = y`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def ce_objective(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack objective: ``CE(f(x), y)`` untargeted, ``−CE(f(x), t)`` targeted."""
    objective = F.cross_entropy(logits, y, reduction="none")
    return -objective if targeted else objective


def _best_other(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{i≠y} z_i`` per sample."""
    masked = logits.scatter(1, y[:, None], -torch.inf)
    return masked.amax(dim=1)


def margin_objective(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{i≠y} z_i − z_y``: positive exactly when some other class wins."""
    return _best_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_objective(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR, ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 10⁻¹²)`` (needs ``K ≥ 3``).

    ``π`` sorts the logits in decreasing order. Adding a constant to every logit or scaling
    them by ``c > 0`` leaves it unchanged (up to the ``10⁻¹²``).
    """
    top = logits.sort(dim=1, descending=True).values
    return margin_objective(logits, y) / (top[:, 0] - top[:, 2] + _DLR_TINY)


def targeted_dlr_objective(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR, ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 10⁻¹²)`` (needs ``K ≥ 4``)."""
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return (z_t - z_y) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY)


def kl_objective(logits_ref: Tensor, logits: Tensor) -> Tensor:
    """Per-sample ``KL(softmax(logits_ref) ‖ softmax(logits))``."""
    log_p = F.log_softmax(logits, dim=1)
    log_ref = F.log_softmax(logits_ref, dim=1)
    return (log_ref.exp() * (log_ref - log_p)).sum(dim=1)


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


def objective_and_grad(
    model: nn.Module,
    x_adv: Tensor,
    objective: Objective,
    *,
    on_logits: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(J_i, logits, ∇ₓ Σ_i J_i)`` at ``x_adv`` for a per-sample ``objective(logits)``.

    The objective is summed, not averaged, so each sample's gradient does not depend on the
    batch size. Only ``x_adv`` is differentiated (``torch.autograd.grad``): parameters and their
    ``.grad`` are untouched. ``on_logits(logits, x_adv)`` (a check) runs before the objective.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    if on_logits is not None:
        on_logits(logits, x_adv)
    value = objective(logits)
    if not value.requires_grad:
        raise ValueError(
            "the model's output does not depend on x through autograd (does the model detach "
            "its input or run under torch.no_grad()?); gradient attacks need a differentiable "
            "model"
        )
    grad = input_gradient(value.sum(), x_adv)
    return value.detach(), logits.detach(), grad
