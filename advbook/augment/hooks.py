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

from collections.abc import Mapping

import torch
from torch import nn

from .._core.checks import check_generator
from .adversarial import AdversarialAugment
from .base import Transform

__all__ = ["AugmentBatchHook", "as_batch_hook"]

class AugmentBatchHook:
    """The ``batch_hook`` returned by :func:`as_batch_hook`: ``hook(model, x, y) -> (x, y)``.

    ``state_dict()`` holds the states of the generators the stages draw from (the shared
    ``generator`` if one was passed, and every stage's own), so that :func:`advbook.train.fit`'s
    checkpoints resume the augmentation sequence exactly; ``load_state_dict`` restores them.
    """

    def __init__(
        self,
        stages: tuple[Transform | AdversarialAugment, ...],
        generator: torch.Generator | None,
        train_only: bool,
    ) -> None:
        self.stages = stages
        self.generator = generator
        self.train_only = train_only

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train_only and not model.training:
            return x, y
        for stage in self.stages:
            if isinstance(stage, AdversarialAugment):
                x = stage(model, x, y, generator=self.generator)
            else:
                with torch.no_grad():
                    x = stage(x, generator=self.generator)
        return x, y

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"generator": ..., "stages.0": ..., …}``: generator states (tensors only)."""
        state = {f"stages.{i}": stage.generator.get_state() for i, stage in enumerate(self.stages)}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the generator states saved by :meth:`state_dict` (missing keys are kept)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
        for i, stage in enumerate(self.stages):
            if f"stages.{i}" in state:
                stage.generator.set_state(state[f"stages.{i}"])

    def __repr__(self) -> str:
        inner = ", ".join(repr(stage) for stage in self.stages)
        return f"as_batch_hook({inner}, train_only={self.train_only})"


def as_batch_hook(
    *stages: Transform | AdversarialAugment,
    generator: torch.Generator | None = None,
    train_only: bool = True,
) -> AugmentBatchHook:
    """Turn one or more augmentation stages into ``hook(model, x, y) -> (x, y)`` for ``fit``.

    Args:
        stages: transforms and/or adversarial augmentations, applied in the given order
            (e.g. ``as_batch_hook(domain_randomization(), AdversarialAugment(attack, 0.5))``).
        generator: one generator shared by every stage; default: each stage's own.
        train_only: leave batches untouched when ``model.training`` is ``False``.

    Labels pass through unchanged. The model's mode is never changed by a hook (adversarial
    stages switch to eval mode for the attack and restore it). The hook's ``state_dict()``
    holds its generators' states, so ``fit(..., checkpoint=..., resume=True)`` resumes exactly.
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
    return AugmentBatchHook(stages, generator, bool(train_only))
