"""Flatness and sharpness of a trained model's loss in weight space.

Every function here looks at the *dataset loss* as a function of the trainable parameters θ,

    L(θ) = (1/N)·Σ_i ℓ(f(x_i; θ), y_i),

and follows one calling convention::

    measure(model, loss_fn, x, y, *, batch_size=1000, generator=None, ...)

* ``model`` — any ``nn.Module``; its trainable parameters (``requires_grad``) are θ, everything else
  (frozen parameters, buffers) is held fixed. The model is **never changed**: the loss is
  evaluated with :func:`torch.func.functional_call` on a dictionary of (perturbed) parameter
  tensors, no ``.grad`` is written to the model's parameters, and the model is put in eval mode
  (so BatchNorm uses, and does not update, its running statistics; dropout is off) and restored to
  its previous train/eval modes afterwards, also when an error is raised.
* ``loss_fn(outputs, targets)`` — returns the **mean** loss over a batch as a 0-dim tensor (as
  ``F.cross_entropy`` does by default). The data are processed in chunks of ``batch_size`` and
  the chunk means are combined with weights n_chunk/N, so the result is the exact mean over
  ``(x, y)``. Functions that only evaluate the loss (landscapes, weight noise) accept any
  batch-mean metric, e.g. ``lambda out, y: (out.argmax(1) == y).float().mean()``.
* ``x, y`` — the data; chunks are moved to the model's device, so they may stay on the CPU.
* Directions in weight space are dictionaries ``{parameter name: tensor}`` shaped like the
  trainable parameters (:data:`ParamDict`). Random directions and probes are drawn from
  ``generator`` (a seeded ``torch.Generator``; ``None`` uses PyTorch's global generator).

Measures (derived in the book, chapter *Flat minima*, sections :ref:`sec-flat-minima`,
:ref:`sec-sharpness-measures` and :ref:`sec-loss-landscape`): Hessian-vector products, the top
Hessian eigenvalue by power iteration, the Hessian trace by Hutchinson's estimator, ε-sharpness
(Keskar et al. 2017) by projected ascent, the expected loss increase under Gaussian weight noise,
and 1-D and 2-D loss-landscape slices along filter-normalised random directions (Li et al. 2018).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from typing import Literal, NamedTuple, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from ._core.checks import (
    check_generator,
    check_module,
    check_nonneg_float,
    check_positive_float,
    check_positive_int,
)
from ._core.devices import model_device
from ._core.guard import eval_mode
from ._core.random import draw_like, rademacher_like, randn_like
from ._core.types import LossFn, ParamDict

__all__ = [
    "HessianEigen",
    "Landscape2D",
    "LossFn",
    "ParamDict",
    "Sharpness",
    "TraceEstimate",
    "WeightNoiseEstimate",
    "direction_between",
    "epsilon_sharpness",
    "expected_loss_increase",
    "filter_normalized_direction",
    "hessian_trace",
    "hessian_vector_product",
    "loss_landscape_1d",
    "loss_landscape_2d",
    "top_hessian_eigenvalue",
]

# --------------------------------------------------------------------------- results


class HessianEigen(NamedTuple):
    """Result of :func:`top_hessian_eigenvalue`."""

    eigenvalue: float
    eigenvector: ParamDict  # unit norm over all trainable parameters
    iterations: int
    converged: bool


class TraceEstimate(NamedTuple):
    """Result of :func:`hessian_trace`: the Hutchinson mean and its standard error."""

    trace: float
    stderr: float
    n_probes: int


class Sharpness(NamedTuple):
    """Result of :func:`epsilon_sharpness`.

    ``sharpness`` is Keskar et al.'s 100·(max_loss − loss)/(1 + loss); ``max_loss`` the largest loss
    found in the neighbourhood (a lower bound on the true maximum).
    """

    sharpness: float
    loss: float
    max_loss: float


class WeightNoiseEstimate(NamedTuple):
    """Result of :func:`expected_loss_increase`."""

    increase: float  # E[L(θ + ξ)] − L(θ)
    stderr: float  # Monte-Carlo standard error of ``increase``
    loss: float  # L(θ)
    perturbed_loss: float  # E[L(θ + ξ)]


class Landscape2D(NamedTuple):
    """Result of :func:`loss_landscape_2d`.

    ``loss[i, j]`` is the loss at θ + betas[i]·δ + alphas[j]·η (rows follow ``betas``), so
    ``plt.contour(alphas, betas, loss)`` draws it directly.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        """Long format: columns ``alpha``, ``beta``, ``loss``."""
        a, b = np.meshgrid(self.alphas, self.betas)
        return pd.DataFrame({"alpha": a.ravel(), "beta": b.ravel(), "loss": self.loss.ravel()})


# --------------------------------------------------------------------------- helpers


def _trainable(model: nn.Module) -> ParamDict:
    check_module(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    return params


def _dot(a: ParamDict, b: ParamDict) -> torch.Tensor:
    return cast(torch.Tensor, sum((a[n] * b[n]).sum() for n in a))  # sum() types as int | T


def _norm(a: ParamDict) -> torch.Tensor:
    return torch.sqrt(_dot(a, a))


def _add_scaled(alpha: float | torch.Tensor, x: ParamDict, y: ParamDict) -> ParamDict:
    """``y + alpha·x`` for every parameter name, out of place."""
    return {n: y[n] + alpha * x[n] for n in y}


def _check_direction(direction: object, params: ParamDict, name: str) -> ParamDict:
    if not isinstance(direction, Mapping):
        raise TypeError(
            f"{name} must be a dict {{parameter name: tensor}}, got {type(direction).__name__}"
        )
    if set(direction) != set(params):
        missing = sorted(set(params) - set(direction))
        extra = sorted(set(direction) - set(params))
        raise ValueError(
            f"{name} must have exactly the model's trainable parameter names; "
            f"missing {missing}, unexpected {extra}"
        )
    out: ParamDict = {}
    for n, p in params.items():
        d = direction[n]
        if not isinstance(d, torch.Tensor) or d.shape != p.shape:
            shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(
                f"{name}[{n!r}] must be a tensor of shape {tuple(p.shape)}, got {shape}"
            )
        out[n] = d.detach().to(device=p.device, dtype=p.dtype)
    return out


def _float_list(values: object, name: str) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    elif isinstance(values, np.ndarray):
        values = values.reshape(-1).tolist()
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers")
    out = [float(v) for v in values]
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite")
    return out


class _DatasetLoss:
    """L(θ) = (1/N)·Σ_chunks n_c·loss_fn(f(x_c; θ), y_c) evaluated through functional_call."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int | None,
    ) -> None:
        self.params = _trainable(model)
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn must be callable as loss_fn(outputs, targets), got "
                f"{type(loss_fn).__name__}"
            )
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(
                f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}"
            )
        if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must have the same number of samples, got x "
                f"{tuple(x.shape)} and y {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("x and y are empty: the dataset loss needs at least one sample")
        if batch_size is not None:
            check_positive_int(batch_size, "batch_size")
        self.model = model
        self.loss_fn = loss_fn
        self.device = model_device(model)
        n = x.shape[0]
        step = n if batch_size is None else batch_size
        self.chunks = [
            (x[i : i + step].to(self.device), y[i : i + step].to(self.device), min(step, n - i) / n)
            for i in range(0, n, step)
        ]

    def _chunk(self, params: ParamDict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(functional_call(self.model, params, (xb,)), yb)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(
                f"loss_fn must return the batch-mean loss as a 0-dim tensor, got {shape}"
            )
        return loss

    def value(self, params: ParamDict) -> torch.Tensor:
        """L(params) as a 0-dim tensor on the model's device (no graph)."""
        with torch.no_grad():
            total = sum(w * self._chunk(params, xb, yb) for xb, yb, w in self.chunks)
        return cast(torch.Tensor, total)  # sum() types as int | T

    def value_and_grad(self, params: ParamDict) -> tuple[torch.Tensor, ParamDict]:
        """L(params) and ∇L(params); the graph is freed chunk by chunk."""
        names = list(params)
        leaves = [params[n].detach().requires_grad_(True) for n in names]
        weighted: list[torch.Tensor] = []
        grads = [torch.zeros_like(p) for p in leaves]
        for xb, yb, w in self.chunks:
            loss = self._chunk(dict(zip(names, leaves, strict=True)), xb, yb)
            weighted.append(w * loss.detach())
            if loss.requires_grad:
                gs = torch.autograd.grad(loss, leaves, allow_unused=True)
                for acc, g in zip(grads, gs, strict=True):
                    if g is not None:
                        acc.add_(g, alpha=w)
        total: torch.Tensor = reduce(operator.add, weighted)  # chunk by chunk, in order
        return total, dict(zip(names, grads, strict=True))

    def hvp(self, v: ParamDict) -> ParamDict:
        """H·v at the model's parameters by double back-propagation, chunk by chunk."""
        names = list(self.params)
        leaves = [self.params[n].detach().requires_grad_(True) for n in names]
        vs = [v[n] for n in names]
        out = [torch.zeros_like(p) for p in leaves]
        for xb, yb, w in self.chunks:
            loss = self._chunk(dict(zip(names, leaves, strict=True)), xb, yb)
            if not loss.requires_grad:
                continue
            gs = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            gv = sum((g * vi).sum() for g, vi in zip(gs, vs, strict=True) if g is not None)
            if not isinstance(gv, torch.Tensor) or not gv.requires_grad:
                continue  # the loss is (at most) linear in θ here: H = 0 on this chunk
            hs = torch.autograd.grad(gv, leaves, allow_unused=True)
            for acc, h in zip(out, hs, strict=True):
                if h is not None:
                    acc.add_(h, alpha=w)
        return dict(zip(names, out, strict=True))


# --------------------------------------------------------------------------- curvature


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    v: Mapping[str, torch.Tensor],
    *,
    batch_size: int | None = 1000,
) -> ParamDict:
    """The Hessian-vector product H·v with H = ∇²L(θ), by double back-propagation.

    H·v = ∇_θ (∇_θ L(θ) · v), computed per chunk of data and combined with weights n_c/N, without
    ever forming H. Derived in the book, section :ref:`sec-sharpness-measures` of chapter
    *Flat minima*.

    Args:
        model, loss_fn, x, y, batch_size: see the module docstring.
        v: a direction ``{name: tensor}`` with the shapes of the trainable parameters.

    Returns:
        ``{name: tensor}``, H·v, on the parameters' devices.
    """
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        return objective.hvp(_check_direction(v, objective.params, "v"))


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> HessianEigen:
    """The dominant Hessian eigenvalue λ_max by power iteration.

        v₀ ~ N(0, I)/‖·‖,   w_t = H v_t,   λ_t = v_tᵀ w_t,   v_{t+1} = w_t/‖w_t‖,

    stopping when ``|λ_t − λ_{t−1}| <= tol·|λ_t|`` or after ``iters`` products. Power iteration
    converges to the eigenvalue of largest *magnitude*; at a minimum (H positive semidefinite)
    that is the top eigenvalue, the curvature of the sharpest direction. The eigenvector error
    shrinks like ``|λ₂/λ₁|^t``, the eigenvalue error like ``|λ₂/λ₁|^(2t)``. Derived in the book,
    section :ref:`sec-sharpness-measures` of chapter *Flat minima*.

    Returns:
        :class:`HessianEigen` (eigenvalue, unit eigenvector, iterations used, converged flag).
    """
    iters = check_positive_int(iters, "iters")
    tol = check_nonneg_float(tol, "tol")
    generator = check_generator(generator)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        v = {n: randn_like(p, generator) for n, p in objective.params.items()}
        norm = _norm(v)
        v = {n: t / norm for n, t in v.items()}
        eigenvalue = torch.zeros(())
        previous: float | None = None
        converged = False
        used = 0
        while used < iters:
            used += 1
            w = objective.hvp(v)
            eigenvalue = _dot(v, w)
            w_norm = _norm(w)
            # one host sync per product, needed for the stopping rule
            current, w_norm_value = torch.stack([eigenvalue, w_norm]).tolist()
            if w_norm_value == 0.0:  # H v = 0: v is in the null space
                converged = True
                break
            v = {n: t / w_norm for n, t in w.items()}
            if previous is not None and abs(current - previous) <= tol * abs(current):
                converged = True
                break
            previous = current
    return HessianEigen(float(eigenvalue), v, used, converged)


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_probes: int = 100,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutchinson's estimator of the Hessian trace: tr H ≈ (1/m)·Σ_{i=1..m} z_iᵀ H z_i.

    The probes z_i have independent Rademacher (±1) entries, so E[z zᵀ] = I and
    E[zᵀHz] = tr H; the variance of one probe is 2·Σ_{a≠b} H_ab², zero for a diagonal H. The
    standard error reported is the sample standard deviation over √m. Derived in the book,
    section :ref:`sec-sharpness-measures` of chapter *Flat minima*.
    """
    n_probes = check_positive_int(n_probes, "n_probes")
    generator = check_generator(generator)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        samples = []
        for _ in range(n_probes):
            z = {n: rademacher_like(p, generator) for n, p in objective.params.items()}
            samples.append(_dot(z, objective.hvp(z)))
    values = torch.stack(samples).double()
    stderr = float(values.std() / math.sqrt(n_probes)) if n_probes > 1 else math.nan
    return TraceEstimate(float(values.mean()), stderr, n_probes)


# --------------------------------------------------------------------------- sharpness


def epsilon_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 1e-3,
    steps: int = 20,
    step_size: float | None = None,
    norm: Literal["box", "l2"] = "box",
    random_start: bool = True,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> Sharpness:
    """ε-sharpness (Keskar et al. 2017), maximised by projected ascent in weight space.

        φ_ε(θ) = 100 · (max_{δ ∈ C_ε} L(θ + δ) − L(θ)) / (1 + L(θ))

    * ``norm="box"`` (Keskar et al.): ``C_ε = {δ : |δ_i| <= b_i}``, ``b_i = ε·(|θ_i| + 1)``,
      searched in the full parameter space with sign-gradient ascent
      δ ← clip(δ + α·b ⊙ sign ∇L(θ + δ), −b, b);
    * ``norm="l2"`` (the neighbourhood of SAM): C_ε = {δ : ‖δ‖₂ <= ε}, with normalised gradient
      ascent δ ← Π(δ + α·ε·∇L/‖∇L‖).

    The step is α = ``step_size`` (default 2/steps, enough to cross the set once). The start is a
    uniform random point of C_ε (``random_start``, needed at an exact stationary point) or δ = 0.
    The largest loss seen along the ascent is kept, so ``max_loss`` is a lower bound on the true
    maximum (L is not concave; ascent finds a local maximum). Derived in the book, section
    :ref:`sec-sharpness-measures` of chapter *Flat minima*.
    """
    eps = check_positive_float(eps, "eps")
    steps = check_positive_int(steps, "steps")
    alpha = 2.0 / steps if step_size is None else check_positive_float(step_size, "step_size")
    if norm not in ("box", "l2"):
        raise ValueError(f"norm must be 'box' or 'l2', got {norm!r}")
    generator = check_generator(generator)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        theta = objective.params
        neighbourhood = _box_neighbourhood if norm == "box" else _l2_neighbourhood
        delta, ascend = neighbourhood(theta, eps, alpha, random_start, generator)
        loss_value, max_loss = _projected_ascent(objective, theta, delta, ascend, steps)
    return Sharpness(100.0 * (max_loss - loss_value) / (1.0 + loss_value), loss_value, max_loss)


#: One ascent step ``δ ← Π(δ + step(∇L(θ + δ)))`` of :func:`epsilon_sharpness`.
_AscentStep = Callable[[ParamDict, ParamDict], ParamDict]


def _box_neighbourhood(
    theta: ParamDict,
    eps: float,
    alpha: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> tuple[ParamDict, _AscentStep]:
    """Start and sign-gradient step in Keskar et al.'s box ``|δ_i| <= ε·(|θ_i| + 1)``."""
    bound = {n: eps * (p.abs() + 1) for n, p in theta.items()}

    def project(d: ParamDict) -> ParamDict:
        return {n: torch.maximum(torch.minimum(t, bound[n]), -bound[n]) for n, t in d.items()}

    def ascend(d: ParamDict, g: ParamDict) -> ParamDict:
        return project({n: d[n] + alpha * bound[n] * g[n].sign() for n in d})

    if random_start:
        delta = {n: (2 * draw_like("rand", b, generator) - 1) * b for n, b in bound.items()}
    else:
        delta = {n: torch.zeros_like(p) for n, p in theta.items()}
    return delta, ascend


def _l2_neighbourhood(
    theta: ParamDict,
    eps: float,
    alpha: float,
    random_start: bool,
    generator: torch.Generator | None,
) -> tuple[ParamDict, _AscentStep]:
    """Start and normalised-gradient step in SAM's ball ``‖δ‖₂ <= ε``."""

    def project(d: ParamDict) -> ParamDict:
        scale = torch.clamp(eps / _norm(d).clamp_min(1e-30), max=1.0)
        return {n: t * scale for n, t in d.items()}

    def ascend(d: ParamDict, g: ParamDict) -> ParamDict:
        step = alpha * eps / _norm(g).clamp_min(1e-30)
        return project({n: d[n] + step * g[n] for n in d})

    if not random_start:
        return {n: torch.zeros_like(p) for n, p in theta.items()}, ascend
    # uniform in the ball: a Gaussian direction and a radius ε·U^{1/d}
    direction = {n: randn_like(p, generator) for n, p in theta.items()}
    u = draw_like("rand", torch.zeros((), dtype=next(iter(theta.values())).dtype), generator)
    radius = eps * u ** (1.0 / sum(p.numel() for p in theta.values()))
    scale = radius / _norm(direction)
    return {n: t * scale for n, t in direction.items()}, ascend


def _projected_ascent(
    objective: _DatasetLoss,
    theta: ParamDict,
    delta: ParamDict,
    ascend: _AscentStep,
    steps: int,
) -> tuple[float, float]:
    """``(L(θ), the largest L(θ + δ) seen over ``steps`` ascent steps from ``delta``)``."""
    loss0 = objective.value(theta)
    best = loss0
    for _ in range(steps):
        loss, grad = objective.value_and_grad(_add_scaled(1.0, delta, theta))
        best = torch.maximum(best, loss)
        delta = ascend(delta, grad)
    best = torch.maximum(best, objective.value(_add_scaled(1.0, delta, theta)))
    return float(loss0), float(best)


def expected_loss_increase(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eta: float,
    n_samples: int = 32,
    antithetic: bool = True,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> WeightNoiseEstimate:
    """Expected loss increase under Gaussian weight noise of variance η, by Monte Carlo.

        R_η(θ) = E_{ξ ~ N(0, η·I)} [L(θ + ξ)] − L(θ)  ≈  (η/2)·tr ∇²L(θ)   (second order),

    the quantity that training with weight noise minimises on top of L. For the squared error
    ½‖f − y‖² it is, to second order and at a fit with zero residuals, the penalty
    (η/2)·E‖∇_θ f‖² of the previous chapter; in general it is a local sharpness measure. With
    ``antithetic=True`` each draw ξ is paired with −ξ and the sample is
    ½[L(θ + ξ) + L(θ − ξ)] − L(θ), which has the same expectation but cancels the first-order
    term. ``n_samples`` counts draws of ξ. Derived in the book, section :ref:`sec-flat-minima` of
    chapter *Flat minima*.

    Any batch-mean metric works as ``loss_fn`` (no gradients are taken), e.g. the accuracy, to get
    the mean accuracy under weight perturbation as ``perturbed_loss``.
    """
    eta = check_nonneg_float(eta, "eta")
    n_samples = check_positive_int(n_samples, "n_samples")
    generator = check_generator(generator)
    std = math.sqrt(eta)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        theta = objective.params
        loss0 = objective.value(theta)
        samples = []
        for _ in range(n_samples):
            xi = {n: std * randn_like(p, generator) for n, p in theta.items()}
            value = objective.value(_add_scaled(1.0, xi, theta))
            if antithetic:
                value = 0.5 * (value + objective.value(_add_scaled(-1.0, xi, theta)))
            samples.append(value)
    perturbed = torch.stack(samples).double()
    increase = perturbed - loss0.double()
    stderr = float(increase.std() / math.sqrt(n_samples)) if n_samples > 1 else math.nan
    return WeightNoiseEstimate(
        float(increase.mean()), stderr, float(loss0), float(perturbed.mean())
    )


# --------------------------------------------------------------------------- landscapes


def filter_normalized_direction(
    model: nn.Module,
    *,
    generator: torch.Generator | None = None,
    one_d: Literal["zero", "copy"] = "zero",
) -> ParamDict:
    """A random Gaussian direction, filter-normalised as in Li et al. (2018).

    For every trainable parameter with two or more dimensions, each filter (slice along the first,
    output dimension: a conv filter or a row of a linear weight) of the Gaussian direction d is
    rescaled to the norm of the same filter of θ:

        d_f ← d_f · ‖θ_f‖ / ‖d_f‖,

    which removes the scale invariance of ReLU networks from landscape plots. One-dimensional
    parameters (biases, BatchNorm) are set to zero (``one_d="zero"``, Li et al.'s default) or to
    θ itself (``one_d="copy"``). Derived in the book, section :ref:`sec-loss-landscape` of chapter
    *Flat minima*.
    """
    if one_d not in ("zero", "copy"):
        raise ValueError(f"one_d must be 'zero' or 'copy', got {one_d!r}")
    generator = check_generator(generator)
    params = _trainable(model)
    direction: ParamDict = {}
    for n, p in params.items():
        if p.ndim <= 1:
            direction[n] = torch.zeros_like(p) if one_d == "zero" else p.clone()
            continue
        d = randn_like(p, generator)
        d_norm = d.reshape(p.shape[0], -1).norm(dim=1)
        p_norm = p.reshape(p.shape[0], -1).norm(dim=1)
        scale = p_norm / d_norm.clamp_min(torch.finfo(d.dtype).tiny)
        direction[n] = d * scale.reshape(-1, *([1] * (p.ndim - 1)))
    return direction


def direction_between(model_from: nn.Module, model_to: nn.Module) -> ParamDict:
    """The direction θ_to − θ_from between two models of the same architecture.

    With :func:`loss_landscape_1d` on ``model_from`` and ``alphas`` from 0 to 1 it traces the
    linear interpolation between the two solutions (Goodfellow et al. 2015); only the trainable
    parameters move, buffers such as BatchNorm statistics stay those of ``model_from``. Derived in
    the book, section :ref:`sec-loss-landscape` of chapter *Flat minima*.
    """
    a, b = _trainable(model_from), _trainable(model_to)
    b = _check_direction(b, a, "model_to's parameters")
    return {n: b[n] - a[n] for n in a}


def loss_landscape_1d(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    direction: Mapping[str, torch.Tensor] | None = None,
    alphas: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """The loss along a line in weight space: L(θ + α·d) for each α in ``alphas``.

    ``direction`` defaults to :func:`filter_normalized_direction` drawn from ``generator``;
    ``alphas`` defaults to 25 points in [−1, 1]. Derived in the book, section
    :ref:`sec-loss-landscape` of chapter *Flat minima*.

    Returns:
        A DataFrame with columns ``alpha`` and ``loss``.
    """
    alpha_list = _float_list(np.linspace(-1, 1, 25) if alphas is None else alphas, "alphas")
    generator = check_generator(generator)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        theta = objective.params
        if direction is None:
            direction = filter_normalized_direction(model, generator=generator)
        d = _check_direction(direction, theta, "direction")
        losses = torch.stack([objective.value(_add_scaled(a, d, theta)) for a in alpha_list])
    return pd.DataFrame({"alpha": alpha_list, "loss": losses.double().cpu().numpy()})


def loss_landscape_2d(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    directions: tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]] | None = None,
    alphas: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    betas: Sequence[float] | torch.Tensor | np.ndarray | None = None,
    batch_size: int | None = 1000,
    generator: torch.Generator | None = None,
) -> Landscape2D:
    """The loss on a plane in weight space: L(θ + α·d₁ + β·d₂) on the grid ``betas × alphas``.

    ``directions`` defaults to two independent :func:`filter_normalized_direction` draws (nearly
    orthogonal in high dimension); ``alphas`` and ``betas`` default to 21 points in [−1, 1].
    Derived in the book, section :ref:`sec-loss-landscape` of chapter *Flat minima*.

    Returns:
        :class:`Landscape2D` with ``loss[i, j]`` at (α_j, β_i).
    """
    grid = np.linspace(-1, 1, 21)
    alpha_list = _float_list(grid if alphas is None else alphas, "alphas")
    beta_list = _float_list(grid if betas is None else betas, "betas")
    generator = check_generator(generator)
    check_module(model)
    with eval_mode(model):
        objective = _DatasetLoss(model, loss_fn, x, y, batch_size)
        theta = objective.params
        if directions is None:
            directions = (
                filter_normalized_direction(model, generator=generator),
                filter_normalized_direction(model, generator=generator),
            )
        if not isinstance(directions, (tuple, list)) or len(directions) != 2:
            raise ValueError("directions must be a pair (d1, d2) of {name: tensor} dicts")
        d1 = _check_direction(directions[0], theta, "directions[0]")
        d2 = _check_direction(directions[1], theta, "directions[1]")
        rows = []
        for b in beta_list:
            base = _add_scaled(b, d2, theta)
            row = [objective.value(_add_scaled(a, d1, base)) for a in alpha_list]
            rows.append(torch.stack(row))
        losses = torch.stack(rows)
    return Landscape2D(np.asarray(alpha_list), np.asarray(beta_list), losses.double().cpu().numpy())
