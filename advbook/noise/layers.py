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
from typing import Any, Literal

import torch
from torch import nn

from .._core.checks import check_generator, check_nonneg_float
from .._core.random import randn_like
from ._common import check_floating

__all__ = ["GaussianDropout", "GaussianNoise", "noisy_mlp"]


class _NoiseLayer(nn.Module):
    """Shared parts of the noise layers: the cheap input check and the generator's state.

    The generator state is the layer's *extra state* (``model.state_dict()`` holds
    ``{"generator": state}``, or ``{}`` without a generator; it loads with
    ``torch.load(weights_only=True)``), so that checkpoints resume the noise exactly. State dicts
    saved before this key existed still load with ``strict=True``.
    """

    generator: torch.Generator | None

    def _check(self, x: object) -> torch.Tensor:
        """Type and dtype only: no host synchronisation in the forward pass. NaN or inf in
        ``x`` is left to :func:`advbook.train.fit`, which stops on a non-finite loss."""
        return check_floating(x, "x", type(self).__name__)

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"{type(self).__name__}: extra state must be a dict, got "
                            f"{type(state).__name__}")
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    # long: nn.Module's signature of this hook takes seven arguments
    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
        strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys:  # saved before the key existed
            missing_keys.remove(key)


class GaussianNoise(_NoiseLayer):
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
        self._check(x)
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * randn_like(x, self.generator)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class GaussianDropout(_NoiseLayer):
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
        self._check(x)
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
