"""Exact binomial statistics in ``torch`` float64, without SciPy (certify and ``stats``).

PyTorch has no regularised incomplete beta function, and SciPy is not a dependency of
:mod:`advbook`, so it is computed here: :func:`log_betainc` evaluates ``log I_x(a, b)`` with the
continued fraction of the incomplete beta function (modified Lentz algorithm, Press et al.,
*Numerical Recipes*, §6.4), switching to ``1 − I_{1−x}(b, a)`` where ``x > (a+1)/(a+b+2)`` so
that the fraction converges fast; it needs ``O(√max(a, b))`` terms at worst (about 270 for
``a = b = 5·10⁴``). For integer ``a ≥ 1`` and ``b ≥ 1``,
``I_p(a, b) = P(X ≥ a)`` for ``X ~ Binomial(a + b − 1, p)``, which is what both uses need:

* :func:`binomial_test_half` — the two-sided p-value of ``n_A`` successes out of ``n_A + n_B``
  against ``p = ½`` (Cohen et al.'s PREDICT), ``min(1, 2·I_{1/2}(n_A, n_B + 1))`` for
  ``n_A ≥ n_B`` (the binomial distribution at ``½`` is symmetric, so the two tails are equal);
* :func:`clopper_pearson_lower` — the one-sided ``(1 − α)`` Clopper–Pearson lower confidence
  bound of a binomial proportion, the ``α``-quantile of ``Beta(k, n − k + 1)``, i.e. the ``p``
  with ``P(X ≥ k | p) = α`` (Cohen et al.'s CERTIFY), found by Newton's method on
  ``h(u) = log I_{e^u}(k, n − k + 1) − log α`` in ``u = log p``. The law of ``log P`` for
  ``P ~ Beta(a, b)`` (``a, b ≥ 1``) has a log-concave density, so ``h`` is concave and
  increasing: after the first step every Newton iterate lies *below* the root and they rise to
  it monotonically (quadratically near it), so the bound is never overstated by the
  iteration. ``k = n`` has the closed form ``α^{1/n}`` and ``k = 0`` gives ``0``.

All inputs and outputs are float64 tensors on one device (the callers use the CPU, where these
short vectors cost microseconds); a host synchronisation every few iterations checks
convergence.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["binomial_test_half", "clopper_pearson_lower", "log_betainc"]

_TINY = 1e-300
_EPS = 1e-15
_CHECK_EVERY = 8
_MAX_TERMS = 1_000_000
_NEWTON_STEPS = 100


def _guard(t: Tensor) -> Tensor:
    """``t`` with entries of magnitude below 1e-300 replaced by 1e-300 (Lentz's safeguard)."""
    return torch.where(t.abs() < _TINY, torch.full_like(t, _TINY), t)


def _beta_fraction(a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """The continued fraction of ``I_x(a, b)`` (modified Lentz), converged to 1e-15 everywhere.

    ``I_x(a, b) = x^a (1−x)^b / (a·B(a, b)) · fraction``; fast for ``x < (a+1)/(a+b+2)``.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = torch.ones_like(x)
    d = 1.0 / _guard(1.0 - qab * x / qap)
    h = d.clone()
    m = 0
    while m < _MAX_TERMS:
        for _ in range(_CHECK_EVERY):
            m += 1
            m2 = 2.0 * m
            for coef in (
                m * (b - m) * x / ((qam + m2) * (a + m2)),
                -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            ):
                d = 1.0 / _guard(1.0 + coef * d)
                c = _guard(1.0 + coef / c)
                delta = d * c
                h = h * delta
        if float((delta - 1.0).abs().max()) < _EPS:
            return h
    raise RuntimeError(f"the incomplete beta fraction did not converge in {_MAX_TERMS} terms")


def log_betainc(a: Tensor, b: Tensor, log_x: Tensor) -> Tensor:
    """``log I_x(a, b)``, the log of the regularised incomplete beta function, at ``x = e^{log_x}``.

    ``a, b > 0`` and ``log_x ≤ 0`` are float64 tensors of one shape; ``log_x = −inf`` (``x = 0``)
    gives ``−inf``. Taking ``log x`` rather than ``x`` keeps tiny ``x`` and ``1 − x`` exact.
    """
    x = log_x.exp()
    log_1mx = torch.log(-torch.expm1(log_x))
    swap = x > (a + 1.0) / (a + b + 2.0)
    aa, bb = torch.where(swap, b, a), torch.where(swap, a, b)
    xx = torch.where(swap, -torch.expm1(log_x), x)
    log_xx, log_1mxx = torch.where(swap, log_1mx, log_x), torch.where(swap, log_x, log_1mx)
    log_front = (
        torch.lgamma(aa + bb) - torch.lgamma(aa) - torch.lgamma(bb)
        + aa * log_xx + torch.where(bb == 0, 0.0, bb * log_1mxx)
    )
    log_val = log_front + torch.log(_beta_fraction(aa, bb, xx)) - torch.log(aa)
    return torch.where(swap, torch.log1p(-log_val.exp()), log_val)


def binomial_test_half(n_a: Tensor, n_b: Tensor) -> Tensor:
    """Two-sided p-value of ``n_A`` against ``n_A + n_B`` trials at ``p = ½`` (``n_A ≥ n_B``).

    ``min(1, 2·P(X ≥ n_A))`` for ``X ~ Binomial(n_A + n_B, ½)``, equal to SciPy's
    ``binomtest(n_A, n_A + n_B, 0.5).pvalue``; ``n_A = 0`` (no trials) gives 1. Integer
    tensors in, float64 out (same device).
    """
    a = n_a.to(torch.float64)
    b = n_b.to(torch.float64) + 1.0
    safe_a = a.clamp_min(1.0)
    log_half = torch.full_like(a, -math.log(2.0))
    log_tail = log_betainc(safe_a, b, log_half)
    p = (math.log(2.0) + log_tail).exp().clamp_max(1.0)
    return torch.where(a > 0, p, torch.ones_like(p))


def clopper_pearson_lower(k: Tensor, n: int, alpha: float) -> Tensor:
    """One-sided ``(1 − α)`` Clopper–Pearson lower bound of a proportion from ``k`` of ``n``.

    The ``α``-quantile of ``Beta(k, n − k + 1)`` (``scipy.stats.beta.ppf(α, k, n − k + 1)``),
    ``0`` for ``k = 0`` and ``α^{1/n}`` for ``k = n``: with probability at least ``1 − α`` over
    ``k ~ Binomial(n, p)`` the bound is ``≤ p``. ``k`` is an integer tensor, ``0 ≤ k ≤ n``;
    the result is float64 on ``k``'s device. See the module docstring for the method.
    """
    kf = k.to(torch.float64)
    inner = (kf > 0) & (kf < n)
    a = torch.where(inner, kf, torch.ones_like(kf))
    b = float(n) + 1.0 - a
    u = torch.log(a / n)  # start at the point estimate; the first step lands left of the root
    log_alpha = math.log(alpha)
    log_norm = torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
    previous = math.inf
    for _ in range(_NEWTON_STEPS):
        h = log_betainc(a, b, u) - log_alpha
        # h'(u) = p·f(p)/F(p), with f the Beta(a, b) density and F its distribution function
        slope = (log_norm + a * u + (b - 1.0) * torch.log(-torch.expm1(u)) - h - log_alpha).exp()
        step = torch.where(inner, h / slope, torch.zeros_like(h))
        u = u - step
        largest = float((step.abs() / u.abs().clamp_min(_TINY)).max())
        # converged, or stalled at the rounding floor of log I (about 1e-12 for n = 1e5): the
        # steps of a converging Newton iteration shrink quadratically
        if largest < 1e-13 or (largest < 1e-8 and largest > 0.5 * previous):
            break
        previous = largest
    bound = u.exp()
    bound = torch.where(kf >= n, torch.full_like(bound, alpha ** (1.0 / n)), bound)
    return torch.where(kf <= 0, torch.zeros_like(bound), bound)
