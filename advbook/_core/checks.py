"""Argument checks shared by the subpackages of :mod:`advbook` (part of the internal layer).

Every check either returns the value in a normalised form (a ``float``, an ``int``, a
``(lo, hi)`` pair, ...) or raises an exception whose message names the argument, says what is
expected and shows what was passed. Checks that belong to one package only (the attacks'
``check_inputs``, the transforms' parameter ranges, ...) stay in that package and build on these.

Wrong *types* raise :class:`ArgumentTypeError`, which is a ``TypeError`` and also a
``ValueError``: some subpackages reported wrong types as ``ValueError`` before the checks were
shared, so code that catches either exception keeps working.

``where`` arguments name the public function being validated; when given, messages start with
``"<where>: "``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Literal, overload

import torch
from torch import Tensor, nn

from .devices import model_devices

__all__ = [
    "NORMS",
    "ArgumentTypeError",
    "check_batch",
    "check_bounds",
    "check_choice",
    "check_float_in",
    "check_fraction",
    "check_generator",
    "check_in_bounds",
    "check_model_device",
    "check_module",
    "check_nonneg_float",
    "check_nonneg_int",
    "check_positive_float",
    "check_positive_int",
    "check_tensor",
]

#: The perturbation norms accepted by the attacks and the adversarial-training recipes.
NORMS: tuple[str, ...] = ("linf", "l2")


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError`` that is also a ``ValueError``)."""


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


# ----------------------------------------------------------------------------------- numbers
def _as_float(value: object, name: str) -> float:
    """``value`` as a float: a real number (not a bool) or a one-element tensor."""
    if isinstance(value, bool) or not isinstance(value, Real | Tensor):
        raise ArgumentTypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ArgumentTypeError(
                f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    return float(value)


@overload
def check_nonneg_float(value: object, name: str, *, allow_none: Literal[False] = ...) -> float: ...


@overload
def check_nonneg_float(value: object, name: str, *, allow_none: bool) -> float | None: ...


def check_nonneg_float(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """``value`` as a float after checking that it is a finite real number ``>= 0``.

    Accepts Python and NumPy reals and one-element tensors; ``None`` passes through when
    ``allow_none``.

    Raises:
        ArgumentTypeError: ``value`` is not a real number (a bool is not one).
        ValueError: ``value`` is negative, NaN or infinite.
    """
    if value is None and allow_none:
        return None
    out = _as_float(value, name)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {out}")
    return out


@overload
def check_positive_float(
    value: object, name: str, *, allow_none: Literal[False] = ...
) -> float: ...


@overload
def check_positive_float(value: object, name: str, *, allow_none: bool) -> float | None: ...


def check_positive_float(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """``value`` as a float after checking that it is a finite real number ``> 0``.

    Like :func:`check_nonneg_float`, with zero rejected too.
    """
    if value is None and allow_none:
        return None
    out = _as_float(value, name)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {out}")
    return out


def check_float_in(value: object, name: str, low: float, high: float) -> float:
    """``value`` as a float after checking ``low <= value <= high`` (NaN is rejected).

    Raises:
        ArgumentTypeError: ``value`` is not a real number.
        ValueError: ``value`` lies outside ``[low, high]`` or is NaN.
    """
    out = _as_float(value, name)
    if not low <= out <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {out}")
    return out


def check_fraction(value: object, name: str) -> float:
    """``value`` as a float after checking that it lies in ``[0, 1]`` (a probability or share)."""
    return check_float_in(value, name, 0.0, 1.0)


@overload
def check_nonneg_int(
    value: object,
    name: str,
    *,
    minimum: int = ...,
    maximum: int | None = ...,
    allow_none: Literal[False] = ...,
) -> int: ...


@overload
def check_nonneg_int(
    value: object, name: str, *, minimum: int = ..., maximum: int | None = ..., allow_none: bool
) -> int | None: ...


def check_nonneg_int(
    value: object,
    name: str,
    *,
    minimum: int = 0,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` after checking ``minimum <= value`` (and ``<= maximum`` if given).

    Accepts Python and NumPy integers, not bools or floats; ``None`` passes through when
    ``allow_none``.

    Raises:
        ArgumentTypeError: ``value`` is not an integer.
        ValueError: ``value`` lies outside the allowed range.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    out = int(value)
    if out < minimum or (maximum is not None and out > maximum):
        expected = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {expected}, got {out}")
    return out


@overload
def check_positive_int(
    value: object, name: str, *, maximum: int | None = ..., allow_none: Literal[False] = ...
) -> int: ...


@overload
def check_positive_int(
    value: object, name: str, *, maximum: int | None = ..., allow_none: bool
) -> int | None: ...


def check_positive_int(
    value: object, name: str, *, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` as an ``int >= 1`` (and ``<= maximum`` if given); see :func:`check_nonneg_int`."""
    return check_nonneg_int(value, name, minimum=1, maximum=maximum, allow_none=allow_none)


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of the strings ``choices`` and return it.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (also when it is not a string).
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bounds(bounds: object) -> tuple[float, float]:
    """``(low, high)`` as floats after checking that ``bounds`` is a pair of finite reals.

    Raises:
        TypeError: ``bounds`` is not a tuple or list of length 2.
        ValueError: an entry is not a finite real number, or ``low >= high``.
    """
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise TypeError(f"bounds must be a pair (low, high) of floats, got {bounds!r}")
    for v in bounds:
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)):
            raise ValueError(f"bounds must be finite real numbers, got {bounds!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo < hi:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    return lo, hi


# ----------------------------------------------------------------------- objects and tensors
def check_generator(generator: object, where: str | None = None) -> torch.Generator | None:
    """Check that ``generator`` is a ``torch.Generator`` or ``None`` and return it.

    Raises:
        ArgumentTypeError: anything else was passed (e.g. an int seed).
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            f"{_prefix(where)}generator must be a torch.Generator or None, got "
            f"{type(generator).__name__}"
        )
    return generator


def check_module(model: object, where: str | None = None) -> nn.Module:
    """Check that ``model`` is a ``torch.nn.Module`` and return it.

    Raises:
        ArgumentTypeError: ``model`` is something else (e.g. a plain function).
    """
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(
            f"{_prefix(where)}model must be a torch.nn.Module, got {type(model).__name__}"
        )
    return model


def check_tensor(
    value: object, name: str, *, where: str | None = None, floating: bool = False
) -> Tensor:
    """Check that ``value`` is a ``torch.Tensor`` (of a floating dtype when ``floating``).

    Raises:
        ArgumentTypeError: ``value`` is not a tensor, or not floating point when required.
    """
    prefix = _prefix(where)
    if not isinstance(value, Tensor):
        raise ArgumentTypeError(
            f"{prefix}{name} must be a torch.Tensor, got {type(value).__name__}"
        )
    if floating and not value.is_floating_point():
        raise ArgumentTypeError(
            f"{prefix}{name} must be a floating-point tensor, got dtype {value.dtype}"
        )
    return value


def check_batch(model: object, x: object, y: object | None, where: str) -> None:
    """Type, shape and device checks of a classification batch (no host synchronisation).

    Checks that ``model`` is an ``nn.Module``, that ``x`` is a floating tensor ``(N, ...)`` with
    at least two dimensions and, unless ``y`` is ``None``, that ``y`` is an integer tensor of
    shape ``(N,)`` on ``x``'s device. Values (finiteness, ranges) are not inspected.

    Raises:
        ArgumentTypeError: a wrong type or dtype.
        ValueError: a wrong shape, or ``x`` and ``y`` on different devices.
    """
    check_module(model, where)
    x = check_tensor(x, "x", where=where, floating=True)
    if x.ndim < 2:
        raise ValueError(
            f"{where}: x must be batched with shape (N, ...) and at least 2 dimensions, got "
            f"shape {tuple(x.shape)}"
        )
    if y is None:
        return
    y = check_tensor(y, "y", where=where)
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ArgumentTypeError(
            f"{where}: y must hold integer class indices (int64), got dtype {y.dtype}"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"{where}: y must have shape (N,) = ({x.shape[0]},) to match x {tuple(x.shape)}, got "
            f"{tuple(y.shape)}"
        )
    if y.device != x.device:
        raise ValueError(f"{where}: x is on {x.device} but y is on {y.device}; put both on one "
                         f"device")


def check_model_device(model: nn.Module, x: Tensor, where: str) -> None:
    """Check that every parameter and buffer of ``model`` lives on ``x``'s device.

    Raises:
        ValueError: some live elsewhere (the message lists the devices found).
    """
    devices = model_devices(model)
    if devices and devices != {x.device}:
        found = ", ".join(sorted(str(d) for d in devices))
        raise ValueError(
            f"{where}: the model's parameters/buffers are on {found} but x is on {x.device}; "
            f"move the model or the data so that they share one device"
        )


def check_in_bounds(x: Tensor, bounds: tuple[float, float], where: str) -> None:
    """Check that ``x`` is finite and inside ``bounds = (lo, hi)``, exactly (no slack).

    One pass and one host synchronisation; an empty tensor passes.

    Raises:
        ValueError: a NaN or infinite value, or a value outside ``[lo, hi]`` (the message shows
            the range found).
    """
    if x.numel() == 0:
        return
    lo, hi = bounds
    with torch.no_grad():
        xd = x.detach()
        x_min, x_max = torch.stack(list(torch.aminmax(xd))).to(torch.float64).tolist()
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise ValueError(f"{_prefix(where)}x contains NaN or infinite values")
    if x_min < lo or x_max > hi:
        raise ValueError(
            f"{_prefix(where)}x must lie inside bounds [{lo}, {hi}], but its values span "
            f"[{x_min:.6g}, {x_max:.6g}]; rescale x or pass bounds="
        )


def check_class_labels(y: object, where: str | None = None) -> Tensor:
    """Check that ``y`` is a tensor of integer class indices (not bool, float or complex).

    Shapes and value ranges are left to the caller.

    Raises:
        ArgumentTypeError: ``y`` is not a tensor, or its dtype is not an integer type.
    """
    prefix = _prefix(where)
    if not isinstance(y, Tensor):
        raise ArgumentTypeError(
            f"{prefix}y must be a tensor of class indices, got {type(y).__name__}"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ArgumentTypeError(
            f"{prefix}y must hold integer class indices, got dtype {y.dtype}"
        )
    return y


def check_finite(x: Tensor, name: str, where: str | None = None) -> Tensor:
    """Check that the tensor ``x`` holds no NaN or infinite value (one host synchronisation).

    Integer and bool tensors pass without a look; an empty tensor passes.

    Raises:
        ValueError: ``x`` contains NaN or ±inf (the message counts them).
    """
    if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
        return x
    bad = int((~torch.isfinite(x.detach())).sum())
    if bad:
        raise ValueError(
            f"{_prefix(where)}{name} must be finite, but {bad} of its {x.numel()} values are "
            f"NaN or infinite"
        )
    return x


def check_logits(
    logits: object, n: int, y_max: int | None = None, *, name: str, classes: int | None = None
) -> int:
    """Check the logits a model returned for ``n`` inputs and return the class count ``K``.

    Expects a floating tensor ``(n, K)`` with ``K ≥ 2``; with ``y_max`` every label ``≤ y_max``
    must be a class (``y_max < K``); with ``classes`` the model must return that many classes
    (the same as on an earlier pass). Used by every attack on its first logits and by
    :mod:`advbook.certify` on each batch of noisy copies.
    """
    if not isinstance(logits, Tensor):
        raise ValueError(
            f"{name}: model(x) must return a tensor of logits (N, K), got {type(logits).__name__}"
        )
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(
            f"{name}: model(x) must return logits of shape (N, K) = ({n}, K), got "
            f"{tuple(logits.shape)}"
        )
    k = int(logits.shape[1])
    if k < 2:
        raise ValueError(f"{name}: the model must have at least 2 classes, got K={k}")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got dtype {logits.dtype}")
    if y_max is not None and y_max >= k:
        raise ValueError(f"{name}: labels must lie in [0, K) = [0, {k}), got a label {y_max}")
    if classes is not None and k != classes:
        raise ValueError(f"{name}: the model returned {k} classes, earlier {classes}")
    return k
