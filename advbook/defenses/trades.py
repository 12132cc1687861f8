"""TRADES (Zhang et al. 2019): clean cross-entropy plus β times a KL robustness regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.balls import project, projected_step
from .._core.checks import (
    NORMS,
    check_batch,
    check_bounds,
    check_choice,
    check_generator,
    check_in_bounds,
    check_model_device,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import eval_mode
from .._core.objectives import kl_objective, objective_and_grad
from .._core.random import randn_like
from ._common import Recipe

__all__ = ["TRADESObjective", "trades_objective", "trades_perturb"]


def _kl_sum(logits_ref: Tensor, logits: Tensor) -> Tensor:
    """``Σᵢ KL(p_ref,i ‖ q_i)`` from logits, computed in log space (stable for tiny p)."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(logits_ref, dim=1),
                    reduction="sum", log_target=True)


def trades_perturb(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "linf",
    init_std: float = 0.001,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """The TRADES inner maximisation: ``x' ≈ argmax_{‖x'−x‖≤ε, x'∈box} KL(f(x) ‖ f(x'))``.

    With ``p = softmax(f(x))`` fixed (computed once) and ``q(x') = softmax(f(x'))``, projected
    gradient ascent on ``J(x') = Σᵢ KL(pᵢ ‖ q(x'ᵢ)) = Σᵢ Σ_k p_ik (log p_ik − log q_ik(x'ᵢ))``
    starts from a small Gaussian perturbation (the KL and its gradient vanish at ``x' = x``) ::

        x⁰  = clip(x + Π_ε(σ · z)),  z ~ N(0, I),  σ = init_std = 0.001
        xᵗ⁺¹ = clip_[lo, hi](x + Π_ε(xᵗ − x + α · sign(∇J(xᵗ))))      (L∞; L2: α · ∇J/‖∇J‖₂)

    and returns the last iterate, as in the reference implementation. ``α`` defaults to
    ``2.5·ε/steps``. The KL is summed over the batch, so each sample's step does not depend on
    the batch size. Derived in the book, section :ref:`sec-trades` of chapter *Adversarial
    training*.

    The model runs in eval mode (BatchNorm running statistics are used and not updated) and gets
    its modes back; only ``x'`` is differentiated (``torch.autograd.grad``), so parameters and
    their ``.grad`` are untouched. ``x`` is not modified.

    Returns:
        ``x'`` (detached) with x's shape, dtype and device, ``‖x' − x‖ ≤ ε``, inside ``bounds``.
    """
    name = "trades_perturb"
    check_batch(model, x, None, name)
    eps_ = check_nonneg_float(eps, "eps")
    steps = check_nonneg_int(steps, "steps")
    alpha_ = check_positive_float(alpha, "alpha", allow_none=True)
    norm = check_choice(norm, "norm", NORMS)
    init_std = check_nonneg_float(init_std, "init_std")
    box = check_bounds(bounds)
    generator = check_generator(generator)
    check_model_device(model, x, name)
    x0 = x.detach()
    check_in_bounds(x0, box, name)
    if x0.shape[0] == 0 or eps_ == 0:
        return x0.clone()
    step = alpha_ if alpha_ is not None else 2.5 * eps_ / max(steps, 1)
    with eval_mode(model, enable_grad=True):
        with torch.no_grad():
            logits_clean = model(x0)
        if not isinstance(logits_clean, Tensor) or logits_clean.ndim != 2:
            raise ValueError(f"{name}: model(x) must return logits (N, K)")
        start = x0 + project(init_std * randn_like(x0, generator), eps_, norm)
        return _kl_ascent(model, x0, start.clamp(*box), logits_clean,
                          _AscentSteps(eps_, step, steps, norm, box))


@dataclass(frozen=True)
class _AscentSteps:
    """The projected-ascent schedule of :func:`trades_perturb`."""

    eps: float
    step: float
    steps: int
    norm: str
    bounds: tuple[float, float]


def _kl_ascent(model: nn.Module, x0: Tensor, x_adv: Tensor, logits_clean: Tensor,
               schedule: _AscentSteps) -> Tensor:
    """``steps`` projected steepest-ascent steps on ``Σᵢ KL(p(x0ᵢ) ‖ q(x'ᵢ))`` from ``x_adv``."""
    objective = partial(kl_objective, logits_clean)
    for _ in range(schedule.steps):
        try:
            _, _, grad = objective_and_grad(model, x_adv, objective)
        except ValueError as err:
            raise ValueError(f"trades_perturb: {err}; TRADES needs a differentiable "
                             "model") from None
        with torch.no_grad():
            x_adv = projected_step(x0, x_adv, grad, schedule.step, schedule.eps, schedule.norm,
                                   schedule.bounds)
    return x_adv.detach()


class TRADESObjective(Recipe):
    """The TRADES loss ``CE(f_θ(x), y) + β · (1/N) Σᵢ KL(f_θ(xᵢ) ‖ f_θ(x'ᵢ))``.

    Zhang et al. (2019) bound the robust error by the natural error plus a boundary error and
    minimise the surrogate ::

        min_θ  E [ CE(f_θ(x), y) + β · max_{‖x'−x‖≤ε} KL(softmax f_θ(x) ‖ softmax f_θ(x')) ]

    The inner maximiser ``x'`` comes from :func:`trades_perturb` (PGD on the KL from a
    ``0.001·N(0, I)`` start, model in eval mode). In the outer loss ``x'`` is a constant but
    gradients flow through **both** ``f_θ(x)`` and ``f_θ(x')`` in the KL, as in the reference
    implementation. ``β`` trades clean accuracy (small β) for robustness (large β; the paper
    uses 1–6). Derived in the book, section :ref:`sec-trades` of chapter *Adversarial training*.

    BatchNorm: the inner maximisation runs in eval mode (statistics used, not changed); then the
    clean and the adversarial batch go through the model in two forward passes, clean first, in
    the mode the model was called in (train mode under :func:`~advbook.train.fit`): running
    statistics are updated from **both**, first the clean then the adversarial batch.

    Calling ``objective(model, x, y)`` returns ``(loss, logits on the clean x)``.

    Args:
        eps: radius of the ε-ball.
        beta: weight ``β ≥ 0`` of the KL term (``β = 0``: standard training, no attack).
        steps, alpha, norm, init_std: of the inner maximisation, see :func:`trades_perturb`.
        bounds: valid input range.
        generator: source of the Gaussian start (``None``: the global RNG).
    """

    def __init__(
        self,
        eps: float,
        beta: float = 6.0,
        *,
        steps: int = 10,
        alpha: float | None = None,
        norm: str = "linf",
        init_std: float = 0.001,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(eps, bounds=bounds, generator=generator)
        self.beta = check_nonneg_float(beta, "beta")
        self.steps = check_positive_int(steps, "steps")
        self.alpha = check_positive_float(alpha, "alpha", allow_none=True)
        self.norm = check_choice(norm, "norm", NORMS)
        self.init_std = check_nonneg_float(init_std, "init_std")

    @property
    def step_size(self) -> float:
        """The step ``α`` actually used."""
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The KL maximiser ``x'`` of :func:`trades_perturb` (``y`` is not used)."""
        return trades_perturb(
            model, x, eps=self.eps, steps=self.steps, alpha=self.alpha, norm=self.norm,
            init_std=self.init_std, bounds=self.bounds, generator=self.generator,
        )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(model, x, y, "trades_objective")
        x_adv = self.adversarial_examples(model, x) if self.beta > 0 else None
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if x_adv is None:
            return loss, logits
        kl = _kl_sum(logits, model(x_adv)) / x.shape[0]
        return loss + self.beta * kl, logits

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps, "beta": self.beta, "steps": self.steps,
                "alpha": self.step_size, "norm": self.norm, "init_std": self.init_std}


def trades_objective(
    eps: float,
    beta: float = 6.0,
    *,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "linf",
    init_std: float = 0.001,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> TRADESObjective:
    """TRADES (Zhang et al. 2019) as a ``fit`` objective: ``CE(f(x), y) + β·KL(f(x) ‖ f(x'))``.

    See :class:`TRADESObjective`. Derived in the book, section :ref:`sec-trades` of chapter
    *Adversarial training*.
    """
    return TRADESObjective(eps, beta, steps=steps, alpha=alpha, norm=norm, init_std=init_std,
                           bounds=bounds, generator=generator)
