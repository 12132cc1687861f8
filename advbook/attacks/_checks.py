"""Shared input validation and the "nothing is lost" model guard of :mod:`advbook.attacks`.

Every attack calls :func:`check_inputs` before doing any work and runs the model inside
:func:`model_guard`, which

* switches every sub-module to eval mode and restores each module's own ``training`` flag
  afterwards (also a model whose BatchNorm layers were frozen in eval mode comes back exactly as
  it was), even when the attack raises midway;
* restores every parameter's ``.grad`` (``None`` stays ``None``);
* restores the running statistics of normalisation layers should anything have changed them;
* turns gradient recording on, also when the caller is inside ``torch.no_grad()`` or
  ``torch.inference_mode()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = [
    "check_bounds",
    "check_choice",
    "check_inputs",
    "check_logits",
    "check_nonneg_float",
    "check_nonneg_int",
    "check_positive_float",
    "model_guard",
    "plain",
]

NORMS = ("linf", "l2")


def check_nonneg_float(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float after checking that it is a finite real number ``≥ 0``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real | Tensor):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_positive_float(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float after checking that it is a finite real number ``> 0``."""
    out = check_nonneg_float(value, name, allow_none=allow_none)
    if out is not None and out <= 0:
        raise ValueError(f"{name} must be > 0, got {out}")
    return out


def check_nonneg_int(value: object, name: str, *, minimum: int = 0) -> int:
    """Return ``value`` after checking that it is an ``int`` (not a bool) ``≥ minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bounds(bounds: object) -> tuple[float, float]:
    """Check that ``bounds`` is a pair of finite reals ``(lo, hi)`` with ``lo < hi``."""
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise TypeError(f"bounds must be a pair (lo, hi) of floats, got {bounds!r}")
    lo, hi = bounds
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise ValueError(f"bounds must be finite real numbers, got {bounds!r}")
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return lo, hi


def _model_devices(model: nn.Module) -> set[torch.device]:
    devices = {p.device for p in model.parameters()}
    devices |= {b.device for b in model.buffers()}
    return devices


def check_inputs(
    model: object, x: object, y: object, bounds: object, *, name: str
) -> tuple[float, float, int]:
    """Validate the arguments shared by all attacks, before any work is done.

    Checks that ``model`` is an ``nn.Module`` living on ``x``'s device, that ``x`` is a finite
    floating tensor ``(N, ...)`` inside ``bounds``, and that ``y`` is an integer tensor of shape
    ``(N,)`` on the same device with non-negative entries. Costs one host synchronisation.

    Returns:
        ``(lo, hi, y_max)``; ``y_max`` (``-1`` for an empty batch) is compared with the number
        of classes once the first logits are known (:func:`check_logits`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: y must be a torch.Tensor of labels, got {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(
            f"{name}: x must be batched with shape (N, ...) and at least 2 dimensions, got shape "
            f"{tuple(x.shape)}"
        )
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name}: y must hold integer class indices (int64), got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: y must have shape (N,) = ({x.shape[0]},) to match x {tuple(x.shape)}, got "
            f"{tuple(y.shape)}"
        )
    if y.device != x.device:
        raise ValueError(
            f"{name}: x is on {x.device} but y is on {y.device}; put both on one device"
        )
    devices = _model_devices(model)
    if devices and devices != {x.device}:
        found = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(
            f"{name}: the model's parameters/buffers are on {found} but x is on {x.device}; move "
            f"the model or the data so that they share one device"
        )
    lo, hi = check_bounds(bounds)
    if x.shape[0] == 0:
        return lo, hi, -1
    with torch.no_grad():
        xd = x.detach()
        stats = torch.stack(
            [
                (~torch.isfinite(xd)).any().to(torch.float64),
                xd.amin().to(torch.float64),
                xd.amax().to(torch.float64),
                y.amin().to(torch.float64),
                y.amax().to(torch.float64),
            ]
        ).tolist()
    nonfinite, x_min, x_max, y_min, y_max = stats
    if nonfinite:
        raise ValueError(f"{name}: x contains NaN or infinite values")
    if x_min < lo or x_max > hi:
        raise ValueError(
            f"{name}: x must lie inside bounds [{lo}, {hi}], but its values span "
            f"[{x_min:.6g}, {x_max:.6g}]; rescale x or pass bounds="
        )
    if y_min < 0:
        raise ValueError(f"{name}: labels must be >= 0, got a minimum of {int(y_min)}")
    return lo, hi, int(y_max)


def check_logits(logits: object, n: int, y_max: int, *, name: str) -> None:
    """Check that the model returned logits of shape ``(N, K)``, ``K ≥ 2``, with ``y < K``."""
    if not isinstance(logits, Tensor):
        raise ValueError(
            f"{name}: model(x) must return a tensor of logits (N, K), got {type(logits).__name__}"
        )
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(
            f"{name}: model(x) must return logits of shape (N, K) = ({n}, K), got "
            f"{tuple(logits.shape)}"
        )
    if logits.shape[1] < 2:
        raise ValueError(f"{name}: the model must have at least 2 classes, got K={logits.shape[1]}")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got dtype {logits.dtype}")
    if y_max >= logits.shape[1]:
        raise ValueError(
            f"{name}: labels must lie in [0, K) = [0, {logits.shape[1]}), got a label {y_max}"
        )


def plain(t: Tensor) -> Tensor:
    """``t`` detached, copied if it is an inference tensor (so that autograd may use it).

    Call inside :func:`model_guard`, where inference mode is off.
    """
    return t.clone() if t.is_inference() else t.detach()


@contextmanager
def model_guard(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode with gradients enabled and leave it exactly as it was.

    Restores each module's ``training`` flag, each parameter's ``.grad`` object and the buffers
    of normalisation layers (BatchNorm running statistics), also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    norm_buffers = [
        (buf, buf._version, buf.detach().clone())
        for m in model.modules()
        if isinstance(m, _NormBase)
        for buf in m.buffers(recurse=False)
    ]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            if p.grad is not g:
                p.grad = g
        with torch.no_grad():
            for buf, version, saved in norm_buffers:
                if buf._version != version:
                    buf.copy_(saved)
