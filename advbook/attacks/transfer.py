"""Transfer attacks: adversarial examples made on a surrogate model, evaluated on the target."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._core.checks import check_batch, check_positive_int
from .._core.devices import model_device
from .._core.types import Attack
from .evaluation import _predict, _run_attack

__all__ = ["TransferResult", "transfer_attack"]


@dataclass(frozen=True)
class TransferResult:
    """Outcome of :func:`transfer_attack` (tensors on the CPU).

    Attributes:
        x_adv: the points crafted on the surrogate.
        surrogate_correct: ``(N,)`` the surrogate still classifies ``x_adv`` correctly.
        target_correct: ``(N,)`` the target classifies ``x_adv`` correctly.
        target_clean_correct: ``(N,)`` the target classifies the clean ``x`` correctly.
    """

    x_adv: Tensor
    surrogate_correct: Tensor
    target_correct: Tensor
    target_clean_correct: Tensor

    @property
    def surrogate_accuracy(self) -> float:
        """Accuracy of the surrogate on the points made against it (white-box)."""
        return float(self.surrogate_correct.float().mean())

    @property
    def target_accuracy(self) -> float:
        """Robust accuracy of the target under the transferred points (clean errors count)."""
        return float((self.target_correct & self.target_clean_correct).float().mean())

    @property
    def transfer_rate(self) -> float:
        """Fraction of the surrogate's successes that also fool the target (where it was right)."""
        made = ~self.surrogate_correct & self.target_clean_correct
        return float((made & ~self.target_correct).sum() / made.sum().clamp_min(1))


def transfer_attack(
    surrogate: nn.Module,
    target: nn.Module,
    x: Tensor,
    y: Tensor,
    attack: Attack,
    *,
    batch_size: int = 256,
) -> TransferResult:
    """Run ``attack(surrogate, x, y)`` and evaluate the points on ``target`` (Papernot et al.
    2017): a black-box evaluation that needs no gradient of the target, and a check on gradient
    masking (a target that resists white-box attacks but falls to transferred points hides its
    gradients). Both models are left unchanged; they may live on different devices.

    Derived in the book, section :ref:`sec-transfer` of chapter *Evaluating robustness*.
    """
    name = "transfer_attack"
    check_batch(surrogate, x, y, name)
    check_batch(target, x, y, name)
    batch_size = check_positive_int(batch_size, "batch_size")
    if not callable(attack):
        raise TypeError(f"{name}: attack must be callable as attack(model, x, y)")
    out: dict[str, list[Tensor]] = {"x": [], "s": [], "t": [], "c": []}
    dev_s, dev_t = model_device(surrogate, x.device), model_device(target, x.device)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv = _run_attack(attack, surrogate, xb.to(dev_s), yb.to(dev_s), "attack")
        out["x"].append(x_adv.cpu())
        out["s"].append((_predict(surrogate, x_adv) == yb.to(dev_s)).cpu())
        out["t"].append((_predict(target, x_adv.to(dev_t)) == yb.to(dev_t)).cpu())
        out["c"].append((_predict(target, xb.to(dev_t)) == yb.to(dev_t)).cpu())
    cat = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.bool) for k, v in out.items()}
    if not out["x"]:
        cat["x"] = x.detach().cpu().clone()
    return TransferResult(cat["x"], cat["s"], cat["t"], cat["c"])

