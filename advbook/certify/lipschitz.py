"""Lipschitz-margin certificates (Tsuzuku, Sato & Sugiyama 2018): a deterministic ℓ2 radius.

If the logit map ``z`` of a network is ``L``-Lipschitz in ℓ2 (``‖z(x) − z(x')‖₂ ≤ L‖x − x'‖₂``),
each logit difference ``z_i − z_j = (e_i − e_j)·z`` is ``√2·L``-Lipschitz, so the top class
``c`` cannot change while ``‖ε‖₂ < (z_c − max_{j≠c} z_j) / (√2·L)``:

* :func:`lipschitz_upper_bound` — ``L`` as the product of the layers' Lipschitz constants
  (spectral norms for the linear layers),
  for chains of layers (``nn.Sequential``, also nested or inside a module whose ``forward``
  calls its sub-modules in order);
* :func:`lipschitz_certificate` — labels and radii ``margin / (√2·L)``.

Unlike randomized smoothing (``advbook.certify.smoothing``) the certificate holds with
certainty, for the network itself, but the product of layer norms ignores how the layers
align and is usually far above the true constant, so the radii are small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from .._core.checks import (
    check_batch,
    check_finite,
    check_generator,
    check_model_device,
    check_module,
    check_positive_float,
    check_positive_int,
)
from .._core.devices import model_device
from .._core.guard import detached_copy, model_guard
from .._core.random import draw_like

__all__ = ["lipschitz_certificate", "lipschitz_upper_bound"]

#: Layers with Lipschitz constant 1 in eval mode (element-wise with slope in [-1, 1], reshapes,
#: the identity; dropout is the identity in eval mode).
ONE_LIPSCHITZ: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
#: Linear layers whose operator norm is found by Lanczos iteration on the actual input shape.
KRYLOV: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_OTHER = (nn.Linear, nn.LeakyReLU, nn.ELU, nn.Sigmoid, _BatchNorm, *_MAX_POOLS)
SUPPORTED: tuple[type[nn.Module], ...] = (*ONE_LIPSCHITZ, *KRYLOV, *_OTHER)


def _chain(module: nn.Module, path: str = "model") -> list[tuple[str, nn.Module]]:
    """The supported layers of ``module`` in registration order, descending into containers."""
    if isinstance(module, SUPPORTED):
        return [(path, module)]
    children = list(module.named_children())
    if not children and isinstance(module, nn.Sequential):
        return []  # the identity
    if not children or any(True for _ in module.parameters(recurse=False)):
        names = ", ".join(sorted({t.__name__ for t in SUPPORTED}))
        raise ValueError(
            f"lipschitz_upper_bound: no Lipschitz bound for {path} ({type(module).__name__}); "
            f"supported layers: {names}"
        )
    return [leaf for name, child in children for leaf in _chain(child, f"{path}.{name}")]


def _layer_input_shapes(
    model: nn.Module, layers: list[tuple[str, nn.Module]], probe: Tensor
) -> list[tuple[int, ...]]:
    """The input shape (one sample) of each layer, after checking that the chain is the model.

    Raises ``ValueError`` when running the layers one after the other does not reproduce
    ``model(probe)`` (residual connections, functional calls in ``forward``, a layer used twice).
    """
    try:
        out = model(probe)
    except (TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"lipschitz_upper_bound: the model fails on inputs of shape "
                         f"{tuple(probe.shape)} (is input_shape right?): {error}") from error
    message = (
        "lipschitz_upper_bound: the model is not the chain of its layers in registration order "
        "(a residual connection, a function applied in forward, or a layer used twice?); only "
        "sequential models are supported: write it as an nn.Sequential"
    )
    shapes, h = [], probe
    try:
        for _, layer in layers:
            shapes.append(tuple(h.shape[1:]))
            h = layer(h)
    except (TypeError, RuntimeError, AttributeError) as error:
        raise ValueError(f"{message} ({error})") from error
    if not isinstance(out, Tensor) or out.shape != h.shape or not torch.allclose(
        out, h, rtol=1e-4, atol=1e-5 * (1.0 + float(out.abs().max()))
    ):
        raise ValueError(message)
    return shapes


def _lanczos_norm(
    layer: nn.Module, shape: tuple[int, ...], iterations: int, generator: torch.Generator | None
) -> float:
    """``‖A‖₂`` of the linear map ``A`` of ``layer`` (bias set to zero) on inputs of ``shape``.

    Lanczos iteration on ``AᵀA`` in float64 (``Aᵀ`` by autograd), with full
    re-orthogonalisation: the largest Ritz value approaches ``‖A‖₂²`` from below, much faster
    than power iteration when the top singular values cluster. Stops early on an invariant
    subspace; keeps ``min(iterations, dim)`` basis vectors of the input's size.
    """
    params = {
        name: torch.zeros_like(p, dtype=torch.float64) if name == "bias" else
        p.detach().to(torch.float64)
        for name, p in layer.named_parameters(recurse=False)
    }

    def gram(v: Tensor) -> Tensor:  # AᵀA v
        v = v.view(1, *shape).requires_grad_(True)
        out = functional_call(layer, params, (v,))
        (g,) = torch.autograd.grad(out, v, grad_outputs=out.detach())
        return g.reshape(-1)

    like = torch.empty(0, dtype=torch.float64, device=model_device(layer, "cpu"))
    steps = min(iterations, math.prod(shape))
    basis = like.new_zeros(steps, math.prod(shape))
    q = draw_like("randn", like, generator, (basis.shape[1],))
    basis[0] = q / q.norm()
    diagonal: list[Tensor] = []
    off: list[Tensor] = []
    for j in range(steps):
        w = gram(basis[j])
        diagonal.append(torch.dot(w, basis[j]))
        done = basis[: j + 1]
        for _ in range(2):  # classical Gram–Schmidt twice: orthogonal to working precision
            w = w - done.T @ (done @ w)
        beta = w.norm()
        if j + 1 == steps or float(beta) <= 1e-12 * float(torch.stack(diagonal).abs().max()):
            break
        off.append(beta)
        basis[j + 1] = w / beta
    tri = torch.diag(torch.stack(diagonal))
    if off:
        tri = tri + torch.diag(torch.stack(off), 1) + torch.diag(torch.stack(off), -1)
    return float(torch.linalg.eigvalsh(tri)[-1].clamp_min(0.0).sqrt())


def _max_pool_constant(layer: nn.Module, dims: int) -> float:
    """``√m`` with ``m`` the most pooling windows an input element can fall into."""
    def per_dim(value: int | Sequence[int]) -> list[int]:
        return list(value) if isinstance(value, Sequence) else [int(value)] * dims

    kernel = per_dim(layer.kernel_size)  # type: ignore[arg-type]
    stride = per_dim(layer.stride or layer.kernel_size)  # type: ignore[arg-type]
    dilation = per_dim(layer.dilation)  # type: ignore[arg-type]
    windows = 1
    for k, s, d in zip(kernel, stride, dilation, strict=True):
        windows *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return math.sqrt(windows)


def _layer_constant(
    name: str, layer: nn.Module, shape: tuple[int, ...], iterations: int,
    generator: torch.Generator | None,
) -> float:
    """An upper bound on the ℓ2 Lipschitz constant of one layer in eval mode on ``shape``."""
    if isinstance(layer, ONE_LIPSCHITZ):
        return 1.0
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    if isinstance(layer, KRYLOV):
        return _lanczos_norm(layer, shape, iterations, generator)
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope))
    if isinstance(layer, nn.ELU):
        return max(1.0, abs(layer.alpha))
    if isinstance(layer, nn.Sigmoid):
        return 0.25
    if isinstance(layer, _MAX_POOLS):
        dims = 1 if isinstance(layer, nn.MaxPool1d) else 2 if isinstance(layer, nn.MaxPool2d) else 3
        return _max_pool_constant(layer, dims)
    assert isinstance(layer, _BatchNorm)
    if layer.running_var is None:
        raise ValueError(f"lipschitz_upper_bound: {name} ({type(layer).__name__}) has no running "
                         "statistics (track_running_stats=False), so eval mode normalises with "
                         "the batch's own statistics and no input-independent bound exists")
    scale = (layer.running_var.detach().double() + layer.eps).rsqrt()
    if layer.weight is not None:
        scale = scale * layer.weight.detach().double().abs()
    return float(scale.max())


def lipschitz_upper_bound(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    iterations: int = 100,
    generator: torch.Generator | None = None,
) -> float:
    """An upper bound ``L`` on the ℓ2 Lipschitz constant of ``model``'s logits, in eval mode.

    Compared with the gradient norms it must exceed in the book, section
    :ref:`sec-lipschitz-certificates`.

    ``L = Π_l L_l`` over the chain of layers (composition multiplies Lipschitz constants):

    * ``nn.Linear``: ``‖W‖₂``, the largest singular value, exact (SVD in float64);
    * convolutions (also transposed) and average pooling: the operator norm of the linear map
      on the layer's actual input shape (stride, padding, dilation and groups included), by
      ``iterations`` steps of Lanczos iteration on ``AᵀA`` (the Krylov-subspace refinement of
      power iteration; ``Aᵀ`` by autograd, float64, full re-orthogonalisation). It approaches
      ``‖A‖₂`` from below. Plain power iteration does too, but slowly where the top singular
      values of a convolution cluster (up to 1 % short after 100 iterations on a 3×3
      convolution of 8×8 inputs, against about 1e-15 for 60 Lanczos steps); the basis costs
      ``iterations × input size`` float64 numbers;
    * BatchNorm in eval mode, ``x ↦ γ(x − μ)/√(σ² + ε) + β``: ``max_c |γ_c|/√(σ²_c + ε)``;
    * ReLU, ReLU6, Tanh, Hardtanh, Softplus, Flatten, Unflatten, Identity and dropout (the
      identity in eval mode): 1; LeakyReLU and ELU: ``max(1, |slope|)``; Sigmoid: ¼;
    * max pooling: ``√m`` with ``m`` the most windows one input element falls into (1 for
      non-overlapping windows).

    The chain is ``model`` itself if it is one of these layers, else its sub-modules in
    registration order (recursively); a probe input checks that running them in that order
    reproduces ``model``, and any other layer (LayerNorm, attention, a custom module with its
    own parameters) is refused with ``ValueError``.

    Args:
        model: the network, left unchanged.
        input_shape: the shape of one input, without the batch dimension (e.g. ``(1, 28, 28)``).
        iterations: Lanczos steps per convolution or pooling layer (``≥ 1``).
        generator: source of the probe input and of the Lanczos start vectors.

    Returns:
        ``L`` as a Python float.
    """
    name = "lipschitz_upper_bound"
    check_module(model, name)
    shape = tuple(check_positive_int(s, "input_shape") for s in input_shape)
    iterations = check_positive_int(iterations, "iterations")
    generator = check_generator(generator, name)
    layers = _chain(model)
    floats = [t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    like = torch.empty(0, dtype=floats[0] if floats else torch.float32,
                       device=model_device(model, "cpu"))
    bound = 1.0
    with model_guard(model):
        with torch.no_grad():
            shapes = _layer_input_shapes(model, layers, draw_like("randn", like, generator,
                                                                 (2, *shape)))
        for (path, layer), layer_shape in zip(layers, shapes, strict=True):
            bound *= _layer_constant(path, layer, layer_shape, iterations, generator)
    return bound


def lipschitz_certificate(
    model: nn.Module, x: Tensor, *, bound: float
) -> tuple[Tensor, Tensor]:
    """Labels and certified ℓ2 radii from a Lipschitz bound: ``R = margin / (√2·L)``.

    ``margin = z_c − max_{j≠c} z_j`` with ``c = argmax z`` the predicted class; for every
    ``‖ε‖₂ < R`` the prediction at ``x + ε`` is still ``c``, deterministically, provided
    ``bound`` is an upper bound on the ℓ2 Lipschitz constant of ``model``'s logits (e.g.
    :func:`lipschitz_upper_bound`). A tie gives radius 0. Derived in the book, section
    :ref:`sec-lipschitz-certificates`.

    Args:
        model: returns logits ``(N, K)``, ``K ≥ 2``; run in eval mode and left unchanged.
        x: finite inputs ``(N, ...)``.
        bound: ``L > 0``.

    Returns:
        ``(labels, radii)``: int64 ``(N,)`` and ``(N,)`` in the logits' dtype, on x's device.
    """
    name = "lipschitz_certificate"
    check_batch(model, x, None, name)
    check_model_device(model, x, name)
    check_finite(x, "x", name)
    lipschitz = check_positive_float(bound, "bound")
    with model_guard(model), torch.no_grad():
        logits = model(detached_copy(x))
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0] or (
        logits.shape[1] < 2
    ):
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{name}: model(x) must return logits (N, K) with K >= 2, got {got}")
    top, labels = logits.topk(2, dim=1)
    radii = (top[:, 0] - top[:, 1]) / (math.sqrt(2.0) * lipschitz)
    return labels[:, 0], radii
