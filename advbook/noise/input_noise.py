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

from collections.abc import Mapping

import torch
from torch import nn

from .._core.checks import check_bounds, check_generator, check_nonneg_float
from .._core.random import randn_like
from .._core.types import Bounds
from ._common import check_nonempty_batch

__all__ = ["InputNoiseHook", "add_input_noise", "input_noise_hook"]


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
    check_nonempty_batch(x, "x", where="add_input_noise")
    sigma = check_nonneg_float(sigma, "sigma")
    box = _check_optional_bounds(bounds)
    check_generator(generator)
    return _noisy(x, sigma, box, generator)


def _noisy(
    x: torch.Tensor, sigma: float, box: Bounds | None, generator: torch.Generator | None
) -> torch.Tensor:
    """``clip(x + σ·ξ)`` for checked arguments."""
    noisy = x + sigma * randn_like(x, generator) if sigma > 0 else x.clone()
    if box is not None:
        noisy = noisy.clamp(box[0], box[1])
    return noisy


class InputNoiseHook:
    """The ``batch_hook`` returned by :func:`input_noise_hook`: ``(model, x, y) -> (x̃, y)``.

    Checks the batch's type and shape only (no host synchronisation per batch); a NaN or inf
    in the data is caught by :func:`advbook.train.fit`'s stop on a non-finite loss.
    ``state_dict()`` holds the state of the generator (``{}`` without one), so that ``fit``'s
    checkpoints resume the noise sequence exactly.
    """

    def __init__(
        self, sigma: float, bounds: Bounds | None, generator: torch.Generator | None
    ) -> None:
        self.sigma = sigma
        self.bounds = bounds
        self.generator = generator

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_nonempty_batch(x, "x", finite=False, where="input_noise_hook")
        return _noisy(x, self.sigma, self.bounds, self.generator), y

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"generator": state}`` of the owned generator, or ``{}`` when there is none."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"input_noise_hook(sigma={self.sigma}, bounds={self.bounds})"


def input_noise_hook(
    sigma: float,
    *,
    bounds: Bounds | None = None,
    generator: torch.Generator | None = None,
) -> InputNoiseHook:
    """A ``batch_hook`` for :func:`advbook.train.fit` that trains on ``x + N(0, σ²I)`` noise.

    ``fit(model, x, y, batch_hook=input_noise_hook(0.3, bounds=(0, 1)))`` draws fresh noise for
    every mini-batch with :func:`add_input_noise`; labels are passed through unchanged. Pass a
    seeded ``generator`` for a reproducible noise sequence; the hook's ``state_dict()`` holds its
    state, so ``fit(..., checkpoint=..., resume=True)`` continues it exactly. Derived in the
    book, section :ref:`sec-input-noise` of chapter *Noise injection as regularization*.
    """
    sigma = check_nonneg_float(sigma, "sigma")
    box = _check_optional_bounds(bounds)
    check_generator(generator)
    return InputNoiseHook(sigma, box, generator)
