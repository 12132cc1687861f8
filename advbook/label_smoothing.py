"""Label noise and label smoothing with the book's convention.

The book writes label smoothing with parameter ε as the target distribution

    q_j = 1 − ε          for the true class j = y,
    q_j = ε / (k − 1)    for each of the k − 1 other classes,

which is exactly the distribution of a label that is correct with probability 1 − ε and otherwise
flipped uniformly to one of the other classes (symmetric label noise). PyTorch's
``F.cross_entropy(..., label_smoothing=ε')`` instead mixes the one-hot target with the uniform
distribution over *all* k classes, ``(1 − ε')·onehot + ε'/k``; the two agree when
ε' = ε·k/(k − 1) (see :func:`torch_label_smoothing`).

Derived in the book, chapter *Label noise and label smoothing*, sections :ref:`sec-label-noise`,
:ref:`sec-label-smoothing` and :ref:`sec-hard-targets-diverge`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._core.checks import (
    check_choice,
    check_class_labels,
    check_fraction,
    check_generator,
    check_nonneg_int,
)

__all__ = [
    "from_torch_label_smoothing",
    "inject_label_noise",
    "label_noise_transition_matrix",
    "logit_gap",
    "optimal_logit_gap",
    "smooth_targets",
    "smoothed_cross_entropy",
    "smoothed_objective",
    "soft_cross_entropy",
    "torch_label_smoothing",
]

Reduction = Literal["mean", "sum", "none"]


# --------------------------------------------------------------------------- validation helpers


def _check_k(k: object) -> int:
    return check_nonneg_int(k, "k (the number of classes)", minimum=2)


def _check_labels(y: object, k: int, what: str) -> torch.Tensor:
    """``y`` after checking it holds ``N`` integer class indices in ``[0, k)``."""
    y = check_class_labels(y, what)
    if y.ndim != 1:
        raise ValueError(f"{what}: y must be 1-D (N,), got shape {tuple(y.shape)}")
    if y.numel() and bool(((y < 0) | (y >= k)).any()):
        raise ValueError(f"{what}: labels must lie in [0, {k - 1}] for k={k}")
    return y


def _check_reduction(reduction: str) -> None:
    check_choice(reduction, "reduction", ("mean", "sum", "none"))


def _check_logits(logits: object, what: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{what}: logits must be a tensor, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"{what}: logits must have shape (N, k) with k >= 2, got {tuple(logits.shape)}"
        )
    if not logits.dtype.is_floating_point:
        raise TypeError(f"{what}: logits must be floating point, got dtype {logits.dtype}")
    return logits


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


# --------------------------------------------------------------------------- targets and losses


def smooth_targets(
    y: torch.Tensor, k: int, eps: float, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Smoothed target distributions, shape ``(N, k)``: 1 − ε on ``y``, ε/(k − 1) elsewhere.

    Each row sums to (1 − ε) + (k − 1)·ε/(k − 1) = 1. With ε = 0 these are one-hot targets; with
    ε = (k − 1)/k the uniform distribution. Derived in the book, section :ref:`sec-label-smoothing`
    of chapter *Label noise and label smoothing*.

    Args:
        y: integer class indices ``(N,)`` in ``[0, k)``.
        k: number of classes (>= 2).
        eps: smoothing ε in ``[0, 1]``.
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``).

    Returns:
        A tensor ``(N, k)`` on ``y.device``.
    """
    k = _check_k(k)
    eps = check_fraction(eps, "eps")
    y = _check_labels(y, k, "smooth_targets")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"smooth_targets: dtype must be floating point, got {dtype}")
    q = torch.full((y.shape[0], k), eps / (k - 1), dtype=dtype, device=y.device)
    q.scatter_(1, y.long().unsqueeze(1), 1.0 - eps)
    return q


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Cross-entropy against target distributions: ℓ(z, q) = −Σ_j q_j log softmax(z)_j.

    Its gradient with respect to the logits is softmax(z) − q. Derived in the book, section
    :ref:`sec-label-smoothing` of chapter *Label noise and label smoothing*.

    Args:
        logits: ``(N, k)``.
        targets: ``(N, k)`` rows of a probability distribution (not checked to sum to one, so that
            unnormalised weights may be used deliberately).
        reduction: ``"mean"`` (over samples), ``"sum"`` or ``"none"`` (per sample, ``(N,)``).
    """
    logits = _check_logits(logits, "soft_cross_entropy")
    _check_reduction(reduction)
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets)
        raise ValueError(
            f"soft_cross_entropy: targets must be a tensor shaped like the logits "
            f"{tuple(logits.shape)}, got {shape}"
        )
    per_sample = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)
    return _reduce(per_sample, reduction)


def smoothed_cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, eps: float, *, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Cross-entropy with the book's smoothed targets (k is ``logits.shape[1]``).

        ℓ_ε(z, y) = −(1 − ε)·log p_y − ε/(k − 1)·Σ_{j≠y} log p_j,   p = softmax(z),

    computed without materialising the ``(N, k)`` target matrix. It is the expected hard-label
    cross-entropy when the label is flipped uniformly to another class with probability ε.
    Equal to ``F.cross_entropy(logits, y, label_smoothing=torch_label_smoothing(eps, k))``.
    Derived in the book, section :ref:`sec-label-smoothing` of chapter *Label noise and label
    smoothing*.
    """
    logits = _check_logits(logits, "smoothed_cross_entropy")
    k = logits.shape[1]
    eps = check_fraction(eps, "eps")
    _check_reduction(reduction)
    y = _check_labels(y, k, "smoothed_cross_entropy")
    if y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"smoothed_cross_entropy: logits {tuple(logits.shape)} and y "
            f"{tuple(y.shape)} disagree on the number of samples"
        )
    logp = F.log_softmax(logits, dim=1)
    logp_y = logp.gather(1, y.long().to(logits.device).unsqueeze(1)).squeeze(1)
    others = logp.sum(dim=1) - logp_y
    per_sample = -(1.0 - eps) * logp_y - (eps / (k - 1)) * others
    return _reduce(per_sample, reduction)


def smoothed_objective(
    eps: float,
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """An ``objective`` for :func:`advbook.train.fit` training with smoothed targets.

    ``fit(model, x, y, objective=smoothed_objective(0.1))`` minimises
    :func:`smoothed_cross_entropy` with ε = ``eps`` and reports training accuracy from the logits.
    """
    eps = check_fraction(eps, "eps")

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return smoothed_cross_entropy(logits, y, eps), logits

    return objective


# --------------------------------------------------------------------------- the PyTorch mapping


def torch_label_smoothing(eps: float, k: int) -> float:
    """PyTorch's ``label_smoothing`` ε' that reproduces the book's smoothing ε: ε' = ε·k/(k − 1).

    PyTorch's target is (1 − ε')·onehot + ε'/k: every wrong class gets ε'/k and the true class
    1 − ε'(k − 1)/k. Matching the book's ε/(k − 1) on the wrong classes gives ε' = εk/(k − 1),
    and then the true class matches too. PyTorch requires ε' <= 1, i.e. ε <= (k − 1)/k (at
    ε = (k − 1)/k both are the uniform distribution). Derived in the book, section
    :ref:`sec-label-smoothing` of chapter *Label noise and label smoothing*.
    """
    k = _check_k(k)
    eps = check_fraction(eps, "eps")
    if eps > (k - 1) / k:
        raise ValueError(
            f"eps={eps} exceeds (k-1)/k = {(k - 1) / k:.6g}: the book's targets then put less mass "
            "on the true class than on the others, which PyTorch's label_smoothing (<= 1) "
            "cannot express"
        )
    return min(eps * k / (k - 1), 1.0)


def from_torch_label_smoothing(eps_torch: float, k: int) -> float:
    """The inverse of :func:`torch_label_smoothing`: ε = ε'·(k − 1)/k."""
    k = _check_k(k)
    eps_torch = check_fraction(eps_torch, "eps_torch")
    return eps_torch * (k - 1) / k


# --------------------------------------------------------------------------- logit gaps


def optimal_logit_gap(eps: float, k: int) -> float:
    """The logit gap at the minimum of the smoothed loss: Δ* = log((1 − ε)(k − 1)/ε).

    The gradient of ℓ_ε with respect to the logits is softmax(z) − q, which vanishes iff
    softmax(z) = q, i.e. z_y − z_j = log(q_y/q_j) = log((1 − ε)(k − 1)/ε) for every j ≠ y.
    For ε = 0 (hard targets) there is no finite minimiser and the function returns ``inf``: the
    logits grow without bound on separable data. Derived in the book, section
    :ref:`sec-hard-targets-diverge` of chapter *Label noise and label smoothing*.
    """
    k = _check_k(k)
    eps = check_fraction(eps, "eps")
    if eps == 0.0:
        return math.inf
    if eps == 1.0:
        return -math.inf
    return math.log((1.0 - eps) * (k - 1) / eps)


def logit_gap(
    logits: torch.Tensor, y: torch.Tensor, *, reduction: Reduction = "mean"
) -> torch.Tensor:
    """The gap between the true-class logit and the mean of the others.

        Δ(z, y) = z_y − (1/(k − 1))·Σ_{j≠y} z_j

    At the minimiser of the smoothed loss all wrong logits are equal and
    Δ = :func:`optimal_logit_gap`; with hard targets Δ grows without bound during training.
    Derived in the book, section :ref:`sec-hard-targets-diverge` of chapter *Label noise and label
    smoothing*.
    """
    logits = _check_logits(logits, "logit_gap")
    _check_reduction(reduction)
    k = logits.shape[1]
    y = _check_labels(y, k, "logit_gap")
    if y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"logit_gap: logits {tuple(logits.shape)} and y {tuple(y.shape)} "
            "disagree on the number of samples"
        )
    z_y = logits.gather(1, y.long().to(logits.device).unsqueeze(1)).squeeze(1)
    gap = z_y - (logits.sum(dim=1) - z_y) / (k - 1)
    return _reduce(gap, reduction)


# --------------------------------------------------------------------------- label noise


def label_noise_transition_matrix(
    k: int,
    eps: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The symmetric-noise transition matrix T, T[i, j] = P(noisy label j | true label i).

        T = (1 − ε)·I + ε/(k − 1)·(11ᵀ − I)

    Row i of T is the smoothed target of class i, so E_ỹ[CE(z, ỹ) | y] = ℓ_ε(z, y). Derived in the
    book, section :ref:`sec-label-noise` of chapter *Label noise and label smoothing*.
    """
    k = _check_k(k)
    eps = check_fraction(eps, "eps")
    t = torch.full((k, k), eps / (k - 1), dtype=dtype or torch.get_default_dtype(), device=device)
    t.fill_diagonal_(1.0 - eps)
    return t


def inject_label_noise(
    y: torch.Tensor, k: int, eps: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Symmetric label noise: each label is flipped with probability ε to a uniformly drawn *other*
    class (each wrong class with probability ε/(k − 1)); otherwise it is kept.

    A flipped label never equals the original, so ``noisy != y`` is exactly the flip mask and its
    mean has expectation ε. Derived in the book, section :ref:`sec-label-noise` of chapter
    *Label noise and label smoothing*.

    Args:
        y: integer class indices ``(N,)`` in ``[0, k)``; not modified.
        k: number of classes (>= 2).
        eps: flip probability in ``[0, 1]``.
        generator: a seeded ``torch.Generator`` (on any device; draws happen on its device and are
            moved to ``y.device``). ``None`` uses PyTorch's global generator.

    Returns:
        New labels with the dtype and device of ``y``.
    """
    k = _check_k(k)
    eps = check_fraction(eps, "eps")
    y = _check_labels(y, k, "inject_label_noise")
    check_generator(generator)
    rng_device = generator.device if generator is not None else y.device
    n = y.shape[0]
    flip = torch.rand(n, generator=generator, device=rng_device) < eps
    # y + 1 + r (mod k) with r uniform on {0, …, k−2} is uniform over the k − 1 other classes.
    shift = torch.randint(1, k, (n,), generator=generator, device=rng_device)
    flip, shift = flip.to(y.device), shift.to(device=y.device, dtype=y.dtype)
    return torch.where(flip, (y + shift) % k, y)
