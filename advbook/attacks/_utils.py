"""Batched tensor helpers shared by the attacks: norms, projections, random starts, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_logits

__all__ = [
    "batch_norms",
    "ce_objective",
    "ce_objective_and_grad",
    "is_success",
    "per_sample",
    "project",
    "sample_ball",
    "sample_start",
    "steepest_ascent_direction",
]

# Smallest norm treated as non-zero when normalising a direction (avoids 0/0 = NaN).
_TINY = 1e-12


def per_sample(s: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector ``(N,)`` so that it broadcasts against ``like`` ``(N, ...)``."""
    return s.reshape(-1, *([1] * (like.ndim - 1)))


def batch_norms(v: Tensor, norm: str) -> Tensor:
    """Per-sample norms ``‖v_i‖`` (``norm`` ∈ {"linf", "l2", "l1"}) of a batch ``(N, ...)``."""
    flat = v.reshape(v.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"norm must be 'linf', 'l2' or 'l1', got {norm!r}")


def steepest_ascent_direction(g: Tensor, norm: str) -> Tensor:
    """The unit-norm direction maximising ``⟨g, d⟩``: ``sign(g)`` for L∞, ``g/‖g‖₂`` for L2.

    A zero gradient gives a zero direction (no NaN).
    """
    if norm == "linf":
        return g.sign()
    return g / per_sample(batch_norms(g, "l2").clamp_min(_TINY), g)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Euclidean projection of each ``δ_i`` onto the ball ``{‖δ‖ ≤ ε}`` of the given norm.

    L∞: ``clamp(δ, −ε, ε)``; L2: ``δ · min(1, ε/‖δ‖₂)``.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = batch_norms(delta, "l2")
    factor = (eps / norms.clamp_min(_TINY)).clamp(max=1.0)
    return delta * per_sample(factor, delta)


def _draw(kind: str, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``torch.rand``/``torch.randn`` shaped like ``like``, on its device and dtype.

    With a generator on another device (a CPU generator for CUDA data) the numbers are drawn
    on the generator's device and then moved, so a seeded CPU generator gives the same start
    on every device.
    """
    fn = torch.rand if kind == "rand" else torch.randn
    if generator is None:
        return fn(like.shape, device=like.device, dtype=like.dtype)
    out = fn(like.shape, generator=generator, device=generator.device, dtype=like.dtype)
    return out.to(like.device)


def _unit_directions(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One direction per sample, uniform on the unit L2 sphere (a normalised Gaussian)."""
    z = _draw("randn", x, generator)
    return z / per_sample(batch_norms(z, "l2").clamp_min(_TINY), z)


def sample_ball(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random perturbation drawn uniformly from the ε-ball of ``norm``, one per sample.

    L∞: ``δ ~ U[−ε, ε]^d``. L2: uniform in the ball, ``δ = ε · U^{1/d} · z/‖z‖₂`` with
    ``z ~ N(0, I_d)`` and ``U ~ U[0, 1]`` (the radius of a uniform point in a d-ball has CDF
    ``r^d``).
    """
    if norm == "linf":
        return (2 * _draw("rand", x, generator) - 1) * eps
    z = _unit_directions(x, generator)
    d = x[0].numel()
    u = _draw("rand", x.new_empty(x.shape[0]), generator)
    radius = eps * u.pow(1.0 / d)
    return z * per_sample(radius, z)


def sample_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """PGD's random start: uniform in the box for L∞; for L2 a uniform direction and a radius
    uniform in ``[0, ε]``.

    A point drawn uniformly from a high-dimensional L2 ball lies almost surely near its sphere
    (the radius exceeds ``0.99·ε`` with probability ``1 − 0.99^d``, over 0.9996 for an MNIST
    image), where a gradient step of length ``α`` is mostly undone by the projection; starts
    spread over all radii make a few steps of L2 PGD stronger (measured in
    ``benchmarks/RESULTS.md``) and match torchattacks' start.
    """
    if norm == "linf":
        return sample_ball(x, eps, norm, generator)
    z = _unit_directions(x, generator)
    radius = eps * _draw("rand", x.new_empty(x.shape[0]), generator)
    return z * per_sample(radius, z)


def is_success(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack success: ``argmax ≠ y`` (untargeted) or ``argmax = y`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def ce_objective(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample attack objective: ``CE(f(x), y)`` untargeted, ``−CE(f(x), t)`` targeted."""
    objective = F.cross_entropy(logits, y, reduction="none")
    return -objective if targeted else objective


def ce_objective_and_grad(
    model: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    targeted: bool,
    *,
    check: tuple[int, str] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The attack objective ``J_i``, the logits and ``∇_x Σ_i J_i`` at ``x_adv``.

    ``J_i = CE(f(x_i), y_i)`` untargeted (to be maximised) and ``J_i = −CE(f(x_i), t_i)``
    targeted. The loss is summed, not averaged, so each sample's gradient does not depend on the
    batch size. Only ``x_adv`` is differentiated (``torch.autograd.grad``): parameters and their
    ``.grad`` are untouched. ``check=(y_max, name)`` validates the logits first.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    if check is not None:
        check_logits(logits, x_adv.shape[0], check[0], name=check[1])
    objective = ce_objective(logits, y, targeted)
    if not objective.requires_grad:
        raise ValueError(
            "the model's output does not depend on x through autograd (does the model detach "
            "its input or run under torch.no_grad()?); gradient attacks need a differentiable "
            "model"
        )
    (grad,) = torch.autograd.grad(objective.sum(), x_adv, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x_adv)
    return objective.detach(), logits.detach(), grad
