"""Explicit penalties equivalent to noise injection, and an ``objective`` that trains on them.

* :func:`.weight_gradient_penalty` — ``E_x‖∇_W ŷ(x)‖²``, the first-order effect of weight noise;
* :func:`.hessian_trace_term` — ``E[(ŷ(x) − y)·tr ∇²_W ŷ(x)]``, its second-order companion
  (Hutchinson estimator), so that ``Ĵ_W = J + η·(penalty + term) + O(η²)`` can be checked;
* :func:`.input_jacobian_penalty` — ``E_x‖∇_x ŷ(x)‖²``, the Tikhonov regulariser that input noise
  of variance ``σ²`` adds to squared error (Bishop 1995);
* :func:`.input_gradient_penalty` — ``E‖∇_x ℓ‖²`` by double backpropagation (Drucker & LeCun 1992);
* :func:`.penalty_objective` — ``loss + η·penalty`` for :func:`advbook.train.fit`.

The weight-space expansion is derived in the book, section :ref:`sec-weight-noise` (its linear
special case in :ref:`sec-linear-special-case`), the input-space one in :ref:`sec-input-noise`, of
chapter *Noise injection as regularization*.

Outputs: ``ŷ`` is the model's raw output (logits for a classifier), flattened per example to
``K`` numbers. For ``K > 1`` the penalties are summed over outputs, ``Σ_k ‖∇ ŷ_k‖²``, which is
exactly what the scalar derivation gives for the summed squared error ``‖ŷ_{W+ε} − y‖²``
(:func:`advbook.noise.squared_error`).

The per-example computations use :mod:`torch.func` (``vmap`` over examples) and therefore refuse
BatchNorm in training mode, whose output for one example depends on the whole batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from .._core.checks import (
    check_finite,
    check_generator,
    check_nonneg_float,
    check_positive_int,
)
from .._core.random import SeededCallable, rademacher_like
from .._core.types import LossFn, ParamDict
from ..train import Objective
from ._common import (
    ParamSelection,
    as_outputs,
    check_no_training_batchnorm,
    check_nonempty_batch,
    select_parameters,
)

__all__ = [
    "PenaltyFn",
    "hessian_trace_term",
    "input_gradient_penalty",
    "input_jacobian_penalty",
    "penalty_objective",
    "weight_gradient_penalty",
]

PenaltyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _check_estimator_args(
    what: str,
    model: nn.Module,
    x: torch.Tensor,
    chunk_size: int | None,
    generator: torch.Generator | None,
    **probes: int | None,
) -> None:
    """The checks shared by the vmapped estimators; ``probes``: the probe-count argument."""
    check_nonempty_batch(x, "x", min_ndim=2, where=what)
    for name, value in probes.items():
        check_positive_int(value, name, allow_none=True)
    check_positive_int(chunk_size, "chunk_size", allow_none=True)
    check_generator(generator)
    check_no_training_batchnorm(model, what)


def _vjp(
    fn: Callable[[Any], torch.Tensor], primal: object
) -> tuple[torch.Tensor, Callable[..., Any]]:
    """``torch.func.vjp`` without auxiliary outputs: ``(fn(primal), pullback)``."""
    result = vjp(fn, primal)
    return result[0], result[1]


def _squared_norms(
    fn: Callable[..., torch.Tensor],
    primal: object,
    x: torch.Tensor,
    output_probes: int | None,
    generator: torch.Generator | None,
    chunk_size: int | None,
) -> torch.Tensor:
    """Per-example ``Σ_k ‖∇ fn_k‖²`` (exact) or ``(1/m)·Σ_j ‖∇ (v_jᵀ fn)‖²`` (``m`` probes).

    ``fn(primal, x_i)`` returns the ``K`` outputs of example ``i``; the gradient is w.r.t.
    ``primal`` (a dict of parameters, or the example itself when ``primal`` is ``None``). Each
    example gets one forward pass and one ``vjp`` per direction (``e_1…e_K`` or ``v_1…v_m``).
    """
    if output_probes is None:
        probes = None
    else:
        with torch.no_grad():  # K is needed to draw the probes: one single-example forward
            k = int(fn(primal, x[0]).numel())
        probes = rademacher_like(x, generator, (x.shape[0], output_probes, k))

    def per_example(xi: torch.Tensor, dirs: torch.Tensor | None) -> torch.Tensor:
        if primal is None:
            out, pullback = _vjp(lambda z: fn(None, z), xi)
        else:
            out, pullback = _vjp(lambda p: fn(p, xi), primal)
        if dirs is None:
            dirs = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)
        grads = vmap(pullback)(dirs.to(out.dtype))[0]
        leaves: list[torch.Tensor] = list(grads.values()) if isinstance(grads, dict) else [grads]
        total = cast(torch.Tensor, sum(g.pow(2).sum() for g in leaves))  # sum() types as int|T
        return total if probes is None else total / dirs.shape[0]

    in_dims = (0, None if probes is None else 0)
    return vmap(per_example, in_dims=in_dims, chunk_size=chunk_size, randomness="different")(
        x, probes
    )


def weight_gradient_penalty(
    model: nn.Module,
    x: torch.Tensor,
    *,
    params: ParamSelection = "all",
    create_graph: bool = True,
    output_probes: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E_x‖∇_W ŷ(x)‖²`` — weight noise of variance η adds η times this to the squared error.

    For scalar-output regression this is ``(1/N)·Σ_i ‖∇_W ŷ(x_i)‖²`` over the batch; for ``K``
    outputs it is ``(1/N)·Σ_i Σ_k ‖∇_W ŷ_k(x_i)‖²`` (squared Frobenius norm of the per-example
    Jacobian). Computed from per-example parameter gradients with ``torch.func.vmap`` over
    examples (``vjp`` in each output direction). For a linear model ``ŷ = wᵀx + b`` it equals
    ``E[‖x‖² + 1]`` and does not depend on the parameters. Derived in the book, section
    :ref:`sec-weight-noise` (linear case: :ref:`sec-linear-special-case`) of chapter *Noise
    injection as regularization*.

    Args:
        params: the ``W`` differentiated against: ``"all"`` (default), ``"weights"`` or a
            predicate ``(name, param) -> bool``; use the same selection as for the weight noise.
        create_graph: return a differentiable value (to train on the penalty); ``False`` returns
            a detached number and builds no graph.
        output_probes: ``None`` for the exact sum over the ``K`` outputs (memory
            ``O(N·K·|W|)``); an int ``m`` for the unbiased estimate
            ``(1/m)·Σ_j ‖∇_W (v_jᵀŷ)‖²`` with Rademacher ``v_j ∈ {±1}^K`` (memory ``O(N·m·|W|)``),
            useful for classifiers with many parameters.
        chunk_size: process at most this many examples at once.
        generator: seeded source of the output probes.
    """
    _check_estimator_args(
        "weight_gradient_penalty", model, x, chunk_size, generator, output_probes=output_probes
    )
    selected = select_parameters(model, params)

    def outputs(p: ParamDict, xi: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(model, p, (xi.unsqueeze(0),))
        return out.reshape(-1)

    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        primal = selected if create_graph else {n: p.detach() for n, p in selected.items()}
        norms = _squared_norms(outputs, primal, x, output_probes, generator, chunk_size)
        penalty = norms.mean()
    return penalty if create_graph else penalty.detach()


def input_jacobian_penalty(
    model: nn.Module,
    x: torch.Tensor,
    *,
    create_graph: bool = True,
    output_probes: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E_x‖∇_x ŷ(x)‖²`` (summed over outputs) — the Tikhonov form of input noise.

    Input noise ``δ ~ N(0, σ²I)`` on squared error gives, to first order in ``σ²``,
    ``E[‖ŷ(x+δ) − y‖²] = E[‖ŷ − y‖²] + σ²·E‖∇_x ŷ‖² + σ²·E[(ŷ − y)·Δ_x ŷ] + O(σ⁴)``, exactly
    ``loss + σ²‖w‖²`` for a linear model, where this penalty is ``‖w‖²`` (Bishop 1995). Derived in
    the book, section :ref:`sec-input-noise` of chapter *Noise injection as regularization*.
    Arguments as for :func:`.weight_gradient_penalty`; the gradient is w.r.t. each example.
    """
    _check_estimator_args(
        "input_jacobian_penalty", model, x, chunk_size, generator, output_probes=output_probes
    )

    def outputs(_: object, xi: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(xi.unsqueeze(0))
        return out.reshape(-1)

    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        norms = _squared_norms(outputs, None, x.detach(), output_probes, generator, chunk_size)
        penalty = norms.mean()
    return penalty if create_graph else penalty.detach()


def hessian_trace_term(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    params: ParamSelection = "all",
    probes: int | None = 16,
    create_graph: bool = False,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E[(ŷ(x) − y)·tr ∇²_W ŷ(x)]`` — the second-order term of the weight-noise expansion.

    ``Ĵ_W = J + η·E‖∇_W ŷ‖² + η·E[(ŷ − y)·tr ∇²_W ŷ] + O(η²)``; this is the last bracket (for
    ``K`` outputs ``E[Σ_k (ŷ_k − y_k)·tr ∇²_W ŷ_k]``). It vanishes at the minimiser of ``J`` of a
    well-specified model (``E[y|x] = ŷ(x)``). Derived in the book, section
    :ref:`sec-weight-noise` of chapter *Noise injection as regularization*.

    Since the residuals ``r_ik = ŷ_k(x_i) − y_ik`` are numbers, the term is ``tr ∇²_W Φ(W)`` with
    ``Φ(W) = (1/N)·Σ_i Σ_k r_ik·ŷ_k(x_i; W)`` (``r`` held fixed while differentiating), estimated
    by Hutchinson's ``(1/m)·Σ_j z_jᵀ ∇²Φ z_j`` with Rademacher probes ``z_j``; each ``∇²Φ z`` is
    a forward-over-reverse Hessian-vector product (``torch.func.jvp`` of ``grad``), vmapped over
    probes. The estimator is unbiased with variance ``(2/m)·Σ_{a≠b} (∇²Φ)_ab²``.

    Args:
        y: targets, one per output (``(N,)`` is accepted for ``(N, 1)`` outputs).
        params: the ``W`` (as for :func:`.weight_gradient_penalty`).
        probes: Hutchinson probes ``m``; ``None`` computes the trace exactly from the ``|W|``
            basis vectors (small models only).
        create_graph: return a value differentiable w.r.t. the parameters (the derivative of
            ``r`` is included); default: a detached number.
        chunk_size: process at most this many probes at once.
        generator: seeded source of the probes.
    """
    _check_estimator_args("hessian_trace_term", model, x, chunk_size, generator, probes=probes)
    if isinstance(y, torch.Tensor):
        check_finite(y, "y", "hessian_trace_term")
    selected = select_parameters(model, params)
    n = x.shape[0]

    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        primal: ParamDict = (
            dict(selected) if create_graph else {k: p.detach() for k, p in selected.items()}
        )
        yhat, target = as_outputs(functional_call(model, primal, (x,)), y, "hessian_trace_term")
        residual = yhat - target  # Φ is linear in r, so a live r gives the total derivative

        def phi(p: ParamDict) -> torch.Tensor:
            out: torch.Tensor = functional_call(model, p, (x,))
            return (residual * out.reshape(n, -1)).sum() / n

        directions, weight = _trace_directions(primal, probes, yhat, generator)
        values = _hessian_quadratic_forms(phi, primal, directions, chunk_size)
        term = values.sum() * weight
    return term if create_graph else term.detach()


def _trace_directions(
    primal: ParamDict, probes: int | None, like: torch.Tensor, generator: torch.Generator | None
) -> tuple[ParamDict, float]:
    """The directions ``z_j`` (stacked along dim 0) of the trace estimate and its weight.

    ``probes=None``: the ``|W|`` basis vectors (in ``like``'s dtype and device), weight 1 — the
    exact trace. Otherwise ``probes`` Rademacher vectors, weight ``1/probes``.
    """
    if probes is None:
        sizes = [p.numel() for p in primal.values()]
        eye = torch.eye(sum(sizes), dtype=like.dtype, device=like.device)
        blocks = torch.split(eye, sizes, dim=1)
        basis = {
            k: b.reshape(-1, *p.shape) for (k, p), b in zip(primal.items(), blocks, strict=True)
        }
        return basis, 1.0
    rademacher = {k: rademacher_like(p, generator, (probes, *p.shape)) for k, p in primal.items()}
    return rademacher, 1.0 / probes


def _hessian_quadratic_forms(
    phi: Callable[[ParamDict], torch.Tensor],
    primal: ParamDict,
    directions: ParamDict,
    chunk_size: int | None,
) -> torch.Tensor:
    """``z_jᵀ ∇²Φ z_j`` for every stacked direction ``z_j``, by forward-over-reverse products."""

    def quadratic_form(z: ParamDict) -> torch.Tensor:
        hz = jvp(grad(phi), (primal,), (z,))[1]
        total: torch.Tensor = sum((hz[k] * z[k]).sum() for k in z)
        return total

    with warnings.catch_warnings():
        # PyTorch's first forward-mode call scripts its jvp decompositions with the
        # deprecated torch.jit.script and warns about it; that is not the caller's concern.
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.*", FutureWarning)
        values: torch.Tensor = vmap(quadratic_form, chunk_size=chunk_size, randomness="different")(
            directions
        )
    return values


def input_gradient_penalty(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn = F.cross_entropy,
    create_graph: bool = True,
) -> torch.Tensor:
    """``E_i‖∇_x ℓ(ŷ(x_i), y_i)‖²`` by double backpropagation (Drucker & LeCun 1992).

    One backward pass of ``Σ_i ℓ_i`` w.r.t. the batch gives every per-example input gradient
    (examples do not interact; BatchNorm in training mode is refused). With
    ``create_graph=True`` the result is differentiable w.r.t. the parameters, so it can be
    trained on; no ``.grad`` is ever written to the parameters. For a linear model with squared
    error ``∇_x ℓ = 2(ŷ − y)·w``. It is the loss-level counterpart of the Tikhonov form of input
    noise derived in the book, section :ref:`sec-input-noise` of chapter *Noise injection as
    regularization*.

    Args:
        loss_fn: ``loss_fn(outputs, y)`` returning either the batch mean of the per-example losses
            ``ℓ_i`` (PyTorch's default ``reduction="mean"``) or the ``N`` losses themselves.
        create_graph: keep the double-backprop graph (to train on the penalty); ``False``
            returns a detached number.

    The gradient is taken w.r.t. a detached copy of ``x``: nothing flows back into ``x``.
    """
    check_nonempty_batch(x, "x", where="input_gradient_penalty")
    if isinstance(y, torch.Tensor):
        check_finite(y, "y", "input_gradient_penalty")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    check_no_training_batchnorm(model, "input_gradient_penalty")
    n = x.shape[0]
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = loss_fn(model(xg), y)
        if loss.ndim == 0:
            total = loss * n
        elif tuple(loss.shape) == (n,):
            total = loss.sum()
        else:
            raise ValueError(
                f"loss_fn must return a scalar batch mean or {n} per-example losses, got shape "
                f"{tuple(loss.shape)}"
            )
        (g,) = torch.autograd.grad(total, xg, create_graph=create_graph)
    penalty = g.pow(2).flatten(1).sum(1).mean()
    return penalty if create_graph else penalty.detach()


def penalty_objective(
    eta: float,
    penalty: Literal["weight_gradient", "input_gradient", "input_jacobian"] | PenaltyFn = (
        "weight_gradient"
    ),
    *,
    loss_fn: LossFn = F.cross_entropy,
    params: ParamSelection = "all",
    output_probes: int | None = None,
    generator: torch.Generator | None = None,
) -> Objective:
    """An ``objective`` for :func:`advbook.train.fit`: ``loss_fn(ŷ(x), y) + η·penalty``.

    ``penalty`` is ``"weight_gradient"`` (:func:`.weight_gradient_penalty` with ``params``,
    ``output_probes`` and ``generator`` — the explicit form of weight noise of variance ``η``,
    section :ref:`sec-weight-noise`), ``"input_jacobian"`` (:func:`.input_jacobian_penalty`, the
    Tikhonov form of input noise of variance ``η``, section :ref:`sec-input-noise`),
    ``"input_gradient"`` (:func:`.input_gradient_penalty` of ``loss_fn``), or any callable
    ``penalty(model, x, y) -> scalar tensor``. Sections of chapter *Noise injection as
    regularization*. Returns ``(loss, outputs)`` so that ``fit`` reports training accuracy.
    """
    eta = check_nonneg_float(eta, "eta")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    check_positive_int(output_probes, "output_probes", allow_none=True)
    check_generator(generator)
    named = ("weight_gradient", "input_gradient", "input_jacobian")
    if isinstance(penalty, str):
        if penalty not in named:
            raise ValueError(f"penalty must be one of {named} or a callable, got {penalty!r}")
    elif not callable(penalty):
        raise TypeError(f"penalty must be one of {named} or a callable, got {penalty!r}")

    compute = _penalty_fn(penalty, loss_fn, params, output_probes, generator)

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        loss = loss_fn(out, y)
        if eta == 0:
            return loss, out
        return loss + eta * compute(model, x, y), out

    name = f"penalty_objective(eta={eta!r}, penalty={penalty!r})"
    return SeededCallable(objective, generator, name)


def _penalty_fn(
    penalty: str | PenaltyFn,
    loss_fn: LossFn,
    params: ParamSelection,
    output_probes: int | None,
    generator: torch.Generator | None,
) -> PenaltyFn:
    """The penalty ``(model, x, y) -> scalar`` that :func:`.penalty_objective` adds to the loss."""
    if penalty == "weight_gradient":
        return lambda model, x, y: weight_gradient_penalty(
            model, x, params=params, output_probes=output_probes, generator=generator
        )
    if penalty == "input_jacobian":
        return lambda model, x, y: input_jacobian_penalty(
            model, x, output_probes=output_probes, generator=generator
        )
    if penalty == "input_gradient":
        return lambda model, x, y: input_gradient_penalty(model, x, y, loss_fn=loss_fn)
    if isinstance(penalty, str):  # excluded by penalty_objective's checks
        raise ValueError(f"unknown penalty {penalty!r}")
    return penalty
