"""Helpers shared by the noise modules: input checks and parameter groups.

Seeded noise draws come from :mod:`advbook._core.random`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .._core.checks import check_module, check_tensor

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


def check_nonempty_batch(x: object, name: str) -> torch.Tensor:
    """``x`` after checking it is a floating-point tensor with a non-empty batch dimension."""
    x = check_tensor(x, name, floating=True)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must have a non-empty batch dimension, got shape {tuple(x.shape)}"
        )
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
