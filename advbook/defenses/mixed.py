"""The mixed clean/adversarial objective of Goodfellow, Shlens & Szegedy (2015)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.checks import check_batch, check_fraction
from .._core.warnings import training_time_attack
from ..attacks import fgsm
from ._common import Recipe

__all__ = ["MixedObjective", "mixed_objective"]

AttackFn = Callable[..., Tensor]


class MixedObjective(Recipe):
    """``α · CE(f_θ(x), y) + (1 − α) · CE(f_θ(x'), y)`` with ``x' = A(f_θ, x, y; ε)``.

    Goodfellow et al. (2015) regularise with the adversarial loss at the FGSM point
    ``x' = clip(x + ε · sign(∇ₓ CE(f_θ(x), y)))`` and used ``α = 0.5``. Any attack of the
    library's signature can replace FGSM (e.g. :func:`advbook.attacks.pgd`); it is called as
    ``attack(model, x, y, eps=ε, bounds=bounds, generator=generator)`` and ``x'`` is treated as
    a constant (no gradient flows through the attack), as in the paper. ``α = 1`` is standard
    training (the attack is skipped); ``α = 0`` trains on adversarial examples only. Derived in
    the book, section :ref:`sec-min-max` of chapter *Adversarial training* (the single-step
    approximation: section :ref:`sec-fgsm-at`).

    BatchNorm: ``x'`` is generated with the model in eval mode (running statistics used, not
    changed). Then the clean batch and the adversarial batch go through the model in two
    separate forward passes, clean first, in the mode the model was called in (train mode under
    :func:`~advbook.train.fit`): each BatchNorm layer normalises each batch with its own
    statistics and updates its running statistics from **both**, first the clean and then the
    adversarial batch (two momentum updates per step). With ``α = 1`` only the clean pass runs;
    with ``α = 0`` the clean pass still runs (weight 0) and still updates the statistics.

    Calling ``objective(model, x, y)`` returns ``(loss, logits on the clean x)``.

    Args:
        eps: attack radius.
        alpha: weight ``α ∈ [0, 1]`` of the clean loss.
        attack: the attack (default :func:`advbook.attacks.fgsm`); bind other hyper-parameters
            with :func:`functools.partial`.
        bounds: valid input range, passed to the attack.
        generator: passed to the attack (random starts); ``None``: the global RNG.
    """

    def __init__(
        self,
        eps: float,
        alpha: float = 0.5,
        *,
        attack: AttackFn | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(eps, bounds=bounds, generator=generator)
        self.alpha = check_fraction(alpha, "alpha")
        if attack is not None and not callable(attack):
            raise TypeError(f"attack must be callable as attack(model, x, y, eps=..., bounds=..., "
                            f"generator=...), got {type(attack).__name__}")
        self.attack: AttackFn = attack if attack is not None else fgsm

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """``x' = attack(model, x, y, eps=ε, ...)`` (detached)."""
        if self.eps == 0:
            return x.detach().clone()
        with training_time_attack():
            x_adv = self.attack(model, x, y, eps=self.eps, bounds=self.bounds,
                                generator=self.generator)
        if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
            got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
            raise ValueError(f"mixed_objective: the attack must return a tensor of shape "
                             f"{tuple(x.shape)}, got {got}")
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(model, x, y, "mixed_objective")
        x_adv = self.adversarial_examples(model, x, y) if self.alpha < 1 else None
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if x_adv is None:
            return loss, logits
        loss_adv = F.cross_entropy(model(x_adv), y)
        return self.alpha * loss + (1.0 - self.alpha) * loss_adv, logits

    def _fields(self) -> dict[str, object]:
        name = getattr(self.attack, "__name__", None) or repr(self.attack)
        return {"eps": self.eps, "alpha": self.alpha, "attack": name}


def mixed_objective(
    eps: float,
    alpha: float = 0.5,
    *,
    attack: AttackFn | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> MixedObjective:
    """Goodfellow et al. (2015): ``α·CE(f(x), y) + (1−α)·CE(f(x'), y)``, ``x'`` = FGSM at ε.

    See :class:`MixedObjective`. Derived in the book, section :ref:`sec-min-max` of chapter
    *Adversarial training*.
    """
    return MixedObjective(eps, alpha, attack=attack, bounds=bounds, generator=generator)
