"""The base class of the training recipes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .._core.checks import check_bounds, check_generator, check_nonneg_float

__all__ = ["Recipe"]


class Recipe:
    """Base of the adversarial-training objectives: an ``objective(model, x, y)`` for ``fit``.

    Holds the radius ``eps`` (a plain attribute that schedules may change between epochs), the
    input ``bounds`` and an optional ``generator``. Radius and generator state are exposed
    through :meth:`state_dict`/:meth:`load_state_dict`, which :func:`advbook.train.fit` stores
    in its checkpoints so that a resumed run uses the same radius and draws the same random
    starts as an uninterrupted one.
    """

    def __init__(
        self, eps: float, *, bounds: tuple[float, float], generator: torch.Generator | None
    ) -> None:
        self.eps = check_nonneg_float(eps, "eps")
        self.bounds = check_bounds(bounds)
        self.generator = check_generator(generator)

    def state_dict(self) -> dict[str, Any]:
        """``{"eps": ε}`` plus ``"generator"``: its state, when a generator is set.

        ``eps`` is included because a schedule (:class:`~advbook.defenses.EpsilonRamp`) may
        change it during training.
        """
        state: dict[str, Any] = {"eps": self.eps}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the radius and generator state saved by :meth:`state_dict`."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if "eps" in state:
            self.eps = check_nonneg_float(state["eps"], "eps")
        if "generator" in state:
            if self.generator is None:
                raise ValueError("the saved state has a generator state but this recipe has no "
                                 "generator; construct it with generator=torch.Generator()")
            self.generator.set_state(state["generator"].cpu())

    def _fields(self) -> dict[str, object]:
        return {"eps": self.eps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({args})"
