"""Input noise: additive Gaussian noise on the training inputs.

Training on ``x̃ = x + δ`` with ``δ ~ N(0, σ²I)`` drawn afresh for every batch is the oldest
noise regulariser (Bishop 1995). For linear least squares ``ŷ = wᵀx + b`` it is *exactly* ridge
regression with ``λ = σ²``::

    E_δ[(wᵀ(x + δ) + b − y)²] = (wᵀx + b − y)² + σ²‖w‖²,

and for a general smooth model, to first order in ``σ²``, a Tikhonov penalty
``σ²·E‖∇_x ŷ(x)‖²`` (see :func:`advbook.noise.input_jacobian_penalty`). Derived in the book,
section :ref:`sec-input-noise` of chapter *Noise injection as regularization*.
"""

from __future__ import annotations

import torch
from torch import nn

from .._core.checks import check_bounds, check_generator, check_nonneg_float
from .._core.random import randn_like
from .._core.types import Bounds
from ..train import BatchHook
from ._common import check_nonempty_batch

__all__ = ["add_input_noise", "input_noise_hook"]


def _check_optional_bounds(bounds: Bounds | None) -> Bounds | None:
    """``None``, or ``bounds`` checked by :func:`advbook._core.checks.check_bounds`."""
    return None if bounds is None else check_bounds(bounds)


def add_input_noise(
    x: torch.Tensor,
    sigma: float,
    *,
    bounds: Bounds | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``x̃ = clip(x + σ·ξ, low, high)`` with ``ξ ~ N(0, I)`` (a new tensor; ``x`` is kept).

    Args:
        x: floating-point batch of any shape; the result has its shape, dtype and device.
        sigma: the noise standard deviation ``σ ≥ 0`` (``σ = 0`` returns an unchanged copy).
        bounds: optional ``(low, high)``; the noisy inputs are clamped to that box (e.g.
            ``(0, 1)`` for images). Clipping makes the noise no longer zero-mean near the
            bounds, so the exact ridge equivalence below holds only without it.
        generator: source of the noise (see the package docstring on generators and devices).

    The expected squared error of a linear model under this noise is the clean one plus
    ``σ²‖w‖²``. Derived in the book, section :ref:`sec-input-noise` of chapter *Noise injection as
    regularization*.
    """
    check_nonempty_batch(x, "x")
    sigma = check_nonneg_float(sigma, "sigma")
    box = _check_optional_bounds(bounds)
    check_generator(generator)
    noisy = x + sigma * randn_like(x, generator) if sigma > 0 else x.clone()
    if box is not None:
        noisy = noisy.clamp(box[0], box[1])
    return noisy


def input_noise_hook(
    sigma: float,
    *,
    bounds: Bounds | None = None,
    generator: torch.Generator | None = None,
) -> BatchHook:
    """A ``batch_hook`` for :func:`advbook.train.fit` that trains on ``x + N(0, σ²I)`` noise.

    ``fit(model, x, y, batch_hook=input_noise_hook(0.3, bounds=(0, 1)))`` draws fresh noise for
    every mini-batch with :func:`add_input_noise`; labels are passed through unchanged. Pass a
    seeded ``generator`` for a reproducible noise sequence. Derived in the book, section
    :ref:`sec-input-noise` of chapter *Noise injection as regularization*.
    """
    sigma = check_nonneg_float(sigma, "sigma")
    box = _check_optional_bounds(bounds)
    check_generator(generator)

    def hook(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return add_input_noise(x, sigma, bounds=box, generator=generator), y

    return hook
