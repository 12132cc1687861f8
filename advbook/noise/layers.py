"""Hidden-unit noise layers, active only in training mode.

* :class:`GaussianNoise` — additive: ``h̃ = h + σ·ξ``, ``ξ ~ N(0, I)``.
* :class:`GaussianDropout` — multiplicative: ``h̃ = h ⊙ m``, ``m ~ N(1, p/(1−p))``, the Gaussian
  noise with the same mean and variance as (inverted) dropout with drop probability ``p``
  (Srivastava et al. 2014, §10).
* :func:`.noisy_mlp` — an MLP with one of these (or standard :class:`torch.nn.Dropout`, for
  comparison) after every hidden activation.

In evaluation mode all layers are the identity, so the deterministic network is what is tested.
Derived in the book, section :ref:`sec-hidden-noise` of chapter *Noise injection as regularization*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from .._core.checks import check_generator, check_nonneg_float
from .._core.random import randn_like

__all__ = ["GaussianDropout", "GaussianNoise", "noisy_mlp"]


class GaussianNoise(nn.Module):
    """Additive Gaussian noise ``h ↦ h + σ·ξ``, ``ξ ~ N(0, I)``, in training mode only.

    Args:
        sigma: standard deviation ``σ ≥ 0`` of the noise.
        generator: optional seeded ``torch.Generator`` the noise is drawn from (drawn on the
            generator's device, then moved to the input's device); default: PyTorch's global
            generator.

    ``E[h̃] = h`` and ``Var[h̃] = σ²`` elementwise. Derived in the book, section
    :ref:`sec-hidden-noise` of chapter *Noise injection as regularization*.
    """

    def __init__(self, sigma: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.sigma = check_nonneg_float(sigma, "sigma")
        check_generator(generator)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * randn_like(x, self.generator)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class GaussianDropout(nn.Module):
    """Multiplicative Gaussian noise ``h ↦ h ⊙ m``, ``m ~ N(1, α)``, ``α = p/(1−p)``, when training.

    Args:
        p: the drop probability of the standard (inverted) dropout being matched, ``0 ≤ p < 1``.
            Inverted dropout multiplies by ``b/(1−p)`` with ``b ~ Bernoulli(1−p)``, which has mean
            1 and variance ``p/(1−p)``; Gaussian dropout keeps these two moments, so
            ``E[h̃] = h`` (the mean is preserved) and ``Var[h̃] = h²·p/(1−p)``.
        generator: optional seeded ``torch.Generator`` (as for :class:`GaussianNoise`).

    Derived in the book, section :ref:`sec-hidden-noise` of chapter *Noise injection as
    regularization*.
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        p = check_nonneg_float(p, "p")
        if p >= 1:
            raise ValueError(f"p must satisfy 0 <= p < 1, got {p!r}")
        check_generator(generator)
        self.p = p
        self.generator = generator

    @property
    def alpha(self) -> float:
        """The variance ``α = p/(1−p)`` of the multiplicative noise."""
        return self.p / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (1.0 + math.sqrt(self.alpha) * randn_like(x, self.generator))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def noisy_mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (256,),
    num_classes: int = 10,
    *,
    noise: Literal["none", "gaussian", "gaussian_dropout", "dropout"] = "none",
    rate: float = 0.0,
    activation: type[nn.Module] = nn.ReLU,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """``Flatten → [Linear → act → noise]* → Linear``: an MLP with hidden-unit noise.

    Apart from the inserted noise layers the architecture is that of :class:`advbook.models.MLP`.
    The comparison of these noises is in the book, section :ref:`sec-hidden-noise` of chapter *Noise
    injection as regularization*.

    Args:
        noise: ``"gaussian"`` (:class:`GaussianNoise` with ``sigma=rate``), ``"gaussian_dropout"``
            (:class:`GaussianDropout` with ``p=rate``), ``"dropout"`` (standard
            :class:`torch.nn.Dropout` with ``p=rate``, for comparison) or ``"none"``.
        rate: ``σ`` for ``"gaussian"``, the drop probability ``p`` otherwise.
        generator: passed to the Gaussian layers (``nn.Dropout`` always uses the global one).
    """
    if in_features <= 0 or num_classes <= 0 or any(h <= 0 for h in hidden):
        raise ValueError(
            f"layer sizes must be positive, got in_features={in_features}, "
            f"hidden={tuple(hidden)}, num_classes={num_classes}"
        )
    kinds = ("none", "gaussian", "gaussian_dropout", "dropout")
    if noise not in kinds:
        raise ValueError(f"noise must be one of {kinds}, got {noise!r}")
    rate = check_nonneg_float(rate, "rate")
    if noise in ("gaussian_dropout", "dropout") and rate >= 1:
        raise ValueError(f"rate is a drop probability for noise={noise!r}: need 0 <= rate < 1")

    def make_noise() -> nn.Module:
        if noise == "gaussian":
            return GaussianNoise(rate, generator=generator)
        if noise == "gaussian_dropout":
            return GaussianDropout(rate, generator=generator)
        if noise == "dropout":
            return nn.Dropout(rate)
        return nn.Identity()

    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), activation(), make_noise()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
