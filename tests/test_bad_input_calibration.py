"""Calibration metrics reject garbage instead of reporting perfection."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from advbook.calibration import (
    bin_statistics,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_diagram,
)

P = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
Y = torch.tensor([0, 1, 1])
FNS = [expected_calibration_error, maximum_calibration_error, reliability_diagram, bin_statistics]

CASES: list[tuple[str, Callable[..., object], tuple[object, object], dict[str, object],
                  type[Exception], str]] = [
    ("all-nan", expected_calibration_error, (torch.full((3, 2), float("nan")), Y), {},
     ValueError, "probs must be finite"),
    ("one-nan", maximum_calibration_error,
     (torch.tensor([[0.7, 0.3], [float("nan"), 0.8], [0.5, 0.5]]), Y), {}, ValueError,
     "1 of its 6 values"),
    ("logits-inf", expected_calibration_error,
     (torch.tensor([[1.0, float("inf")], [0.0, 1.0], [0.0, 0.0]]), Y), {"from_logits": True},
     ValueError, "logits must be finite"),
    ("logits-as-probs", expected_calibration_error, (torch.tensor([[2.0, -1.0]] * 3), Y), {},
     ValueError, "pass probabilities (softmax), not logits"),
    ("rows", expected_calibration_error, (torch.tensor([[0.5, 0.4]] * 3), Y), {}, ValueError,
     "rows summing to [0.9"),
    ("label-high", expected_calibration_error, (P, torch.tensor([0, 1, 2])), {}, ValueError,
     "y must hold class indices in [0, 2)"),
    ("label-neg", reliability_diagram, (P, torch.tensor([0, -1, 1])), {}, ValueError, "[-1, 1]"),
    ("label-float", bin_statistics, (P, Y.float()), {}, TypeError, "integer"),
    ("label-bool", expected_calibration_error, (P, Y.bool()), {}, TypeError, "integer"),
    ("label-shape", expected_calibration_error, (P, Y[:2]), {}, ValueError, "one label per row"),
    ("label-2d", expected_calibration_error, (P, Y[:, None]), {}, ValueError, "1-D"),
    ("probs-int", expected_calibration_error, (P.long(), Y), {}, TypeError, "floating point"),
    ("probs-1d", expected_calibration_error, (P[0], Y), {}, ValueError, "(N, k)"),
    ("n-bins", expected_calibration_error, (P, Y), {"n_bins": 0}, ValueError, "n_bins"),
    ("from-logits", expected_calibration_error, (P, Y), {"from_logits": "yes"}, TypeError,
     "from_logits"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "error", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_rejected(fn: Callable[..., object], args: tuple[object, object],
                               kwargs: dict[str, object], error: type[Exception],
                               match: str) -> None:
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert match in str(info.value)


@pytest.mark.parametrize("fn", FNS)
def test_every_function_rejects_nan(fn: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="finite"):
        fn(torch.full((3, 2), float("nan")), Y)


def test_half_precision_tolerance_is_looser() -> None:
    p = torch.tensor([[0.333, 0.333, 0.333]] * 3, dtype=torch.float16)  # sums to 0.999
    expected_calibration_error(p, torch.tensor([0, 1, 2]))
