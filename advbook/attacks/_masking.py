"""The gradient-masking guard of the gradient attacks and the evaluation helpers.

A gradient attack follows ``∇ₓ`` of its objective. Where that gradient is *exactly* zero (or
absent: ``torch.autograd.grad(..., allow_unused=True)`` returned ``None``) at every evaluation
the attack made for a sample, and the attack did not fool it, the attack never moved: its
failure is no evidence of robustness. The attacks keep one boolean per sample on the device
(:func:`and_vanished` after each gradient evaluation) and call :func:`report_masking`
once at the end, which costs one host synchronisation. Small gradients are never flagged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .._core.checks import check_choice
from .._core.warnings import GradientMaskingError, GradientMaskingWarning

__all__ = [
    "MASKING_CHOICES",
    "GradientMaskingError",
    "GradientMaskingWarning",
    "MaskingTally",
    "and_vanished",
    "check_on_masking",
    "report_masking",
]

#: what to do when masked gradients are found: warn (default), raise or say nothing
MASKING_CHOICES = ("warn", "raise", "ignore")

_SECTION = 'see the book, section "Gradient masking" (sec-gradient-masking)'


def check_on_masking(on_masking: object) -> str:
    """The checked ``on_masking``: ``"warn"``, ``"raise"`` or ``"ignore"``."""
    return check_choice(on_masking, "on_masking", MASKING_CHOICES)


def and_vanished(masked: Tensor, grad: Tensor) -> Tensor:
    """``masked & vanished(grad)`` for a gradient ``(n, ...)`` (exactly-zero criterion)."""
    return masked & (grad.flatten(1).abs().amax(dim=1) == 0)


def masking_message(name: str, masked: int, unfooled: int, total: int) -> str:
    """The text of the warning and of the error: counts, meaning and the book's section."""
    if masked == unfooled:
        who = (
            f"for all {unfooled} samples it did not fool (of {total} attacked): the model's "
            f"output does not change with its input (a constant output, or a forward that "
            f"detaches or ignores its input)"
        )
    else:
        who = f"for {masked} of the {total} samples attacked, which it did not fool"
    return (
        f"{name}: the input gradient was exactly zero at every step {who}. The attack had no "
        f"gradient to follow, so the robustness reported for these samples is not evidence of "
        f"robustness: gradient masking, or a model that ignores or detaches its input; "
        f"{_SECTION}. Pass on_masking='raise' to make this an error or 'ignore' to silence it."
    )


def report_masking(
    name: str, masked: Tensor, unfooled: Tensor, total: int, on_masking: str
) -> None:
    """Warn or raise if any sample is ``masked`` (already restricted to unfooled samples).

    ``unfooled`` flags the samples the attack did not fool; one host synchronisation.
    """
    if on_masking == "ignore" or masked.numel() == 0:
        return
    counts = torch.stack([masked.sum(), unfooled.sum()]).tolist()
    emit(name, int(counts[0]), int(counts[1]), total, on_masking)


def emit(name: str, masked: int, unfooled: int, total: int, on_masking: str) -> None:
    """Raise :class:`GradientMaskingError` or warn with :class:`GradientMaskingWarning`."""
    if masked == 0 or on_masking == "ignore":
        return
    message = masking_message(name, masked, unfooled, total)
    if on_masking == "raise":
        raise GradientMaskingError(message)
    warnings.warn(GradientMaskingWarning(message, masked, unfooled, total), stacklevel=4)


class MaskingTally:
    """Collects the attacks' masking warnings per label and reports one summary per label.

    The evaluation helpers run each attack batch by batch; :meth:`collect` catches the
    :class:`GradientMaskingWarning` of one call (other warnings are passed on), and
    :meth:`report` warns or raises once per attack with the counts summed over the batches.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: dict[str, list[int]] = {}  # label -> [masked, unfooled, attacked]

    @contextmanager
    def collect(self, label: str, attacked: int) -> Iterator[None]:
        """Record the masking warnings of the attack call inside the block."""
        entry = self.counts.setdefault(label, [0, 0, 0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GradientMaskingWarning)
            yield
        entry[2] += attacked
        masked = [w.message for w in caught if isinstance(w.message, GradientMaskingWarning)]
        entry[0] += sum(m.masked for m in masked)
        # a batch without a warning had no masked sample; count its unfooled ones as unknown
        entry[1] += sum(m.unfooled for m in masked) + (attacked if not masked else 0)
        for w in caught:
            if not isinstance(w.message, GradientMaskingWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)

    def report(self, on_masking: str) -> None:
        """One warning (or one error, for the first such attack) per attack label."""
        for label, (masked, unfooled, attacked) in self.counts.items():
            emit(f"{self.name}: attack {label!r}", masked, unfooled, attacked, on_masking)
