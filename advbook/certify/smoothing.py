"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): prediction and certified ℓ2 radii.

The smoothed classifier of a base classifier ``f`` (the argmax of ``model``'s logits) is

    g(x) = argmax_c P(f(x + δ) = c),    δ ~ N(0, σ² I).

If the top class has probability ``p_A ≥ p̲_A > ½``, then ``g(x + ε) = g(x)`` for every
``‖ε‖₂ < R = σ·Φ⁻¹(p̲_A)`` (Cohen et al., Theorem 1, the Neyman–Pearson argument with the
runner-up bounded by ``1 − p̲_A``). ``g`` is not computable exactly; these functions estimate it
by Monte Carlo with exact binomial statistics (``advbook._core.binomial``), so each answer
is wrong with probability at most ``α``:

* :func:`smoothed_predict` — Cohen's PREDICT, which abstains (``-1``) unless a binomial test
  separates the top two classes;
* :func:`certify` — Cohen's CERTIFY, a class and a radius from a Clopper–Pearson bound;
* :func:`certified_accuracy` — the certified-accuracy curve of a test set.

Noise draws are batched across samples *and* draws: the ``N·n`` (sample, draw) pairs are laid
out sample-major and sent through the model ``batch_size`` rows at a time, and the votes are
counted on the device with ``scatter_add_`` (no Python loop over samples, no host
synchronisation per batch). Draws come from ``advbook._core.random.draw_like``: a seeded
CPU ``generator`` gives the same noise, hence the same counts, on every device. The stream
may depend on ``batch_size`` (the draws are made one batch at a time).

The noisy points ``x + δ`` are **not** clipped to ``bounds``, as in Cohen et al.: clipping
would change the noise distribution, and the theorem is about Gaussian ``δ``. ``bounds`` only
validates ``x``. Train the base model with the same Gaussian noise, unclipped
(``fit(..., batch_hook=input_noise_hook(sigma))`` without ``bounds``, section
:ref:`sec-input-noise`), or the smoothed classifier abstains or errs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._core.binomial import binomial_test_half, clopper_pearson_lower
from .._core.checks import (
    check_batch,
    check_bounds,
    check_class_labels,
    check_float_in,
    check_generator,
    check_in_bounds,
    check_logits,
    check_model_device,
    check_positive_float,
    check_positive_int,
    check_tensor,
)
from .._core.guard import detached_copy, model_guard
from .._core.progress import progress_enabled, tqdm
from .._core.random import draw_like

__all__ = ["average_certified_radius", "certified_accuracy", "certify", "smoothed_predict"]


def _check_alpha(alpha: object) -> float:
    """``alpha`` as a float in the open interval ``(0, 1)``."""
    value = check_float_in(alpha, "alpha", 0.0, 1.0)
    if not 0.0 < value < 1.0:
        raise ValueError(f"alpha must lie in the open interval (0, 1), got {value}")
    return value


def _check_common(
    model: object, x: object, sigma: object, bounds: object, batch_size: object,
    generator: object, name: str,
) -> tuple[float, int, torch.Generator | None]:
    """The checks shared by :func:`smoothed_predict` and :func:`certify` (one host sync)."""
    check_batch(model, x, None, name)
    check_model_device(cast(nn.Module, model), cast(Tensor, x), name)
    sigma_ = check_positive_float(sigma, "sigma")
    batch = check_positive_int(batch_size, "batch_size")
    gen = check_generator(generator, name)
    check_in_bounds(cast(Tensor, x), check_bounds(bounds), name)
    return sigma_, batch, gen


def _class_counts(
    model: nn.Module, x: Tensor, sigma: float, draws: int, batch_size: int,
    generator: torch.Generator | None, bar: Any, classes: int | None, name: str,
) -> Tensor:
    """``counts[i, c]``: how many of ``draws`` noisy copies ``x_i + δ`` the model puts in ``c``.

    The ``N·draws`` rows (sample ``row // draws``) go through the model ``batch_size`` at a
    time; call inside :func:`model_guard` and ``torch.no_grad``. Returns int64 ``(N, K)``.
    """
    n_rows = x.shape[0] * draws
    counts: Tensor | None = None
    k = 0
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        sample = torch.arange(start, stop, device=x.device) // draws
        noisy = draw_like("randn", x, generator, (stop - start, *x.shape[1:]))
        noisy.mul_(sigma).add_(x.index_select(0, sample))  # x + δ, not clipped
        logits = model(noisy)
        if counts is None:
            k = check_logits(logits, stop - start, name=name, classes=classes)
            counts = torch.zeros(x.shape[0] * k, dtype=torch.int64, device=x.device)
        flat = sample * k + logits.argmax(1)
        counts.scatter_add_(0, flat, torch.ones_like(flat))
        bar.update(stop - start)
    assert counts is not None
    return counts.view(x.shape[0], k)


def smoothed_predict(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n: int = 100,
    alpha: float = 0.001,
    batch_size: int = 1000,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """The smoothed classifier's prediction, or ``-1`` (abstain): Cohen et al.'s PREDICT.

    Counts ``f(x + δ)`` over ``n`` draws ``δ ~ N(0, σ² I)``; with ``n_A ≥ n_B`` the two largest
    counts (classes ``c_A``, ``c_B``), returns ``c_A`` if the two-sided binomial test of ``n_A``
    successes in ``n_A + n_B`` trials at ``p = ½`` rejects at level ``α``, i.e.
    ``min(1, 2·P(X ≥ n_A)) ≤ α`` for ``X ~ Binomial(n_A + n_B, ½)`` (computed exactly), and
    abstains otherwise. The probability of returning a class other than ``g(x)`` is at most
    ``α`` (Cohen et al., Proposition 1); near the decision boundary of ``g`` it abstains.
    Derived in the book, sections :ref:`sec-smoothing` and :ref:`sec-monte-carlo-certificates`.

    Args:
        model: the base classifier, returning logits ``(N, K)``; run in eval mode and left
            unchanged (``advbook._core.guard.model_guard``).
        x: inputs ``(N, ...)`` inside ``bounds``; the noisy copies are not clipped.
        sigma: noise standard deviation ``σ > 0``.
        n: Monte-Carlo draws per sample (``≥ 1``).
        alpha: level of the test, in ``(0, 1)``.
        batch_size: rows (sample, draw pairs) per forward pass (``≥ 1``).
        bounds: valid input range ``(lo, hi)`` of ``x``.
        generator: source of the noise (drawn on its device, then moved to x's).

    Returns:
        int64 labels ``(N,)`` on x's device, ``-1`` where it abstains.
    """
    name = "smoothed_predict"
    sigma_, batch, gen = _check_common(model, x, sigma, bounds, batch_size, generator, name)
    draws = check_positive_int(n, "n")
    alpha_ = _check_alpha(alpha)
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=x.device)
    with model_guard(model), torch.no_grad():
        bar = tqdm(total=0, disable=True)
        counts = _class_counts(model, detached_copy(x), sigma_, draws, batch, gen, bar, None, name)
    top, classes = counts.topk(2, dim=1)
    p_value = binomial_test_half(top[:, 0].cpu(), top[:, 1].cpu()).to(x.device)
    return torch.where(p_value <= alpha_, classes[:, 0], torch.full_like(classes[:, 0], -1))


# long: signature and docstring (the algorithm's reference) alone are 50 lines
def certify(
    model: nn.Module,
    x: Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """A class and a certified ℓ2 radius for each sample: Cohen et al.'s CERTIFY.

    1. *Selection*: ``ĉ_A`` = the most frequent class of ``f(x + δ)`` over ``n0`` draws.
    2. *Estimation*: ``n_A`` = how many of ``n`` fresh draws ``f`` puts in ``ĉ_A``, and the
       one-sided Clopper–Pearson lower bound ``p̲_A``, the ``α``-quantile of
       ``Beta(n_A, n − n_A + 1)`` (computed exactly, ``advbook._core.binomial``).
    3. If ``p̲_A > ½``: label ``ĉ_A`` and radius ``R = σ·Φ⁻¹(p̲_A)``; otherwise abstain:
       label ``-1`` and radius ``0``.

    With probability at least ``1 − α`` (over the draws) a returned label ``c`` satisfies
    ``g(x + ε) = c`` for all ``‖ε‖₂ < R``, where ``g`` is the smoothed classifier (Cohen et al.,
    Theorem 1 and Proposition 2). Separating selection from estimation keeps the bound valid:
    ``ĉ_A`` does not depend on the draws that estimate its probability. The largest radius
    ``n`` draws can certify is ``σ·Φ⁻¹(α^{1/n})`` (all draws in ``ĉ_A``), e.g. ``3.81·σ`` for
    ``n = 10⁵`` and ``α = 0.001``; the radius grows only like ``√log n``. Derived in the book:
    the radius in section :ref:`sec-cohen-theorem`, the bound and the cap in section
    :ref:`sec-monte-carlo-certificates`.

    Args:
        model: the base classifier, returning logits ``(N, K)``; run in eval mode and left
            unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``; the noisy copies are not clipped.
        sigma: noise standard deviation ``σ > 0``.
        n0: draws for the selection (``≥ 1``).
        n: draws for the estimation (``≥ 1``).
        alpha: failure probability, in ``(0, 1)``.
        batch_size: rows (sample, draw pairs) per forward pass (``≥ 1``).
        bounds: valid input range ``(lo, hi)`` of ``x``.
        generator: source of the noise (drawn on its device, then moved to x's).
        progress: show a progress bar over the ``N·(n0 + n)`` draws (default: see
            :func:`advbook.utils.progress_enabled`).

    Returns:
        ``(labels, radii)``: int64 ``(N,)`` with ``-1`` where it abstains, and radii ``(N,)`` in
        x's dtype (``0`` where it abstains), both on x's device.
    """
    name = "certify"
    sigma_, batch, gen = _check_common(model, x, sigma, bounds, batch_size, generator, name)
    draws0 = check_positive_int(n0, "n0")
    draws = check_positive_int(n, "n")
    alpha_ = _check_alpha(alpha)
    if x.shape[0] == 0:
        return (torch.zeros(0, dtype=torch.int64, device=x.device),
                torch.zeros(0, dtype=x.dtype, device=x.device))
    bar = tqdm(total=x.shape[0] * (draws0 + draws), disable=not progress_enabled(progress),
               desc=name, unit="draw", unit_scale=True)
    try:
        with model_guard(model), torch.no_grad():
            x0 = detached_copy(x)
            counts0 = _class_counts(model, x0, sigma_, draws0, batch, gen, bar, None, name)
            c_a = counts0.argmax(1)
            counts = _class_counts(model, x0, sigma_, draws, batch, gen, bar,
                                   counts0.shape[1], name)
    finally:
        bar.close()
    n_a = counts.gather(1, c_a[:, None]).squeeze(1)
    p_lower = clopper_pearson_lower(n_a.cpu(), draws, alpha_)
    certified = p_lower > 0.5
    radii = torch.where(certified, sigma_ * torch.special.ndtri(p_lower), 0.0)
    labels = torch.where(certified.to(x.device), c_a, torch.full_like(c_a, -1))
    return labels, radii.to(device=x.device, dtype=x.dtype)


def _check_certificates(
    labels: object, radii: object, y: object, name: str,
    radii_grid: Tensor | Sequence[float] | float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate certificates against true labels: ``(right, radii, grid)`` on radii's device,
    ``right[i]`` whether ``labels[i] == y[i]``, radii and the grid in float64 (one host
    synchronisation)."""
    labels = check_class_labels(labels, name)
    y = check_class_labels(y, name)
    radii = check_tensor(radii, "radii", where=name, floating=True)
    n = labels.shape[0] if labels.ndim == 1 else -1
    if n < 1 or radii.shape != (n,) or y.shape != (n,):
        raise ValueError(f"{name}: labels, radii and y must have one shape (N,) with N >= 1, got "
                         f"{tuple(labels.shape)}, {tuple(radii.shape)} and {tuple(y.shape)}")
    grid = torch.as_tensor(radii_grid, dtype=torch.float64).reshape(-1).to(radii.device)
    r = radii.detach().double()
    bad_r, bad_grid, y_min = torch.stack([
        (~torch.isfinite(r) | (r < 0)).any().double(),
        (~torch.isfinite(grid) | (grid < 0)).any().double(),
        y.amin().double().to(radii.device),
    ]).tolist()
    if bad_r or bad_grid:
        raise ValueError(f"{name}: radii and radii_grid must be finite and >= 0")
    if y_min < 0:
        raise ValueError(f"{name}: y must hold true labels >= 0 (-1 marks an abstention), got "
                         f"{int(y_min)}")
    return (labels.to(y.device) == y).to(radii.device), r, grid


def certified_accuracy(
    labels: Tensor, radii: Tensor, y: Tensor, radii_grid: Tensor | Sequence[float] | float
) -> Tensor:
    """Certified accuracy at each radius ``r`` of ``radii_grid``: the share of samples whose
    label is right and whose certified radius is at least ``r``.

    ``acc(r) = (1/N) · #{i : labels_i = y_i and radii_i ≥ r}``, as in Cohen et al.'s curves.
    A certificate of radius ``R`` covers the open ball ``‖ε‖₂ < R``, which contains the open
    ball of radius ``r`` exactly when ``R ≥ r``; hence ``≥``. Abstentions (``-1``) never count,
    so ``acc(0)`` is the accuracy of :func:`certify`'s answers (its radii are ``> 0``) and the
    curve is non-increasing. Used in the book's section :ref:`sec-certified-accuracy`.

    Args:
        labels: ``(N,)`` integer labels from :func:`certify` (``-1`` = abstain) or
            :func:`lipschitz_certificate <advbook.certify.lipschitz_certificate>`.
        radii: ``(N,)`` certified radii ``≥ 0``.
        y: ``(N,)`` true labels ``≥ 0``, on labels' device.
        radii_grid: radii ``r ≥ 0`` (a number, a sequence or a 1-D tensor).

    Returns:
        float64 tensor ``(len(radii_grid),)`` on radii's device.
    """
    right, r, grid = _check_certificates(labels, radii, y, "certified_accuracy", radii_grid)
    covered = r[:, None] >= grid[None, :]
    return (right[:, None] & covered).double().mean(0)


def average_certified_radius(labels: Tensor, radii: Tensor, y: Tensor) -> float:
    """The average certified radius (ACR): ``(1/N) Σ_i R_i · [labels_i = y_i]``.

    A wrong or abstained certificate counts as radius 0. It is the area under the curve of
    :func:`certified_accuracy`, ``ACR = ∫₀^∞ acc(r) dr``, the summary Zhai et al. (2020) and
    Jeong & Shin (2020) report; used in the book's section :ref:`sec-training-for-smoothing`.
    Arguments as for :func:`certified_accuracy`; returns a Python float (float64 arithmetic).
    """
    right, r, _ = _check_certificates(labels, radii, y, "average_certified_radius")
    return float((r * right).mean())
