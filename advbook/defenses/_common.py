"""Model-mode guard, the attacks' perturbation helpers, the base class of the training recipes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_bounds, check_generator, check_nonneg_float
from ..attacks._utils import _draw, per_sample, project
from ..attacks._utils import steepest_ascent_direction as steepest_ascent

__all__ = [
    "Recipe",
    "eval_mode",
    "per_sample",
    "project",
    "randn_like",
    "steepest_ascent",
]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode with gradients on; restore every module's flag afterwards.

    Each sub-module gets its own ``training`` flag back (also when the body raises), so a model
    with some layers deliberately frozen in eval mode comes back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` on its device and dtype (see the attacks' ``_draw``:
    a seeded CPU generator gives the same noise for CPU and CUDA data)."""
    return _draw("randn", x, generator)


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
