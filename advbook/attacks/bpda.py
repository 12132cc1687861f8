"""BPDA (Athalye, Carlini & Wagner 2018): differentiate through a non-differentiable layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BPDA"]


class _StraightThrough(torch.autograd.Function):
    """``forward = transform(x)``, ``backward = ∇ of approx at x`` (identity by default)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, transform: Callable[[Tensor], Tensor],
                approx: Callable[[Tensor], Tensor] | None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.approx = approx
        with torch.no_grad():
            return transform(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.approx is None:
            return grad, None, None
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.approx(xg), xg, grad)
        return g, None, None


class BPDA(nn.Module):
    """A layer computing ``transform(x)`` whose backward pass uses ``approx`` instead.

    Backward Pass Differentiable Approximation: for a defence ``g`` whose gradient is zero or
    undefined (input quantisation, JPEG, thermometer codes), ``g(x) ≈ approx(x)`` with
    ``approx`` differentiable; with ``approx=None`` the backward pass is the identity, the
    straight-through estimator, right when ``g(x) ≈ x``. Wrap the defence, not the attack:
    ``nn.Sequential(BPDA(quantise), classifier)`` gives every gradient attack a usable
    gradient while the forward pass is exactly the defended model.

    Derived in the book, section :ref:`sec-eot-bpda` of chapter *Evaluating robustness*.
    """

    def __init__(self, transform: Callable[[Tensor], Tensor],
                 approx: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if not callable(transform):
            raise TypeError(f"BPDA: transform must be callable, got {type(transform).__name__}")
        if approx is not None and not callable(approx):
            raise TypeError(f"BPDA: approx must be callable or None, got {type(approx).__name__}")
        self.transform = transform
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = _StraightThrough.apply(x, self.transform, self.approx)
        return out
