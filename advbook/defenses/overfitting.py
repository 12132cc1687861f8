"""Detect catastrophic overfitting of single-step adversarial training, epoch by epoch."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .._core.checks import (
    check_bounds,
    check_fraction,
    check_generator,
    check_module,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from .._core.random import generator_from_seed
from ..attacks import fgsm, pgd, robust_accuracy
from ..distributed import is_main_process

__all__ = ["CatastrophicOverfittingDetector"]


class CatastrophicOverfittingDetector:
    """Epoch callback: FGSM and PGD accuracy on a held-out batch, and a warning on collapse.

    Catastrophic overfitting (Wong et al. 2020) is the sudden failure mode of FGSM adversarial
    training: within a few iterations the model becomes robust to the single-step attack it is
    trained on while its robustness to multi-step PGD drops to about zero — the loss surface
    has become so curved that the linear approximation behind FGSM points the wrong way. Its
    signature is a large gap between the two robust accuracies on held-out data::

        gap_t = acc_FGSM,t − acc_PGD,t ≥ threshold        (catastrophic overfitting at epoch t)

    A robust model shows a small gap (PGD is somewhat stronger than FGSM), and so does a model
    that is not robust at all (both are near 0); only a model whose robustness is an artefact of
    masked gradients shows a large one (one of the sanity checks of Carlini et al. 2019:
    iterative attacks must beat single-step ones, but not by a landslide). Derived in the book,
    section :ref:`sec-catastrophic-overfitting` of chapter *Adversarial training* (the sanity
    checks: section :ref:`sec-gradient-masking`).

    Use as ``fit(..., epoch_callbacks=[detector])``. Each call ``detector(model, epoch)``
    evaluates ``acc_FGSM`` (plain FGSM, no random start) and ``acc_PGD`` (``pgd_steps`` steps,
    random start) with :func:`advbook.attacks.robust_accuracy` on ``(x_val, y_val)``, returns
    ``{"fgsm_acc": acc_FGSM, "pgd_acc": acc_PGD}`` (new columns of the history), appends them to
    :attr:`history`, and when the gap reaches ``threshold`` records the first such epoch in
    :attr:`detected_epoch` and emits a ``RuntimeWarning`` (on rank 0 only under ``torchrun``).
    The model is left unchanged (the attacks restore modes, gradients and BatchNorm statistics).

    Args:
        x_val, y_val: a small held-out batch (a few hundred samples is plenty).
        eps: the attack radius (the training ε).
        pgd_steps: PGD steps (``≥ 1``); step size ``pgd_alpha``, default ``2.5·ε/pgd_steps``.
        threshold: the gap ``acc_FGSM − acc_PGD`` (in ``(0, 1]``) that counts as collapse.
        bounds: valid input range.
        generator: source of the PGD random start. Default: a fresh generator seeded with
            ``seed`` at every call, so that successive epochs are measured with the same start.
        seed: see ``generator``.
        warn: emit the ``RuntimeWarning`` (detection is recorded either way).
    """

    def __init__(
        self,
        x_val: Tensor,
        y_val: Tensor,
        eps: float,
        *,
        pgd_steps: int = 10,
        pgd_alpha: float | None = None,
        threshold: float = 0.3,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        seed: int = 0,
        warn: bool = True,
    ) -> None:
        if not isinstance(x_val, Tensor) or not isinstance(y_val, Tensor):
            raise TypeError(f"x_val and y_val must be tensors, got {type(x_val).__name__} and "
                            f"{type(y_val).__name__}")
        if x_val.ndim < 2 or y_val.ndim != 1 or x_val.shape[0] != y_val.shape[0]:
            raise ValueError(f"x_val must be (N, ...) and y_val (N,), got {tuple(x_val.shape)} "
                             f"and {tuple(y_val.shape)}")
        if x_val.shape[0] == 0:
            raise ValueError("x_val is empty; pass a held-out batch of a few hundred samples")
        self.x_val = x_val.detach()
        self.y_val = y_val.detach()
        self.eps = check_positive_float(eps, "eps")
        self.pgd_steps = check_positive_int(pgd_steps, "pgd_steps")
        self.pgd_alpha = (2.5 * self.eps / self.pgd_steps if pgd_alpha is None
                          else check_positive_float(pgd_alpha, "pgd_alpha"))
        self.threshold = check_fraction(threshold, "threshold")
        if self.threshold == 0:
            raise ValueError("threshold must lie in (0, 1], got 0")
        self.bounds = check_bounds(bounds)
        self.generator = check_generator(generator)
        self.seed = check_nonneg_int(seed, "seed")
        self.warn = bool(warn)
        self.history: list[dict[str, float]] = []
        self.detected_epoch: int | None = None

    @property
    def detected(self) -> bool:
        """``True`` once catastrophic overfitting has been seen."""
        return self.detected_epoch is not None

    def measure(self, model: nn.Module) -> dict[str, float]:
        """``{"fgsm_acc": ..., "pgd_acc": ...}`` on the held-out batch (no detection logic)."""
        check_module(model)
        gen = self.generator if self.generator is not None else generator_from_seed(self.seed)
        attacks = {
            "fgsm": partial(fgsm, eps=self.eps, bounds=self.bounds),
            "pgd": partial(pgd, eps=self.eps, steps=self.pgd_steps, alpha=self.pgd_alpha,
                           bounds=self.bounds, generator=gen),
        }
        # vanishing gradients are the failure this detector reports (through the gap), so its
        # attacks do not warn about them one by one
        result = robust_accuracy(model, self.x_val, self.y_val, attacks, on_masking="ignore")
        return {"fgsm_acc": result.accuracy["fgsm"], "pgd_acc": result.accuracy["pgd"]}

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        metrics = self.measure(model)
        self.history.append({"epoch": epoch, **metrics})
        gap = metrics["fgsm_acc"] - metrics["pgd_acc"]
        if gap >= self.threshold:
            if self.detected_epoch is None:
                self.detected_epoch = epoch
            if self.warn and is_main_process():
                warnings.warn(
                    f"catastrophic overfitting at epoch {epoch}: on {self.x_val.shape[0]} "
                    f"held-out samples at eps={self.eps:g}, FGSM accuracy is "
                    f"{metrics['fgsm_acc']:.1%} but PGD-{self.pgd_steps} accuracy is "
                    f"{metrics['pgd_acc']:.1%} (gap {gap:.1%} >= threshold "
                    f"{self.threshold:.0%}); the model masks its gradients rather than being "
                    f"robust. Use a random start with step alpha <= 1.25*eps (fgsm_at_objective), "
                    f"a smaller eps or step, or PGD-AT, and keep the checkpoint of the last epoch "
                    f"before the collapse.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """History, detected epoch and generator state (stored in ``fit`` checkpoints)."""
        state: dict[str, Any] = {"history": [dict(r) for r in self.history],
                                 "detected_epoch": self.detected_epoch}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.history = [dict(r) for r in state.get("history", [])]
        self.detected_epoch = state.get("detected_epoch")
        if "generator" in state and self.generator is not None:
            self.generator.set_state(state["generator"].cpu())

    def __repr__(self) -> str:
        return (f"CatastrophicOverfittingDetector(n={self.x_val.shape[0]}, eps={self.eps:g}, "
                f"pgd_steps={self.pgd_steps}, threshold={self.threshold:g}, "
                f"detected_epoch={self.detected_epoch})")
