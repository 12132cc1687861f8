"""Calibration of classifiers: expected calibration error and reliability diagrams.

A classifier is *calibrated* when its confidence matches its accuracy: among the inputs on which
the top-class probability is c, a fraction c is classified correctly. With the confidences
cut into B equal-width bins (0, 1/B], (1/B, 2/B], …, ((B−1)/B, 1] (a confidence of exactly 0
falls in the first bin), the expected calibration error is

    ``ECE = Σ_b (n_b / N)·|acc_b − conf_b|``,

where n_b is the number of samples in bin b, acc_b their accuracy and conf_b their mean
confidence (Naeini et al. 2015; Guo et al. 2017). The maximum calibration error is
``MCE = max_b |acc_b − conf_b|`` over non-empty bins.

Derived in the book, section :ref:`sec-calibration` of chapter *Label noise and label smoothing*.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch

from ._core.checks import check_class_labels

__all__ = [
    "BinStats",
    "bin_statistics",
    "expected_calibration_error",
    "maximum_calibration_error",
    "reliability_diagram",
]


class BinStats(NamedTuple):
    """Per-bin statistics (tensors of length B) on the device of the inputs."""

    edges: torch.Tensor  # B + 1 bin edges, 0 … 1
    counts: torch.Tensor  # n_b (int64)
    confidence: torch.Tensor  # mean confidence per bin, NaN when empty
    accuracy: torch.Tensor  # accuracy per bin, NaN when empty


def _check_inputs(
    probs: object, y: object, n_bins: object, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Types, shapes and dtypes of ``probs``, ``y`` and ``n_bins``; then their values."""
    if not isinstance(probs, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"probs and y must be tensors, got {type(probs).__name__} and {type(y).__name__}"
        )
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, k) with k >= 2, got {tuple(probs.shape)}")
    if not probs.dtype.is_floating_point:
        raise TypeError(f"probs must be floating point, got dtype {probs.dtype}")
    check_class_labels(y)
    if y.ndim != 1 or y.shape[0] != probs.shape[0]:
        raise ValueError(
            f"y must be 1-D with one label per row of probs {tuple(probs.shape)}, "
            f"got shape {tuple(y.shape)}"
        )
    if probs.shape[0] == 0:
        raise ValueError("probs is empty: calibration needs at least one sample")
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}")
    y = y.to(probs.device)
    dtype = torch.promote_types(probs.dtype, torch.float32)
    tol = max(1e-3, 10 * torch.finfo(probs.dtype).eps)  # looser for float16/bfloat16 input
    raw = probs
    probs = torch.softmax(probs.to(dtype), dim=1) if from_logits else probs.to(dtype)
    _check_values(raw, probs, y, from_logits, tol)
    return probs, y


def _check_values(
    raw: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, from_logits: bool, tol: float
) -> None:
    """Finite inputs, probabilities whose rows sum to 1, labels in ``[0, k)``: one host sync."""
    with torch.no_grad():
        p = probs.detach()
        sums = p.sum(dim=1)
        stats = torch.stack([
            (~torch.isfinite(raw.detach())).sum().to(torch.float64),
            p.min().to(torch.float64), p.max().to(torch.float64),
            sums.min().to(torch.float64), sums.max().to(torch.float64),
            y.min().to(torch.float64), y.max().to(torch.float64),
        ]).tolist()
    n_bad, p_min, p_max, s_min, s_max, y_min, y_max = stats
    k = probs.shape[1]
    if n_bad:
        what = "logits" if from_logits else "probs"
        raise ValueError(
            f"{what} must be finite, but {int(n_bad)} of its {raw.numel()} values are NaN or "
            f"infinite"
        )
    if not from_logits and (p_min < 0 or p_max > 1 or s_min < 1 - tol or s_max > 1 + tol):
        raise ValueError(
            f"probs must hold probabilities (entries in [0, 1], rows summing to 1 within "
            f"{tol:.3g} for {raw.dtype}); got entries in [{p_min:.6g}, {p_max:.6g}] and rows "
            f"summing to [{s_min:.6g}, {s_max:.6g}]: pass probabilities (softmax), not logits, "
            f"or use from_logits=True"
        )
    if y_min < 0 or y_max >= k:
        raise ValueError(
            f"y must hold class indices in [0, {k}) for probs with {k} columns, got labels in "
            f"[{int(y_min)}, {int(y_max)}]"
        )


def bin_statistics(
    probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15, from_logits: bool = False
) -> BinStats:
    """Counts, mean confidence and accuracy of the top-class prediction per confidence bin.

    Args:
        probs: class probabilities ``(N, k)`` (or logits with ``from_logits=True``).
        y: true labels ``(N,)``.
        n_bins: number B of equal-width bins on [0, 1]; bin b is (b/B, (b+1)/B].
        from_logits: apply a softmax to ``probs`` first.
    """
    probs, y = _check_inputs(probs, y, n_bins, from_logits)
    conf, pred = probs.max(dim=1)
    correct = (pred == y).to(conf.dtype)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)
    # right=False: index b satisfies edges[b] < conf <= edges[b+1]; conf == 0 goes to bin 0.
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    counts = torch.zeros(n_bins, dtype=torch.int64, device=conf.device)
    counts.index_add_(0, idx, torch.ones_like(idx))
    # Accumulate in float64 (not on MPS, which has none): float32 sums over 1e5 samples lose the
    # fourth digit of the bin means.
    sum_dtype = torch.float64 if conf.device.type != "mps" else torch.float32
    conf_sum = torch.zeros(n_bins, dtype=sum_dtype, device=conf.device)
    conf_sum.index_add_(0, idx, conf.to(sum_dtype))
    acc_sum = torch.zeros(n_bins, dtype=sum_dtype, device=conf.device)
    acc_sum.index_add_(0, idx, correct.to(sum_dtype))
    denom = counts.to(sum_dtype)
    nan = torch.full_like(denom, float("nan"))
    empty = counts == 0
    confidence = torch.where(empty, nan, conf_sum / denom.clamp_min(1)).to(conf.dtype)
    accuracy = torch.where(empty, nan, acc_sum / denom.clamp_min(1)).to(conf.dtype)
    return BinStats(edges, counts, confidence, accuracy)


def _ece_from_stats(stats: BinStats) -> torch.Tensor:
    weights = stats.counts.to(stats.confidence.dtype) / stats.counts.sum()
    gaps = (stats.accuracy - stats.confidence).abs().nan_to_num(0.0)
    return (weights * gaps).sum()


def expected_calibration_error(
    probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15, from_logits: bool = False
) -> float:
    """``ECE = Σ_b (n_b/N)·|acc_b − conf_b|`` with B equal-width confidence bins (top-label ECE).

    It is 0 for a perfectly calibrated predictor (up to sampling noise and the within-bin
    averaging) and equals ``|c − accuracy|`` for a predictor whose confidence is always c.
    Derived in the book, section :ref:`sec-calibration` of chapter *Label noise and label
    smoothing*.

    Args:
        probs: class probabilities ``(N, k)`` (or logits with ``from_logits=True``).
        y: true labels ``(N,)``.
        n_bins: number of equal-width bins (default 15, as in Guo et al. 2017).
        from_logits: apply a softmax to ``probs`` first.
    """
    return float(_ece_from_stats(bin_statistics(probs, y, n_bins=n_bins, from_logits=from_logits)))


def maximum_calibration_error(
    probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15, from_logits: bool = False
) -> float:
    """``MCE = max_b |acc_b − conf_b|`` over the non-empty bins. Derived in the book, section
    :ref:`sec-calibration` of chapter *Label noise and label smoothing*."""
    stats = bin_statistics(probs, y, n_bins=n_bins, from_logits=from_logits)
    return float((stats.accuracy - stats.confidence).abs().nan_to_num(0.0).max())


def reliability_diagram(
    probs: torch.Tensor, y: torch.Tensor, *, n_bins: int = 15, from_logits: bool = False
) -> pd.DataFrame:
    """The data of a reliability diagram, one row per confidence bin.

    Columns: ``bin_lower``, ``bin_upper``, ``bin_center``, ``count``, ``fraction`` (n_b/N),
    ``confidence`` (mean top-class probability), ``accuracy`` and ``gap`` (accuracy − confidence;
    NaN for empty bins). ``(df.fraction * df.gap.abs()).sum()`` is the ECE. Plot ``accuracy``
    against ``bin_center`` as bars next to the diagonal. Derived in the book, section
    :ref:`sec-calibration` of chapter *Label noise and label smoothing*.
    """
    stats = bin_statistics(probs, y, n_bins=n_bins, from_logits=from_logits)
    edges = stats.edges.double().cpu().numpy()
    counts = stats.counts.cpu().numpy()
    conf = stats.confidence.double().cpu().numpy()
    acc = stats.accuracy.double().cpu().numpy()
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "bin_center": (edges[:-1] + edges[1:]) / 2,
            "count": counts,
            "fraction": counts / counts.sum(),
            "confidence": conf,
            "accuracy": acc,
            "gap": acc - conf,
        }
    )
