"""Fast adversarial training: FGSM-AT with a random start (Wong, Rice & Kolter 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.checks import NORMS, check_batch, check_choice, check_positive_float
from .._core.warnings import training_time_attack
from ..attacks import fgsm
from ._common import Recipe

__all__ = ["FGSMATObjective", "fgsm_at_objective"]


class FGSMATObjective(Recipe):
    """The FGSM-AT loss ``CE(f_θ(x'), y)`` at a one-step approximation ``x'`` of the maximiser.

    The inner maximum of the min-max objective is approximated by one signed-gradient step,
    from a uniform random point of the ball when ``random_start`` ("fast is better than free",
    Wong et al. 2020) ::

        δ₀ ~ U[−ε, ε]^d,   x₀ = clip(x + δ₀)
        x' = clip(x + Π_ε(x₀ − x + α · sign(∇ₓ CE(f_θ(x₀), y))))        (L∞)

    with ``α = 1.25·ε`` by default, and ``x' = clip(x + ε · sign(∇ₓ CE(f_θ(x), y)))`` (plain
    FGSM, ``α = ε``) without the random start. Training on plain FGSM examples (or with too
    large an ``α``) is prone to *catastrophic overfitting*: within an epoch the model learns to
    defeat the single-step attack while its PGD accuracy collapses — watch for it with
    :class:`~advbook.defenses.CatastrophicOverfittingDetector`. Derived in the book, section
    :ref:`sec-fgsm-at` of chapter *Adversarial training* (failure mode: section
    :ref:`sec-catastrophic-overfitting`).

    BatchNorm: ``x'`` is generated with the model in eval mode (running statistics used, not
    changed); the loss pass runs in the mode the model was called in (train mode under
    :func:`~advbook.train.fit`), so BatchNorm running statistics come from the **adversarial
    batch only**.

    Calling ``objective(model, x, y)`` returns ``(loss, logits on x')``.

    Args:
        eps: radius of the ε-ball.
        alpha: step size; default ``1.25·ε`` with and ``ε`` without the random start.
        random_start: start from a uniform point of the ball (recommended).
        norm: ``"linf"`` (FGSM) or ``"l2"`` (FGM).
        bounds: valid input range.
        generator: source of the random start (``None``: the global RNG).
    """

    def __init__(
        self,
        eps: float,
        *,
        alpha: float | None = None,
        random_start: bool = True,
        norm: str = "linf",
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(eps, bounds=bounds, generator=generator)
        self.alpha = check_positive_float(alpha, "alpha", allow_none=True)
        if not isinstance(random_start, bool):
            raise TypeError(f"random_start must be a bool, got {type(random_start).__name__}")
        self.random_start = random_start
        self.norm = check_choice(norm, "norm", NORMS)

    @property
    def step_size(self) -> float:
        """The step ``α`` actually used."""
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.random_start else self.eps

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The one-step adversarial examples ``x'`` (detached)."""
        if self.eps == 0:
            return x.detach().clone()
        with training_time_attack():
            return fgsm(
                model, x, y, eps=self.eps, norm=self.norm, random_start=self.random_start,
                alpha=self.step_size, bounds=self.bounds, generator=self.generator,
            )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(model, x, y, "fgsm_at_objective")
        x_adv = self.adversarial_examples(model, x, y)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps, "alpha": self.step_size, "random_start": self.random_start,
                "norm": self.norm}


def fgsm_at_objective(
    eps: float,
    *,
    alpha: float | None = None,
    random_start: bool = True,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> FGSMATObjective:
    """FGSM adversarial training, "fast" random-start variant by default, as a ``fit`` objective.

    Loss ``CE(f_θ(x'), y)``, ``x' = clip(x + Π_ε(δ₀ + α·sign(∇ₓCE(f_θ(x + δ₀), y))))``,
    ``δ₀ ~ U[−ε, ε]^d``, ``α = 1.25·ε``; see :class:`FGSMATObjective`. Derived in the book,
    section :ref:`sec-fgsm-at` of chapter *Adversarial training*.
    """
    return FGSMATObjective(eps, alpha=alpha, random_start=random_start, norm=norm, bounds=bounds,
                           generator=generator)
