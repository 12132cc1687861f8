"""Types shared by the subpackages: attacks, losses, parameter dictionaries."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Attack", "Bounds", "LossFn", "ParamDict"]

#: An attack as the training recipes, the augmentations and the evaluation helpers call it:
#: ``attack(model, x, y) -> x_adv`` (hyper-parameters bound with :func:`functools.partial`).
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: A loss ``loss_fn(outputs, targets) -> scalar`` such as :func:`torch.nn.functional.cross_entropy`.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Parameters (or directions in parameter space) by name, as ``model.named_parameters()`` gives.
ParamDict = dict[str, torch.Tensor]

#: The value range ``(low, high)`` of inputs.
Bounds = tuple[float, float]
