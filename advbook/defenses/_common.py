"""Validation, model-mode guard and the shared base class of the training recipes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "NORMS",
    "Recipe",
    "check_batch",
    "check_bounds",
    "check_fraction",
    "check_generator",
    "check_int",
    "check_nonneg",
    "check_norm",
    "eval_mode",
    "per_sample",
    "project",
    "randn_like",
    "steepest_ascent",
]

NORMS = ("linf", "l2")
_TINY = 1e-12


def check_nonneg(value: object, name: str, *, positive: bool = False) -> float:
    """``value`` as a float after checking it is a finite real ``≥ 0`` (``> 0`` if positive)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out) or out < 0 or (positive and out == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return out


def check_fraction(value: object, name: str) -> float:
    """``value`` as a float after checking it lies in ``[0, 1]``."""
    out = check_nonneg(value, name)
    if out > 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return out


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` after checking it is an ``int`` (not a bool) ``≥ minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_norm(norm: object) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def check_bounds(bounds: object) -> tuple[float, float]:
    """Check that ``bounds`` is a pair of finite reals ``(lo, hi)`` with ``lo < hi``."""
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise TypeError(f"bounds must be a pair (lo, hi) of floats, got {bounds!r}")
    lo, hi = bounds
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise ValueError(f"bounds must be finite real numbers, got {bounds!r}")
    if not float(lo) < float(hi):
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds!r}")
    return float(lo), float(hi)


def check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def check_batch(model: object, x: object, y: object | None, name: str) -> None:
    """Shape, dtype and device checks of a training batch (no host synchronisation)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name}: x must be batched (N, ...), got shape {tuple(x.shape)}")
    if y is None:
        return
    if not isinstance(y, Tensor):
        raise TypeError(f"{name}: y must be a torch.Tensor of labels, got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{name}: y must hold integer class indices (int64), got dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"{name}: y must have shape (N,) = ({x.shape[0]},) to match x {tuple(x.shape)}, got "
            f"{tuple(y.shape)}"
        )
    if y.device != x.device:
        raise ValueError(f"{name}: x is on {x.device} but y is on {y.device}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode with gradients on; restore every module's flag afterwards.

    Each sub-module gets its own ``training`` flag back (also when the body raises), so a model
    with some layers deliberately frozen in eval mode comes back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def per_sample(s: Tensor, like: Tensor) -> Tensor:
    """Reshape ``(N,)`` so that it broadcasts against ``like`` ``(N, ...)``."""
    return s.reshape(-1, *([1] * (like.ndim - 1)))


def _l2(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), ord=2, dim=1)


def steepest_ascent(g: Tensor, norm: str) -> Tensor:
    """Unit-norm maximiser of ``⟨g, d⟩``: ``sign(g)`` (L∞) or ``g/‖g‖₂`` (L2, ``0`` for ``g=0``)."""
    if norm == "linf":
        return g.sign()
    return g / per_sample(_l2(g).clamp_min(_TINY), g)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Projection onto ``{‖δ‖ ≤ ε}``: ``clamp(δ, −ε, ε)`` (L∞) or ``δ·min(1, ε/‖δ‖₂)`` (L2)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / _l2(delta).clamp_min(_TINY)).clamp(max=1.0)
    return delta * per_sample(factor, delta)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` on its device and dtype.

    With a generator the numbers are drawn on the generator's device and moved, so a seeded
    CPU generator gives the same noise for CPU and CUDA data.
    """
    if generator is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    out = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return out.to(x.device)


class Recipe:
    """Base of the adversarial-training objectives: an ``objective(model, x, y)`` for ``fit``.

    Holds the radius ``eps`` (a plain attribute that schedules may change between epochs), the
    input ``bounds`` and an optional ``generator``. Radius and generator state are exposed
    through :meth:`state_dict`/:meth:`load_state_dict`, which :func:`advbook.train.fit` stores
    in its checkpoints so that a resumed run uses the same radius and draws the same random
    starts as an uninterrupted one.
    """

    def __init__(
        self, eps: float, *, bounds: tuple[float, float], generator: torch.Generator | None
    ) -> None:
        self.eps = check_nonneg(eps, "eps")
        self.bounds = check_bounds(bounds)
        self.generator = check_generator(generator)

    def state_dict(self) -> dict[str, Any]:
        """``{"eps": ε}`` plus ``"generator"``: its state, when a generator is set.

        ``eps`` is included because a schedule (:class:`~advbook.defenses.EpsilonRamp`) may
        change it during training.
        """
        state: dict[str, Any] = {"eps": self.eps}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the radius and generator state saved by :meth:`state_dict`."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if "eps" in state:
            self.eps = check_nonneg(state["eps"], "eps")
        if "generator" in state:
            if self.generator is None:
                raise ValueError("the saved state has a generator state but this recipe has no "
                                 "generator; construct it with generator=torch.Generator()")
            self.generator.set_state(state["generator"].cpu())

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"
