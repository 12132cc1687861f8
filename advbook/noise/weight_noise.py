"""Weight noise: the loss evaluated at randomly perturbed parameters ``W + ε``, ``ε ~ N(0, ηI)``.

Throughout, **η is the variance** of the weight noise (not its standard deviation), as in the
book's derivation: for squared error and the perturbed model ``ŷ_ε(x) = ŷ_{W+ε}(x)``::

    Ĵ_W = E[(ŷ_ε(x) − y)²] = J + η·E‖∇_W ŷ(x)‖² + η·E[(ŷ(x) − y)·tr ∇²_W ŷ(x)] + O(η²).

Derived in the book, section :ref:`sec-weight-noise` of chapter *Noise injection as
regularization* (the explicit terms are in :mod:`advbook.noise.penalties`).

The noisy parameters are never written into the model: every evaluation goes through
:func:`torch.func.functional_call` with ``W + ε`` as *new* tensors, so the model's parameters are
bit-for-bit unchanged, even when an error is raised midway, and the gradient that reaches the real
parameters is ``∇_W ℓ(W)|_{W+ε}`` — the gradient at the noisy point (Graves 2011).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from functools import reduce

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .._core.checks import (
    check_finite,
    check_generator,
    check_nonneg_float,
    check_positive_int,
)
from .._core.random import SeededCallable, randn_like
from .._core.types import LossFn
from ..train import Objective
from ._common import (
    ParamSelection,
    as_outputs,
    check_no_training_batchnorm,
    check_nonempty_batch,
    select_parameters,
)

__all__ = [
    "LossFn",
    "draw_weight_noise",
    "squared_error",
    "weight_noise_loss",
    "weight_noise_objective",
]

def squared_error(yhat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i ‖ŷ_i − y_i‖²``: squared error summed over the outputs, averaged over examples.

    For scalar outputs this is ``F.mse_loss``; for ``K`` outputs it is ``K`` times it. It is the
    loss of the book's weight-noise expansion (:ref:`sec-weight-noise`), whose ``K``-output form
    sums the scalar expansion over the outputs.
    """
    out, target = as_outputs(yhat, y, "squared_error")
    return (out - target).pow(2).sum(dim=1).mean()


def draw_weight_noise(
    model: nn.Module,
    samples: int = 1,
    *,
    params: ParamSelection = "all",
    antithetic: bool = False,
    moment_matched: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``samples`` standard-normal draws ``ξ_s ~ N(0, I)`` for the selected parameters.

    Returns ``{name: tensor of shape (samples, *param.shape)}`` in each parameter's dtype and on
    its device. The weight noise of variance ``η`` is ``ε_s = √η·ξ_s``; drawing ``ξ`` once and
    reusing it for every ``η`` gives *common random numbers*, which makes differences between
    values of ``η`` far less noisy than independent draws would. Used for the check of the
    expansion derived in the book, section :ref:`sec-weight-noise` of chapter *Noise injection as
    regularization*.

    Args:
        params: ``"all"`` trainable parameters (default), ``"weights"`` (those with ≥ 2 dims)
            or a predicate ``(name, param) -> bool``.
        antithetic: return ``ξ_1…ξ_{S/2}, −ξ_1…−ξ_{S/2}`` (``samples`` must be even), so that all
            odd moments of the sample vanish exactly.
        moment_matched: transform the draws linearly (centring unless ``antithetic``, then
            ``Ξ ← Ξ·M^{-1/2}`` with ``M = ΞᵀΞ/S`` over all ``|W|`` selected coordinates) so that
            the sample mean is exactly 0 and the sample covariance exactly ``I``. Then the
            Monte-Carlo estimate reproduces the ``O(η)`` terms of the expansion without sampling
            error and only the ``O(η²)`` remainder is left. Needs ``S > |W|`` (``S ≥ 2|W|``
            with ``antithetic``) and ``O(|W|²)`` memory: for small models.
        generator: a seeded ``torch.Generator``; the parameters are visited in
            ``model.named_parameters()`` order and each gets one ``randn`` call.
    """
    check_positive_int(samples, "samples")
    check_generator(generator)
    if antithetic and samples % 2:
        raise ValueError(f"antithetic draws need an even number of samples, got {samples}")
    selected = select_parameters(model, params)
    half = samples // 2 if antithetic else samples
    if moment_matched:
        size = sum(p.numel() for p in selected.values())
        if half < size + (0 if antithetic else 1):
            raise ValueError(
                f"moment_matched draws of {size} parameters need samples >= "
                f"{2 * size if antithetic else size + 1}, got {samples}"
            )
    noise = {}
    with torch.no_grad():
        for name, p in selected.items():
            xi = randn_like(p, generator, (half, *p.shape))
            noise[name] = torch.cat([xi, -xi]) if antithetic else xi
        if moment_matched:
            noise = _match_moments(noise, centre=not antithetic)
    return noise


def _match_moments(noise: dict[str, torch.Tensor], *, centre: bool) -> dict[str, torch.Tensor]:
    """Map the draws ``Ξ`` (``S × |W|``) to ``Ξ·M^{-1/2}``, ``M = ΞᵀΞ/S``, after centring.

    Computed in float64 and cast back to each parameter's dtype.
    """
    samples = next(iter(noise.values())).shape[0]
    flat = torch.cat([v.reshape(samples, -1).to(torch.float64) for v in noise.values()], 1)
    if centre:
        flat = flat - flat.mean(dim=0, keepdim=True)
    evals, evecs = torch.linalg.eigh(flat.T @ flat / samples)
    flat = flat @ (evecs * evals.rsqrt()) @ evecs.T
    out, start = {}, 0
    for name, v in noise.items():
        width = v[0].numel()
        out[name] = flat[:, start : start + width].reshape(v.shape).to(v.dtype)
        start += width
    return out


def _check_noise(
    model: nn.Module, noise: Mapping[str, torch.Tensor]
) -> tuple[dict[str, nn.Parameter], int]:
    if not isinstance(noise, Mapping) or not noise:
        raise TypeError("noise must be a non-empty mapping {parameter name: draws}")
    params = dict(model.named_parameters())
    counts: set[int] = set()
    for name, xi in noise.items():
        if name not in params:
            raise ValueError(f"noise has an entry {name!r} that is not a parameter of the model")
        if not isinstance(xi, torch.Tensor) or tuple(xi.shape[1:]) != tuple(params[name].shape):
            raise ValueError(
                f"noise[{name!r}] must have shape (samples, *{tuple(params[name].shape)}), got "
                f"{tuple(xi.shape) if isinstance(xi, torch.Tensor) else type(xi).__name__}"
            )
        if not xi.is_floating_point():
            raise TypeError(f"noise[{name!r}]: expected a floating-point tensor, got {xi.dtype}")
        check_finite(xi, f"noise[{name!r}]", "weight_noise_loss")
        counts.add(xi.shape[0])
        if len(counts) > 1:
            raise ValueError("every entry of noise must hold the same number of samples")
    (samples,) = counts
    if samples == 0:
        raise ValueError("noise holds zero samples")
    return {name: params[name] for name in noise}, samples


def weight_noise_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eta: float,
    *,
    noise: Mapping[str, torch.Tensor] | None = None,
    samples: int = 64,
    params: ParamSelection = "all",
    loss_fn: LossFn = squared_error,
    reduction: str = "mean",
    create_graph: bool = False,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte-Carlo weight-noise loss ``Ĵ_W ≈ (1/S)·Σ_s ℓ(ŷ_{W+√η·ξ_s}(x), y)``.

    With the default ``loss_fn`` (:func:`squared_error`) this estimates
    ``E_ε[(ŷ_{W+ε}(x) − y)²]``, ``ε ~ N(0, ηI)`` — **η is the variance** — the left-hand side of
    the expansion ``J + η·E‖∇_W ŷ‖² + η·E[(ŷ−y)·tr ∇²_W ŷ] + O(η²)`` derived in the book, section
    :ref:`sec-weight-noise` of chapter *Noise injection as regularization*.

    Args:
        noise: fixed standard-normal draws ``{name: (S, *shape)}`` from
            :func:`draw_weight_noise`; pass the same draws for every ``η`` (common random
            numbers), possibly ``antithetic`` and ``moment_matched``. When given, ``samples``,
            ``params`` and ``generator`` are not used: the keys of ``noise`` say which
            parameters are perturbed.
        samples, params, generator: otherwise, ``noise`` is drawn with these (plain draws).
        loss_fn: ``loss_fn(outputs, y)`` returning the batch-mean loss.
        reduction: ``"mean"`` (the estimate) or ``"none"`` (the ``S`` per-draw losses, e.g. for
            a standard error).
        create_graph: keep the graph so the result can be differentiated w.r.t. the parameters.
        chunk_size: evaluate at most this many draws at once (``torch.func.vmap``).

    The model is evaluated in its current mode (use ``model.eval()`` to switch off dropout and
    noise layers); BatchNorm in training mode is refused. Nothing about the model is changed.
    """
    check_nonempty_batch(x, "x", where="weight_noise_loss")
    if isinstance(y, torch.Tensor):
        check_finite(y, "y", "weight_noise_loss")
    eta = check_nonneg_float(eta, "eta")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_positive_int(chunk_size, "chunk_size", allow_none=True)
    check_no_training_batchnorm(model, "weight_noise_loss")
    if noise is None:
        noise = draw_weight_noise(model, samples, params=params, generator=generator)
    selected, _ = _check_noise(model, noise)
    scale = math.sqrt(eta)

    def loss_at(xi: dict[str, torch.Tensor]) -> torch.Tensor:
        perturbed = {n: p + scale * xi[n] for n, p in selected.items()}
        return loss_fn(functional_call(model, perturbed, (x,)), y)

    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        losses = vmap(loss_at, chunk_size=chunk_size, randomness="different")(dict(noise))
    if losses.ndim != 1:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(losses.shape[1:])}")
    return losses.mean() if reduction == "mean" else losses


def weight_noise_objective(
    eta: float,
    *,
    samples: int = 1,
    loss_fn: LossFn = F.cross_entropy,
    params: ParamSelection = "all",
    generator: torch.Generator | None = None,
) -> Objective:
    """An ``objective`` for :func:`advbook.train.fit` that trains with weight noise (Graves 2011).

    Each call draws ``ε_1…ε_S ~ N(0, ηI)`` — **η is the variance** — with
    :func:`draw_weight_noise` (same ``params`` and ``generator``) and returns
    ``((1/S)·Σ_s loss_fn(ŷ_{W+ε_s}(x), y), mean_s ŷ_{W+ε_s}(x))``. The noisy forward passes go
    through :func:`torch.func.functional_call`, so the model's parameters are never modified and
    ``loss.backward()`` deposits on them ``(1/S)·Σ_s ∇_W ℓ|_{W+ε_s}``, the gradients at the noisy
    points. For squared error and small η, minimising this objective ≈ minimising
    ``J + η·E‖∇_W ŷ‖²``; derived in the book, section :ref:`sec-weight-noise` of chapter *Noise
    injection as regularization*.

    Args:
        samples: noise draws averaged per step (one forward pass each).
        loss_fn: ``loss_fn(outputs, y)``, batch mean; cross-entropy (as in ``fit``) by default,
            :func:`squared_error` for the book's regression setting.
        params: ``"all"`` trainable parameters (default), ``"weights"`` or a predicate.
        generator: seeded ``torch.Generator`` for the noise.

    The model runs in the mode ``fit`` puts it in (training): dropout stays active and BatchNorm
    updates its running statistics once per draw, as in any training step.
    """
    eta = check_nonneg_float(eta, "eta")
    check_positive_int(samples, "samples")
    check_generator(generator)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    scale = math.sqrt(eta)

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # type and shape only: fit stops on a non-finite loss, no host sync per step
        check_nonempty_batch(x, "x", finite=False, where="weight_noise_objective")
        selected = select_parameters(model, params)
        noise = draw_weight_noise(model, samples, params=params, generator=generator)
        losses, outputs = [], []
        for s in range(samples):  # over noise draws; each draw processes the whole batch
            perturbed = {n: p + scale * noise[n][s] for n, p in selected.items()}
            out = functional_call(model, perturbed, (x,))
            losses.append(loss_fn(out, y))
            outputs.append(out.detach())
        # left folds ((l_1 + l_2) + l_3) + …: the additions of a running sum, in draw order
        total: torch.Tensor = reduce(operator.add, losses)
        return total / samples, reduce(operator.add, outputs) / samples

    name = f"weight_noise_objective(eta={eta!r}, samples={samples!r})"
    return SeededCallable(objective, generator, name)
