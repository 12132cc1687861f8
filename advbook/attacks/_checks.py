"""Input checks specific to :mod:`advbook.attacks`.

Every attack calls :func:`check_inputs` before doing any work (the type, shape and device checks
are the shared :func:`advbook._core.checks.check_batch`; the value checks here need one host
synchronisation) and :func:`check_logits` on the first logits the model returns. The attacks run
the model inside :func:`advbook._core.guard.model_guard`, which leaves it exactly as it was.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from .._core.checks import check_batch, check_bounds, check_logits, check_model_device

__all__ = ["check_inputs", "check_logits"]


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
