"""Helpers shared by the noise modules: argument checks, parameter groups, seeded noise draws."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


def check_nonnegative(value: float, name: str) -> float:
    """``value`` as a float, or a ``TypeError``/``ValueError`` unless it is a finite number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


def check_positive_int(value: int | None, name: str, *, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an ``int`` ≥ 1 (or ``None`` when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_tensor(x: object, name: str, *, floating: bool = True) -> torch.Tensor:
    """Return ``x`` if it is a (floating-point) tensor with a batch dimension, else raise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must have a non-empty batch dimension, got shape {tuple(x.shape)}"
        )
    return x


def check_generator(generator: torch.Generator | None) -> None:
    """Raise a ``TypeError`` unless ``generator`` is ``None`` or a ``torch.Generator``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def check_no_training_batchnorm(model: nn.Module, what: str) -> None:
    """Per-example (vmapped) computations are undefined with batch statistics: refuse them."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what}: model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{what} needs per-example outputs, which are undefined for BatchNorm in "
                f"training mode (batch statistics; {name or 'model'} is training); "
                "call model.eval() first"
            )


def randn_like(
    like: torch.Tensor, generator: torch.Generator | None, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Standard normal draws shaped ``shape`` (default ``like.shape``) in ``like``'s dtype/device.

    With a ``generator`` the numbers come from it, on the generator's device, and are then moved
    to ``like.device`` (so a CPU generator gives the same numbers on every device); without one
    they come from PyTorch's global generator of ``like.device``.
    """
    size = tuple(like.shape) if shape is None else shape
    if generator is None:
        return torch.randn(size, dtype=like.dtype, device=like.device)
    z = torch.randn(size, dtype=like.dtype, device=generator.device, generator=generator)
    return z.to(like.device, non_blocking=True)


def rademacher_like(
    like: torch.Tensor, generator: torch.Generator | None, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Independent ±1 signs (probability ½ each) shaped ``shape``, like :func:`randn_like`."""
    size = tuple(like.shape) if shape is None else shape
    device = like.device if generator is None else generator.device
    bits = torch.randint(0, 2, size, device=device, generator=generator, dtype=torch.int8)
    return (2 * bits - 1).to(dtype=like.dtype, device=like.device, non_blocking=True)


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
