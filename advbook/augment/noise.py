"""Additive Gaussian noise and Gaussian blur with per-sample strengths.

* noise: ``x' = clip(x + σ_i r z)``, ``z ~ N(0, I)``, ``σ_i ~ U(sigma)`` a fraction of the value
  range ``r = hi − lo``; the draw ``z`` is part of the parameters so that replay is exact;
* blur:  ``x' = k_{σ_i} ∗ x`` with the separable, normalised Gaussian kernel
  ``k_σ(t) = exp(−t²/2σ²) / Σ_s exp(−s²/2σ²)``, ``t = −K..K`` (``K`` fixed per transform, default
  ``⌈3 σ_max⌉``), reflect padding; each sample gets its own kernel, applied to the whole batch
  at once — as ``B_h X B_wᵀ`` with reflect-padded band matrices for images up to 64 pixels
  (two batched matrix products, fastest on small images), else as a grouped convolution.

Every transform here also takes the keyword arguments ``p``, ``bounds``, ``seed`` and
``check_bounds`` of :class:`~advbook.augment.base.Transform`.

Derived in the book, section :ref:`sec-augment-noise` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .._core.checks import check_positive_int
from .base import Params, Shape4, Transform, check_range, sample_uniform

__all__ = ["GaussianBlur", "RandomGaussianNoise", "gaussian_kernels"]


class RandomGaussianNoise(Transform):
    """Additive Gaussian noise ``x' = x + σ·(hi − lo)·z`` with ``σ ~ U(sigma)`` per sample.

    (Kornia's name; not the noise *layer* :class:`advbook.noise.GaussianNoise`. The old name
    ``advbook.augment.GaussianNoise`` still works but is deprecated.)

    Parameters: ``sigma (N)``, ``noise (N×C×H×W)`` (the standard-normal draw ``z``).
    """

    def __init__(
        self,
        sigma: float | Sequence[float] = (0.0, 0.1),
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.sigma = check_range(sigma, "sigma", low=0.0)

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        sigma = sample_uniform(generator, shape[0], self.sigma)
        z = torch.randn(shape, generator=generator, device=generator.device)
        return {"sigma": sigma, "noise": z}

    def _identity_params(self, shape: Shape4) -> Params:
        return {"sigma": torch.zeros(shape[0]), "noise": torch.zeros(shape)}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return params["sigma"] == 0

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        lo, hi = self.bounds
        return x + params["sigma"].view(-1, 1, 1, 1) * (hi - lo) * params["noise"]

    def __repr__(self) -> str:
        return f"RandomGaussianNoise(sigma={self.sigma}, p={self.p})"


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``N×(2K+1)``, ``k(t) ∝ exp(−t²/2σ²)``, ``t = −K..K``.

    ``σ = 0`` (clamped to 1e-6) gives the unit impulse, i.e. no blur.
    """
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    s = sigma.clamp_min(1e-6)[:, None]
    k = torch.exp(-(t[None, :] ** 2) / (2 * s**2))
    return k / k.sum(dim=1, keepdim=True)


_MATMUL_MAX_SIZE = 64


def reflect_band_matrix(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """``N×size×size`` matrices ``B`` with ``(B v)_i = Σ_t k(t) v_{reflect(i + t)}``.

    Applying ``B_h`` to the rows and ``B_w`` to the columns, ``B_h X B_wᵀ``, is the separable
    convolution with reflect padding (``reflect(−1) = 1``, ``reflect(size) = size − 2``). Built
    as ``B = Σ_t k(t) P_t`` with fixed 0/1 matrices ``P_t`` (an einsum, no atomic adds), so it is
    deterministic on every device.
    """
    taps = kernels.shape[1]
    radius = taps // 2
    device = kernels.device
    j = torch.arange(size, device=device)[:, None] + torch.arange(-radius, radius + 1,
                                                                   device=device)
    j = torch.where(j < 0, -j, j)
    j = torch.where(j > size - 1, 2 * (size - 1) - j, j)
    onehot = (j[:, :, None] == torch.arange(size, device=device)).to(kernels.dtype)
    return torch.einsum("nt,itj->nij", kernels, onehot)


def _blur_matmul(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Small images: two batched matrix products with reflect-padded band matrices."""
    h, w = x.shape[-2:]
    rows = reflect_band_matrix(k, h)
    cols = rows if h == w else reflect_band_matrix(k, w)
    return rows[:, None] @ x @ cols.transpose(1, 2)[:, None]


def _blur_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Large images: one grouped convolution per axis, a kernel per (sample, channel) group."""
    n, c, h, w = x.shape
    r = k.shape[1] // 2
    k = k.repeat_interleave(c, dim=0)
    flat = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    flat = F.conv2d(flat, k.view(n * c, 1, 1, 2 * r + 1), groups=n * c)
    flat = F.conv2d(flat, k.view(n * c, 1, 2 * r + 1, 1), groups=n * c)
    return flat.view(n, c, h, w)


class GaussianBlur(Transform):
    """Gaussian blur with a per-sample standard deviation ``σ ~ U(sigma)`` in pixels.

    Args:
        sigma: range of the blur's standard deviation (pixels).
        radius: half-width ``K`` of the kernel (size ``2K + 1``); default ``max(1, ⌈3 σ_max⌉)``.
            Replayed parameters with a larger ``σ`` are blurred with the same truncated kernel.

    Parameter: ``sigma (N)``.
    """

    def __init__(
        self,
        sigma: float | Sequence[float] = (0.1, 1.5),
        *,
        radius: int | None = None,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.sigma = check_range(sigma, "sigma", low=0.0)
        if radius is None:
            radius = max(1, math.ceil(3 * self.sigma[1]))
        self.radius = check_positive_int(radius, "radius")

    def _validate_shape(self, shape: Shape4) -> None:
        if self.radius >= min(shape[2], shape[3]):
            raise ValueError(
                f"GaussianBlur radius {self.radius} needs images larger than {self.radius} "
                f"pixels on each side for reflect padding, got {shape[2]}×{shape[3]}"
            )

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        return {"sigma": sample_uniform(generator, shape[0], self.sigma)}

    def _identity_params(self, shape: Shape4) -> Params:
        return {"sigma": torch.zeros(shape[0])}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return params["sigma"] == 0

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        k = gaussian_kernels(params["sigma"], self.radius)  # N×(2K+1)
        if max(x.shape[-2:]) <= _MATMUL_MAX_SIZE:
            return _blur_matmul(x, k)
        return _blur_conv(x, k)

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma}, radius={self.radius}, p={self.p})"
