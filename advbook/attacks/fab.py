"""The fast adaptive boundary attack, FAB and its targeted form FAB-T (Croce & Hein 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    ArgumentTypeError,
    check_bounds,
    check_choice,
    check_float_in,
    check_generator,
    check_nonneg_float,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import detached_copy, model_guard
from .._core.random import draw_like
from ._checks import check_inputs, check_logits
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import batch_norms, input_gradient, per_sample

__all__ = ["fab", "fab_distances", "project_hyperplane_box"]

# keeps the distance to a linearised boundary finite when its normal vanishes (the reference's)
_TINY = 1e-12
# smallest projection length in the bias α = ‖δ‖/(‖δ‖ + ‖δ_orig‖) (the reference's 1e-8)
_LENGTH_FLOOR = 1e-8


# long: signature and docstring (the algorithm's reference) alone are 84 lines
def fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    targeted: bool = True,
    n_targets: int = 9,
    restarts: int = 1,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    on_masking: str = "warn",
) -> Tensor:
    """The fast adaptive boundary attack (FAB; FAB-T with ``targeted=True``), Croce & Hein 2020.

    FAB looks for the adversarial example *closest* to ``x`` and succeeds where that distance
    is at most ``ε``. At the iterate ``xⁱ`` it linearises the boundary between the true class
    ``y`` and a class ``t``, ``g = f_t − f_y`` (logits)::

        π_t(xⁱ) = {z : g(xⁱ) + ⟨∇g(xⁱ), z − xⁱ⟩ = 0},

    and projects both the iterate and the original point onto that hyperplane intersected with
    the box ``C = [lo, hi]^d`` in the attacked norm (:func:`project_hyperplane_box`)::

        δⁱ      = argmin {‖δ‖ : xⁱ + δ ∈ π_t(xⁱ) ∩ C}
        δ_origⁱ = argmin {‖δ‖ : x + δ ∈ π_t(xⁱ) ∩ C}

    The step is a biased combination of the two, pulled towards ``x`` and overshooting the
    plane by ``η``::

        α    = min(‖δⁱ‖ / (‖δⁱ‖ + ‖δ_origⁱ‖), α_max)
        xⁱ⁺¹ = clip_C((1 − α)·(xⁱ + η·δⁱ) + α·(x + η·δ_origⁱ))

    and whenever ``xⁱ⁺¹`` is misclassified (``argmax f ≠ y``) it is recorded if closer than the
    best so far and the *backward step* ``xⁱ⁺¹ ← (1 − β)·x + β·xⁱ⁺¹`` moves it back towards
    ``x``. One forward and one backward pass per step compute ``g`` and ``∇g``, plus one
    forward pass for the success of ``xⁱ⁺¹``; the iterate at which the gradient is taken is
    also judged (for free, from the same logits), which the reference skips after a backward
    step: never weaker than it.

    * ``targeted=True`` (FAB-T, as in AutoAttack): one run per target ``t``, the ``k``-th
      largest clean logit for ``k = 2 … n_targets + 1`` (one backward pass of ``g`` per step).
      ``y`` are the *true* labels also here, and success is misclassification (unlike
      :func:`pgd`, whose ``targeted`` means that ``y`` holds targets).
    * ``targeted=False``: at every step ``t`` is the class of the closest linearised boundary,
      ``t = argmin_{k≠y} |g_k(xⁱ)| / ‖∇g_k(xⁱ)‖_q`` (``q`` the dual norm: 1 for L∞, 2 for L2),
      as in DeepFool (:ref:`sec-deepfool`); this needs the whole Jacobian, ``K`` backward
      passes per step.

    Every (target, restart) run attacks only the points that the runs before it have not
    fooled within ``ε``, as the reference (fra31/auto-attack) does. The first restart starts at
    ``x``, each further one at ``clip_C(x + r·u/‖u‖)`` with ``r = min(ε, best distance)/2``
    (``u`` uniform in ``[−1, 1]^d`` for L∞, Gaussian for L2), so more steps, restarts or targets
    are never weaker. Points that the model misclassifies already are returned unchanged.
    Derived in the book, section :ref:`sec-fab` of chapter *Evaluating robustness*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)``, also when ``targeted=True``.
        eps: success radius (``≥ 0``) and scale of the random restarts.
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (``≥ 1``).
        targeted: FAB-T (see above).
        n_targets: targets tried by FAB-T, ``1 ≤ n_targets ≤ K − 1`` (checked once the first
            logits give ``K``; ignored when ``targeted=False``).
        restarts: runs per target; all but the first from a random start.
        alpha_max: the largest bias ``α_max ∈ [0, 1]`` towards the original point.
        eta: the overshoot ``η ≥ 1``.
        beta: the backward step ``β ∈ (0, 1]`` (``1``: none).
        bounds: valid input range ``(lo, hi)``, the box ``C``.
        generator: source of the random restarts (drawn on its device, then moved to x's).
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the input gradient
            was exactly zero at every step of every run for samples the attack did not fool
            (gradient masking, :ref:`sec-gradient-masking`).

    Returns:
        ``x_adv`` with x's shape, dtype and device, inside ``bounds``: per sample the closest
        adversarial example found where it lies within ``ε`` of ``x``, ``x`` itself otherwise.
    """
    name = "fab"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    settings = _settings(
        eps=eps_, norm=norm, steps=steps, targeted=targeted, n_targets=n_targets,
        restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta, bounds=(lo, hi),
    )
    generator = check_generator(generator, name)
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone()
    best, dist, masked = _attack(model, x, y, y_max, settings, generator, name)
    found = dist <= eps_
    report_masking(name, masked & ~found, ~found, x.shape[0], on_masking)
    return torch.where(per_sample(found, best), best, x.detach())


# long: signature and docstring alone are 50 lines
def fab_distances(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str = "linf",
    steps: int = 100,
    targeted: bool = True,
    n_targets: int = 9,
    restarts: int = 1,
    eps: float | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    on_masking: str = "warn",
) -> tuple[Tensor, Tensor]:
    """FAB as a minimum-norm attack: per sample the closest adversarial example found.

    The iterations are those of :func:`fab`. Without ``eps`` every (target, restart) run
    attacks every correctly classified point, so the distance is the smallest over all runs;
    a restart after the first starts at distance ``best/2`` from ``x`` and is skipped for the
    points with nothing found yet (it would repeat the first run). With ``eps`` the runs follow
    :func:`fab`'s schedule (a point leaves once it is fooled within ``ε``; restarts at
    ``min(ε, best)/2``), and ``fab(...)`` equals ``x_adv`` where ``distances ≤ ε``, ``x``
    elsewhere. Derived in the book, section :ref:`sec-fab`.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)``, also when ``targeted=True``.
        norm: ``"linf"`` or ``"l2"``, the norm minimised and measured.
        steps, targeted, n_targets, restarts, alpha_max, eta, beta, bounds, generator, \
            on_masking: as for :func:`fab`.
        eps: ``None`` (the pure minimum-norm attack) or the radius of :func:`fab`'s schedule.

    Returns:
        ``(x_adv, distances)``: ``x_adv`` with x's shape, dtype and device, inside ``bounds``,
        the closest misclassified point found (``x`` where none was found or where ``x`` is
        misclassified already), and ``distances`` ``(N,)`` in x's dtype, ``‖x_adv − x‖``:
        ``0`` where ``x`` is misclassified, ``inf`` where no adversarial example was found.
    """
    name = "fab_distances"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps", allow_none=True)
    settings = _settings(
        eps=eps_, norm=norm, steps=steps, targeted=targeted, n_targets=n_targets,
        restarts=restarts, alpha_max=alpha_max, eta=eta, beta=beta, bounds=(lo, hi),
    )
    generator = check_generator(generator, name)
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone(), x.new_zeros(0)
    best, dist, masked = _attack(model, x, y, y_max, settings, generator, name)
    unfooled = ~torch.isfinite(dist) if eps_ is None else dist > eps_
    report_masking(name, masked & unfooled, unfooled, x.shape[0], on_masking)
    return best, dist


def project_hyperplane_box(
    points: Tensor,
    w: Tensor,
    b: Tensor,
    *,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """The shortest steps ``δ`` onto the hyperplanes ``⟨w, z⟩ = b`` within the box, batched.

    For each row ``p`` (a point inside the box ``C = [lo, hi]^d``), ``w`` and ``b``::

        δ = argmin {‖δ‖ : ⟨w, p + δ⟩ = b,  p + δ ∈ C}          (‖·‖ the L∞ or the L2 norm)

    With ``c = b − ⟨w, p⟩ ≥ 0`` (else flip the signs of ``w`` and ``c``) and ``r_i`` the room
    of coordinate ``i`` in the direction of ``sign(w_i)`` (``hi − p_i`` or ``p_i − lo``), the
    optimum is ``δ_i = sign(w_i)·min(λ, r_i)`` for L∞ and ``δ_i = w_i·min(μ, r_i/|w_i|)`` for L2
    (the KKT point ``δ = clip(μw, lo − p, hi − p)``): in both cases ``Σ_i a_i·min(λ, k_i) = c``
    with ``(a_i, k_i) = (|w_i|, r_i)`` resp. ``(w_i², r_i/|w_i|)``, a concave piecewise-linear
    function of ``λ``. Sorting the knots ``k_i`` gives its values at all knots by cumulative
    sums, the segment holding ``c``, and ``λ`` in closed form (the reference sorts too).
    Where the plane misses the box, ``δ_i = sign(w_i)·r_i``: the box point nearest to the plane
    in ``⟨w, ·⟩``, reached by the shortest step.

    Args:
        points: ``(N, ...)`` inside ``bounds``.
        w: normals, like ``points``.
        b: offsets ``(N,)``.
        norm: ``"linf"`` or ``"l2"``.
        bounds: the box ``(lo, hi)``.

    Returns:
        ``δ`` like ``points``; the projections are ``points + δ``.
    """
    norm = check_choice(norm, "norm", NORMS)
    lo, hi = check_bounds(bounds)
    if w.shape != points.shape or b.shape != (points.shape[0],):
        raise ValueError(
            f"project_hyperplane_box: w must have the shape of points {tuple(points.shape)} and "
            f"b the shape ({points.shape[0]},), got {tuple(w.shape)} and {tuple(b.shape)}"
        )
    p, wf = points.flatten(1), w.flatten(1)
    c = b - (wf * p).sum(dim=1)
    return _project_offset(p, wf, c, norm, lo, hi).view_as(points)


def _project_offset(p: Tensor, w: Tensor, c: Tensor, norm: str, lo: float, hi: float) -> Tensor:
    """The step ``δ`` ``(n, d)`` of :func:`project_hyperplane_box` with ``⟨w, δ⟩ = c``."""
    n, d = p.shape
    if d == 0:
        return torch.zeros_like(p)
    sign = torch.where(c < 0, -1.0, 1.0).to(p.dtype)
    w = w * sign[:, None]
    target = c.abs()
    aw = w.abs()
    room = torch.where(w > 0, hi - p, p - lo).clamp_min(0)
    if norm == "linf":
        weight, knot, direction = aw, room, w.sign()
    else:  # w_i = 0: knot 0 (0/0) or the largest float (r/0), weight 0 either way
        weight, direction = aw * aw, w
        knot = torch.nan_to_num(room / aw, nan=0.0, posinf=torch.finfo(p.dtype).max)
    knot_sorted, order = knot.sort(dim=1)
    weight_sorted = weight.gather(1, order)
    reach = weight_sorted * knot_sorted  # a_i·k_i, the most coordinate i can contribute
    below = torch.cat([reach.new_zeros(n, 1), reach.cumsum(dim=1)[:, :-1]], dim=1)
    above = weight_sorted.flip(1).cumsum(dim=1).flip(1)  # Σ_{i ≥ j} a_i
    at_knots = below + knot_sorted * above  # the function at the sorted knots
    segment = (at_knots < target[:, None]).sum(dim=1)  # the first knot where it reaches c
    j = segment.clamp(max=d - 1)[:, None]
    lam = (target - below.gather(1, j).squeeze(1)) / above.gather(1, j).squeeze(1).clamp_min(
        torch.finfo(p.dtype).tiny
    )
    lam = torch.where(segment >= d, torch.inf, lam.clamp_min(0))
    return direction * torch.minimum(lam[:, None], knot)


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of one FAB call (``eps=None``: no success radius)."""

    eps: float | None
    norm: str
    steps: int
    targeted: bool
    n_targets: int
    restarts: int
    alpha_max: float
    eta: float
    beta: float
    bounds: tuple[float, float]


def _settings(
    *, eps: float | None, norm: object, steps: object, targeted: object, n_targets: object,
    restarts: object, alpha_max: object, eta: object, beta: object, bounds: tuple[float, float],
) -> _Settings:
    """Check every hyper-parameter (no forward pass) and bundle them."""
    if not isinstance(targeted, bool):
        raise ArgumentTypeError(f"targeted must be a bool, got {type(targeted).__name__}")
    eta_ = check_positive_float(eta, "eta")
    if eta_ < 1:
        raise ValueError(f"eta (the overshoot) must be a finite number >= 1, got {eta_}")
    beta_ = check_float_in(beta, "beta", 0.0, 1.0)
    if beta_ == 0:
        raise ValueError("beta (the backward step) must lie in (0, 1], got 0.0")
    return _Settings(
        eps=eps,
        norm=check_choice(norm, "norm", NORMS),
        steps=check_positive_int(steps, "steps"),
        targeted=targeted,
        n_targets=check_positive_int(n_targets, "n_targets"),
        restarts=check_positive_int(restarts, "restarts"),
        alpha_max=check_float_in(alpha_max, "alpha_max", 0.0, 1.0),
        eta=eta_,
        beta=beta_,
        bounds=bounds,
    )


@dataclass
class _Best:
    """Per sample: the closest adversarial point found, its distance (``inf`` before one is
    found, ``0`` for clean errors), clean correctness, and whether every input gradient of every
    run vanished (``masked``)."""

    x: Tensor
    dist: Tensor
    correct: Tensor
    masked: Tensor


def _attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    y_max: int,
    settings: _Settings,
    generator: torch.Generator | None,
    name: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """All runs of FAB (every target, every restart); ``(x_best, distance, masked)``."""
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        best, order = _clean_pass(model, x0, y, y_max, settings, name)
        ranks: list[int | None] = (
            list(range(2, settings.n_targets + 2)) if settings.targeted else [None]
        )
        for rank in ranks:
            for restart in range(settings.restarts):
                rows, radius = _open_rows(best, settings, restart)
                if rows.numel() == 0:
                    continue
                target = None if rank is None or order is None else order[rows, -rank]
                start = x0[rows]
                if restart > 0:
                    start = _random_start(start, radius, settings, generator)
                _run(model, x0[rows], y[rows], target, start, settings, best, rows)
    return best.x, best.dist, best.masked


def _clean_pass(
    model: nn.Module, x0: Tensor, y: Tensor, y_max: int, settings: _Settings, name: str
) -> tuple[_Best, Tensor | None]:
    """Check the clean logits and ``n_targets``; the starting state and, for FAB-T, the classes
    sorted by increasing clean logit (the ``k``-th largest is column ``−k``)."""
    with torch.no_grad():
        logits = model(x0)
        check_logits(logits, x0.shape[0], y_max, name=name)
        k = logits.shape[1]
        if settings.targeted and settings.n_targets > k - 1:
            raise ValueError(
                f"{name}: n_targets must be at most K − 1 = {k - 1} (the classes other than "
                f"the true one), got n_targets={settings.n_targets}"
            )
        correct = logits.argmax(dim=1) == y
        dist = torch.where(correct, torch.inf, 0.0).to(x0.dtype)
        masked = torch.ones_like(correct)
        order = logits.sort(dim=1).indices if settings.targeted else None
    return _Best(x0.clone(), dist, correct, masked), order


def _open_rows(best: _Best, settings: _Settings, restart: int) -> tuple[Tensor, Tensor]:
    """The samples a run attacks and, per sample, the radius of its random start.

    Correctly classified samples not yet fooled within ``eps`` (all of them without ``eps``);
    a restart after the first needs a finite radius ``min(eps, best)/2``.
    """
    eps = torch.inf if settings.eps is None else settings.eps
    open_ = best.correct if settings.eps is None else best.correct & (best.dist > eps)
    radius = best.dist.clamp(max=eps) / 2
    if restart > 0:
        open_ = open_ & torch.isfinite(radius)
    rows = open_.nonzero().squeeze(1)
    return rows, radius[rows]


def _random_start(
    x0: Tensor, radius: Tensor, settings: _Settings, generator: torch.Generator | None
) -> Tensor:
    """``clip_C(x + r·u/‖u‖)``, ``u`` uniform in ``[−1, 1]^d`` (L∞) or Gaussian (L2)."""
    if settings.norm == "linf":
        u = 2 * draw_like("rand", x0, generator) - 1
    else:
        u = draw_like("randn", x0, generator)
    scale = radius / batch_norms(u, settings.norm).clamp_min(_TINY)
    return (x0 + per_sample(scale, u) * u).clamp(*settings.bounds)


def _run(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    target: Tensor | None,
    start: Tensor,
    settings: _Settings,
    best: _Best,
    rows: Tensor,
) -> None:
    """One FAB run from ``start`` on the samples ``rows``; merges what it finds into ``best``."""
    lo, hi = settings.bounds
    run_x, run_d = x0.clone(), torch.full_like(best.dist[rows], torch.inf)
    masked = torch.ones_like(best.masked[rows])
    x_i = start
    for _ in range(settings.steps):
        g, grad, logits, grads = _linearise(model, x_i, y, target, settings.norm)
        with torch.no_grad():
            masked = and_vanished(masked, grads)
            run_x, run_d = _record(run_x, run_d, x_i, x0, logits, y, settings.norm)
            x_i = _step(x0, x_i, g, grad, settings)
            logits = model(x_i)
            run_x, run_d = _record(run_x, run_d, x_i, x0, logits, y, settings.norm)
            fooled = per_sample(logits.argmax(dim=1) != y, x_i)
            x_i = torch.where(fooled, (x0 + settings.beta * (x_i - x0)).clamp(lo, hi), x_i)
    with torch.no_grad():
        closer = run_d < best.dist[rows]
        best.x[rows] = torch.where(per_sample(closer, run_x), run_x, best.x[rows])
        best.dist[rows] = torch.where(closer, run_d, best.dist[rows])
        best.masked[rows] = best.masked[rows] & masked


def _record(
    run_x: Tensor, run_d: Tensor, x_i: Tensor, x0: Tensor, logits: Tensor, y: Tensor, norm: str
) -> tuple[Tensor, Tensor]:
    """Keep ``x_i`` where it is misclassified and closer to ``x0`` than the best so far."""
    d = batch_norms(x_i - x0, norm)
    closer = (logits.argmax(dim=1) != y) & (d < run_d)
    return torch.where(per_sample(closer, x_i), x_i, run_x), torch.where(closer, d, run_d)


def _linearise(
    model: nn.Module, x_i: Tensor, y: Tensor, target: Tensor | None, norm: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(g, ∇g, logits, gradients)`` at ``x_i`` for the boundary attacked: ``g = f_t − f_y``
    (one backward pass), or untargeted the closest linearised boundary (``K`` passes, and
    ``gradients`` the whole ``(n, K, ...)`` Jacobian of the ``f_k − f_y``, for the masking
    check)."""
    x_in = x_i.detach().requires_grad_(True)
    logits = model(x_in)
    if not logits.requires_grad:
        raise ValueError(
            "fab: the model's output does not depend on x through autograd (does the model "
            "detach its input or run under torch.no_grad()?); FAB needs a differentiable model"
        )
    if target is not None:
        g = (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).squeeze(1)
        grad = input_gradient(g.sum(), x_in)
        return g.detach(), grad, logits.detach(), grad
    n, k = logits.shape
    grads = []
    for cls in range(k):  # ∇(f_cls − f_y) for every sample at once (zero for cls = y)
        grad_output = torch.zeros_like(logits)
        grad_output[:, cls] = 1
        grad_output.scatter_add_(1, y[:, None], -torch.ones_like(grad_output[:, :1]))
        grads.append(input_gradient(logits, x_in, grad_output, retain_graph=cls < k - 1))
    jac = torch.stack(grads, dim=1)
    with torch.no_grad():
        z = logits.detach()
        g_all = z - z.gather(1, y[:, None])
        dual = batch_norms(jac.flatten(0, 1), "l1" if norm == "linf" else "l2").view(n, k)
        closeness = (g_all.abs() / (dual + _TINY)).scatter(1, y[:, None], torch.inf)
        nearest = closeness.argmin(dim=1)
        rows = torch.arange(n, device=z.device)
        return g_all[rows, nearest], jac[rows, nearest], z, jac


def _step(x0: Tensor, x_i: Tensor, g: Tensor, grad: Tensor, settings: _Settings) -> Tensor:
    """FAB's biased, overshooting step onto the linearised boundary ``g + ⟨∇g, z − xⁱ⟩ = 0``."""
    n = x0.shape[0]
    w = grad.flatten(1)
    # the plane asks ⟨w, z − xⁱ⟩ = −g; from x that is ⟨w, z − x⟩ = ⟨w, xⁱ − x⟩ − g
    offsets = torch.cat([-g, (w * (x_i - x0).flatten(1)).sum(dim=1) - g])
    points = torch.cat([x_i.flatten(1), x0.flatten(1)])
    delta = _project_offset(points, torch.cat([w, w]), offsets, settings.norm, *settings.bounds)
    lengths = batch_norms(delta, settings.norm).clamp_min(_LENGTH_FLOOR)
    alpha = (lengths[:n] / (lengths[:n] + lengths[n:])).clamp(0.0, settings.alpha_max)
    alpha = per_sample(alpha, x0)
    d_i, d_orig = delta[:n].view_as(x0), delta[n:].view_as(x0)
    moved = (1 - alpha) * (x_i + settings.eta * d_i) + alpha * (x0 + settings.eta * d_orig)
    return moved.clamp(*settings.bounds)
