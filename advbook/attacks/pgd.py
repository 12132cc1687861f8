"""Projected gradient descent (PGD) and the basic iterative method (BIM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import detached_copy, model_guard
from .._core.worst_case import WorstCase, retire_fooled, rows_to_attack
from ._checks import check_inputs, check_logits
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import (
    ce_objective,
    ce_objective_and_grad,
    is_success,
    projected_step,
    sample_start,
)

__all__ = ["pgd"]

# how the last iterate is judged: only where no earlier iterate fooled the model, or everywhere
SELECTIONS = ("fooled", "max_loss")

#: ``(y_max, name)``: validate the logits of the first forward pass against the labels.
_LogitsCheck = tuple[int, str] | None


# long: signature and docstring (the algorithm's reference) alone are 65 lines
def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    generator: torch.Generator | None = None,
    early_stop: bool = False,
    select: str = "fooled",
    on_masking: str = "warn",
) -> Tensor:
    """Projected gradient ascent on the cross-entropy inside an ε-ball (Madry et al. 2018).

    Starting from ``x⁰ = clip(x + δ₀)`` (``δ₀`` uniform in the L∞ box; for L2 a uniform
    direction with a radius uniform in ``[0, ε]``, see ``sample_start``; or ``0`` when
    ``random_start=False``, which is the basic iterative method of Kurakin et al.), each step
    takes the steepest-ascent direction of the objective for the norm and projects back::

        L∞:  xᵗ⁺¹ = clip_[lo, hi](x + Π_ε(xᵗ − x + α · sign(∇J(xᵗ))))      Π_ε(δ) = clamp(δ, −ε, ε)
        L2:  xᵗ⁺¹ = clip_[lo, hi](x + Π_ε(xᵗ − x + α · ∇J(xᵗ)/‖∇J(xᵗ)‖₂))  Π_ε(δ) = δ·min(1, ε/‖δ‖₂)

    with ``J = CE(f(x), y)`` (untargeted) or ``J = −CE(f(x), t)`` (targeted), summed over the
    batch, and ``α = 2.5·ε/steps`` by default. Clipping to the box after the projection keeps
    ``‖xᵗ − x‖ ≤ ε`` because ``x`` itself lies in the box.

    For each sample the *worst case* over the iterates and restarts is returned: an iterate that
    fools the model beats one that does not, and among equals the higher objective wins. The
    iterates ``x⁰ … xᵀ⁻¹`` are judged for free (their logits come with their gradients); the
    last iterate ``xᵀ`` needs a forward pass of its own. With ``select="fooled"`` (default) it is
    evaluated only for the samples that no earlier iterate fooled, which is all that robust
    accuracy needs; with ``select="max_loss"`` it is evaluated for every sample, so the
    highest-objective iterate is returned also among fooling ones (adversarial training's inner
    maximisation uses this). Either way more steps or restarts are never weaker.

    Derived in the book, section :ref:`sec-pgd` of chapter *Adversarial examples*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        eps: radius of the ball (``≥ 0``).
        alpha: step size, default ``2.5·eps/steps``.
        steps: number of gradient steps (``0`` evaluates the start only).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a random point of the ball (needed for ``restarts > 1``).
        restarts: independent random starts; the worst case per sample is kept.
        bounds: valid input range ``(lo, hi)``.
        targeted: move towards the class ``y`` instead of away from it.
        generator: source of the random starts (drawn on its device, then moved to x's).
        early_stop: stop updating a sample at its first successful iterate and continue with
            the others on a smaller batch; later restarts only attack samples not yet fooled.
            Robust accuracy is the same (up to floating point), and it is faster, but the
            returned points are not loss maximisers: use it for evaluation, not for
            adversarial training.
        select: ``"fooled"`` or ``"max_loss"``: which samples the last iterate is evaluated
            for (see above). ``"fooled"`` saves up to one forward pass per restart; the two
            give the same robust accuracy.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the input
            gradient was exactly zero at every step of every restart for samples the attack
            did not fool (gradient masking, :ref:`sec-gradient-masking`):
            :class:`GradientMaskingWarning` or :class:`GradientMaskingError`.

    Returns:
        ``x_adv`` with x's shape, dtype and device, ``‖x_adv − x‖ ≤ ε`` and inside ``bounds``.
    """
    name = "pgd"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    steps = check_nonneg_int(steps, "steps")
    restarts = check_positive_int(restarts, "restarts")
    norm = check_choice(norm, "norm", NORMS)
    step_size = check_positive_float(alpha, "alpha", allow_none=True)
    generator = check_generator(generator, name)
    select = check_choice(select, "select", SELECTIONS)
    on_masking = check_on_masking(on_masking)
    if restarts > 1 and not random_start:
        raise ValueError(
            f"{name}: restarts={restarts} without random_start would repeat the same attack; "
            f"set random_start=True or restarts=1"
        )
    if step_size is None:
        step_size = 2.5 * eps_ / max(steps, 1)
    settings = _Settings(
        eps=eps_, step_size=step_size, steps=steps, norm=norm, bounds=(lo, hi),
        targeted=targeted, early_stop=early_stop, evaluate_all_last=select == "max_loss",
    )
    if x.shape[0] == 0:
        return x.detach().clone()
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        worst = WorstCase.start(x0)
        for restart in range(restarts):
            rows = rows_to_attack(worst, restart, early_stop)
            if rows.numel() == 0:
                break
            start = x0[rows]
            if random_start:
                start = (start + sample_start(start, eps_, norm, generator)).clamp(lo, hi)
            check = (y_max, name) if restart == 0 else None
            _attack_from(model, x0[rows], y[rows], rows, start, settings, check, worst)
    if steps > 0:  # masked: a vanished gradient at every step of every restart, not fooled
        unfooled = ~worst.fooled
        report_masking(name, worst.masked & unfooled, unfooled, x.shape[0], on_masking)
    return worst.x


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of one PGD run (see :func:`pgd`)."""

    eps: float
    step_size: float
    steps: int
    norm: str
    bounds: tuple[float, float]
    targeted: bool
    early_stop: bool
    evaluate_all_last: bool


def _attack_from(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    rows: Tensor,
    start: Tensor,
    settings: _Settings,
    check: _LogitsCheck,
    overall: WorstCase,
) -> None:
    """One PGD run from ``start``; merges its per-sample worst case into ``overall`` at ``rows``.

    With ``early_stop`` a sample leaves the batch at its first fooling iterate.
    """
    x_t = start
    run = WorstCase(
        x=start,
        fooled=torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device),
        objective=torch.full((x0.shape[0],), -torch.inf, dtype=x0.dtype, device=x0.device),
        masked=torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device),
    )
    grad: Tensor | None = None
    for t in range(settings.steps + 1):
        if t < settings.steps:
            objective, logits, grad = ce_objective_and_grad(
                model, x_t, y, settings.targeted, check=check
            )
            fooled = is_success(logits, y, settings.targeted)
            run.masked = and_vanished(run.masked, grad)
        else:
            grad = None
            evaluated = _evaluate_last(
                model, x_t, y, run.fooled, settings.targeted, settings.evaluate_all_last, check
            )
            if evaluated is None:  # every sample was fooled by an earlier iterate
                break
            objective, fooled = evaluated
        check = None
        with torch.no_grad():
            run.update(x_t, fooled, objective)
            if settings.early_stop and not bool((~run.fooled).all()):
                kept = retire_fooled(run, rows, overall)
                if kept.numel() == 0:
                    return
                x_t, x0, y, rows = x_t[kept], x0[kept], y[kept], rows[kept]
                run = run.select(kept)
                grad = None if grad is None else grad[kept]
            if grad is None:  # the last iterate: no step follows
                break
            x_t = projected_step(
                x0, x_t, grad, settings.step_size, settings.eps, settings.norm, settings.bounds
            )
    with torch.no_grad():
        run.merge_into(overall, rows)


def _evaluate_last(
    model: nn.Module,
    x_t: Tensor,
    y: Tensor,
    fooled: Tensor,
    targeted: bool,
    evaluate_all: bool,
    check: _LogitsCheck,
) -> tuple[Tensor, Tensor] | None:
    """Objective and success of the last iterate, for every sample or only the unfooled ones.

    Samples left out get ``(−inf, False)``, which never beats what they already have. Returns
    ``None`` when there is nothing to evaluate.
    """
    with torch.no_grad():
        if evaluate_all or check is not None:
            unfooled = None
        else:
            unfooled = (~fooled).nonzero().squeeze(1)
            if unfooled.numel() == 0:
                return None
            if unfooled.numel() == x_t.shape[0]:
                unfooled = None
        x_eval, y_eval = (x_t, y) if unfooled is None else (x_t[unfooled], y[unfooled])
        logits = model(x_eval)
        if check is not None:
            check_logits(logits, x_eval.shape[0], check[0], name=check[1])
        objective = ce_objective(logits, y_eval, targeted)
        success = is_success(logits, y_eval, targeted)
        if unfooled is None:
            return objective, success
        objective_all = torch.full_like(fooled, -torch.inf, dtype=objective.dtype)
        success_all = torch.zeros_like(fooled)
        return (
            objective_all.index_copy_(0, unfooled, objective),
            success_all.index_copy_(0, unfooled, success),
        )
