"""Helpers shared by the noise modules: input checks and parameter groups.

Seeded noise draws come from :mod:`advbook._core.random`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .._core.checks import ArgumentTypeError, check_finite, check_module

__all__ = ["ParamSelection", "select_parameters"]

#: Which parameters a weight-noise function acts on: ``"all"`` (every trainable parameter),
#: ``"weights"`` (trainable parameters with at least two dimensions — the weight matrices and
#: convolution kernels, not biases or normalisation scales), or a predicate ``(name, param) ->
#: bool``.
ParamSelection = Literal["all", "weights"] | Callable[[str, nn.Parameter], bool]


def select_parameters(model: nn.Module, params: ParamSelection = "all") -> dict[str, nn.Parameter]:
    """The parameters of ``model`` selected by ``params``, as an ordered ``{name: parameter}``.

    Only parameters with ``requires_grad=True`` are eligible; frozen parameters are never
    perturbed or penalised. Raises ``ValueError`` if the selection is empty.
    """
    check_module(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if isinstance(params, str):
        if params == "all":
            chosen = named
        elif params == "weights":
            chosen = [(n, p) for n, p in named if p.ndim >= 2]
        else:
            raise ValueError(
                f"params must be 'all', 'weights' or a callable (name, param) -> bool, "
                f"got {params!r}"
            )
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        raise TypeError(
            f"params must be 'all', 'weights' or a callable (name, param) -> bool, "
            f"got {type(params).__name__}"
        )
    if not chosen:
        raise ValueError(
            f"params={params!r} selects no trainable parameter of {type(model).__name__}"
        )
    return dict(chosen)


def check_floating(x: object, name: str, where: str | None = None) -> torch.Tensor:
    """``x`` after checking it is a floating-point tensor (no host synchronisation).

    Raises:
        ArgumentTypeError: not a tensor, or an integer/bool tensor ("expected a floating-point
            tensor, got torch.int64").
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f"{prefix}{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ArgumentTypeError(
            f"{prefix}{name} must be a floating-point tensor: expected a floating-point tensor, "
            f"got {x.dtype}"
        )
    return x


def check_nonempty_batch(
    x: object, name: str, *, min_ndim: int = 1, finite: bool = True, where: str | None = None
) -> torch.Tensor:
    """``x`` after checking it is a floating-point tensor with a non-empty batch dimension.

    ``min_ndim=2`` requires a batch of examples ``(N, ...)``; ``finite`` also checks that ``x``
    holds no NaN or inf (one host synchronisation).
    """
    x = check_floating(x, name, where)
    prefix = f"{where}: " if where else ""
    if x.ndim < min_ndim or x.shape[0] == 0:
        dims = "(N, ...) with at least 2 dimensions" if min_ndim >= 2 else "(N, ...)"
        raise ValueError(
            f"{prefix}{name} must have a non-empty batch dimension, shape {dims}, got shape "
            f"{tuple(x.shape)}"
        )
    if finite:
        check_finite(x, name, where)
    return x


def check_no_training_batchnorm(model: nn.Module, what: str) -> None:
    """Per-example (vmapped) computations are undefined with batch statistics: refuse them."""
    check_module(model, what)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{what} needs per-example outputs, which are undefined for BatchNorm in "
                f"training mode (batch statistics; {name or 'model'} is training); "
                "call model.eval() first"
            )


def as_outputs(yhat: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten predictions and targets to ``(N, K)`` for the squared-error formulas.

    ``y`` must hold as many numbers per example as ``yhat`` (``(N,)`` targets are accepted for
    ``(N, 1)`` predictions).
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what}: y must be a torch.Tensor, got {type(y).__name__}")
    n = yhat.shape[0]
    if y.ndim < 1 or y.shape[0] != n or y.numel() != yhat.numel():
        raise ValueError(
            f"{what}: the squared-error formulas need one target per model output, got "
            f"predictions {tuple(yhat.shape)} and targets {tuple(y.shape)}"
        )
    return yhat.reshape(n, -1), y.reshape(n, -1).to(dtype=yhat.dtype, device=yhat.device)
