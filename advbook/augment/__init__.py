"""GPU-friendly data augmentation: batched, per-sample random transforms with replayable parameters.

Every transform is called as ``t(x, *, generator=None, params=None, return_params=False)`` on an
``N×C×H×W`` batch in ``bounds`` (default ``(0, 1)``), draws its parameters per sample from a
seeded :class:`torch.Generator`, works on ``x``'s device and dtype without per-sample Python
loops, and replays bit for bit when given the parameters it returned::

    from advbook import augment
    t = augment.domain_randomization(seed=0)
    x_aug, params = t(x, return_params=True)
    assert torch.equal(t(x, params=params), x_aug)
    history = fit(model, x, y, batch_hook=augment.as_batch_hook(t))

Modules: ``base`` (protocol, :class:`Compose`), ``geometric`` (random affine),
``photometric`` (brightness, contrast, gamma, backgrounds), ``noise`` (noise, blur),
``erasing`` (random erasing, cutout), ``adversarial`` (attack outputs as augmentation),
``presets`` (domain randomisation, RandAugment, test-domain shifts), ``hooks``
(``batch_hook`` for :func:`advbook.train.fit`).

Derived in the book, chapter *Neural data augmentation* (sections
:ref:`sec-augment-protocol`, :ref:`sec-augment-geometric`, :ref:`sec-augment-photometric`,
:ref:`sec-augment-noise`, :ref:`sec-augment-erasing`, :ref:`sec-augment-adversarial`,
:ref:`sec-augment-domain-randomization`, :ref:`sec-augment-randaugment`).
"""

from __future__ import annotations

import warnings

from .._core.types import Attack
from .adversarial import AdversarialAugment
from .base import Bounds, Compose, Identity, Params, RepeatChannels, Transform
from .erasing import Cutout, RandomErasing
from .geometric import RandomAffine, RandomRotation, affine_grid, affine_theta
from .hooks import AugmentBatchHook, as_batch_hook
from .noise import GaussianBlur, RandomGaussianNoise, gaussian_kernels
from .photometric import (
    RandomBackground,
    RandomBrightness,
    RandomColorBackground,
    RandomContrast,
    RandomGamma,
)
from .presets import (
    DOMAIN_SHIFTS,
    RandAugment,
    apply_domain_shift,
    domain_randomization,
    domain_shift,
    evaluation_domains,
    mild_augmentation,
    rand_augment,
    rand_augment_ops,
)

__all__ = [
    "DOMAIN_SHIFTS",
    "AdversarialAugment",
    "Attack",
    "AugmentBatchHook",
    "Bounds",
    "Compose",
    "Cutout",
    "GaussianBlur",
    "Identity",
    "Params",
    "RandAugment",
    "RandomAffine",
    "RandomBackground",
    "RandomBrightness",
    "RandomColorBackground",
    "RandomContrast",
    "RandomErasing",
    "RandomGamma",
    "RandomGaussianNoise",
    "RandomRotation",
    "RepeatChannels",
    "Transform",
    "affine_grid",
    "affine_theta",
    "apply_domain_shift",
    "as_batch_hook",
    "domain_randomization",
    "domain_shift",
    "evaluation_domains",
    "gaussian_kernels",
    "mild_augmentation",
    "rand_augment",
    "rand_augment_ops",
]

#: Deprecated names and the objects that replaced them (see :func:`__getattr__`).
_DEPRECATED = {"GaussianNoise": ("RandomGaussianNoise", RandomGaussianNoise)}


def __getattr__(name: str) -> object:
    """Resolve deprecated names with a ``DeprecationWarning`` (PEP 562)."""
    if name in _DEPRECATED:
        new_name, obj = _DEPRECATED[name]
        warnings.warn(
            f"advbook.augment.{name} is deprecated; use advbook.augment.{new_name} (the noise "
            f"layer advbook.noise.GaussianNoise is a different class)",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
