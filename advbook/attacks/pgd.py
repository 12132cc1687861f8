"""Projected gradient descent (PGD) and the basic iterative method (BIM)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
)
from ._checks import check_inputs, check_logits, model_guard, plain
from ._utils import (
    ce_objective,
    ce_objective_and_grad,
    is_success,
    per_sample,
    project,
    sample_start,
    steepest_ascent_direction,
)

__all__ = ["pgd"]

# how the last iterate is judged: only where no earlier iterate fooled the model, or everywhere
SELECTIONS = ("fooled", "max_loss")


def _better(succ: Tensor, obj: Tensor, best_succ: Tensor, best_obj: Tensor) -> Tensor:
    """Lexicographic "worse for the model": successful first, then higher objective."""
    return (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))


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

    Derived in the book, section ``sec-pgd`` of chapter *Adversarial examples*.

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

    Returns:
        ``x_adv`` with x's shape, dtype and device, ``‖x_adv − x‖ ≤ ε`` and inside ``bounds``.
    """
    name = "pgd"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    assert eps_ is not None
    steps = check_nonneg_int(steps, "steps")
    restarts = check_nonneg_int(restarts, "restarts", minimum=1)
    norm = check_choice(norm, "norm", NORMS)
    alpha_ = check_positive_float(alpha, "alpha", allow_none=True)
    generator = check_generator(generator, name)
    select = check_choice(select, "select", SELECTIONS)
    if restarts > 1 and not random_start:
        raise ValueError(
            f"{name}: restarts={restarts} without random_start would repeat the same attack; "
            f"set random_start=True or restarts=1"
        )
    if alpha_ is None:
        alpha_ = 2.5 * eps_ / max(steps, 1)
    n = x.shape[0]
    if n == 0:
        return x.detach().clone()
    with model_guard(model):
        x0, y = plain(x), plain(y).long()
        best_x = x0.clone()
        best_succ = torch.zeros(n, dtype=torch.bool, device=x0.device)
        best_obj = torch.full((n,), -torch.inf, dtype=x0.dtype, device=x0.device)
        for restart in range(restarts):
            if early_stop and restart > 0:
                gidx = (~best_succ).nonzero().squeeze(1)
                if gidx.numel() == 0:
                    break
            else:
                gidx = torch.arange(n, device=x0.device)
            xs, ys = x0[gidx], y[gidx]
            start = xs
            if random_start:
                start = (xs + sample_start(xs, eps_, norm, generator)).clamp(lo, hi)
            check = (y_max, name) if restart == 0 else None
            _run(
                model, xs, ys, gidx, start, eps_, alpha_, steps, norm, lo, hi, targeted,
                early_stop, select == "max_loss", check, best_x, best_succ, best_obj,
            )
    return best_x


def _run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    gidx: Tensor,
    start: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    lo: float,
    hi: float,
    targeted: bool,
    early_stop: bool,
    eval_all_last: bool,
    check: tuple[int, str] | None,
    best_x: Tensor,
    best_succ: Tensor,
    best_obj: Tensor,
) -> None:
    """One PGD run from ``start``; merges its per-sample worst case into ``best_*`` at ``gidx``."""
    xt = start
    lb_x = start
    lb_succ = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
    lb_obj = torch.full((x0.shape[0],), -torch.inf, dtype=x0.dtype, device=x0.device)
    for t in range(steps + 1):
        if t < steps:
            obj, logits, grad = ce_objective_and_grad(model, xt, y, targeted, check=check)
        else:
            evaluated = _evaluate_last(model, xt, y, lb_succ, targeted, eval_all_last, check)
            if evaluated is None:  # every sample was fooled by an earlier iterate
                break
            obj, succ = evaluated
        check = None
        with torch.no_grad():
            if t < steps:
                succ = is_success(logits, y, targeted)
            better = _better(succ, obj, lb_succ, lb_obj)
            lb_x = torch.where(per_sample(better, xt), xt, lb_x)
            lb_succ = lb_succ | succ
            lb_obj = torch.where(better, obj, lb_obj)
            if early_stop:
                keep = ~lb_succ
                if not bool(keep.all()):
                    done = lb_succ.nonzero().squeeze(1)
                    _merge(gidx[done], lb_x[done], lb_succ[done], lb_obj[done],
                           best_x, best_succ, best_obj)
                    kept = keep.nonzero().squeeze(1)
                    xt, x0, y, gidx = xt[kept], x0[kept], y[kept], gidx[kept]
                    lb_x, lb_succ, lb_obj = lb_x[kept], lb_succ[kept], lb_obj[kept]
                    if t < steps:
                        grad = grad[kept]
                    if kept.numel() == 0:
                        return
            if t == steps:
                break
            delta = (xt - x0) + alpha * steepest_ascent_direction(grad, norm)
            xt = (x0 + project(delta, eps, norm)).clamp_(lo, hi)
    with torch.no_grad():
        _merge(gidx, lb_x, lb_succ, lb_obj, best_x, best_succ, best_obj)


def _evaluate_last(
    model: nn.Module,
    xt: Tensor,
    y: Tensor,
    fooled: Tensor,
    targeted: bool,
    eval_all: bool,
    check: tuple[int, str] | None,
) -> tuple[Tensor, Tensor] | None:
    """Objective and success of the last iterate, for every sample or only the unfooled ones.

    Samples left out get ``(−inf, False)``, which never beats what they already have. Returns
    ``None`` when there is nothing to evaluate.
    """
    with torch.no_grad():
        if eval_all or check is not None:
            idx = None
        else:
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                return None
            if idx.numel() == xt.shape[0]:
                idx = None
        xe, ye = (xt, y) if idx is None else (xt[idx], y[idx])
        logits = model(xe)
        if check is not None:
            check_logits(logits, xe.shape[0], check[0], name=check[1])
        obj = ce_objective(logits, ye, targeted)
        succ = is_success(logits, ye, targeted)
        if idx is None:
            return obj, succ
        obj_all = torch.full_like(fooled, -torch.inf, dtype=obj.dtype).index_copy_(0, idx, obj)
        succ_all = torch.zeros_like(fooled).index_copy_(0, idx, succ)
        return obj_all, succ_all


def _merge(
    gidx: Tensor,
    x: Tensor,
    succ: Tensor,
    obj: Tensor,
    best_x: Tensor,
    best_succ: Tensor,
    best_obj: Tensor,
) -> None:
    """Keep, per sample, the worse-for-the-model of ``(x, succ, obj)`` and ``best_*[gidx]``."""
    better = _better(succ, obj, best_succ[gidx], best_obj[gidx])
    best_x[gidx] = torch.where(per_sample(better, x), x, best_x[gidx])
    best_obj[gidx] = torch.where(better, obj, best_obj[gidx])
    best_succ[gidx] = best_succ[gidx] | succ
