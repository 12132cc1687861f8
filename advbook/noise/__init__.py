"""Noise injection as regularization: input, hidden-unit and weight noise, and their explicit forms.

Everything plugs into :func:`advbook.train.fit`:

* input noise — ``fit(..., batch_hook=input_noise_hook(sigma, bounds=(0, 1)))``
  (:mod:`~advbook.noise.input_noise`, section :ref:`sec-input-noise`);
* hidden-unit noise — the layers :class:`GaussianNoise` and :class:`GaussianDropout`, or
  :func:`noisy_mlp` (:mod:`~advbook.noise.layers`, section :ref:`sec-hidden-noise`);
* weight noise of **variance** η — ``fit(..., objective=weight_noise_objective(eta))``, and the
  Monte-Carlo loss :func:`weight_noise_loss` with fixed draws from :func:`draw_weight_noise`
  (:mod:`~advbook.noise.weight_noise`, section :ref:`sec-weight-noise`);
* the explicit equivalents — :func:`weight_gradient_penalty`, :func:`hessian_trace_term`,
  :func:`input_jacobian_penalty`, :func:`input_gradient_penalty`, and
  ``fit(..., objective=penalty_objective(eta, "weight_gradient"))``
  (:mod:`~advbook.noise.penalties`, sections :ref:`sec-weight-noise` and
  :ref:`sec-linear-special-case`).

Sections are those of chapter *Noise injection as regularization* of the book.

Random numbers: every function that draws them takes an optional seeded ``torch.Generator``.
Numbers are drawn on the generator's device and moved to the data's device, so a CPU generator
gives the same noise on CPU and CUDA; without a generator, PyTorch's global generator of the
data's device is used.
"""

from __future__ import annotations

from ._common import ParamSelection, select_parameters
from .input_noise import InputNoiseHook, add_input_noise, input_noise_hook
from .layers import GaussianDropout, GaussianNoise, noisy_mlp
from .penalties import (
    PenaltyFn,
    hessian_trace_term,
    input_gradient_penalty,
    input_jacobian_penalty,
    penalty_objective,
    weight_gradient_penalty,
)
from .weight_noise import (
    LossFn,
    draw_weight_noise,
    squared_error,
    weight_noise_loss,
    weight_noise_objective,
)

__all__ = [
    "GaussianDropout",
    "GaussianNoise",
    "InputNoiseHook",
    "LossFn",
    "ParamSelection",
    "PenaltyFn",
    "add_input_noise",
    "draw_weight_noise",
    "hessian_trace_term",
    "input_gradient_penalty",
    "input_jacobian_penalty",
    "input_noise_hook",
    "noisy_mlp",
    "penalty_objective",
    "select_parameters",
    "squared_error",
    "weight_gradient_penalty",
    "weight_noise_loss",
    "weight_noise_objective",
]
