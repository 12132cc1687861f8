"""Random erasing and cutout: overwrite one random rectangle per sample.

For sample ``i`` with box ``[top, top + h) × [left, left + w)`` and value ``v_i``:

    x'_i(p) = v_i   if p lies in the box,   x'_i(p) = x_i(p)   otherwise.

Random erasing (Zhong et al., 2020) draws the box's area ``A ~ U(scale)·H·W`` and aspect ratio
``log ρ ~ U(log ρ_min, log ρ_max)``, so ``h = round(√(Aρ))``, ``w = round(√(A/ρ))`` (clipped to
the image; a box that rounds to zero pixels erases nothing), and a uniform position inside the
image; cutout (DeVries & Taylor, 2017) is the square special case. Masks are built for the whole
batch at once by comparing index grids with the boxes.

Every transform here also takes the keyword arguments ``p``, ``bounds``, ``seed`` and
``check_bounds`` of :class:`~advbook.augment.base.Transform`.

Derived in the book, section :ref:`sec-augment-erasing` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from .._core.checks import check_fraction
from .._core.random import rand_on
from .base import Params, Shape4, Transform, check_range, uniform

__all__ = ["Cutout", "RandomErasing"]


class RandomErasing(Transform):
    """Erase one random rectangle per sample (see the module docstring).

    Args:
        scale: range of the box area as a fraction of ``H·W``.
        ratio: range of the aspect ratio ``h/w`` (drawn log-uniformly).
        value: the fill, a number inside ``bounds``, or ``"random"`` for a per-sample value drawn
            uniformly in ``bounds``.

    Parameters: ``box (N×4)`` int64 ``(top, left, height, width)`` in pixels; ``value (N)``.
    A box of zero height or width erases nothing.
    """

    def __init__(
        self,
        scale: Sequence[float] = (0.02, 0.25),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | str = 0.0,
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.scale = check_range(scale, "scale", low=0.0, high=1.0)
        self.ratio = check_range(ratio, "ratio", low=1e-6)
        lo, hi = self.bounds
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"value must be a number or 'random', got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be a number or 'random', got {value!r}")
        elif not lo <= float(value) <= hi:
            raise ValueError(f"value must lie inside bounds {self.bounds}, got {value!r}")
        self.value: float | str = value if isinstance(value, str) else float(value)

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        n, _, h, w = shape
        u = rand_on(generator, n, 5, dtype=torch.float64)
        area = uniform(u[:, 0], self.scale) * (h * w)
        rho = torch.exp(uniform(u[:, 1], (math.log(self.ratio[0]), math.log(self.ratio[1]))))
        bh = torch.sqrt(area * rho).round().clamp(0, h)
        bw = torch.sqrt(area / rho).round().clamp(0, w)
        top = torch.floor(u[:, 2] * (h - bh + 1))
        left = torch.floor(u[:, 3] * (w - bw + 1))
        box = torch.stack([top, left, bh, bw], -1).long()
        if self.value == "random":
            value = uniform(u[:, 4], self.bounds)
        else:
            value = torch.full_like(u[:, 4], float(self.value))
        return {"box": box, "value": value.float()}

    def _identity_params(self, shape: Shape4) -> Params:
        n = shape[0]
        return {"box": torch.zeros(n, 4, dtype=torch.long), "value": torch.zeros(n)}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (params["box"][:, 2] <= 0) | (params["box"][:, 3] <= 0)

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        _, _, h, w = x.shape
        top, left, bh, bw = (b.view(-1, 1, 1, 1) for b in params["box"].unbind(-1))
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        mask = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
        return torch.where(mask, params["value"].view(-1, 1, 1, 1).to(x.dtype), x)

    def __repr__(self) -> str:
        return (f"RandomErasing(scale={self.scale}, ratio={self.ratio}, value={self.value!r}, "
                f"p={self.p})")


class Cutout(RandomErasing):
    """Cutout: erase a square of side ``size·√(H·W)`` (``size·H`` on square images) per sample.

    A :class:`RandomErasing` with ``scale = (size², size²)`` and ``ratio = (1, 1)``.
    """

    def __init__(
        self,
        size: float = 0.4,
        value: float | str = 0.0,
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        size = check_fraction(size, "size")
        super().__init__(
            scale=(size**2, size**2), ratio=(1.0, 1.0), value=value, p=p, bounds=bounds,
            seed=seed, check_bounds=check_bounds,
        )
        self.size = size

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, value={self.value!r}, p={self.p})"
