"""PGD adversarial training (Madry et al. 2018): train on the inner maximiser found by PGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_batch,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from .._core.warnings import training_time_attack
from ..attacks import pgd
from ._common import Recipe

__all__ = ["PGDATObjective", "pgd_at_objective"]


class PGDATObjective(Recipe):
    """The PGD-AT loss ``CE(f_θ(x'), y)`` at the PGD maximiser ``x'`` of the inner problem.

    Madry et al. (2018) train on the robust (min-max) objective ::

        min_θ  E_(x,y) [ max_{‖δ‖ ≤ ε, x+δ ∈ box}  CE(f_θ(x + δ), y) ]

    and approximate the inner maximum by projected gradient ascent
    (:func:`advbook.attacks.pgd`, ``steps`` steps of size ``α`` from a uniform random start).
    By Danskin's theorem the gradient of the inner maximum with respect to θ is the gradient
    of the loss *at* the maximiser, ``∇_θ CE(f_θ(x'), y)`` with ``x'`` held fixed, which is what
    this objective returns. Motivated in the book, sections :ref:`sec-min-max` and
    :ref:`sec-danskin`; the recipe is derived in section :ref:`sec-pgd-at` of chapter *Adversarial
    training*.

    BatchNorm: ``x'`` is generated with the model in eval mode (running statistics are used and
    left unchanged); the loss pass then runs in the mode the model was called in (train mode
    under :func:`~advbook.train.fit`), so BatchNorm running statistics are updated from the
    **adversarial batch only** — the clean batch is never passed through the model in train
    mode.

    Calling ``objective(model, x, y)`` returns ``(loss, logits)`` with the logits on ``x'`` (so
    ``fit`` reports accuracy on the training adversarial examples).

    Args:
        eps: radius of the ε-ball.
        steps: PGD steps of the inner maximisation (``≥ 1``).
        alpha: PGD step size, default ``2.5·ε/steps``.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform point of the ball (Madry et al. do).
        restarts: random restarts, the worst case kept per sample (default 1).
        bounds: valid input range.
        generator: source of the random starts (``None``: the global RNG).
    """

    def __init__(
        self,
        eps: float,
        *,
        steps: int = 10,
        alpha: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(eps, bounds=bounds, generator=generator)
        self.steps = check_positive_int(steps, "steps")
        self.alpha = check_positive_float(alpha, "alpha", allow_none=True)
        self.norm = check_choice(norm, "norm", NORMS)
        if not isinstance(random_start, bool):
            raise TypeError(f"random_start must be a bool, got {type(random_start).__name__}")
        self.random_start = random_start
        self.restarts = check_positive_int(restarts, "restarts")
        if self.restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True (otherwise every restart is "
                             "the same attack)")

    @property
    def step_size(self) -> float:
        """The PGD step ``α`` actually used."""
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The inner maximiser ``x'`` (detached), computed in eval mode."""
        if self.eps == 0:
            return x.detach().clone()
        with training_time_attack():
            return pgd(
                model, x, y, eps=self.eps, alpha=self.step_size, steps=self.steps,
                norm=self.norm, random_start=self.random_start, restarts=self.restarts,
                bounds=self.bounds, generator=self.generator, select="max_loss",
            )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(model, x, y, "pgd_at_objective")
        x_adv = self.adversarial_examples(model, x, y)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps, "steps": self.steps, "alpha": self.step_size, "norm": self.norm,
                "random_start": self.random_start, "restarts": self.restarts}


def pgd_at_objective(
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> PGDATObjective:
    """PGD adversarial training (Madry et al. 2018) as an ``objective`` for ``fit``.

    Loss ``CE(f_θ(x'), y)`` with ``x' ≈ argmax_{‖x'−x‖≤ε} CE(f_θ(x'), y)`` found by PGD; see
    :class:`PGDATObjective`. Derived in the book, section :ref:`sec-pgd-at` of chapter
    *Adversarial training*.
    """
    return PGDATObjective(eps, steps=steps, alpha=alpha, norm=norm, random_start=random_start,
                          restarts=restarts, bounds=bounds, generator=generator)
