"""Error bars for the book's comparisons: spreads over seeds and binomial intervals.

Two sources of noise sit under every number the book compares. The **training seed** (weight
initialisation, batch order, noise draws) moves a trained model's accuracy by a point or more;
:func:`over_seeds` repeats an experiment for several seeds and :func:`summarize` reduces it to
a mean and a spread per metric. The **test draw** moves an accuracy measured on ``n`` points
even for a fixed model: :func:`binomial_interval` gives the exact (Clopper–Pearson) confidence
interval of ``k`` successes in ``n``.

When is a difference between two methods real? :func:`separated` answers for seed runs with a
test that needs no distributional assumption: the two sets of values do not overlap at all. If
both methods had the same distribution of outcomes, every assignment of the ``a + b`` values to
the two groups would be equally likely, and only two of the ``C(a + b, a)`` assignments put one
group entirely above the other, so non-overlap has probability ``2 / C(a + b, a)`` under the
null: 0.1 for three seeds each, 0.029 for four, 0.008 for five (:func:`separation_p_value`).
The rule for the book's comparisons: a difference is called real only when it passes this test
or, for a single model evaluated on a test set, when the binomial intervals do not overlap.
Section :ref:`sec-training-for-smoothing` applies it to two training recipes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ._core.binomial import clopper_pearson_lower
from ._core.checks import check_positive_int
from ._core.progress import progress_enabled, tqdm

__all__ = [
    "MeanSpread",
    "binomial_interval",
    "mean_spread",
    "over_seeds",
    "separated",
    "separation_p_value",
    "summarize",
]


@dataclass(frozen=True)
class MeanSpread:
    """The mean and spread of one metric over ``n`` runs (seeds).

    ``std`` is the sample standard deviation (``ddof = 1``; 0 for one run), ``sem = std / √n``
    the standard error of the mean, ``low`` and ``high`` the smallest and largest run. ``str``
    gives ``mean ± std``.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n)

    def format(self, digits: int = 3, scale: float = 1.0, *, with_range: bool = False) -> str:
        """``"mean ± std"`` with ``digits`` decimals after multiplying by ``scale`` (100: %);
        ``with_range`` appends the smallest and largest run, ``"mean ± std [low, high]"``."""
        text = f"{scale * self.mean:.{digits}f} ± {scale * self.std:.{digits}f}"
        if with_range:
            text += f" [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"
        return text

    def __str__(self) -> str:
        return self.format()


def _finite_values(values: Iterable[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}: expected at least one value, got none")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name}: expected finite values, got {bad[0]!r} among {len(out)}")
    return out


def mean_spread(values: Iterable[float]) -> MeanSpread:
    """The :class:`MeanSpread` of ``values`` (one number per seed; NaN or inf raise)."""
    v = _finite_values(values, "mean_spread")
    n = len(v)
    mean = math.fsum(v) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return MeanSpread(mean=mean, std=std, n=n, low=min(v), high=max(v))


def separation_p_value(n_a: int, n_b: int) -> float:
    """Probability that ``n_a`` and ``n_b`` exchangeable values fall into two disjoint ranges.

    ``2 / C(n_a + n_b, n_a)``: the exact p-value of :func:`separated` under the null that both
    groups come from one continuous distribution (a permutation argument; no ties).
    """
    check_positive_int(n_a, "n_a")
    check_positive_int(n_b, "n_b")
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def separated(a: Iterable[float], b: Iterable[float]) -> bool:
    """Whether the runs ``a`` and ``b`` do not overlap: every value of one above every other.

    A difference between two methods is called real only then; the chance of it under "no
    difference" is :func:`separation_p_value` (0.1 for three seeds each).
    """
    va, vb = _finite_values(a, "separated (a)"), _finite_values(b, "separated (b)")
    return min(va) > max(vb) or min(vb) > max(va)


def over_seeds(
    experiment: Callable[[int], Mapping[str, float]],
    seeds: Sequence[int],
    *,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run ``experiment(seed)`` for every seed; one row per seed, one column per metric.

    ``experiment`` returns a mapping of metric names to numbers, the same names for every seed
    (checked). The frame's index is the seed; pass it to :func:`summarize`.
    """
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"over_seeds: expected distinct seeds, got {list(seeds)!r}")
    rows: dict[int, dict[str, float]] = {}
    for seed in tqdm(seeds, desc="seeds", disable=not progress_enabled(progress)):
        row = {str(k): float(v) for k, v in dict(experiment(seed)).items()}
        if rows and set(row) != set(next(iter(rows.values()))):
            raise ValueError(f"over_seeds: seed {seed} returned metrics {sorted(row)}, the "
                             f"first seed {sorted(next(iter(rows.values())))}")
        rows[seed] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")


def summarize(frame: pd.DataFrame, *, by: str | None = None) -> pd.DataFrame:
    """Mean, standard deviation and run count of every numeric column of ``frame``.

    Without ``by`` the result has one row per metric and the columns ``mean``, ``std``, ``n``,
    ``low``, ``high``; with ``by`` (a column naming the method) the same for every method,
    indexed by ``(method, metric)``.
    """
    if by is not None and by not in frame.columns:
        raise ValueError(f"summarize: no column {by!r}; columns are {list(frame.columns)}")
    groups = [(None, frame)] if by is None else list(frame.groupby(by, sort=False))
    records = []
    for key, group in groups:
        for column in group.columns:
            if column == by or not pd.api.types.is_numeric_dtype(group[column]):
                continue
            s = mean_spread(group[column])
            head = {} if by is None else {by: key}
            records.append({**head, "metric": column, "mean": s.mean, "std": s.std, "n": s.n,
                            "low": s.low, "high": s.high})
    index = ["metric"] if by is None else [by, "metric"]
    return pd.DataFrame.from_records(records).set_index(index)


def binomial_interval(
    k: int | torch.Tensor, n: int, *, confidence: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact two-sided Clopper–Pearson interval of a proportion from ``k`` successes in ``n``.

    Each tail has probability ``(1 − confidence) / 2``: the lower end is the ``α/2``-quantile
    of ``Beta(k, n − k + 1)``, the upper end ``1 −`` the lower end for ``n − k`` successes
    (computed without SciPy, ``advbook._core.binomial``). The interval covers the true
    proportion with probability at least ``confidence`` for every proportion. ``k`` may be a
    tensor of counts; the ends are float64 tensors of its shape.
    """
    check_positive_int(n, "n")
    if not isinstance(confidence, float | int) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"binomial_interval: confidence must lie in (0, 1), got {confidence!r}")
    counts = torch.as_tensor(k)
    if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool:
        raise TypeError(f"binomial_interval: k must hold integer counts, got {counts.dtype}")
    if bool(((counts < 0) | (counts > n)).any()):
        raise ValueError(f"binomial_interval: k must lie in [0, n = {n}], got "
                         f"{counts.min().item()}..{counts.max().item()}")
    tail = (1.0 - float(confidence)) / 2.0
    low = clopper_pearson_lower(counts, n, tail)
    high = 1.0 - clopper_pearson_lower(n - counts, n, tail)
    return low, high
