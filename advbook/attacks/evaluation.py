"""Robustness evaluation: worst case over attacks, accuracy-vs-ε curves, min-norm distances."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch
from torch import Tensor, nn

from .._core.checks import check_batch, check_choice, check_nonneg_float, check_positive_int
from .._core.devices import model_device
from .._core.guard import model_guard
from .._core.types import Attack
from ._masking import MaskingTally, check_on_masking
from ._utils import batch_norms

__all__ = [
    "Attack",
    "MinNormResult",
    "RobustAccuracyResult",
    "accuracy_vs_eps",
    "min_norm_distances",
    "robust_accuracy",
]

@dataclass(frozen=True)
class RobustAccuracyResult:
    """Outcome of :func:`robust_accuracy`.

    Attributes:
        names: the attack names, in the order of the columns of ``robust``.
        clean_correct: ``(N,)`` bool, the model is right on the clean input.
        robust: ``(N, A)`` bool, sample ``i`` is still classified correctly after attack ``j``
            (``False`` wherever the clean input is already misclassified).
        clean_accuracy: fraction of ``clean_correct``.
        accuracy: robust accuracy per attack.
        worst_case: per-example worst case, the fraction of samples that *every* attack fails
            on (AutoAttack-style reporting).
    """

    names: tuple[str, ...]
    clean_correct: Tensor
    robust: Tensor
    clean_accuracy: float
    accuracy: dict[str, float]
    worst_case: float

    @property
    def robust_all(self) -> Tensor:
        """``(N,)`` bool: robust against every attack."""
        return self.robust.all(dim=1) & self.clean_correct

    def to_frame(self) -> pd.DataFrame:
        """One row per attack plus ``clean`` and ``worst case``, column ``accuracy``."""
        rows = [("clean", self.clean_accuracy)]
        rows += [(k, self.accuracy[k]) for k in self.names]
        rows.append(("worst case", self.worst_case))
        return pd.DataFrame(rows, columns=["attack", "accuracy"])


@dataclass(frozen=True)
class MinNormResult:
    """Outcome of :func:`min_norm_distances`.

    Attributes:
        distances: ``(N,)`` per-sample ``‖x_adv − x‖`` in ``norm``; ``0`` where the clean input
            is already misclassified and ``inf`` where the attack failed.
        success: ``(N,)`` bool, the returned point is misclassified (or the clean one was).
        norm: the norm of ``distances``.
    """

    distances: Tensor
    success: Tensor
    norm: str

    def accuracy_at(self, eps: float) -> float:
        """Robust accuracy implied at radius ``ε``: the fraction with distance ``> ε``."""
        eps_ = check_nonneg_float(eps, "eps")
        return float((self.distances > eps_).float().mean())

    def median(self) -> float:
        """Median distance, failures counted as ``inf`` (so it is conservative)."""
        return float(self.distances.double().quantile(0.5))


def _check_common(model: object, x: object, y: object, batch_size: object, name: str) -> None:
    """The checks shared by the evaluation helpers: a classification batch and ``batch_size``."""
    check_batch(model, x, y, name)
    check_positive_int(batch_size, "batch_size")


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    """The predicted classes, with the model left exactly as it was."""
    with model_guard(model), torch.no_grad():
        logits: Tensor = model(x)
        return logits.argmax(dim=1)


def _run_attack(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, label: str) -> Tensor:
    """``attack(model, x, y)`` detached, after checking that it returned a tensor shaped like x."""
    x_adv = attack(model, x, y)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise ValueError(f"attack {label!r} must return a tensor of shape {tuple(x.shape)}, "
                         f"got {got}")
    return x_adv.detach()


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Attack],
    *,
    batch_size: int = 256,
    on_masking: str = "warn",
) -> RobustAccuracyResult:
    """Per-attack and per-example worst-case robust accuracy.

    Sample ``i`` is robust against attack ``j`` if the model classifies it correctly both clean
    and at ``x_adv = attack_j(model, x_i, y_i)``; it counts towards the worst case only if it is
    robust against *every* attack, ``acc_wc = (1/N) Σᵢ Πⱼ robust_ij``, which is never above the
    smallest per-attack accuracy. Attacks run only on the correctly classified samples, batch by
    batch on the model's device; results are returned on the CPU.

    Derived in the book, section :ref:`sec-robust-evaluation` of chapter *Adversarial examples*.

    Args:
        model: the classifier (left unchanged).
        x, y: inputs ``(N, ...)`` and labels ``(N,)`` (on any device).
        attacks: mapping name → ``attack(model, x, y) -> x_adv``, e.g.
            ``{"PGD": functools.partial(pgd, eps=0.3)}``.
        batch_size: samples per attack call.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``. The gradient attacks warn when
            the input gradient vanished for samples they did not fool (gradient masking,
            :ref:`sec-gradient-masking`); their warnings are collected over the batches and
            reported once per attack, naming it, as :class:`GradientMaskingWarning` or (with
            ``"raise"``, after the evaluation) :class:`GradientMaskingError`.
    """
    name = "robust_accuracy"
    _check_common(model, x, y, batch_size, name)
    on_masking = check_on_masking(on_masking)
    if not isinstance(attacks, Mapping) or not attacks:
        raise TypeError(f"{name}: attacks must be a non-empty mapping name -> attack callable")
    for label, attack in attacks.items():
        if not callable(attack):
            raise TypeError(f"{name}: attack {label!r} is not callable")
    names = tuple(str(k) for k in attacks)
    tally = MaskingTally(name)
    clean_correct, robust = _robust_by_batch(model, x, y, attacks, batch_size, tally)
    tally.report(on_masking)
    accuracy = {k: float(robust[:, j].float().mean()) for j, k in enumerate(names)}
    worst = robust.all(dim=1) & clean_correct
    return RobustAccuracyResult(
        names=names,
        clean_correct=clean_correct,
        robust=robust,
        clean_accuracy=float(clean_correct.float().mean()),
        accuracy=accuracy,
        worst_case=float(worst.float().mean()),
    )


def _robust_by_batch(
    model: nn.Module, x: Tensor, y: Tensor, attacks: Mapping[str, Attack], batch_size: int,
    tally: MaskingTally,
) -> tuple[Tensor, Tensor]:
    """``clean_correct (N,)`` and ``robust (N, A)`` of :func:`robust_accuracy`, on the CPU."""
    device = model_device(model, x.device)
    n = x.shape[0]
    clean_correct = torch.zeros(n, dtype=torch.bool)
    robust = torch.zeros(n, len(attacks), dtype=torch.bool)
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        correct = _predict(model, xb) == yb
        clean_correct[start : start + len(xb)] = correct.cpu()
        keep = correct.nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        xk, yk = xb[keep], yb[keep]
        rows = keep.cpu() + start
        for j, (label, attack) in enumerate(attacks.items()):
            with tally.collect(str(label), xk.shape[0]):
                x_adv = _run_attack(attack, model, xk, yk, str(label))
            robust[rows, j] = (_predict(model, x_adv) == yk).cpu()
    return clean_correct, robust


def accuracy_vs_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Callable[..., Tensor],
    epsilons: Iterable[float],
    *,
    batch_size: int = 256,
    on_masking: str = "warn",
) -> pd.DataFrame:
    """Robust accuracy of one attack at several radii: the accuracy-vs-ε curve.

    ``attack(model, x, y, eps=ε)`` is run at every ε (sorted ascending). Column ``accuracy`` is
    the raw robust accuracy at each ε; ``accuracy_envelope`` counts a sample as robust at ε only
    if it survived every evaluated ``ε' ≤ ε`` (an adversarial example at ``ε'`` is one at ``ε``
    too), a valid and never weaker estimate. A raw curve that is not non-increasing signals a
    weak or broken attack (Carlini et al. 2019). ``on_masking`` goes to :func:`robust_accuracy`.

    Derived in the book, section :ref:`sec-robust-evaluation` of chapter *Adversarial examples*.

    Returns:
        A DataFrame with columns ``eps``, ``accuracy``, ``accuracy_envelope``.
    """
    name = "accuracy_vs_eps"
    _check_common(model, x, y, batch_size, name)
    if not callable(attack):
        raise TypeError(f"{name}: attack must be callable as attack(model, x, y, eps=...)")
    if isinstance(epsilons, str | bytes) or not isinstance(epsilons, Iterable):
        raise TypeError(f"{name}: epsilons must be a sequence of floats, got {epsilons!r}")
    eps_list = sorted(check_nonneg_float(e, "eps") for e in epsilons)
    if not eps_list:
        raise ValueError(f"{name}: epsilons must not be empty")
    attacks = {f"eps={e!r}#{i}": partial(attack, eps=e) for i, e in enumerate(eps_list)}
    result = robust_accuracy(model, x, y, attacks, batch_size=batch_size, on_masking=on_masking)
    envelope = torch.cummin(result.robust.to(torch.uint8), dim=1).values.bool()
    envelope &= result.clean_correct[:, None]
    return pd.DataFrame(
        {
            "eps": eps_list,
            "accuracy": result.robust.float().mean(dim=0).tolist(),
            "accuracy_envelope": envelope.float().mean(dim=0).tolist(),
        }
    )


def min_norm_distances(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack,
    *,
    norm: str = "l2",
    batch_size: int = 256,
    on_masking: str = "warn",
) -> MinNormResult:
    """Per-sample perturbation size found by a minimum-norm attack (DeepFool, C&W).

    ``dᵢ = ‖attack(model, xᵢ, yᵢ) − xᵢ‖`` where the returned point is misclassified, ``0``
    where the clean input is already misclassified and ``+∞`` where the attack failed. The
    empirical CDF of ``d`` gives the robust accuracy at every radius at once,
    ``acc(ε) = (1/N) #{i : dᵢ > ε}`` (:meth:`MinNormResult.accuracy_at`). The attack's
    gradient-masking warnings are reported once, as in :func:`robust_accuracy` (``on_masking``).

    Derived in the book, section :ref:`sec-robust-evaluation` of chapter *Adversarial examples*.
    """
    name = "min_norm_distances"
    _check_common(model, x, y, batch_size, name)
    if not callable(attack):
        raise TypeError(f"{name}: attack must be callable as attack(model, x, y)")
    norm = check_choice(norm, "norm", ("l2", "linf", "l1"))
    on_masking = check_on_masking(on_masking)
    tally = MaskingTally(name)
    device = model_device(model, x.device)
    n = x.shape[0]
    distances = torch.full((n,), math.inf, dtype=torch.float64)
    success = torch.zeros(n, dtype=torch.bool)
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        wrong = _predict(model, xb) != yb
        rows = torch.arange(start, start + len(xb))
        distances[rows[wrong.cpu()]] = 0.0
        success[rows[wrong.cpu()]] = True
        keep = (~wrong).nonzero().squeeze(1)
        if keep.numel() == 0:
            continue
        xk, yk = xb[keep], yb[keep]
        with tally.collect("attack", xk.shape[0]):
            x_adv = _run_attack(attack, model, xk, yk, name)
        fooled = (_predict(model, x_adv) != yk).cpu()
        d = batch_norms((x_adv - xk).double(), norm).cpu()
        sel = rows[keep.cpu()]
        distances[sel] = torch.where(fooled, d, torch.full_like(d, math.inf))
        success[sel] = fooled
    tally.report(on_masking)
    return MinNormResult(distances=distances, success=success, norm=norm)
