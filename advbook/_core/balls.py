"""Norm balls of perturbations, batched: per-sample norms, projections, steepest-ascent
directions and uniform draws (shared by the attacks and the training recipes)."""

from __future__ import annotations

import torch
from torch import Tensor

from .random import draw_like

__all__ = [
    "batch_norms",
    "per_sample",
    "project",
    "projected_step",
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
        norms: Tensor = torch.linalg.vector_norm(flat, ord=2, dim=1)
        return norms
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


def _unit_directions(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One direction per sample, uniform on the unit L2 sphere (a normalised Gaussian)."""
    z = draw_like("randn", x, generator)
    return z / per_sample(batch_norms(z, "l2").clamp_min(_TINY), z)


def sample_ball(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A random perturbation drawn uniformly from the ε-ball of ``norm``, one per sample.

    L∞: ``δ ~ U[−ε, ε]^d``. L2: uniform in the ball, ``δ = ε · U^{1/d} · z/‖z‖₂`` with
    ``z ~ N(0, I_d)`` and ``U ~ U[0, 1]`` (the radius of a uniform point in a d-ball has CDF
    ``r^d``).
    """
    if norm == "linf":
        return (2 * draw_like("rand", x, generator) - 1) * eps
    z = _unit_directions(x, generator)
    d = x[0].numel()
    u = draw_like("rand", x, generator, (x.shape[0],))
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
    radius = eps * draw_like("rand", x, generator, (x.shape[0],))
    return z * per_sample(radius, z)


def projected_step(
    x: Tensor, x_t: Tensor, grad: Tensor, step_size: float, eps: float, norm: str,
    bounds: tuple[float, float],
) -> Tensor:
    """``clip_[lo, hi](x + Π_ε(xᵗ − x + α · d(∇)))``, ``d`` the steepest-ascent direction."""
    delta = (x_t - x) + step_size * steepest_ascent_direction(grad, norm)
    return (x + project(delta, eps, norm)).clamp_(*bounds)
