"""Adversarial examples as augmentation: replace a fraction of each batch by attack outputs.

For a batch ``(x, y)`` and a random subset ``S`` of ``k = round(ρ N)`` indices,

    x'_i = clip(A(f, x_S, y_S)_i)   for i ∈ S,      x'_i = x_i   otherwise,

where ``A(f, x, y)`` is any attack ``(model, x, y) -> x_adv`` (e.g. ``advbook.attacks.fgsm`` or
``pgd`` with fixed keyword arguments via :func:`functools.partial`). Training on ``x'`` minimises
``(1 − ρ)·E[ℓ(f(x), y)] + ρ·E[ℓ(f(A(x)), y)]``, the mixed clean/adversarial objective of
Goodfellow et al. (2015).

Derived in the book, section :ref:`sec-augment-adversarial` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, overload

import torch
from torch import nn

from .._core.checks import check_bounds as check_bounds_arg
from .._core.checks import (  # check_bounds: a keyword argument
    check_fraction,
    check_generator,
    check_in_bounds,
    check_module,
    check_positive_int,
    check_tensor,
)
from .._core.guard import eval_mode, frozen_parameters
from .._core.random import generator_from_seed
from .._core.types import Attack
from .._core.warnings import training_time_attack
from .base import Params, resolve_seed

__all__ = ["AdversarialAugment", "Attack"]


class AdversarialAugment:
    """Replace a random fraction of a batch by adversarial examples.

    Args:
        attack: ``attack(model, x, y) -> x_adv`` with ``x_adv`` shaped like ``x``.
        fraction: the share ``ρ ∈ [0, 1]`` of each batch that is replaced (``round(ρ N)``
            samples, chosen uniformly without replacement).
        bounds: the value range; inputs are checked against it and attack outputs clamped.
        seed: seed of the owned generator (used when no ``generator`` is passed); ``None`` (the
            default) draws a fresh one from PyTorch's global generator, as for
            :class:`~advbook.augment.base.Transform`.
        check_bounds: verify that inputs lie in ``bounds`` (one host synchronisation).

    Calling it as ``aug(model, x, y, *, generator=None, params=None, return_params=False)``
    runs the attack on the selected samples with every sub-module in **eval** mode (so BatchNorm
    statistics and dropout are untouched) and with ``requires_grad`` switched off on the
    model's parameters (so no ``.grad`` is left on them); each sub-module's own ``training``
    flag and each parameter's ``requires_grad`` are restored afterwards (a layer the caller
    froze in eval mode stays in eval mode), also when the attack raises. The result is detached.
    Parameters: ``index (k)`` int64, the replaced positions; passing them back with the same
    attack replays the call.
    """

    def __init__(
        self,
        attack: Attack,
        fraction: float = 0.5,
        *,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        if not callable(attack):
            raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {attack!r}")
        self.attack = attack
        self.fraction = check_fraction(fraction, "fraction")
        self.bounds = check_bounds_arg(bounds)
        self.seed = resolve_seed(seed)
        self.check_bounds = bool(check_bounds)
        self.generator = generator_from_seed(self.seed)

    def num_replaced(self, batch_size: int) -> int:
        """``k = round(ρ N)``, the number of samples replaced in a batch of ``N``."""
        return round(self.fraction * batch_size)

    def sample_params(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Params:
        """Draw the replaced positions ``index`` (``k`` distinct indices in ``[0, N)``)."""
        check_generator(generator)
        batch_size = check_positive_int(batch_size, "batch_size")
        g = generator if generator is not None else self.generator
        k = self.num_replaced(batch_size)
        perm = torch.randperm(batch_size, generator=g, device=g.device)
        return {"index": perm[:k]}

    def _check(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        check_module(model)
        check_tensor(x, "x", floating=True)
        check_tensor(y, "y")
        if x.ndim < 2:
            raise ValueError(f"x must be a batch shaped N×…, got shape {tuple(x.shape)}")
        if y.ndim < 1 or y.shape[0] != x.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"x and y must hold the same positive number of samples, got x "
                f"{tuple(x.shape)} and y {tuple(y.shape)}"
            )
        if self.check_bounds:
            check_in_bounds(x, self.bounds, "AdversarialAugment")

    def _check_params(self, params: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
        if not isinstance(params, Mapping) or set(params) != {"index"}:
            raise ValueError(f"params must be a dict with the single key 'index', got {params!r}")
        index = params["index"]
        if not isinstance(index, torch.Tensor) or index.dtype != torch.long or index.ndim != 1:
            raise ValueError("params['index'] must be a 1-D int64 tensor of batch positions")
        k = self.num_replaced(n)
        if index.numel() != k:
            raise ValueError(
                f"params['index'] must hold round(fraction·N) = {k} positions, got "
                f"{index.numel()}"
            )
        if k and not bool(((index >= 0) & (index < n)).all()):
            raise ValueError(f"params['index'] must lie in [0, {n})")
        if torch.unique(index).numel() != k:
            raise ValueError("params['index'] must not repeat positions")
        return index

    @overload
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
        generator: torch.Generator | None = ..., params: Mapping[str, torch.Tensor] | None = ...,
        return_params: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
        generator: torch.Generator | None = ..., params: Mapping[str, torch.Tensor] | None = ...,
        return_params: Literal[True],
    ) -> tuple[torch.Tensor, Params]: ...

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
        return_params: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Params]:
        """Return ``x`` with the selected samples replaced by attack outputs (see class doc)."""
        check_generator(generator)
        self._check(model, x, y)
        n = x.shape[0]
        if params is None:
            index = self.sample_params(n, generator=generator)["index"]
        else:
            index = self._check_params(params, n)
        index = index.to(x.device)
        out = x.detach().clone()
        if index.numel():
            x_adv = self._run_attack(model, x.detach().index_select(0, index),
                                     y.index_select(0, index.to(y.device)))
            out.index_copy_(0, index, x_adv.to(x.dtype))
        return (out, {"index": index}) if return_params else out

    def _run_attack(self, model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        with eval_mode(model, enable_grad=True), frozen_parameters(model), training_time_attack():
            x_adv = self.attack(model, xs, ys)
        if not isinstance(x_adv, torch.Tensor):
            raise TypeError(f"the attack must return a tensor, got {type(x_adv).__name__}")
        if x_adv.shape != xs.shape:
            raise ValueError(
                f"the attack returned shape {tuple(x_adv.shape)}, expected {tuple(xs.shape)}"
            )
        return x_adv.detach().to(xs.device).clamp(*self.bounds)

    def __repr__(self) -> str:
        name = getattr(self.attack, "__name__", type(self.attack).__name__)
        return f"AdversarialAugment(attack={name}, fraction={self.fraction})"
