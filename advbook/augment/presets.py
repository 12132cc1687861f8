"""Ready-made policies: mild augmentation, domain randomisation, RandAugment, test-domain shifts.

* :func:`mild_augmentation` — the classic MNIST recipe: small rotations, shifts and zooms.
* :func:`domain_randomization` — Tobin et al. (2017): randomise every nuisance factor (pose,
  background, contrast, gamma, blur, noise, occlusion) so widely that a new domain looks like
  one more variation; the ranges scale linearly with ``strength``.
* :class:`RandAugment` / :func:`rand_augment` — Cubuk et al. (2020): per sample, pick ``n`` of
  ``K`` operations uniformly without replacement and apply each at magnitude ``M``.
* :func:`domain_shift`, :func:`evaluation_domains`, :func:`apply_domain_shift` — the shifted test
  domains of the chapter: rotated, scaled, sheared, coloured background, noisy, blurred, and a
  held-out combination of several factors at once.

Derived in the book, sections :ref:`sec-augment-domain-randomization` and
:ref:`sec-augment-randaugment` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .._core.checks import check_float_in, check_nonneg_int
from .._core.random import generator_from_seed, rand_on
from .base import (
    Compose,
    Identity,
    Params,
    RepeatChannels,
    Shape4,
    Transform,
    resolve_seed,
)
from .erasing import RandomErasing
from .geometric import RandomAffine
from .noise import GaussianBlur, RandomGaussianNoise
from .photometric import (
    RandomBackground,
    RandomBrightness,
    RandomColorBackground,
    RandomContrast,
    RandomGamma,
)

__all__ = [
    "DOMAIN_SHIFTS",
    "RandAugment",
    "apply_domain_shift",
    "domain_randomization",
    "domain_shift",
    "evaluation_domains",
    "mild_augmentation",
    "rand_augment",
    "rand_augment_ops",
]

DOMAIN_SHIFTS: tuple[str, ...] = (
    "rotated",
    "scaled",
    "sheared",
    "colored_background",
    "noisy",
    "blurred",
    "held_out_combination",
)


_SEED_RANGE = 2**63 - 1


def _stage_seeds(seed: int) -> Iterator[int]:
    """Seeds for the stages of a preset, drawn from a generator seeded with ``seed``.

    The stages of a preset draw from the preset's generator when it is called; their own
    generators only matter when a stage is used on its own. Deriving their seeds from the
    preset's keeps the global generator untouched (one draw at most, for ``seed=None``) and
    gives every stage an independent stream.
    """
    generator = generator_from_seed(seed)
    while True:
        yield int(torch.randint(0, _SEED_RANGE, (), generator=generator, dtype=torch.int64))


def _check_out_channels(out_channels: int) -> None:
    if isinstance(out_channels, bool) or out_channels not in (1, 3):
        raise ValueError(f"out_channels must be 1 or 3, got {out_channels!r}")


class RandAugment(Compose):
    """Apply ``n`` of the ``K`` operations ``ops``, chosen per sample without replacement.

    For sample ``i`` a uniformly random subset ``S_i ⊂ {1..K}`` with ``|S_i| = n`` is drawn and
    ``x'_i = T_{k_n}(… T_{k_1}(x_i))`` for ``k_1 < … < k_n`` in ``S_i`` (operations run in list
    order; each op's own ``p`` still applies). The choice is stored in each op's ``apply``
    parameter, so the parameters replay exactly like those of :class:`Compose`. Every op runs on
    the whole batch and keeps only its chosen samples — no per-sample Python loop.

    Derived in the book, section :ref:`sec-augment-randaugment` of chapter *Neural data
    augmentation*.
    """

    def __init__(
        self,
        ops: Sequence[Transform],
        n: int = 2,
        *,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(ops, bounds=bounds, seed=seed, check_bounds=check_bounds)
        if not self.transforms:
            raise ValueError("RandAugment needs at least one operation")
        self.n = check_nonneg_int(n, "n", maximum=len(self.transforms))

    def _validate_shape(self, shape: Shape4) -> None:
        for i, t in enumerate(self.transforms):
            t._validate_shape(shape)
            if t.out_channels_for(shape[1]) != shape[1]:
                raise ValueError(f"RandAugment op {i} ({t!r}) changes the number of channels")

    def _shapes(self, shape: Shape4) -> list[Shape4]:
        self._validate_shape(shape)
        return [shape] * len(self.transforms)

    def _draw(self, shape: Shape4, generator: torch.Generator) -> Params:
        n_ops = len(self.transforms)
        scores = rand_on(generator, shape[0], n_ops)
        chosen = torch.zeros(shape[0], n_ops, dtype=torch.bool, device=generator.device)
        chosen.scatter_(1, scores.argsort(dim=1)[:, : self.n], True)
        params: Params = {}
        for i, t in enumerate(self.transforms):
            sub = t._draw(shape, generator)
            sub["apply"] = sub["apply"] & chosen[:, i]
            params.update({f"{i}.{k}": v for k, v in sub.items()})
        return params

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"RandAugment(n={self.n}, ops=[\n  {inner}\n])"


def rand_augment_ops(m: float = 5.0, *, seed: int | None = None) -> list[Transform]:
    """The operations of :func:`rand_augment` at magnitude ``m ∈ [0, 10]``, ``f = m/10``.

    Signed factors are drawn uniformly in ``±f·max``, unsigned ones in ``[0, f·max]``: identity,
    rotation (max 30°), x-shear and y-shear (30°), x- and y-translation (0.3 of the side),
    zoom (``1 ± 0.4``), brightness (0.4), contrast (``1 ± 0.8``), gamma (``[1/(1+2f), 1+2f]``),
    Gaussian noise (σ ≤ 0.3), blur (σ ≤ 1.5 px), erasing (area ≤ 0.25) and a textured
    background (intensity ≤ 0.5). The operations' own seeds derive from ``seed`` (default: a
    fresh one, see :class:`~advbook.augment.base.Transform`).
    """
    f = check_float_in(m, "magnitude m", 0.0, 10.0) / 10.0
    seeds = _stage_seeds(resolve_seed(seed))
    return [
        Identity(seed=next(seeds)),
        RandomAffine(degrees=30 * f, seed=next(seeds)),
        RandomAffine(shear=30 * f, seed=next(seeds)),
        RandomAffine(shear=(0.0, 0.0, -30 * f, 30 * f), seed=next(seeds)),
        RandomAffine(translate=(0.3 * f, 0.0), seed=next(seeds)),
        RandomAffine(translate=(0.0, 0.3 * f), seed=next(seeds)),
        RandomAffine(scale=(1 - 0.4 * f, 1 + 0.4 * f), seed=next(seeds)),
        RandomBrightness(0.4 * f, seed=next(seeds)),
        RandomContrast((1 - 0.8 * f, 1 + 0.8 * f), seed=next(seeds)),
        RandomGamma((1 / (1 + 2 * f), 1 + 2 * f), seed=next(seeds)),
        RandomGaussianNoise((0.0, 0.3 * f), seed=next(seeds)),
        GaussianBlur((0.0, 1.5 * f), radius=max(1, round(4.5 * f + 0.5)), seed=next(seeds)),
        RandomErasing(scale=(0.0, 0.25 * f), ratio=(0.5, 2.0), seed=next(seeds)),
        RandomBackground(intensity=(0.0, 0.5 * f), texture=(0.0, 0.3 * f), seed=next(seeds)),
    ]


def rand_augment(n: int = 2, m: float = 5.0, *, seed: int | None = None) -> RandAugment:
    """RandAugment-style policy: ``n`` random operations per sample at magnitude ``m ∈ [0, 10]``.

    See :func:`rand_augment_ops` for the operations and their ranges; ``seed=None`` draws a
    fresh seed (see :class:`~advbook.augment.base.Transform`).
    """
    seed = resolve_seed(seed)
    return RandAugment(rand_augment_ops(m, seed=seed), n, seed=seed)


def mild_augmentation(*, seed: int | None = None) -> Compose:
    """Classic mild MNIST augmentation: rotation ±10°, shifts ±10 %, zoom 0.9–1.1."""
    seed = resolve_seed(seed)
    stage = RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1), seed=next(_stage_seeds(seed)))
    return Compose([stage], seed=seed)


def domain_randomization(
    strength: float = 1.0, *, out_channels: int = 1, seed: int | None = None
) -> Compose:
    """Domain randomisation for light-on-dark digits; every range scales with ``strength ∈ [0, 2]``.

    With ``s = strength``, in this order (probability per sample in brackets):

    * affine (0.9): rotation ±45 s°, translation ±0.12 s, zoom ``[1 − 0.4 s, 1 + 0.25 s]``,
      x-shear ±30 s°;
    * erasing (0.25): area ≤ 0.15 s;
    * background (0.7): intensity ≤ min(1, 0.6 s), texture ≤ min(1, 0.4 s), ink
      ``[1 − 0.3 s, 1]`` — grayscale (:class:`RandomBackground`) for ``out_channels=1``,
      colour (:class:`RandomColorBackground`, RGB output) for ``out_channels=3``;
    * contrast ``1 ± 0.5 s`` (0.5), gamma ``[1/(1+s), 1+s]`` (0.5), brightness ±0.2 s (0.5);
    * blur σ ≤ 1.5 s px (0.4); Gaussian noise σ ≤ 0.3 s (0.5).
    """
    s = check_float_in(strength, "strength", 0.0, 2.0)
    _check_out_channels(out_channels)
    seed = resolve_seed(seed)
    seeds = _stage_seeds(seed)
    affine = RandomAffine(degrees=45 * s, translate=0.12 * s, scale=(1 - 0.4 * s, 1 + 0.25 * s),
                          shear=30 * s, p=0.9, seed=next(seeds))
    erasing = RandomErasing(scale=(0.0, 0.15 * s), ratio=(0.5, 2.0), p=0.25, seed=next(seeds))
    background: Transform
    if out_channels == 1:
        background = RandomBackground(
            intensity=(0.0, min(1.0, 0.6 * s)), texture=(0.0, min(1.0, 0.4 * s)),
            ink=(1 - 0.3 * s, 1.0), p=0.7, seed=next(seeds),
        )
    else:
        background = RandomColorBackground(
            background=(0.0, min(1.0, 0.6 * s)), foreground=(1 - 0.3 * s, 1.0), out_channels=3,
            p=0.7, seed=next(seeds),
        )
    photometric: list[Transform] = [
        RandomContrast((1 - 0.5 * s, 1 + 0.5 * s), p=0.5, seed=next(seeds)),
        RandomGamma((1 / (1 + s), 1 + s), p=0.5, seed=next(seeds)),
        RandomBrightness(0.2 * s, p=0.5, seed=next(seeds)),
        GaussianBlur((0.0, 1.5 * s), radius=max(1, round(4.5 * s + 0.5)), p=0.4,
                     seed=next(seeds)),
        RandomGaussianNoise((0.0, 0.3 * s), p=0.5, seed=next(seeds)),
    ]
    return Compose([affine, erasing, background, *photometric], seed=seed)


def _domain_stages(name: str, out_channels: int, seeds: Iterator[int]) -> list[Transform]:
    """The stages of the test domain ``name``, seeded from ``seeds``."""
    colour = RandomColorBackground((0.0, 0.6), (0.7, 1.0), out_channels=out_channels,
                                   seed=next(seeds))
    if name == "clean":
        return [Identity(seed=next(seeds))]
    if name == "rotated":
        return [RandomAffine(degrees=(30, 45), random_sign=True, seed=next(seeds))]
    if name == "scaled":
        return [RandomAffine(scale=(0.6, 0.7), seed=next(seeds))]
    if name == "sheared":
        return [RandomAffine(shear=(20, 30), random_sign=True, seed=next(seeds))]
    if name == "colored_background":
        return [colour]
    if name == "noisy":
        return [RandomGaussianNoise((0.2, 0.3), seed=next(seeds))]
    if name == "blurred":
        return [GaussianBlur((1.0, 1.5), seed=next(seeds))]
    if name == "held_out_combination":
        return [
            RandomAffine(degrees=(15, 25), scale=(0.75, 0.85), random_sign=True,
                         seed=next(seeds)),
            colour,
            GaussianBlur((0.6, 0.9), seed=next(seeds)),
            RandomGaussianNoise((0.05, 0.1), seed=next(seeds)),
        ]
    raise ValueError(f"unknown domain {name!r}; expected 'clean' or one of {DOMAIN_SHIFTS}")


def domain_shift(name: str, *, out_channels: int = 1, seed: int | None = None) -> Compose:
    """The test-domain shift ``name`` (``"clean"`` or one of ``DOMAIN_SHIFTS``).

    Every sample is shifted (``p = 1``); random magnitudes exclude mild values:

    * ``rotated``: angle ``±[30°, 45°]``; ``scaled``: zoom ``[0.6, 0.7]``; ``sheared``: x-shear
      ``±[20°, 30°]``;
    * ``colored_background``: RGB background in ``[0, 0.6]³``, ink in ``[0.7, 1]³``, seen as
      luminance by 1-channel models (``out_channels=1``) or as RGB (``out_channels=3``);
    * ``noisy``: Gaussian noise σ ∈ [0.2, 0.3]; ``blurred``: blur σ ∈ [1, 1.5] px;
    * ``held_out_combination``: rotation ``±[15°, 25°]`` with zoom ``[0.75, 0.85]``, coloured
      background, blur σ ∈ [0.6, 0.9] and noise σ ∈ [0.05, 0.1] all at once.

    Inputs must be 1-channel digits; the output has ``out_channels`` channels.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    _check_out_channels(out_channels)
    seed = resolve_seed(seed)
    seeds = _stage_seeds(seed)
    stages = _domain_stages(name, out_channels, seeds)
    if out_channels == 3 and name not in ("colored_background", "held_out_combination"):
        stages.append(RepeatChannels(3, seed=next(seeds)))
    return Compose(stages, seed=seed)


def evaluation_domains(
    *, out_channels: int = 1, seed: int | None = None, include_clean: bool = True
) -> dict[str, Compose]:
    """All test domains by name (``"clean"`` first when ``include_clean``), seeded distinctly.

    Domain ``i`` gets the seed ``seed + i``; ``seed=None`` draws a fresh ``seed`` first.
    """
    seed = resolve_seed(seed)
    names = (("clean",) if include_clean else ()) + DOMAIN_SHIFTS
    return {
        name: domain_shift(name, out_channels=out_channels, seed=seed + i)
        for i, name in enumerate(names)
    }


def apply_domain_shift(
    x: torch.Tensor, name: str, *, out_channels: int = 1, seed: int = 0
) -> torch.Tensor:
    """Shift the test images ``x`` (``N×1×H×W`` in ``[0, 1]``) into domain ``name``.

    Deterministic: the parameters come from a fresh generator seeded with ``seed``, so the same
    call always gives the same shifted test set (a fixed, reproducible test domain).
    """
    transform = domain_shift(name, out_channels=out_channels, seed=seed)
    return transform(x, generator=torch.Generator().manual_seed(seed))
