"""Training for randomized smoothing: Gaussian augmentation, consistency and SmoothAdv.

A smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``
(:mod:`advbook.certify`) is only as good as its base classifier ``f`` is *under noise*. Three
recipes for :func:`advbook.train.fit` train ``f`` for it, each an ``objective(model, x, y) ->
(loss, log p̂)``:

* :func:`gaussian_augmentation_objective` — Cohen, Rosenfeld & Kolter (2019): cross-entropy on
  ``x + δ``, the same Gaussian noise the certificate assumes;
* :func:`consistency_objective` — Jeong & Shin (2020): the same cross-entropy plus a term that
  makes the predictions on different noisy copies of one input agree;
* :func:`smoothadv_objective` — Salman et al. (2019): cross-entropy on noisy copies of the
  worst case ``x'`` of the *smoothed* soft classifier within an ℓ2 ball (PGD).

Layout: the ``m`` noisy copies of every input go through the model in **one** forward pass of
``N·m`` rows, sample-major (row ``n·m + i`` is ``x_n + σ·z_{n,i}``); the noise ``z`` is one
draw of shape ``(N, m, *x.shape[1:])`` from ``advbook._core.random.draw_like`` with the
recipe's ``generator``, so a seeded CPU generator gives the same noise on every device, and the
generator's state is in ``state_dict()`` (``fit`` checkpoints resume the noise sequence).

The noise is **not clipped** to ``bounds``: Cohen et al.'s theorem is about Gaussian ``δ``, and
:func:`advbook.certify.certify` does not clip either; ``bounds`` only validates ``x`` (and, for
SmoothAdv, bounds ``x'``). This differs from ``input_noise_hook(sigma, bounds=...)``, which clips.

BatchNorm: the loss pass runs in the mode the model was called in (train mode under ``fit``),
so BatchNorm normalises with, and updates its running statistics from, the statistics of the
**noisy** ``N·m`` batch — the distribution the smoothed classifier queries. The clean batch
never goes through the model. SmoothAdv's inner maximisation runs in eval mode.

The second value returned, ``log p̂_n = log((1/m) Σ_i softmax f(x_n + δ_{n,i}))`` of shape
``(N, K)``, is the Monte-Carlo *soft* smoothed classifier (a valid logit vector), so ``fit``'s
``train_acc`` is the accuracy of the averaged noisy prediction.

The book compares Gaussian augmentation with consistency over three seeds in section
:ref:`sec-training-for-smoothing`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._core.balls import projected_step
from .._core.checks import (
    check_batch,
    check_in_bounds,
    check_nonneg_float,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import eval_mode
from .._core.objectives import objective_and_grad
from .._core.random import draw_like
from ._common import Recipe

__all__ = [
    "ConsistencyObjective",
    "GaussianAugmentationObjective",
    "SmoothAdvObjective",
    "consistency_objective",
    "gaussian_augmentation_objective",
    "smoothadv_objective",
]


# ------------------------------------------------------------------------------- helpers
def _draw_noise(x: Tensor, sigma: float, m: int, generator: torch.Generator | None) -> Tensor:
    """``σ·z`` with ``z ~ N(0, I)`` of shape ``(N, m, *x.shape[1:])``, one draw."""
    return sigma * draw_like("randn", x, generator, (x.shape[0], m, *x.shape[1:]))


def _noisy_copies(x: Tensor, noise: Tensor) -> Tensor:
    """The ``N·m`` rows ``x_n + noise_{n,i}``, sample-major, shape ``(N·m, *x.shape[1:])``."""
    return (x.unsqueeze(1) + noise).reshape(-1, *x.shape[1:])


def _grouped_logits(logits: object, n: int, m: int, where: str) -> Tensor:
    """The model's ``(N·m, K)`` logits as ``(N, m, K)``, after checking their shape."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != n * m:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{where}: model must return logits of shape (N·m, K) = ({n * m}, K) "
                         f"for the N·m noisy copies, got {shape}")
    return logits.reshape(n, m, logits.shape[1])


def _log_mean_probs(log_p: Tensor) -> Tensor:
    """``log((1/m) Σ_i p_i)`` from log-probabilities ``(N, m, K)``: ``(N, K)``, in log space."""
    return torch.logsumexp(log_p, dim=1) - math.log(log_p.shape[1])


def _check_call(recipe: Recipe, model: nn.Module, x: Tensor, y: Tensor, where: str) -> None:
    """Type and shape checks of a batch, a non-empty batch, ``x`` finite inside the bounds."""
    check_batch(model, x, y, where)
    if x.shape[0] == 0:
        raise ValueError(f"{where}: x must hold at least one example, got shape "
                         f"{tuple(x.shape)}")
    check_in_bounds(x, recipe.bounds, where)


class _NoiseRecipe(Recipe):
    """A recipe without a radius: ``σ``, ``m``, ``bounds`` and the generator state."""

    def __init__(self, sigma: float, m: int, *, bounds: tuple[float, float],
                 generator: torch.Generator | None) -> None:
        super().__init__(0.0, bounds=bounds, generator=generator)
        self.sigma = check_positive_float(sigma, "sigma")
        self.m = check_positive_int(m, "m")

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": state}`` when a generator is set, else ``{}`` (no radius to save)."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def _fields(self) -> dict[str, object]:
        return {"sigma": self.sigma, "m": self.m, "bounds": self.bounds}


# ------------------------------------------------------------------ Gaussian augmentation
class GaussianAugmentationObjective(_NoiseRecipe):
    """Gaussian data augmentation (Cohen et al. 2019): ``(1/m) Σ_i CE(f_θ(x + δ_i), y)``.

    The base classifier of a smoothed classifier is trained on the noise it will be queried
    with ::

        L(θ) = (1/N) Σ_n (1/m) Σ_{i=1..m} CE(f_θ(x_n + δ_{n,i}), y_n),   δ_{n,i} ~ N(0, σ²I),

    a Monte-Carlo estimate of ``E_δ CE(f_θ(x + δ), y)``; ``m > 1`` lowers its variance at
    ``m`` times the cost. The noise is drawn afresh for every batch and **not clipped** to
    ``bounds`` (as in Cohen et al., and as :func:`advbook.certify.certify` queries the model);
    ``bounds`` only checks that ``x`` lies inside. For small ``σ`` this is the Tikhonov
    regulariser of the book's section :ref:`sec-input-noise` (chapter *Noise injection as
    regularization*); train with the ``σ`` you will certify with.

    Calling ``objective(model, x, y)`` returns ``(loss, log p̂)`` with ``log p̂ (N, K)`` the log
    of the mean softmax over the ``m`` copies (see the module docstring, also for BatchNorm).

    Args:
        sigma: noise standard deviation ``σ > 0``.
        m: noise draws per input (``≥ 1``).
        bounds: valid input range of ``x`` (checked, one host synchronisation per batch).
        generator: source of the noise (``None``: the global RNG of ``x``'s device).
    """

    def __init__(self, sigma: float, *, m: int = 1, bounds: tuple[float, float] = (0.0, 1.0),
                 generator: torch.Generator | None = None) -> None:
        super().__init__(sigma, m, bounds=bounds, generator=generator)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        name = "gaussian_augmentation_objective"
        _check_call(self, model, x, y, name)
        n, m = x.shape[0], self.m
        logits = model(_noisy_copies(x, _draw_noise(x, self.sigma, m, self.generator)))
        grouped = _grouped_logits(logits, n, m, name)
        loss = F.cross_entropy(logits, y.repeat_interleave(m))
        return loss, _log_mean_probs(F.log_softmax(grouped, dim=2))


def gaussian_augmentation_objective(
    sigma: float,
    *,
    m: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> GaussianAugmentationObjective:
    """Gaussian augmentation (Cohen et al. 2019) as a ``fit`` objective.

    Loss ``(1/m) Σ_i CE(f(x + δ_i), y)`` with ``δ_i ~ N(0, σ²I)``, unclipped; see
    :class:`GaussianAugmentationObjective` and section :ref:`sec-input-noise`.
    """
    return GaussianAugmentationObjective(sigma, m=m, bounds=bounds, generator=generator)


# --------------------------------------------------------------------------- consistency
def _consistency_terms(log_p: Tensor) -> tuple[Tensor, Tensor]:
    """Batch means of ``(1/m) Σ_i KL(p̂ ‖ p_i)`` and ``H(p̂)`` from log-probabilities ``(N, m, K)``.

    Computed in log space; gradients flow through ``p̂`` as well as through each ``p_i``.
    """
    log_mean = _log_mean_probs(log_p)
    mean = log_mean.exp()
    kl = (mean.unsqueeze(1) * (log_mean.unsqueeze(1) - log_p)).sum(dim=2).mean()
    entropy = -(mean * log_mean).sum(dim=1).mean()
    return kl, entropy


class ConsistencyObjective(_NoiseRecipe):
    """Consistency regularisation (Jeong & Shin 2020, *Consistency regularization for certified
    robustness of smoothed classifiers*, NeurIPS).

    For ``m`` noisy copies ``x + δ_i`` (``δ_i ~ N(0, σ²I)``, unclipped) with softmax outputs
    ``p_i = softmax f_θ(x + δ_i)`` and their mean ``p̂ = (1/m) Σ_i p_i`` ::

        L(θ) = (1/m) Σ_i CE(f_θ(x + δ_i), y)                 (Gaussian augmentation)
             + λ · (1/m) Σ_i KL(p̂ ‖ p_i)                     (consistency)
             + η · H(p̂),      H(p̂) = −Σ_k p̂_k log p̂_k       (entropy of the mean)

    averaged over the batch. The KL term is zero exactly when all copies give the same
    prediction: it pushes ``f`` to be constant under the noise, which the certified radius
    ``σ·Φ⁻¹(p_A)`` rewards (a larger ``p_A``). The entropy term keeps ``p̂`` from spreading out
    to satisfy the KL cheaply. ``(1/m) Σ_i KL(p̂ ‖ p_i) + H(p̂) = (1/m) Σ_i CE(p̂, p_i)``, so
    ``η = λ`` is the cross-entropy form; the paper's defaults are ``m = 2``, ``η = 0.5`` and
    ``λ ∈ {5, 10, 20}``. ``p̂`` is not detached (gradients flow
    through it, as in the reference implementation). With ``m = 1`` the KL term vanishes.
    ``λ = η = 0`` is Gaussian augmentation with ``m`` draws. Unlike the reference code, which
    splits each batch into ``m`` chunks, all ``N·m`` copies form one batch. Training with noise
    relates to the book's section :ref:`sec-input-noise`.

    Calling ``objective(model, x, y)`` returns ``(loss, log p̂)`` (see the module docstring,
    also for BatchNorm).

    Args:
        sigma: noise standard deviation ``σ > 0``.
        m: noisy copies per input (``≥ 1``; ``≥ 2`` for the KL term to act).
        lam: weight ``λ ≥ 0`` of the KL term.
        eta: weight ``η ≥ 0`` of the entropy term.
        bounds: valid input range of ``x`` (checked, one host synchronisation per batch).
        generator: source of the noise (``None``: the global RNG of ``x``'s device).
    """

    def __init__(self, sigma: float, *, m: int = 2, lam: float = 10.0, eta: float = 0.5,
                 bounds: tuple[float, float] = (0.0, 1.0),
                 generator: torch.Generator | None = None) -> None:
        super().__init__(sigma, m, bounds=bounds, generator=generator)
        self.lam = check_nonneg_float(lam, "lam")
        self.eta = check_nonneg_float(eta, "eta")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        name = "consistency_objective"
        _check_call(self, model, x, y, name)
        n, m = x.shape[0], self.m
        logits = model(_noisy_copies(x, _draw_noise(x, self.sigma, m, self.generator)))
        log_p = F.log_softmax(_grouped_logits(logits, n, m, name), dim=2)
        loss = F.cross_entropy(logits, y.repeat_interleave(m))
        kl, entropy = _consistency_terms(log_p)
        return loss + self.lam * kl + self.eta * entropy, _log_mean_probs(log_p)

    def _fields(self) -> dict[str, object]:
        return {**super()._fields(), "lam": self.lam, "eta": self.eta}


def consistency_objective(
    sigma: float,
    *,
    m: int = 2,
    lam: float = 10.0,
    eta: float = 0.5,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> ConsistencyObjective:
    """Consistency regularisation (Jeong & Shin 2020) as a ``fit`` objective.

    ``(1/m) Σ_i CE(f(x + δ_i), y) + λ·(1/m) Σ_i KL(p̂ ‖ p_i) + η·H(p̂)``, ``p̂`` the mean of the
    ``m`` softmaxes; see :class:`ConsistencyObjective` and sections :ref:`sec-input-noise` and
    :ref:`sec-training-for-smoothing`.
    """
    return ConsistencyObjective(sigma, m=m, lam=lam, eta=eta, bounds=bounds,
                                generator=generator)


# ------------------------------------------------------------------------------ SmoothAdv
class _SmoothedLogProbs(nn.Module):
    """``x' ↦ log((1/m) Σ_i softmax f(x' + noise_i))``, ``(N, K)``: the soft smoothed model."""

    def __init__(self, model: nn.Module, noise: Tensor, where: str) -> None:
        super().__init__()
        self.model = model
        self.noise = noise
        self.where = where

    def forward(self, x: Tensor) -> Tensor:
        n, m = self.noise.shape[:2]
        logits = self.model(_noisy_copies(x, self.noise))
        return _log_mean_probs(F.log_softmax(_grouped_logits(logits, n, m, self.where), dim=2))


class SmoothAdvObjective(Recipe):
    """SmoothAdv (Salman et al. 2019): train on noisy copies of the smoothed classifier's PGD point.

    The soft smoothed classifier ``G(x) = E_δ softmax f(x + δ)`` is estimated with ``m`` noise
    draws ``δ_i ~ N(0, σ²I)`` (unclipped), and its ℓ2 worst case is found by projected gradient
    ascent on ``J(x') = −log((1/m) Σ_i softmax f(x' + δ_i)_y)`` with the draws held fixed ::

        x⁰ = x,   xᵗ⁺¹ = clip_[lo, hi](x + Π_ε(xᵗ − x + α · ∇J(xᵗ)/‖∇J(xᵗ)‖₂)),

    ``α = 2ε/steps`` by default (Salman et al.'s setting, no random start), model in eval mode
    (BatchNorm statistics used, not changed; parameters and ``.grad`` untouched). The loss is
    Gaussian augmentation at ``x'`` with the **same** draws (Salman et al.'s multi-noise
    training) ::

        L(θ) = (1/m) Σ_i CE(f_θ(x' + δ_i), y),

    run in the mode the model was called in (train mode under ``fit``: BatchNorm sees the noisy
    adversarial batch only). ``eps`` is a plain attribute, so
    :class:`~advbook.defenses.EpsilonRamp` can warm it up as Salman et al. do; ``eps = 0`` is
    Gaussian augmentation. Attacking ``G`` rather than ``f`` is the point: PGD on
    ``CE(f(x' + δ))`` for each draw separately is a weaker attack on the smoothed classifier.
    Related sections of the book: :ref:`sec-pgd-at` (adversarial training) and
    :ref:`sec-input-noise` (training with noise).

    Calling ``objective(model, x, y)`` returns ``(loss, log p̂ at x')``.

    Args:
        eps: ℓ2 radius of the perturbation of ``x``.
        sigma: noise standard deviation ``σ > 0``.
        m: noise draws per input (``≥ 1``), shared by the attack and the loss.
        steps: PGD steps (``≥ 1``).
        alpha: step size, default ``2ε/steps``.
        bounds: valid input range; ``x`` must lie inside, ``x'`` is kept inside (the noisy
            copies are not).
        generator: source of the noise (``None``: the global RNG of ``x``'s device).
    """

    def __init__(self, eps: float, sigma: float, *, m: int = 1, steps: int = 10,
                 alpha: float | None = None, bounds: tuple[float, float] = (0.0, 1.0),
                 generator: torch.Generator | None = None) -> None:
        super().__init__(eps, bounds=bounds, generator=generator)
        self.sigma = check_positive_float(sigma, "sigma")
        self.m = check_positive_int(m, "m")
        self.steps = check_positive_int(steps, "steps")
        self.alpha = check_positive_float(alpha, "alpha", allow_none=True)

    @property
    def step_size(self) -> float:
        """The PGD step ``α`` actually used."""
        return self.alpha if self.alpha is not None else 2.0 * self.eps / self.steps

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor,
                             noise: Tensor) -> Tensor:
        """The PGD point ``x'`` (detached) of the smoothed classifier with the draws ``noise``.

        ``noise`` has shape ``(N, m, *x.shape[1:])`` (already multiplied by ``σ``).
        """
        x0 = x.detach()
        if self.eps == 0:
            return x0.clone()
        smoothed = _SmoothedLogProbs(model, noise, "smoothadv_objective")
        x_adv = x0.clone()
        with eval_mode(model, enable_grad=True):
            for _ in range(self.steps):
                _, _, grad = objective_and_grad(
                    smoothed, x_adv, lambda lp: F.nll_loss(lp, y, reduction="none"))
                with torch.no_grad():
                    x_adv = projected_step(x0, x_adv, grad, self.step_size, self.eps, "l2",
                                           self.bounds)
        return x_adv.detach()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        name = "smoothadv_objective"
        _check_call(self, model, x, y, name)
        n, m = x.shape[0], self.m
        noise = _draw_noise(x, self.sigma, m, self.generator)
        x_adv = self.adversarial_examples(model, x, y, noise)
        logits = model(_noisy_copies(x_adv, noise))
        grouped = _grouped_logits(logits, n, m, name)
        loss = F.cross_entropy(logits, y.repeat_interleave(m))
        return loss, _log_mean_probs(F.log_softmax(grouped, dim=2))

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps, "sigma": self.sigma, "m": self.m, "steps": self.steps,
                "alpha": self.step_size, "bounds": self.bounds}


def smoothadv_objective(
    eps: float,
    sigma: float,
    *,
    m: int = 1,
    steps: int = 10,
    alpha: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> SmoothAdvObjective:
    """SmoothAdv (Salman et al. 2019) as a ``fit`` objective.

    ``(1/m) Σ_i CE(f(x' + δ_i), y)`` with ``x'`` the ℓ2 PGD point (radius ``ε``) of the
    Monte-Carlo soft smoothed classifier on the same draws ``δ_i ~ N(0, σ²I)``; see
    :class:`SmoothAdvObjective` and sections :ref:`sec-pgd-at` and :ref:`sec-input-noise`.
    """
    return SmoothAdvObjective(eps, sigma, m=m, steps=steps, alpha=alpha, bounds=bounds,
                              generator=generator)
