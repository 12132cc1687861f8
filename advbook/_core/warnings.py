"""The library's own warnings, shared by the attacks, the recipes and the augmentations."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GradientMaskingError", "GradientMaskingWarning", "training_time_attack"]


class GradientMaskingWarning(UserWarning):
    """An attack had no gradient to follow for some samples it did not fool.

    ``masked`` is the number of such samples, ``unfooled`` the number the attack did not fool
    and ``total`` the number it attacked.
    """

    def __init__(self, message: str, masked: int = 0, unfooled: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.masked = masked
        self.unfooled = unfooled
        self.total = total


class GradientMaskingError(ValueError):
    """Raised instead of :class:`GradientMaskingWarning` when ``on_masking="raise"``."""


@contextmanager
def training_time_attack() -> Iterator[None]:
    """Silence :class:`GradientMaskingWarning` for attacks that make training examples.

    The guard is about evaluation: a sample an *evaluation* attack cannot move for want of a
    gradient is a robustness claim without evidence. An attack inside a training recipe or an
    augmentation only makes training examples, where a vanished gradient is part of training
    (catastrophic overfitting shows it, and the detector and the evaluation report it).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientMaskingWarning)
        yield
