"""Auto-PGD (APGD-CE, APGD-DLR and APGD-T) of Croce & Hein (2020)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import detached_copy, model_guard
from .._core.objectives import dlr_objective, margin_objective, targeted_dlr_objective
from .._core.random import draw_like
from .._core.worst_case import WorstCase, retire_fooled
from ._checks import check_inputs, check_logits
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import (
    batch_norms,
    ce_objective,
    is_success,
    objective_and_grad,
    per_sample,
    project,
    steepest_ascent_direction,
)

__all__ = ["apgd", "checkpoints"]

#: the objectives APGD can ascend (``None`` picks ``"ce"`` untargeted, ``"dlr"`` targeted)
LOSSES = ("ce", "dlr")

#: weight ``α`` of the new gradient step against the previous update (the reference's 0.75)
MOMENTUM = 0.75

# keeps the normalisation of the random start away from 0/0
_TINY = 1e-12


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_0 = 0 < w_1 < …`` after which APGD may halve its step size.

    Computed in integer arithmetic, as the reference implementation does: the first period is
    ``max(⌊0.22·N⌋, 1)`` steps and each next one is ``max(⌊0.03·N⌋, 1)`` shorter, but at least
    ``max(⌊0.06·N⌋, 1)``; that is ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, ``w_j = p_j·N``. Checkpoints beyond
    ``N = steps`` are dropped, e.g. ``checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    steps = check_positive_int(steps, "steps")
    length = max(int(0.22 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    marks = [0]
    while marks[-1] + length <= steps:
        marks.append(marks[-1] + length)
        length = max(length - decrease, shortest)
    return marks


# long: signature and docstring (the algorithm's reference) alone are 97 lines
def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str | None = None,
    targeted: bool = False,
    n_targets: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    early_stop: bool = False,
    on_masking: str = "warn",
) -> Tensor:
    """Auto-PGD: PGD with momentum and a step size that adapts per sample (Croce & Hein 2020).

    From a random point of the ε-sphere, ``x⁰ = clip_[lo, hi](x + ε·t/‖t‖)`` (L∞: ``t`` uniform
    in ``[−1, 1]^d``; L2: ``t`` Gaussian), with ``η⁰ = 2ε`` and ``x⁻¹ = x⁰``, each step is ::

        zᵏ⁺¹ = P(xᵏ + ηᵏ · d(∇J(xᵏ)))
        xᵏ⁺¹ = P(xᵏ + α·(zᵏ⁺¹ − xᵏ) + (1 − α)·(xᵏ − xᵏ⁻¹))        α = 0.75 (α = 1 for k = 0)

    with ``d`` the steepest-ascent direction (``sign(g)`` for L∞, ``g/‖g‖₂`` for L2) and ``P``
    the projection onto ``{‖δ‖ ≤ ε} ∩ [lo, hi]^d`` (ball first, then the box). At each
    checkpoint ``w_j`` of :func:`checkpoints` the step size of a sample is halved,
    ``η ← η/2``, if

    1. ``Σ_{k=w_{j−1}}^{w_j−1} 1[J(xᵏ⁺¹) > J(xᵏ)] ≤ ρ·(w_j − w_{j−1})`` (the objective rose in
       at most a fraction ``ρ`` of the steps since the last checkpoint; the reference's ``≤``,
       the paper writes ``<``; in the first period the reference compares ``J(x¹)`` with 0,
       its history buffer's initial value; here ``J(x⁰)``, as in the paper), or
    2. ``η`` was not halved at ``w_{j−1}`` and ``J_max`` (the best objective so far) has not
       grown since ``w_{j−1}``;

    a sample whose step size is halved continues from its best point ``x_max`` (and that
    point's gradient); the momentum term then uses ``x_max − xᵏ⁻¹``, as in the reference.

    Objectives ``J``, per sample (``z`` the logits, ``π`` sorting them decreasingly):

    * ``loss="ce"`` (APGD-CE): ``CE(z, y)``;
    * ``loss="dlr"`` (APGD-DLR, needs ``K ≥ 3``, :ref:`sec-dlr`):
      ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``, which shifting or positively scaling the
      logits leaves unchanged, so a saturated softmax does not stop it;
    * ``targeted=True`` (APGD-T): the attack is run once per target ``t``, the ``k``-th largest
      clean logit for ``k = 2 … n_targets + 1``, each run only on the points not fooled yet,
      with the targeted DLR ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)`` (``loss="dlr"``, the
      default; needs ``K ≥ 4``) or ``−CE(z, t)`` (``loss="ce"``).

    Unlike :func:`pgd`, ``targeted=True`` does **not** mean that ``y`` holds target labels:
    ``y`` are always the true labels and success is always misclassification,
    ``argmax z ≠ y``; the targets only steer the search (as in the reference implementation,
    fra31/auto-attack).

    Points the model misclassifies already are returned unchanged. For the others the worst
    case over all iterates, restarts and targets is returned: an iterate that fools the model
    beats one that does not, among equals the higher objective wins (for APGD-T judged by the
    margin ``max_{i≠y} z_i − z_y``, comparable across targets). Every restart and target
    attacks only the points still robust, so more restarts or targets are never weaker for
    the same ``generator``. Derived in the book, section :ref:`sec-apgd` of chapter
    *Evaluating robustness*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)``, also when ``targeted=True``.
        eps: radius of the ball (``≥ 0``).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run (``≥ 1``); the step-size schedule scales with it.
        loss: ``"ce"`` or ``"dlr"``; default ``"ce"`` untargeted and ``"dlr"`` targeted.
        targeted: APGD-T (see above).
        n_targets: target classes tried by APGD-T, ``1 ≤ n_targets ≤ K − 1``.
        restarts: runs from independent random starts (per target for APGD-T).
        rho: threshold ``ρ ∈ (0, 1)`` of condition 1.
        bounds: valid input range ``(lo, hi)``.
        generator: source of the random starts (drawn on its device, then moved to x's).
        eot_samples: forward/backward passes whose gradients are averaged at each iterate
            (Expectation over Transformation, for models that are random in eval mode; the
            ``rand`` version of AutoAttack uses 20). The objective and the success of an
            iterate are those of the last pass, as in the reference.
        early_stop: stop updating a sample at its first fooling iterate (one host
            synchronisation per step, smaller batches afterwards). Robust accuracy is the same;
            the returned point is the first fooling iterate instead of the best one.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the input
            gradient was exactly zero at every iterate of every run for samples the attack did
            not fool (gradient masking, :ref:`sec-gradient-masking`).

    Returns:
        ``x_adv`` with x's shape, dtype and device, ``‖x_adv − x‖ ≤ ε`` and inside ``bounds``.
    """
    name = "apgd"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    settings = _settings(
        eps=eps, norm=norm, steps=steps, loss=loss, targeted=targeted, n_targets=n_targets,
        restarts=restarts, rho=rho, bounds=(lo, hi), eot_samples=eot_samples,
        early_stop=early_stop,
    )
    generator = check_generator(generator, name)
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone()
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        worst, order = _clean_pass(model, x0, y, y_max, settings, name)
        ranks: list[int | None] = (
            list(range(1, settings.n_targets + 1)) if settings.targeted else [None]
        )
        for rank in ranks:
            for _ in range(settings.restarts):
                rows = (~worst.fooled).nonzero().squeeze(1)
                if rows.numel() == 0:
                    break
                target = None if rank is None or order is None else order[rows, rank]
                start = _random_start(x0[rows], settings, generator)
                _run(model, _Batch(x0[rows], y[rows], target, rows), start, settings, worst)
    unfooled = ~worst.fooled
    report_masking(name, worst.masked & unfooled, unfooled, x.shape[0], on_masking)
    return worst.x


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of one APGD call (see :func:`apgd`)."""

    eps: float
    norm: str
    steps: int
    loss: str
    targeted: bool
    n_targets: int
    restarts: int
    rho: float
    bounds: tuple[float, float]
    eot_samples: int
    early_stop: bool
    marks: frozenset[int]


def _settings(
    *, eps: object, norm: object, steps: object, loss: object, targeted: bool,
    n_targets: object, restarts: object, rho: object, bounds: tuple[float, float],
    eot_samples: object, early_stop: bool,
) -> _Settings:
    """Check every hyper-parameter (no forward pass) and bundle them."""
    steps_ = check_positive_int(steps, "steps")
    rho_ = check_positive_float(rho, "rho")
    if not rho_ < 1:
        raise ValueError(f"rho must lie in the open interval (0, 1), got {rho_}")
    loss_ = ("dlr" if targeted else "ce") if loss is None else check_choice(loss, "loss", LOSSES)
    return _Settings(
        eps=check_nonneg_float(eps, "eps"),
        norm=check_choice(norm, "norm", NORMS),
        steps=steps_,
        loss=loss_,
        targeted=bool(targeted),
        n_targets=check_positive_int(n_targets, "n_targets"),
        restarts=check_positive_int(restarts, "restarts"),
        rho=rho_,
        bounds=bounds,
        eot_samples=check_positive_int(eot_samples, "eot_samples"),
        early_stop=bool(early_stop),
        marks=frozenset(checkpoints(steps_)[1:]),
    )


def _check_classes(k: int, settings: _Settings, name: str) -> None:
    """The class count ``K`` that the loss and ``n_targets`` need (known after one forward)."""
    if settings.targeted:
        if settings.loss == "dlr" and k < 4:
            raise ValueError(
                f"{name}: targeted=True with loss='dlr' (the targeted DLR loss divides by "
                f"z_π1 − (z_π3 + z_π4)/2) needs at least 4 classes, got K={k}; use loss='ce'"
            )
        if settings.n_targets > k - 1:
            raise ValueError(
                f"{name}: n_targets must be at most K − 1 = {k - 1} (the classes other than "
                f"the true one), got n_targets={settings.n_targets}"
            )
    elif settings.loss == "dlr" and k < 3:
        raise ValueError(
            f"{name}: loss='dlr' (which divides by z_π1 − z_π3) needs at least 3 classes, got "
            f"K={k}; use loss='ce'"
        )


def _clean_pass(
    model: nn.Module, x0: Tensor, y: Tensor, y_max: int, settings: _Settings, name: str
) -> tuple[WorstCase, Tensor | None]:
    """Check the clean logits; the starting worst case (clean errors count as fooled) and, for
    APGD-T, the classes sorted by decreasing clean logit."""
    with torch.no_grad():
        logits = model(x0)
        check_logits(logits, x0.shape[0], y_max, name=name)
        _check_classes(logits.shape[1], settings, name)
        worst = WorstCase.start(x0)
        worst.update(x0, is_success(logits, y, False), _judge(logits, y, None, settings))
        order = logits.argsort(dim=1, descending=True) if settings.targeted else None
    return worst, order


def _objective(logits: Tensor, y: Tensor, target: Tensor | None, loss: str) -> Tensor:
    """The per-sample objective the run ascends (see :func:`apgd`)."""
    if target is None:
        return ce_objective(logits, y, False) if loss == "ce" else dlr_objective(logits, y)
    if loss == "ce":
        return ce_objective(logits, target, True)
    return targeted_dlr_objective(logits, y, target)


def _judge(logits: Tensor, y: Tensor, value: Tensor | None, settings: _Settings) -> Tensor:
    """The objective the worst case is judged by: the run's own one, or for APGD-T the margin
    (the targeted objectives of different targets are not comparable)."""
    if settings.targeted:
        return margin_objective(logits, y)
    return _objective(logits, y, None, settings.loss) if value is None else value


@dataclass
class _Batch:
    """The clean points a run attacks, their labels, targets and rows in the whole batch."""

    x0: Tensor
    y: Tensor
    target: Tensor | None
    rows: Tensor


def _evaluate(
    model: nn.Module, x_t: Tensor, batch: _Batch, settings: _Settings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(J, judged objective, fooled, ∇J)`` at ``x_t``; ``∇J`` averaged over ``eot_samples``
    passes, the rest from the last one."""
    objective = partial(_objective, y=batch.y, target=batch.target, loss=settings.loss)
    value, logits, grad = objective_and_grad(model, x_t, objective)
    for _ in range(settings.eot_samples - 1):
        value, logits, more = objective_and_grad(model, x_t, objective)
        grad = grad + more
    with torch.no_grad():
        if settings.eot_samples > 1:
            grad = grad / settings.eot_samples
        judged = _judge(logits, batch.y, value, settings)
        fooled = is_success(logits, batch.y, False)
    return value, judged, fooled, grad


def _random_start(x0: Tensor, settings: _Settings, generator: torch.Generator | None) -> Tensor:
    """``clip(x + ε·t/‖t‖)``: ``t`` uniform in ``[−1, 1]^d`` (L∞) or Gaussian (L2)."""
    if settings.norm == "linf":
        t = 2 * draw_like("rand", x0, generator) - 1
    else:
        t = draw_like("randn", x0, generator)
    t = t / per_sample(batch_norms(t, settings.norm).clamp_min(_TINY), t)
    return (x0 + settings.eps * t).clamp_(*settings.bounds)


@dataclass
class _State:
    """Per-sample state of one APGD run (all tensors indexed like the run's batch)."""

    batch: _Batch
    x: Tensor  # the current iterate xᵏ
    x_prev: Tensor  # xᵏ⁻¹
    grad: Tensor  # ∇J(xᵏ)
    objective: Tensor  # J(xᵏ)
    x_best: Tensor  # x_max
    grad_best: Tensor  # ∇J(x_max)
    best: Tensor  # J_max
    eta: Tensor  # step sizes ηᵏ
    increases: Tensor  # steps since the last checkpoint where J rose
    best_at_check: Tensor  # J_max at the last checkpoint
    halved_at_check: Tensor  # whether η was halved at the last checkpoint
    run: WorstCase  # the run's worst case

    @classmethod
    def begin(
        cls, batch: _Batch, start: Tensor, grad: Tensor, objective: Tensor, eps: float
    ) -> _State:
        n = start.shape[0]
        return cls(
            batch=batch, x=start, x_prev=start, grad=grad, objective=objective, x_best=start,
            grad_best=grad, best=objective, eta=torch.full_like(objective, 2 * eps),
            increases=torch.zeros_like(objective), best_at_check=objective,
            halved_at_check=torch.ones(n, dtype=torch.bool, device=start.device),
            run=WorstCase.start(start),
        )

    def select(self, keep: Tensor) -> _State:
        """The state of the samples ``keep``."""
        target = self.batch.target
        batch = _Batch(
            self.batch.x0[keep], self.batch.y[keep], None if target is None else target[keep],
            self.batch.rows[keep],
        )
        parts = {f.name: getattr(self, f.name) for f in fields(self)}
        parts = {k: v[keep] for k, v in parts.items() if isinstance(v, Tensor)}
        return _State(batch=batch, run=self.run.select(keep), **parts)


def _project(x0: Tensor, point: Tensor, settings: _Settings) -> Tensor:
    """``P(point)``: onto the ε-ball around ``x0``, then into the box."""
    delta = project(point - x0, settings.eps, settings.norm)
    return (x0 + delta).clamp_(*settings.bounds)


def _step(state: _State, alpha: float, settings: _Settings) -> Tensor:
    """``xᵏ⁺¹ = P(xᵏ + α(zᵏ⁺¹ − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))``, ``zᵏ⁺¹ = P(xᵏ + η·d(∇))``."""
    x0, x_t = state.batch.x0, state.x
    direction = steepest_ascent_direction(state.grad, settings.norm)
    z = _project(x0, x_t + per_sample(state.eta, x_t) * direction, settings)
    if alpha == 1.0:
        return z
    return _project(x0, x_t + alpha * (z - x_t) + (1 - alpha) * (x_t - state.x_prev), settings)


def _advance(state: _State, x_new: Tensor, objective: Tensor, grad: Tensor) -> None:
    """Move to ``x_new``: count a rise of ``J``, keep ``x_max`` (strictly higher ``J`` only)."""
    state.increases = state.increases + (objective > state.objective).to(state.increases.dtype)
    improved = objective > state.best
    state.x_best = torch.where(per_sample(improved, x_new), x_new, state.x_best)
    state.grad_best = torch.where(per_sample(improved, grad), grad, state.grad_best)
    state.best = torch.where(improved, objective, state.best)
    state.x_prev, state.x, state.grad, state.objective = state.x, x_new, grad, objective


def _checkpoint(state: _State, length: int, rho: float) -> None:
    """Halve ``η`` where condition 1 or 2 of :func:`apgd` holds; restart those from ``x_max``."""
    oscillating = state.increases <= rho * length
    stalled = ~state.halved_at_check & (state.best_at_check >= state.best)
    halve = oscillating | stalled
    state.eta = torch.where(halve, state.eta / 2, state.eta)
    state.x = torch.where(per_sample(halve, state.x), state.x_best, state.x)
    state.grad = torch.where(per_sample(halve, state.grad), state.grad_best, state.grad)
    state.halved_at_check, state.best_at_check = halve, state.best
    state.increases = torch.zeros_like(state.increases)


def _run(
    model: nn.Module, batch: _Batch, start: Tensor, settings: _Settings, overall: WorstCase
) -> None:
    """One APGD run from ``start``; merges its per-sample worst case into ``overall``."""
    objective, judged, fooled, grad = _evaluate(model, start, batch, settings)
    with torch.no_grad():
        state = _State.begin(batch, start, grad, objective, settings.eps)
        state.run.update(start, fooled, judged)
        state.run.masked = and_vanished(state.run.masked, grad)
    last_mark = 0
    for k in range(settings.steps):
        with torch.no_grad():
            if settings.early_stop and bool(state.run.fooled.any()):
                kept = retire_fooled(state.run, state.batch.rows, overall)
                if kept.numel() == 0:
                    return
                state = state.select(kept)
            x_new = _step(state, 1.0 if k == 0 else MOMENTUM, settings)
        objective, judged, fooled, grad = _evaluate(model, x_new, state.batch, settings)
        with torch.no_grad():
            _advance(state, x_new, objective, grad)
            state.run.update(x_new, fooled, judged)
            state.run.masked = and_vanished(state.run.masked, grad)
            if k + 1 in settings.marks:
                _checkpoint(state, k + 1 - last_mark, settings.rho)
                last_mark = k + 1
    with torch.no_grad():
        state.run.merge_into(overall, state.batch.rows)
