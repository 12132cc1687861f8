"""The Carlini–Wagner L2 attack (Carlini & Wagner 2017), batched with per-sample bookkeeping."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_nonneg_float, check_nonneg_int, check_positive_float
from ._checks import check_inputs, check_logits, model_guard, plain
from ._utils import batch_norms, per_sample

__all__ = ["carlini_wagner"]

_SHRINK = 1.0 - 1e-6  # keeps arctanh finite for pixels exactly at the bounds
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_MAX_CONST = 1e10


def _margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """``z_y − max_{j≠y} z_j`` (untargeted) or ``max_{j≠t} z_j − z_t`` (targeted).

    The labelled class is masked with ``−∞`` before the maximum, which stays correct when all
    logits are negative (masking by multiplying with a one-hot vector does not).
    """
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(
        torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y[:, None], True), -torch.inf
    ).amax(dim=1)
    return other - own if targeted else own - other


def carlini_wagner(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    confidence: float = 0.0,
    c: float = 1e-3,
    binary_search_steps: int = 9,
    steps: int = 1000,
    lr: float = 1e-2,
    abort_early: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
) -> Tensor:
    """Carlini–Wagner L2: the smallest perturbation found by penalised optimisation.

    For each sample, minimise over ``w`` (Adam, step ``lr``) ::

        ‖x'(w) − x̃‖₂² + c · max(z_y(x'(w)) − max_{j≠y} z_j(x'(w)) + κ, 0)

    with the change of variables ``x'(w) = a + b · tanh(w)`` (``a = (hi+lo)/2``, ``b =
    (hi−lo)/2``), which keeps ``x'`` inside the box without clipping, started at ``w₀ =
    artanh((1 − 10⁻⁶) · (x − a)/b)`` (the shrink keeps pixels at exactly ``lo``/``hi`` finite and
    movable) and ``x̃ = x'(w₀)``. Targeted: the hinge is ``max(max_{j≠t} z_j − z_t + κ, 0)``.

    The constant is searched per sample: starting from ``c``, multiplied by 10 while no
    adversarial example is found, then bisected between the largest failing and the smallest
    successful value (``binary_search_steps`` rounds of ``steps`` Adam steps; with ten or more
    rounds the last one uses the smallest successful constant, as in the reference code). An
    iterate counts as adversarial when ``z_y + κ < max_{j≠y} z_j`` (targeted: ``z_t − κ >
    max_{j≠t} z_j``); every iterate is checked, and the closest adversarial one is kept.

    Early abort is decided per sample, never on the batch sum: every ``⌈steps/10⌉`` steps the
    lowest loss of the last window is compared with that of the previous window. A sample that
    has found an adversarial example in this round stops when its loss fell by less than 0.01 %
    and its best distance did not improve; one that has not stops after two such windows in a
    row. Stopped samples leave the batch, so the others run faster.

    Derived in the book, section ``sec-cw`` of chapter *Adversarial examples*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        confidence: the margin ``κ ≥ 0``.
        c: initial constant (``> 0``).
        binary_search_steps: rounds of the search over the constant (``≥ 1``).
        steps: Adam steps per round.
        lr: Adam step size.
        abort_early: per-sample early stopping of a round, see above.
        bounds: valid input range ``(lo, hi)``.
        targeted: reach class ``y`` instead of leaving it.

    Returns:
        ``x_adv`` with x's shape, dtype and device: for each sample the adversarial iterate of
        smallest ``‖x_adv − x‖₂`` over all rounds, ``x`` itself where the clean input already
        meets the criterion, and ``x`` (unchanged) where the attack failed.
    """
    name = "carlini_wagner"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    kappa = check_nonneg_float(confidence, "confidence")
    c0 = check_positive_float(c, "c")
    lr_ = check_positive_float(lr, "lr")
    assert kappa is not None and c0 is not None and lr_ is not None
    binary_search_steps = check_nonneg_int(binary_search_steps, "binary_search_steps", minimum=1)
    steps = check_nonneg_int(steps, "steps")
    n = x.shape[0]
    if n == 0:
        return x.detach().clone()
    a, b = (hi + lo) / 2, (hi - lo) / 2
    with model_guard(model):
        x0, y = plain(x), plain(y).long()
        with torch.no_grad():
            logits = model(x0)
            check_logits(logits, n, y_max, name=name)
            best = x0.clone()
            todo = (_margin(logits, y, targeted) + kappa >= 0).nonzero().squeeze(1)
        if todo.numel() == 0 or steps == 0:
            return best
        xs, ys = x0[todo], y[todo]
        with torch.no_grad():
            w0 = torch.atanh((xs - a) / b * _SHRINK)
            x_rec = torch.tanh(w0) * b + a
        m = xs.shape[0]
        f64 = dict(dtype=torch.float64, device=x0.device)
        const = torch.full((m,), c0, **f64)
        lower = torch.zeros(m, **f64)
        upper = torch.full((m,), torch.inf, **f64)
        best_x = xs.clone()
        best_norm = torch.full((m,), torch.inf, dtype=x0.dtype, device=x0.device)
        check_every = math.ceil(steps / 10)
        for bs in range(binary_search_steps):
            if binary_search_steps >= 10 and bs == binary_search_steps - 1:
                const = upper.clamp(max=_MAX_CONST)
            found = _round(
                model, xs, ys, w0, x_rec, const, best_x, best_norm, a=a, b=b, kappa=kappa,
                steps=steps, lr=lr_, abort_early=abort_early, check_every=check_every,
                targeted=targeted,
            )
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        best[todo] = best_x
    return best


def _round(
    model: nn.Module,
    xs: Tensor,
    ys: Tensor,
    w0: Tensor,
    x_rec: Tensor,
    const: Tensor,
    best_x: Tensor,
    best_norm: Tensor,
    *,
    a: float,
    b: float,
    kappa: float,
    steps: int,
    lr: float,
    abort_early: bool,
    check_every: int,
    targeted: bool,
) -> Tensor:
    """One round of Adam at fixed constants; updates ``best_x``/``best_norm`` in place.

    Returns the per-sample flag "an adversarial iterate was found in this round". Samples that
    abort early are dropped from the batch (their state is written back first).
    """
    m = xs.shape[0]
    dev = xs.device
    found = torch.zeros(m, dtype=torch.bool, device=dev)
    act = torch.arange(m, device=dev)  # indices (into xs) of the samples still running
    x_a, y_a, w0_a, xr_a = xs, ys, w0, x_rec
    c_a = const.to(xs.dtype)
    bx_a, bn_a, found_a = best_x, best_norm, found
    delta = torch.zeros_like(w0)
    mom = torch.zeros_like(w0)
    vel = torch.zeros_like(w0)
    # early-abort bookkeeping: lowest loss in the current and the previous window, whether the
    # best distance improved in the current window, whether the previous window had stalled
    prev_min = torch.full((m,), torch.inf, dtype=xs.dtype, device=dev)
    win_min = prev_min.clone()
    win_improved = torch.zeros(m, dtype=torch.bool, device=dev)
    stalled_before = torch.zeros(m, dtype=torch.bool, device=dev)

    for step in range(steps):
        delta.requires_grad_(True)
        xp = torch.tanh(w0_a + delta) * b + a
        logits = model(xp)
        margin = _margin(logits, y_a, targeted)
        dist2 = (xp - xr_a).flatten(1).pow(2).sum(dim=1)
        loss = c_a * (margin + kappa).clamp_min(0) + dist2
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            xp, loss = xp.detach(), loss.detach()
            succ = margin.detach() + kappa < 0
            norms = batch_norms(xp - x_a, "l2")
            improved = succ & (norms < bn_a)
            bx_a = torch.where(per_sample(improved, xp), xp, bx_a)
            bn_a = torch.where(improved, norms, bn_a)
            found_a = found_a | succ
            # Adam (Kingma & Ba) on δ = w − w₀, bias-corrected
            t = step + 1
            mom.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
            vel.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
            # δ ← δ − lr · m̂/(√v̂ + ε) with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
            denom = vel.sqrt().div_(math.sqrt(1 - _BETA2**t)).add_(_ADAM_EPS)
            delta = delta.detach().addcdiv_(mom, denom, value=-lr / (1 - _BETA1**t))
            if not abort_early:
                continue
            win_min = torch.minimum(win_min, loss)
            win_improved = win_improved | improved
            if step % check_every:
                continue
            stalled = ~(win_min <= 0.9999 * prev_min)  # NaN counts as stalled
            stop = (stalled & found_a & ~win_improved) | (stalled & stalled_before & ~found_a)
            stalled_before = stalled
            prev_min = win_min
            win_min = torch.full_like(prev_min, torch.inf)
            win_improved = torch.zeros_like(win_improved)
            if bool(stop.any()):
                gone = stop.nonzero().squeeze(1)
                sel = act[gone]
                best_x[sel], best_norm[sel], found[sel] = bx_a[gone], bn_a[gone], found_a[gone]
                keep = (~stop).nonzero().squeeze(1)
                if keep.numel() == 0:
                    return found
                act = act[keep]
                x_a, y_a, w0_a, xr_a, c_a = (t_[keep] for t_ in (x_a, y_a, w0_a, xr_a, c_a))
                bx_a, bn_a, found_a = bx_a[keep], bn_a[keep], found_a[keep]
                delta, mom, vel = delta[keep], mom[keep], vel[keep]
                prev_min, win_min = prev_min[keep], win_min[keep]
                win_improved, stalled_before = win_improved[keep], stalled_before[keep]
    with torch.no_grad():
        best_x[act], best_norm[act], found[act] = bx_a, bn_a, found_a
    return found
