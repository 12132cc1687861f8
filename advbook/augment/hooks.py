"""Plug augmentations into the book's training loop :func:`advbook.train.fit` as a ``batch_hook``.

``fit`` calls ``batch_hook(model, x, y) -> (x, y)`` on every training batch. The hook built here
applies its stages in order,

    x ← T_k(… T_1(x)),

where a :class:`~advbook.augment.base.Transform` stage is called as ``T(x)`` (without autograd)
and an :class:`~advbook.augment.adversarial.AdversarialAugment` stage as ``T(model, x, y)``.
It acts only while the model is in train mode, so the same hook never alters evaluation.

Derived in the book, section :ref:`sec-augment-protocol` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

import torch
from torch import nn

from .._core.checks import check_generator
from ..train import BatchHook
from .adversarial import AdversarialAugment
from .base import Transform

__all__ = ["as_batch_hook"]

def as_batch_hook(
    *stages: Transform | AdversarialAugment,
    generator: torch.Generator | None = None,
    train_only: bool = True,
) -> BatchHook:
    """Turn one or more augmentation stages into ``hook(model, x, y) -> (x, y)`` for ``fit``.

    Args:
        stages: transforms and/or adversarial augmentations, applied in the given order
            (e.g. ``as_batch_hook(domain_randomization(), AdversarialAugment(attack, 0.5))``).
        generator: one generator shared by every stage; default: each stage's own.
        train_only: leave batches untouched when ``model.training`` is ``False``.

    Labels pass through unchanged. The model's mode is never changed by a hook (adversarial
    stages switch to eval mode for the attack and restore it).
    """
    if not stages:
        raise ValueError("as_batch_hook needs at least one Transform or AdversarialAugment")
    for i, stage in enumerate(stages):
        if not isinstance(stage, (Transform, AdversarialAugment)):
            raise TypeError(
                f"stage {i} must be a Transform or an AdversarialAugment, got "
                f"{type(stage).__name__}"
            )
    check_generator(generator)

    def hook(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if train_only and not model.training:
            return x, y
        for stage in stages:
            if isinstance(stage, AdversarialAugment):
                x = stage(model, x, y, generator=generator)
            else:
                with torch.no_grad():
                    x = stage(x, generator=generator)
        return x, y

    return hook
