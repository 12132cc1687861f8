"""Seeded draws that give the same numbers on every device, and independent seeds.

With a ``generator``, numbers are drawn on the generator's device and then moved to the data's
device, so a seeded CPU generator gives the same noise for CPU and CUDA data; without one they
come from PyTorch's global generator of the data's device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

__all__ = [
    "SeededCallable",
    "draw_like",
    "fresh_seed",
    "generator_from_seed",
    "rademacher_like",
    "rand_on",
    "randn_like",
]

_SEED_RANGE = 2**63 - 1


def draw_like(
    kind: Literal["rand", "randn"],
    like: torch.Tensor,
    generator: torch.Generator | None,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """``torch.rand``/``torch.randn`` of ``shape`` (default ``like.shape``) in ``like``'s dtype,
    on ``like``'s device."""
    fn = torch.rand if kind == "rand" else torch.randn
    size = tuple(like.shape) if shape is None else shape
    if generator is None:
        return fn(size, device=like.device, dtype=like.dtype)
    out = fn(size, generator=generator, device=generator.device, dtype=like.dtype)
    return out.to(like.device, non_blocking=True)


def randn_like(
    like: torch.Tensor, generator: torch.Generator | None, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Standard normal draws shaped ``shape`` (default ``like.shape``); see :func:`draw_like`."""
    return draw_like("randn", like, generator, shape)


def rademacher_like(
    like: torch.Tensor, generator: torch.Generator | None, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Independent ±1 signs (probability ½ each) shaped ``shape``, like :func:`randn_like`."""
    size = tuple(like.shape) if shape is None else shape
    device = like.device if generator is None else generator.device
    bits = torch.randint(0, 2, size, device=device, generator=generator, dtype=torch.int8)
    return (2 * bits - 1).to(dtype=like.dtype, device=like.device, non_blocking=True)


def rand_on(
    generator: torch.Generator, *size: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Uniform draws in ``[0, 1)`` of shape ``size`` from ``generator``, on its device."""
    return torch.rand(*size, generator=generator, device=generator.device, dtype=dtype)


def generator_from_seed(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def fresh_seed() -> int:
    """A seed drawn from PyTorch's global CPU generator.

    Objects that own a generator and are given no seed take one from here, so two of them draw
    independent streams, and :func:`advbook.utils.seed_everything` (``torch.manual_seed``) makes
    the whole program repeat.
    """
    return int(torch.randint(0, _SEED_RANGE, (), dtype=torch.int64))


class SeededCallable:
    """A callable that draws from ``generator``, with that generator's state as its state.

    Wraps the closures that objectives and hooks are built from, so that
    :func:`advbook.train.fit` stores the generator state in its checkpoints
    (``state_dict``/``load_state_dict``) and a resumed run draws the same noise as an
    uninterrupted one. Calls are passed through unchanged.
    """

    def __init__(
        self, fn: Callable[..., Any], generator: torch.Generator | None, name: str
    ) -> None:
        self._fn = fn
        self.generator = generator
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": state}`` when there is a generator, else ``{}``."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        if "generator" in state:
            if self.generator is None:
                raise ValueError(f"{self._name}: the saved state has a generator state but "
                                 "this one was built without a generator")
            self.generator.set_state(state["generator"].cpu())

    def __repr__(self) -> str:
        return self._name
