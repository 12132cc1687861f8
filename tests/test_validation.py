"""Direct tests of the shared argument checks in :mod:`advbook._core.checks`."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from advbook._core.checks import (
    NORMS,
    ArgumentTypeError,
    check_batch,
    check_bounds,
    check_choice,
    check_float_in,
    check_fraction,
    check_generator,
    check_model_device,
    check_module,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_tensor,
)
from advbook._core.devices import model_devices


def _raises(exc: type[Exception], *fragments: str) -> pytest.RaisesExc[Exception]:
    """``pytest.raises`` whose message must contain every fragment, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


def test_argument_type_error_is_a_type_error_and_a_value_error() -> None:
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, ValueError)


# ------------------------------------------------------------------------------------- floats


@pytest.mark.parametrize(
    "value", [0, 0.0, 2, 0.25, np.float32(0.5), np.float64(3.0), torch.tensor(0.5)]
)
def test_nonneg_float_accepts_finite_non_negative_reals(value: object) -> None:
    out = check_nonneg_float(value, "eps")
    assert isinstance(out, float) and out == float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.1, -1, float("nan"), float("inf"), torch.tensor(-2.0)])
def test_nonneg_float_rejects_negative_and_non_finite(value: object) -> None:
    with _raises(ValueError, "eps must be a finite number >= 0, got"):
        check_nonneg_float(value, "eps")


@pytest.mark.parametrize("value", ["0.1", True, None, [0.1], 1j])
def test_nonneg_float_rejects_wrong_types(value: object) -> None:
    with _raises(TypeError, "eps must be a real number, got", type(value).__name__):
        check_nonneg_float(value, "eps")


def test_nonneg_float_rejects_tensors_with_more_than_one_element() -> None:
    with _raises(TypeError, "eps must be a scalar, got a tensor of shape (2,)"):
        check_nonneg_float(torch.zeros(2), "eps")


def test_float_checks_pass_none_through_only_when_allowed() -> None:
    assert check_nonneg_float(None, "alpha", allow_none=True) is None
    assert check_positive_float(None, "alpha", allow_none=True) is None
    with _raises(TypeError, "alpha must be a real number, got NoneType"):
        check_positive_float(None, "alpha")


def test_positive_float_rejects_zero() -> None:
    assert check_positive_float(1e-9, "lr") == 1e-9
    for bad in (0, 0.0, -1.0, float("nan"), float("inf")):
        with _raises(ValueError, "lr must be a finite number > 0, got"):
            check_positive_float(bad, "lr")


def test_float_in_checks_both_ends_inclusively() -> None:
    assert check_float_in(0, "strength", 0.0, 2.0) == 0.0
    assert check_float_in(2, "strength", 0.0, 2.0) == 2.0
    for bad in (-0.01, 2.01, float("nan"), float("inf")):
        with _raises(ValueError, "strength must lie in [0, 2], got"):
            check_float_in(bad, "strength", 0.0, 2.0)
    with _raises(TypeError, "strength must be a real number, got str"):
        check_float_in("1", "strength", 0.0, 2.0)


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float64(0.25)])
def test_fraction_accepts_the_unit_interval(value: object) -> None:
    assert check_fraction(value, "alpha") == float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_fraction_rejects_values_outside_the_unit_interval(value: float) -> None:
    with _raises(ValueError, "alpha must lie in [0, 1], got"):
        check_fraction(value, "alpha")


def test_fraction_rejects_wrong_types_also_as_value_error() -> None:
    for exc in (TypeError, ValueError):
        with _raises(exc, "p must be a real number, got bool"):
            check_fraction(True, "p")


# --------------------------------------------------------------------------------------- ints


@pytest.mark.parametrize("value", [0, 3, np.int64(7), torch.tensor(5).item()])
def test_nonneg_int_accepts_integers(value: object) -> None:
    out = check_nonneg_int(value, "steps")
    assert type(out) is int and out == int(value)  # type: ignore[call-overload]


def test_nonneg_int_minimum_and_maximum() -> None:
    assert check_nonneg_int(1, "restarts", minimum=1) == 1
    with _raises(ValueError, "restarts must be an int >= 1, got 0"):
        check_nonneg_int(0, "restarts", minimum=1)
    with _raises(ValueError, "steps must be an int >= 0, got -1"):
        check_nonneg_int(-1, "steps")
    assert check_nonneg_int(3, "n", maximum=3) == 3
    with _raises(ValueError, "n must be an int in [0, 3], got 4"):
        check_nonneg_int(4, "n", maximum=3)


@pytest.mark.parametrize("value", [2.5, 2.0, True, "3", None, torch.tensor(3)])
def test_nonneg_int_rejects_non_integers(value: object) -> None:
    for exc in (TypeError, ValueError):
        with _raises(exc, "steps must be an int, got", type(value).__name__):
            check_nonneg_int(value, "steps")


def test_nonneg_int_passes_none_through_when_allowed() -> None:
    assert check_nonneg_int(None, "chunk_size", minimum=1, allow_none=True) is None
    with _raises(ValueError, "chunk_size must be an int >= 1, got 0"):
        check_nonneg_int(0, "chunk_size", minimum=1, allow_none=True)


# ------------------------------------------------------------------------ choices and bounds


def test_choice() -> None:
    assert check_choice("l2", "norm", NORMS) == "l2"
    with _raises(ValueError, "norm must be one of ('linf', 'l2'), got 'l1'"):
        check_choice("l1", "norm", NORMS)
    with _raises(ValueError, "norm must be one of ('linf', 'l2'), got 2"):
        check_choice(2, "norm", NORMS)


@pytest.mark.parametrize("bounds", [(0, 1), (-1.0, 1.0), [0.0, 255.0], (np.float32(0), 1)])
def test_bounds_accepts_ordered_finite_pairs(bounds: object) -> None:
    lo, hi = check_bounds(bounds)
    assert (type(lo), type(hi)) == (float, float) and lo < hi


@pytest.mark.parametrize("bounds", [(0.0,), (0.0, 0.5, 1.0), "01", None, torch.tensor([0.0, 1.0])])
def test_bounds_rejects_anything_but_a_pair(bounds: object) -> None:
    with _raises(TypeError, "bounds must be a pair (low, high) of floats, got"):
        check_bounds(bounds)


@pytest.mark.parametrize("bounds", [(0.0, float("nan")), (-float("inf"), 0.0), (0, True), ("0", 1)])
def test_bounds_rejects_non_finite_or_non_real_entries(bounds: object) -> None:
    with _raises(ValueError, "bounds must be finite real numbers, got"):
        check_bounds(bounds)


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.5, 0.5)])
def test_bounds_rejects_empty_intervals(bounds: object) -> None:
    with _raises(ValueError, "bounds must satisfy low < high, got"):
        check_bounds(bounds)


# ------------------------------------------------------------------- generators and modules


def test_generator() -> None:
    g = torch.Generator()
    assert check_generator(g) is g
    assert check_generator(None) is None
    with _raises(TypeError, "generator must be a torch.Generator or None, got int"):
        check_generator(0)
    with _raises(ValueError, "pgd: generator must be a torch.Generator or None, got str"):
        check_generator("seed", "pgd")


def test_module() -> None:
    net = nn.Linear(2, 2)
    assert check_module(net) is net
    with _raises(TypeError, "model must be a torch.nn.Module, got function"):
        check_module(lambda t: t)
    with _raises(TypeError, "fgsm: model must be a torch.nn.Module, got NoneType"):
        check_module(None, "fgsm")


def test_tensor() -> None:
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x") is x
    assert check_tensor(x.long(), "y") is not None
    with _raises(TypeError, "x must be a torch.Tensor, got list"):
        check_tensor([0.0], "x")
    with _raises(TypeError, "trades: x must be a floating-point tensor, got dtype torch.int64"):
        check_tensor(x.long(), "x", where="trades", floating=True)


# ---------------------------------------------------------------------------------- batches

def _batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return nn.Linear(3, 2), torch.rand(4, 3), torch.tensor([0, 1, 1, 0])


def test_batch_accepts_a_valid_batch_with_or_without_labels() -> None:
    model, x, y = _batch()
    check_batch(model, x, y, "fit_step")
    check_batch(model, x, None, "fit_step")


@pytest.mark.parametrize(
    ("change", "exc", "fragments"),
    [
        ({"model": "net"}, TypeError, ("step: model must be a torch.nn.Module, got str",)),
        ({"x": [[0.0]]}, TypeError, ("step: x must be a torch.Tensor, got list",)),
        ({"x": torch.ones(4, 3, dtype=torch.long)}, TypeError, ("step: x", "floating-point")),
        ({"x": torch.rand(4)}, ValueError, ("step: x", "at least 2 dimensions", "(4,)")),
        ({"y": [0, 1, 1, 0]}, TypeError, ("step: y must be a torch.Tensor, got list",)),
        ({"y": torch.zeros(4)}, TypeError, ("step: y must hold integer class indices",)),
        ({"y": torch.zeros(4, dtype=torch.bool)}, TypeError, ("integer class indices",)),
        ({"y": torch.zeros(3, dtype=torch.long)}, ValueError, ("step: y must have shape (N,)",
                                                                "(4,)")),
        ({"y": torch.zeros(4, 1, dtype=torch.long)}, ValueError, ("y must have shape (N,)",)),
        ({"y": torch.zeros(4, dtype=torch.long, device="meta")}, ValueError, ("but y is on meta",)),
    ],
)
def test_batch_rejects_bad_inputs(change: dict, exc: type[Exception], fragments: tuple) -> None:
    model, x, y = _batch()
    args = {"model": model, "x": x, "y": y, **change}
    with _raises(exc, *fragments):
        check_batch(args["model"], args["x"], args["y"], "step")


def test_model_devices_and_device_check() -> None:
    x = torch.rand(2, 3)
    model = nn.BatchNorm1d(3)
    assert model_devices(model) == {torch.device("cpu")}
    assert model_devices(nn.ReLU()) == set()
    check_model_device(model, x, "pgd")
    check_model_device(nn.ReLU(), x, "pgd")  # a stateless model fits every device
    with _raises(ValueError, "pgd: the model's parameters/buffers are on meta but x is on cpu",
                 "share one device"):
        check_model_device(model.to("meta"), x, "pgd")


def test_check_in_bounds_is_exact_and_names_the_caller() -> None:
    from advbook._core.checks import check_in_bounds

    check_in_bounds(torch.tensor([0.0, 1.0]), (0.0, 1.0), "f")
    check_in_bounds(torch.empty(0), (0.0, 1.0), "f")
    with pytest.raises(ValueError, match=r"f: x must lie inside bounds \[0.0, 1.0\].*\[0.5, 1.5\]"):
        check_in_bounds(torch.tensor([0.5, 1.5]), (0.0, 1.0), "f")
    with pytest.raises(ValueError, match="f: x contains NaN"):
        check_in_bounds(torch.tensor([0.5, float("nan")]), (0.0, 1.0), "f")


def test_check_positive_int() -> None:
    from advbook._core.checks import check_positive_int

    assert check_positive_int(3, "k") == 3
    assert check_positive_int(None, "k", allow_none=True) is None
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        check_positive_int(0, "k")
