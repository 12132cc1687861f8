"""Photometric transforms: brightness, contrast, gamma, and backgrounds for grayscale digits.

With bounds ``(lo, hi)`` and ``r = hi − lo``, per sample ``i``:

* brightness: ``x' = x + b_i r``;
* contrast:   ``x' = c_i x + (1 − c_i) μ_i``, ``μ_i`` the mean of image ``i`` (mean-preserving);
* gamma:      ``x' = lo + r ((x − lo)/r)^{γ_i}``, ``log γ_i`` uniform;
* background (grayscale): the ink ``α = (x − lo)/r`` is composited over a textured background,
  ``x' = lo + r (α k_i + (1 − α) B_i)``, ``B_i = clip(β_i + a_i T_i, 0, 1)`` with ``T_i`` a
  smooth random texture in ``[−1, 1]`` (a coarse uniform grid upsampled bilinearly);
* coloured background: the same compositing with RGB colours, ``x'_c = lo + r (α f_{i,c} +
  (1 − α) g_{i,c})``, returned as 3 channels or as its luminance
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (``out_channels = 1``) so that 1-channel models can read it.

Every transform here also takes the keyword arguments ``p``, ``bounds``, ``seed`` and
``check_bounds`` of :class:`~advbook.augment.base.Transform`.

Derived in the book, section :ref:`sec-augment-photometric` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .._core.checks import check_positive_int
from .._core.random import rand_on
from .base import Params, Shape4, Transform, check_range, sample_uniform, uniform

__all__ = [
    "RandomBackground",
    "RandomBrightness",
    "RandomColorBackground",
    "RandomContrast",
    "RandomGamma",
]

_LUMA = (0.299, 0.587, 0.114)


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars ``(N,)`` as ``N×1×1×1`` for broadcasting over images."""
    return t.view(-1, 1, 1, 1)


class RandomBrightness(Transform):
    """Additive brightness shift ``x' = x + b·(hi − lo)``, ``b ~ U(delta)``.

    ``delta`` is a fraction of the value range; a number ``d`` means ``(−d, d)``.
    Parameter: ``brightness (N)``.
    """

    def __init__(
        self,
        delta: float | Sequence[float] = 0.2,
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.delta = check_range(delta, "delta", symmetric=True, low=-1.0, high=1.0)

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        return {"brightness": sample_uniform(generator, shape[0], self.delta)}

    def _identity_params(self, shape: Shape4) -> Params:
        return {"brightness": torch.zeros(shape[0])}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return params["brightness"] == 0

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.bounds
        return x + _per_sample(params["brightness"]) * (hi - lo)

    def __repr__(self) -> str:
        return f"RandomBrightness(delta={self.delta}, p={self.p})"


class RandomContrast(Transform):
    """Mean-preserving contrast ``x' = c·x + (1 − c)·mean(x)``, ``c ~ U(factor)``, per image.

    Parameter: ``contrast (N)``.
    """

    def __init__(
        self,
        factor: Sequence[float] = (0.6, 1.4),
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.factor = check_range(factor, "factor", low=0.0)

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        return {"contrast": sample_uniform(generator, shape[0], self.factor)}

    def _identity_params(self, shape: Shape4) -> Params:
        return {"contrast": torch.ones(shape[0])}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return params["contrast"] == 1

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        c = _per_sample(params["contrast"])
        return c * x + (1 - c) * x.mean(dim=(1, 2, 3), keepdim=True)

    def __repr__(self) -> str:
        return f"RandomContrast(factor={self.factor}, p={self.p})"


class RandomGamma(Transform):
    """Gamma curve ``x' = lo + r·((x − lo)/r)^γ``, ``log γ ~ U(log γ_min, log γ_max)``.

    Parameter: ``gamma (N)``.
    """

    def __init__(
        self,
        gamma: Sequence[float] = (0.7, 1.5),
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.gamma = check_range(gamma, "gamma", low=1e-6)

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        log_range = (math.log(self.gamma[0]), math.log(self.gamma[1]))
        return {"gamma": torch.exp(sample_uniform(generator, shape[0], log_range))}

    def _identity_params(self, shape: Shape4) -> Params:
        return {"gamma": torch.ones(shape[0])}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return params["gamma"] == 1

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.bounds
        r = hi - lo
        return lo + r * ((x - lo) / r).clamp(0, 1).pow(_per_sample(params["gamma"]))

    def __repr__(self) -> str:
        return f"RandomGamma(gamma={self.gamma}, p={self.p})"


def _upsampling_matrix(grid: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """``size×grid`` matrix of 1-D linear interpolation weights (``align_corners=False``)."""
    eye = torch.eye(grid, device=like.device, dtype=like.dtype)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0, :].T


def _texture(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Upsample a coarse ``N×1×g×g`` grid bilinearly to ``N×1×H×W``.

    Bilinear upsampling is separable, ``T = U_h C U_wᵀ``; two small matrix products are much
    faster on the CPU than :func:`torch.nn.functional.interpolate` on a batch of tiny grids.
    """
    g = coarse.shape[-1]
    return _upsampling_matrix(g, height, coarse) @ coarse @ _upsampling_matrix(g, width, coarse).T


class RandomBackground(Transform):
    """Grayscale background for light-on-dark digits (keeps the channel count).

    ``x' = lo + r·(α k + (1 − α) B)``, ``α = (x − lo)/r`` the ink, ``k ~ U(ink)`` the ink
    intensity and ``B = clip(β + a T, 0, 1)`` with ``β ~ U(intensity)``, ``a ~ U(texture)`` and
    ``T`` a smooth random texture (a ``grid×grid`` uniform ``[−1, 1]`` grid upsampled).
    Intensities are fractions of the value range. Every channel gets the same background.

    Parameters: ``intensity (N)``, ``amplitude (N)``, ``texture (N×1×grid×grid)``, ``ink (N)``.
    """

    def __init__(
        self,
        intensity: Sequence[float] = (0.0, 0.5),
        texture: Sequence[float] = (0.0, 0.3),
        ink: Sequence[float] = (1.0, 1.0),
        *,
        grid: int = 4,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.intensity = check_range(intensity, "intensity", low=0.0, high=1.0)
        self.texture = check_range(texture, "texture", low=0.0, high=1.0)
        self.ink = check_range(ink, "ink", low=0.0, high=1.0)
        self.grid = check_positive_int(grid, "grid")

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        n, g = shape[0], self.grid
        u = rand_on(generator, n, 3)
        coarse = rand_on(generator, n, 1, g, g)
        return {
            "intensity": uniform(u[:, 0], self.intensity),
            "amplitude": uniform(u[:, 1], self.texture),
            "texture": 2 * coarse - 1,
            "ink": uniform(u[:, 2], self.ink),
        }

    def _identity_params(self, shape: Shape4) -> Params:
        n, g = shape[0], self.grid
        return {
            "intensity": torch.zeros(n),
            "amplitude": torch.zeros(n),
            "texture": torch.zeros(n, 1, g, g),
            "ink": torch.ones(n),
        }

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (params["intensity"] == 0) & (params["amplitude"] == 0) & (params["ink"] == 1)

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.bounds
        r = hi - lo
        alpha = ((x - lo) / r).clamp(0, 1)
        tex = _texture(params["texture"], x.shape[2], x.shape[3])
        bg = (_per_sample(params["intensity"]) + _per_sample(params["amplitude"]) * tex).clamp(0, 1)
        # lo + r (α k + (1 − α) B) = (lo + r B) + α · r (k − B)
        return torch.addcmul(lo + r * bg, alpha, r * (_per_sample(params["ink"]) - bg))

    def __repr__(self) -> str:
        return (f"RandomBackground(intensity={self.intensity}, texture={self.texture}, "
                f"ink={self.ink}, p={self.p})")


class RandomColorBackground(Transform):
    """Coloured digits on coloured backgrounds for 1-channel inputs.

    ``x'_c = lo + r·(α f_c + (1 − α) g_c)`` with ``α = (x − lo)/r``, background colour
    ``g ~ U(background)³`` and foreground (ink) colour ``f ~ U(foreground)³``, one RGB triple
    per sample (fractions of the value range).

    Channels: the input must have **1** channel (its value is the ink). ``out_channels=3``
    returns RGB; ``out_channels=1`` returns the luminance ``Y = 0.299 R + 0.587 G + 0.114 B``,
    the grayscale image a 1-channel MNIST model sees when shown the coloured digit.
    Samples that are not transformed are replicated to ``out_channels`` unchanged.

    Parameters: ``background (N×3)``, ``foreground (N×3)``.
    """

    def __init__(
        self,
        background: Sequence[float] = (0.0, 0.6),
        foreground: Sequence[float] = (0.7, 1.0),
        *,
        out_channels: int = 3,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.background = check_range(background, "background", low=0.0, high=1.0)
        self.foreground = check_range(foreground, "foreground", low=0.0, high=1.0)
        if out_channels not in (1, 3) or isinstance(out_channels, bool):
            raise ValueError(f"out_channels must be 1 (luminance) or 3 (RGB), got {out_channels!r}")
        self.out_channels = out_channels

    def out_channels_for(self, channels: int) -> int:
        return self.out_channels

    def _validate_shape(self, shape: Shape4) -> None:
        if shape[1] != 1:
            raise ValueError(
                f"RandomColorBackground expects grayscale inputs with 1 channel (the ink), got "
                f"{shape[1]} channels"
            )

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        u = rand_on(generator, shape[0], 6)
        return {
            "background": uniform(u[:, :3], self.background),
            "foreground": uniform(u[:, 3:], self.foreground),
        }

    def _identity_params(self, shape: Shape4) -> Params:
        n = shape[0]
        return {"background": torch.zeros(n, 3), "foreground": torch.ones(n, 3)}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (params["background"] == 0).all(-1) & (params["foreground"] == 1).all(-1)

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.bounds
        r = hi - lo
        alpha = ((x - lo) / r).clamp(0, 1)
        bg, fg = params["background"], params["foreground"]
        if self.out_channels == 1:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)
            bg, fg = (bg @ luma)[:, None], (fg @ luma)[:, None]
        base = (lo + r * bg)[:, :, None, None]
        # lo + r (α f + (1 − α) g) = (lo + r g) + α · r (f − g), one fused broadcast kernel
        return torch.addcmul(base, alpha, (r * (fg - bg))[:, :, None, None])

    def __repr__(self) -> str:
        return (f"RandomColorBackground(background={self.background}, "
                f"foreground={self.foreground}, out_channels={self.out_channels}, p={self.p})")
