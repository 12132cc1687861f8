"""Tests of advbook.calibration: closed-form predictors and an independent loop implementation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from advbook.calibration import (
    bin_statistics,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_diagram,
)


def _predictor(
    conf: torch.Tensor, true_acc: torch.Tensor, k: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with top probability ``conf`` on class 0 (rest uniform); label correct w.p. true_acc."""
    n = conf.shape[0]
    probs = ((1 - conf) / (k - 1)).unsqueeze(1).repeat(1, k)
    probs[:, 0] = conf
    correct = torch.rand(n, generator=g, dtype=torch.float64) < true_acc
    wrong = torch.randint(1, k, (n,), generator=g)
    y = torch.where(correct, torch.zeros_like(wrong), wrong)
    return probs, y


def test_perfectly_calibrated_predictor_has_ece_near_zero() -> None:
    g = torch.Generator().manual_seed(0)
    n, k = 200_000, 10
    c = 0.2 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)  # c > (1−c)/9: top class
    probs, y = _predictor(c, c, k, g)
    ece = expected_calibration_error(probs, y)
    assert 0 <= ece < 0.01
    # The same scores made overconfident (reported (1 + c)/2, accuracy c): the gap (1 − c)/2 has
    # one sign in every bin, so ECE = E[(1 − c)/2] = (1 − 0.6)/2 = 0.2 up to sampling noise.
    over, y2 = _predictor((1 + c) / 2, c, k, g)
    assert expected_calibration_error(over, y2) == pytest.approx(0.2, abs=0.01)
    assert maximum_calibration_error(over, y2) > 0.2


@pytest.mark.parametrize("n_bins", [1, 10, 15])
@pytest.mark.parametrize(("conf", "acc"), [(0.8, 0.6), (0.35, 0.9), (0.5, 0.5)])
def test_constant_confidence_ece_is_conf_minus_accuracy(
    n_bins: int, conf: float, acc: float
) -> None:
    n, k = 1000, 4
    probs = torch.full((n, k), (1 - conf) / (k - 1), dtype=torch.float64)
    probs[:, 1] = conf
    n_correct = round(acc * n)
    y = torch.tensor([1] * n_correct + [2] * (n - n_correct))
    ece = expected_calibration_error(probs, y, n_bins=n_bins)
    assert ece == pytest.approx(abs(conf - acc), abs=1e-12)
    assert maximum_calibration_error(probs, y, n_bins=n_bins) == pytest.approx(ece, abs=1e-12)


def _reference_ece(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[float, float]:
    """Plain-Python ECE/MCE with bins (l, u], written independently of the library."""
    conf = probs.max(1)
    pred = probs.argmax(1)
    ece, mce, n = 0.0, 0.0, len(y)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if not members:
            continue
        acc = sum(pred[i] == y[i] for i in members) / len(members)
        avg = sum(conf[i] for i in members) / len(members)
        ece += len(members) / n * abs(acc - avg)
        mce = max(mce, abs(acc - avg))
    return ece, mce


@pytest.mark.parametrize("n_bins", [3, 15, 40])
def test_matches_independent_loop_implementation(n_bins: int) -> None:
    g = torch.Generator().manual_seed(n_bins)
    logits = 2.5 * torch.randn(400, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (400,), generator=g)
    probs = logits.softmax(1)
    ref_ece, ref_mce = _reference_ece(probs.numpy(), y.numpy(), n_bins)
    assert expected_calibration_error(probs, y, n_bins=n_bins) == pytest.approx(ref_ece, abs=1e-12)
    assert maximum_calibration_error(probs, y, n_bins=n_bins) == pytest.approx(ref_mce, abs=1e-12)
    assert expected_calibration_error(logits, y, n_bins=n_bins, from_logits=True) == (
        pytest.approx(ref_ece, abs=1e-12)
    )


def test_reliability_diagram_is_consistent() -> None:
    g = torch.Generator().manual_seed(7)
    probs = (3 * torch.randn(300, 3, generator=g)).softmax(1)
    y = torch.randint(0, 3, (300,), generator=g)
    probs_before = probs.clone()
    df = reliability_diagram(probs, y, n_bins=10)
    torch.testing.assert_close(probs, probs_before)
    assert list(df.columns) == [
        "bin_lower",
        "bin_upper",
        "bin_center",
        "count",
        "fraction",
        "confidence",
        "accuracy",
        "gap",
    ]
    assert len(df) == 10 and df["count"].sum() == 300
    assert df["fraction"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(df["bin_upper"] - df["bin_lower"], 0.1, atol=1e-6)
    filled = df[df["count"] > 0]
    empty = df[df["count"] == 0]
    assert len(empty) > 0  # top-class confidence of 3 classes is >= 1/3: low bins are empty
    assert empty[["confidence", "accuracy", "gap"]].isna().all().all()
    assert (
        (filled.confidence > filled.bin_lower - 1e-6)
        & (filled.confidence <= filled.bin_upper + 1e-6)
    ).all()
    assert ((filled.accuracy >= 0) & (filled.accuracy <= 1)).all()
    ece_from_df = float((df["fraction"] * df["gap"].abs()).fillna(0).sum())
    assert ece_from_df == pytest.approx(expected_calibration_error(probs, y, n_bins=10), abs=1e-6)


def test_bin_edges_are_right_closed() -> None:
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0], [0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    stats = bin_statistics(probs, y, n_bins=4)  # bins (0, .25], (.25, .5], (.5, .75], (.75, 1]
    assert stats.counts.tolist() == [0, 1, 2, 1]
    torch.testing.assert_close(stats.confidence[2], torch.tensor(0.675, dtype=torch.float64))
    torch.testing.assert_close(stats.accuracy[2], torch.tensor(0.5, dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: expected_calibration_error(torch.rand(5, 3), torch.zeros(5, dtype=torch.long)),
            ValueError,
            "from_logits",
        ),
        (
            lambda: expected_calibration_error(
                torch.full((4, 2), 0.5), torch.zeros(3, dtype=torch.long)
            ),
            ValueError,
            "one label per row",
        ),
        (
            lambda: expected_calibration_error(torch.full((4, 2), 0.5), torch.zeros(4)),
            TypeError,
            "integer",
        ),
        (
            lambda: expected_calibration_error(
                torch.full((4, 2), 0.5), torch.zeros(4, dtype=torch.long), n_bins=0
            ),
            ValueError,
            "n_bins",
        ),
        (
            lambda: expected_calibration_error(torch.ones(4), torch.zeros(4, dtype=torch.long)),
            ValueError,
            r"\(N, k\)",
        ),
        (
            lambda: reliability_diagram(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
            ValueError,
            "empty",
        ),
        (
            lambda: expected_calibration_error([[0.5, 0.5]], torch.zeros(1, dtype=torch.long)),
            TypeError,
            "tensors",
        ),
    ],
)
def test_bad_input_raises_clear_errors(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


def test_on_device(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 4, generator=g)
    y = torch.randint(0, 4, (500,), generator=g)
    cpu = expected_calibration_error(logits, y, from_logits=True)
    on_device = expected_calibration_error(logits.to(device), y.to(device), from_logits=True)
    assert on_device == pytest.approx(cpu, abs=1e-6)
    assert (
        bin_statistics(logits.to(device), y.to(device), from_logits=True).counts.device.type
        == device.type
    )
    half = expected_calibration_error(logits.softmax(1).to(device, torch.float16), y.to(device))
    assert half == pytest.approx(cpu, abs=5e-3)
