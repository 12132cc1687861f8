"""advbook.stats: spreads over seeds and exact binomial intervals, against independent oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from advbook import stats

sps = pytest.importorskip("scipy.stats")


def test_mean_spread_matches_numpy():
    values = [0.81, 0.86, 0.79, 0.9]
    s = stats.mean_spread(values)
    assert s.mean == pytest.approx(np.mean(values), abs=1e-15)
    assert s.std == pytest.approx(np.std(values, ddof=1), abs=1e-15)
    assert s.sem == pytest.approx(np.std(values, ddof=1) / 2.0, abs=1e-15)
    assert (s.n, s.low, s.high) == (4, 0.79, 0.9)
    assert str(s) == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    assert s.format(1, scale=100) == f"{100 * np.mean(values):.1f} ± {100 * s.std:.1f}"
    assert s.format(2, with_range=True) == f"{s.mean:.2f} ± {s.std:.2f} [0.79, 0.90]"
    assert stats.mean_spread([0.5]).std == 0.0


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [float("inf")]])
def test_mean_spread_rejects_empty_and_nonfinite(bad):
    with pytest.raises(ValueError, match="mean_spread"):
        stats.mean_spread(bad)


@pytest.mark.parametrize(("n_a", "n_b"), [(3, 3), (4, 4), (2, 5), (5, 5)])
def test_separation_p_value_is_the_permutation_probability(n_a, n_b):
    # brute force: the share of all splits of n_a + n_b distinct values into two groups that
    # put one group entirely above the other
    values = list(range(n_a + n_b))
    splits = list(itertools.combinations(values, n_a))
    disjoint = sum(stats.separated(a, [v for v in values if v not in a]) for a in splits)
    assert stats.separation_p_value(n_a, n_b) == pytest.approx(disjoint / len(splits))


def test_separation_rate_under_the_null():
    # a statistical test that can fail: two identical methods are called different at the
    # stated rate 0.1 (three seeds each), within four standard errors of 4,000 trials
    rng = np.random.default_rng(0)
    hits = np.mean([stats.separated(rng.normal(size=3), rng.normal(size=3))
                    for _ in range(4000)])
    assert abs(hits - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 4000)


def test_separated_sees_overlap_and_gaps():
    assert stats.separated([0.9, 0.91, 0.92], [0.8, 0.85, 0.89])
    assert not stats.separated([0.9, 0.91, 0.92], [0.8, 0.905, 0.89])


def test_over_seeds_and_summarize():
    def experiment(seed):
        g = torch.Generator().manual_seed(seed)
        return {"acc": float(torch.rand((), generator=g)), "loss": float(seed)}

    frame = stats.over_seeds(experiment, [3, 1, 2], progress=False)
    assert list(frame.index) == [3, 1, 2] and frame.index.name == "seed"
    summary = stats.summarize(frame)
    assert summary.loc["loss", "mean"] == 2.0 and summary.loc["loss", "std"] == 1.0
    assert summary.loc["acc", "n"] == 3
    frame["method"] = ["a", "b", "a"]
    grouped = stats.summarize(frame, by="method")
    assert grouped.loc[("a", "loss"), "mean"] == 2.5 and grouped.loc[("b", "loss"), "n"] == 1


def test_over_seeds_rejects_changing_metrics_and_repeated_seeds():
    with pytest.raises(ValueError, match="seed 1 returned metrics"):
        stats.over_seeds(lambda s: {"a": 1.0} if s == 0 else {"b": 1.0}, [0, 1], progress=False)
    with pytest.raises(ValueError, match="distinct seeds"):
        stats.over_seeds(lambda s: {"a": 1.0}, [0, 0], progress=False)
    with pytest.raises(ValueError, match="no column"):
        stats.summarize(pd.DataFrame({"a": [1.0]}), by="method")


@pytest.mark.parametrize("n", [1, 20, 200, 5000])
def test_binomial_interval_matches_scipy(n):
    k = torch.tensor(sorted({0, 1, n // 3, n // 2, n - 1, n}))
    low, high = stats.binomial_interval(k, n, confidence=0.95)
    for kk, lo, hi in zip(k.tolist(), low.tolist(), high.tolist(), strict=True):
        ref = sps.binomtest(kk, n).proportion_ci(confidence_level=0.95, method="exact")
        assert lo == pytest.approx(ref.low, abs=1e-9)
        assert hi == pytest.approx(ref.high, abs=1e-9)


def test_binomial_interval_covers_at_the_stated_rate():
    # exact coverage of the interval at p = 0.3, n = 50 is at least 95 % (Clopper-Pearson)
    n, p = 50, 0.3
    k = torch.arange(n + 1)
    low, high = stats.binomial_interval(k, n)
    covered = ((low <= p) & (p <= high)).numpy()
    coverage = float(sps.binom.pmf(np.arange(n + 1), n, p)[covered].sum())
    assert 0.95 <= coverage < 0.99


@pytest.mark.parametrize(
    ("k", "n", "kwargs", "error", "match"),
    [
        (3, 0, {}, ValueError, "n"),
        (11, 10, {}, ValueError, r"\[0, n = 10\]"),
        (-1, 10, {}, ValueError, r"\[0, n = 10\]"),
        (torch.tensor([0.5]), 10, {}, TypeError, "integer counts"),
        (3, 10, {"confidence": 1.0}, ValueError, "confidence"),
        (3, 10, {"confidence": float("nan")}, ValueError, "confidence"),
    ],
)
def test_binomial_interval_rejects_bad_input(k, n, kwargs, error, match):
    with pytest.raises(error, match=match):
        stats.binomial_interval(k, n, **kwargs)
