"""A linear warm-up of the training radius ε, as an epoch callback."""

from __future__ import annotations

from typing import Any

from torch import nn

from .._core.checks import check_nonneg_float, check_positive_int

__all__ = ["EpsilonRamp"]


class EpsilonRamp:
    """Ramp the radius of a training recipe linearly: ``ε_t = ε · min(1, t / warmup)``.

    Adversarial training at a large radius from a random initialisation can stall at chance
    accuracy for several epochs (on MNIST at ε = 0.3 the inner maximiser already destroys every
    digit the untrained model could learn from); starting small and growing ε over the first
    ``warmup`` epochs avoids that. Epoch ``t = 1, 2, …`` trains at ``ε_t``; after ``warmup``
    epochs the recipe trains at the full ``ε``. Derived in the book, section :ref:`sec-pgd-at` of
    chapter *Adversarial training*.

    Use as ``fit(..., objective=recipe, epoch_callbacks=[EpsilonRamp(recipe, ε, warmup)])``.
    Constructing it sets ``recipe.eps = ε_1``; after epoch ``t`` the call sets ``ε_{t+1}`` and
    returns ``{"train_eps": ε_t}`` (a history column). Resuming works because the recipe's
    ``state_dict()`` carries its current ``eps``.

    Args:
        recipe: any object with a float attribute ``eps`` (the recipes of
            :mod:`advbook.defenses`).
        eps: the final radius.
        warmup: number of epochs to reach it (``1``: no ramp).
    """

    def __init__(self, recipe: Any, eps: float, warmup: int) -> None:
        if not hasattr(recipe, "eps"):
            raise TypeError(f"recipe must have an attribute 'eps' (an advbook.defenses recipe), "
                            f"got {type(recipe).__name__}")
        self.recipe = recipe
        self.eps = check_nonneg_float(eps, "eps")
        self.warmup = check_positive_int(warmup, "warmup")
        recipe.eps = self.eps_at(1)

    def eps_at(self, epoch: int) -> float:
        """``ε_t = ε · min(1, t / warmup)`` for epoch ``t ≥ 1``."""
        return self.eps * min(1.0, epoch / self.warmup)

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        used = float(self.recipe.eps)
        self.recipe.eps = self.eps_at(epoch + 1)
        return {"train_eps": used}

    def __repr__(self) -> str:
        return f"EpsilonRamp(eps={self.eps:g}, warmup={self.warmup})"
