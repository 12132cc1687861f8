"""Run a model and leave it exactly as it was ("nothing is lost").

* :func:`eval_mode` — every sub-module in eval mode; each module's own ``training`` flag comes
  back afterwards, so a model with some layers deliberately frozen in eval mode is returned
  exactly as it was (``model.train(was_training)`` would switch those layers back to training);
* :func:`model_guard` — what the attacks run inside: :func:`eval_mode` with gradients enabled
  (also under ``torch.no_grad()`` or ``torch.inference_mode()``), every parameter's ``.grad``
  restored (``None`` stays ``None``) and the running statistics of normalisation layers restored
  should anything have changed them;
* :func:`frozen_parameters` — ``requires_grad=False`` on every parameter for the duration.

Each restores its state also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

__all__ = ["detached_copy", "eval_mode", "frozen_parameters", "model_guard"]


@contextmanager
def eval_mode(model: nn.Module, *, enable_grad: bool = False) -> Iterator[None]:
    """Run the body with every sub-module of ``model`` in eval mode; restore each flag after.

    With ``enable_grad=True`` gradient recording is also switched on (inference mode off), for
    bodies that differentiate through the model.
    """
    modes = [(m, m.training) for m in model.modules()]
    grad_context = _grad_enabled() if enable_grad else nullcontext()
    try:
        model.eval()
        with grad_context:
            yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _grad_enabled() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def model_guard(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode with gradients enabled and leave it exactly as it was.

    Restores each module's ``training`` flag, each parameter's ``.grad`` object and the buffers
    of normalisation layers (BatchNorm running statistics), also when the body raises.
    """
    grads = [(p, p.grad) for p in model.parameters()]
    norm_buffers = [
        (buf, buf._version, buf.detach().clone())
        for m in model.modules()
        if isinstance(m, _NormBase)
        for buf in m.buffers(recurse=False)
    ]
    try:
        with eval_mode(model, enable_grad=True):
            yield
    finally:
        for p, g in grads:
            if p.grad is not g:
                p.grad = g
        with torch.no_grad():
            for buf, version, saved in norm_buffers:
                if buf._version != version:
                    buf.copy_(saved)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter of ``model``; each flag restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def detached_copy(t: Tensor) -> Tensor:
    """``t`` detached from the graph, copied if it is an inference tensor (autograd may use it).

    Call inside :func:`model_guard`, where inference mode is off.
    """
    return t.clone() if t.is_inference() else t.detach()
