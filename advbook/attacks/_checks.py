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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from .._validation import check_batch, check_bounds, check_model_device

__all__ = ["check_inputs", "check_logits", "model_guard", "plain"]


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
    check_batch(model, x, y, name)
    model, x, y = cast(nn.Module, model), cast(Tensor, x), cast(Tensor, y)
    check_model_device(model, x, name)
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
