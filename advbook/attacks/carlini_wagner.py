"""The Carlini–Wagner L2 attack (Carlini & Wagner 2017), batched with per-sample bookkeeping."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from .._core.checks import (
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import detached_copy, model_guard
from ._checks import check_inputs, check_logits
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import batch_norms, per_sample

__all__ = ["carlini_wagner"]

# the tanh is stretched by 1/(1 − η) and w confined to |w| ≤ artanh(1 − η): pixels at exactly
# ``lo``/``hi`` sit where tanh' = 1 − (1 − η)² ≈ 2η, not at ±∞ (or at ±7.25 for a 1 − 10⁻⁶ shrink,
# where tanh' ≈ 2·10⁻⁶ and Adam cannot move them within a few hundred steps)
_ETA = 1e-2
_W_MAX = math.atanh(1.0 - _ETA)
_PATIENCE = 2  # consecutive stalled windows before a sample aborts its round
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_MAX_CONST = 1e10


def _margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """``z_y − max_{j≠y} z_j`` (untargeted) or ``max_{j≠t} z_j − z_t`` (targeted).

    The labelled class is masked with ``−∞`` before the maximum, which stays correct when all
    logits are negative (masking by multiplying with a one-hot vector does not).
    """
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(
        torch.zeros_like(logits, dtype=torch.bool).scatter_(1, y[:, None], True), -torch.inf
    ).amax(dim=1)
    return other - own if targeted else own - other


# long: signature and docstring (the algorithm's reference) alone are 71 lines
def carlini_wagner(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    confidence: float = 0.0,
    c: float = 1e-3,
    binary_search_steps: int = 9,
    steps: int = 1000,
    lr: float = 1e-2,
    abort_early: bool = True,
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    on_masking: str = "warn",
) -> Tensor:
    """Carlini–Wagner L2: the smallest perturbation found by penalised optimisation.

    For each sample, minimise over ``w`` (Adam, step ``lr``) ::

        ‖x'(w) − x̃‖₂² + c · max(z_y(x'(w)) − max_{j≠y} z_j(x'(w)) + κ, 0)

    with the stretched change of variables (``a = (hi+lo)/2``, ``b = (hi−lo)/2``, ``η = 10⁻²``) ::

        x'(w) = clip(a + b · tanh(w) / (1 − η), lo, hi),   |w| ≤ W = artanh(1 − η),
        w₀ = artanh((1 − η) · (x − a)/b),                   x̃ = x'(w₀)  (= x up to rounding),

    ``w`` being clipped to ``[−W, W]`` after every step, where ``x'(±W) = a ± b`` are the box's
    edges (the clip only removes rounding; its gradient is taken as the identity). Pixels at
    exactly ``lo``/``hi`` (binarised images) start at ``w₀ = ±W``, where ``∂x'/∂w = b (2 − η) η /
    (1 − η) ≈ 2ηb`` is alive, not at ``±∞`` (plain tanh) or at ``±7.25`` (a ``1 − 10⁻⁶`` shrink,
    ``∂x'/∂w ≈ 2·10⁻⁶ b``: such pixels would hardly move). Targeted: the hinge is
    ``max(max_{j≠t} z_j − z_t + κ, 0)``.

    The constant is searched per sample: starting from ``c``, multiplied by 10 while no
    adversarial example is found, then bisected between the largest failing and the smallest
    successful value (``binary_search_steps`` rounds of ``steps`` Adam steps; with ten or more
    rounds the last one uses the smallest successful constant, as in the reference code). An
    iterate counts as adversarial when ``z_y + κ < max_{j≠y} z_j`` (targeted: ``z_t − κ >
    max_{j≠t} z_j``); every iterate is checked, and the closest adversarial one is kept.

    Early abort is decided per sample, never on the batch sum: every ``⌈steps/10⌉`` steps the
    lowest loss of the last window is compared with that of the previous window. A window has
    stalled for a sample when its loss fell by less than 0.01 % and its closest adversarial
    distance did not improve; a sample stops after two stalled windows in a row (one window is
    too little patience: it costs a few percent of median distance). Stopped samples leave the
    batch, so the others run faster.

    Derived in the book, section :ref:`sec-cw` of chapter *Adversarial examples*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        confidence: the margin ``κ ≥ 0``.
        c: initial constant (``> 0``).
        binary_search_steps: rounds of the search over the constant (``≥ 1``).
        steps: Adam steps per round.
        lr: Adam step size.
        abort_early: per-sample early stopping of a round, see above.
        bounds: valid input range ``(lo, hi)``.
        targeted: reach class ``y`` instead of leaving it.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when the gradient of
            the loss was exactly zero at every step of every round for samples the attack did
            not fool (gradient masking, :ref:`sec-gradient-masking`):
            :class:`GradientMaskingWarning` or :class:`GradientMaskingError`.

    Returns:
        ``x_adv`` with x's shape, dtype and device: for each sample the adversarial iterate of
        smallest ``‖x_adv − x‖₂`` over all rounds, ``x`` itself where the clean input already
        meets the criterion, and ``x`` (unchanged) where the attack failed.
    """
    name = "carlini_wagner"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    kappa = check_nonneg_float(confidence, "confidence")
    c0 = check_positive_float(c, "c")
    lr_ = check_positive_float(lr, "lr")
    binary_search_steps = check_positive_int(binary_search_steps, "binary_search_steps")
    steps = check_nonneg_int(steps, "steps")
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone()
    settings = _Settings(
        kappa=kappa, lr=lr_, steps=steps, abort_early=abort_early,
        check_every=math.ceil(steps / 10), targeted=targeted, lo=lo, hi=hi,
    )
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        with torch.no_grad():
            logits = model(x0)
            check_logits(logits, x0.shape[0], y_max, name=name)
            best = x0.clone()
            todo = (_margin(logits, y, targeted) + kappa >= 0).nonzero().squeeze(1)
        if todo.numel() == 0 or steps == 0:
            return best
        closest = _search_constants(model, x0[todo], y[todo], c0, binary_search_steps, settings)
        best[todo] = closest.x
    unfooled = torch.isinf(closest.norm)  # no adversarial iterate in any round
    report_masking(name, closest.masked & unfooled, unfooled, x.shape[0], on_masking)
    return best


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of :func:`carlini_wagner`; the box is ``[lo, hi]``."""

    kappa: float
    lr: float
    steps: int
    abort_early: bool
    check_every: int
    targeted: bool
    lo: float
    hi: float

    @property
    def centre(self) -> float:
        """``a = (hi + lo)/2``."""
        return (self.hi + self.lo) / 2

    @property
    def half_width(self) -> float:
        """``b = (hi − lo)/2``."""
        return (self.hi - self.lo) / 2


@dataclass
class _Closest:
    """Per sample, the closest adversarial iterate so far (the input itself before one is found),
    its L2 distance from the input (``inf`` before) and whether every gradient so far vanished."""

    x: Tensor
    norm: Tensor
    masked: Tensor


class _ClipKeepGradient(torch.autograd.Function):
    """``clamp(v, lo, hi)`` whose backward is the identity: at the box's edges the clip only
    removes rounding, and a zero gradient there would freeze pixels at exactly ``lo``/``hi``."""

    @staticmethod
    def forward(ctx: object, v: Tensor, lo: float, hi: float) -> Tensor:
        return v.clamp(lo, hi)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad, None, None


def _to_box(w: Tensor, settings: _Settings) -> Tensor:
    """``x'(w) = clip(a + b · tanh(w)/(1 − η), lo, hi)``."""
    a, b = settings.centre, settings.half_width
    v = torch.tanh(w) * (b / (1.0 - _ETA)) + a
    out: Tensor = _ClipKeepGradient.apply(v, settings.lo, settings.hi)
    return out


def _search_constants(
    model: nn.Module, x: Tensor, y: Tensor, c0: float, rounds: int, settings: _Settings
) -> _Closest:
    """The per-sample search over the constant ``c``; returns the closest adversarial points."""
    a, b = settings.centre, settings.half_width
    with torch.no_grad():
        w0 = torch.atanh(((x - a) / b * (1.0 - _ETA)).clamp(_ETA - 1.0, 1.0 - _ETA))
        x_start = _to_box(w0, settings)
    m = x.shape[0]
    const = torch.full((m,), c0, dtype=torch.float64, device=x.device)
    lower = torch.zeros(m, dtype=torch.float64, device=x.device)
    upper = torch.full((m,), torch.inf, dtype=torch.float64, device=x.device)
    no_distance = torch.full((m,), torch.inf, dtype=x.dtype, device=x.device)
    closest = _Closest(
        x=x.clone(), norm=no_distance, masked=torch.ones(m, dtype=torch.bool, device=x.device)
    )
    for round_ in range(rounds):
        if rounds >= 10 and round_ == rounds - 1:
            const = upper.clamp(max=_MAX_CONST)
        samples = _Samples.start(x, y, w0, x_start, const.to(x.dtype), closest)
        found = _adam_round(model, samples, closest, settings)
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
    return closest


@dataclass
class _Samples:
    """The samples still optimised in a round, one row each; :meth:`select` keeps some rows."""

    rows: Tensor  # their positions in the round's batch
    x: Tensor
    y: Tensor
    w0: Tensor  # the start in tanh space, w₀ = artanh((1 − η)·(x − a)/b)
    x_start: Tensor  # x̃ = x'(w₀), the reference of the distance term
    const: Tensor  # the constants c, in x's dtype
    closest: Tensor  # closest adversarial iterate of the round so far
    closest_norm: Tensor
    masked: Tensor  # every gradient of the round so far vanished
    found: Tensor  # an adversarial iterate was found in this round
    delta: Tensor  # w − w₀, optimised by Adam
    adam_m: Tensor  # Adam's first moment
    adam_v: Tensor  # Adam's second moment
    # early abort: lowest loss in the previous and current window, whether the closest distance
    # improved in the current window, how many windows in a row have stalled
    prev_window_min: Tensor
    window_min: Tensor
    window_improved: Tensor
    stalled_windows: Tensor

    @classmethod
    def start(
        cls, x: Tensor, y: Tensor, w0: Tensor, x_start: Tensor, const: Tensor, closest: _Closest
    ) -> _Samples:
        """All samples at ``δ = 0`` with fresh Adam and early-abort state."""
        m = x.shape[0]
        prev_window_min = torch.full((m,), torch.inf, dtype=x.dtype, device=x.device)
        return cls(
            rows=torch.arange(m, device=x.device), x=x, y=y, w0=w0, x_start=x_start, const=const,
            closest=closest.x, closest_norm=closest.norm, masked=closest.masked,
            found=torch.zeros(m, dtype=torch.bool, device=x.device),
            delta=torch.zeros_like(w0), adam_m=torch.zeros_like(w0), adam_v=torch.zeros_like(w0),
            prev_window_min=prev_window_min, window_min=prev_window_min.clone(),
            window_improved=torch.zeros(m, dtype=torch.bool, device=x.device),
            stalled_windows=torch.zeros(m, dtype=torch.long, device=x.device),
        )

    def select(self, keep: Tensor) -> _Samples:
        """The rows ``keep`` of every field."""
        return _Samples(*(getattr(self, f.name)[keep] for f in fields(self)))


def _adam_round(
    model: nn.Module, samples: _Samples, closest: _Closest, settings: _Settings
) -> Tensor:
    """One round of Adam at fixed constants; updates ``closest`` in place.

    Returns the per-sample flag "an adversarial iterate was found in this round". Samples that
    abort early are dropped from the batch (their state is written back first).
    """
    found = samples.found
    for step in range(settings.steps):
        grad, loss, x_p, success = _loss_and_gradient(model, samples, settings)
        with torch.no_grad():
            samples.masked = and_vanished(samples.masked, grad)
            improved = _record_closest(samples, x_p, success)
            _adam_step(samples, grad, step + 1, settings.lr)
            _clip_w(samples)
            if not settings.abort_early:
                continue
            stop = _stop_early(samples, loss, improved, step, settings.check_every)
            if stop is None or not bool(stop.any()):
                continue
            _write_back(samples.select(stop.nonzero().squeeze(1)), closest, found)
            keep = (~stop).nonzero().squeeze(1)
            if keep.numel() == 0:
                return found
            samples = samples.select(keep)
    with torch.no_grad():
        _write_back(samples, closest, found)
    return found


def _write_back(samples: _Samples, closest: _Closest, found: Tensor) -> None:
    """Store the round's results of ``samples`` at their rows of ``closest`` and ``found``."""
    rows = samples.rows
    closest.x[rows], closest.norm[rows], closest.masked[rows], found[rows] = (
        samples.closest, samples.closest_norm, samples.masked, samples.found
    )


def _loss_and_gradient(
    model: nn.Module, samples: _Samples, settings: _Settings
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """At ``x'(w₀ + δ)``: ``∇_δ`` of the summed loss, the per-sample loss, ``x'`` and whether
    ``x'`` is adversarial (all but the gradient detached)."""
    samples.delta.requires_grad_(True)
    x_p = _to_box(samples.w0 + samples.delta, settings)
    logits = model(x_p)
    margin = _margin(logits, samples.y, settings.targeted)
    dist2 = (x_p - samples.x_start).flatten(1).pow(2).sum(dim=1)
    loss = samples.const * (margin + settings.kappa).clamp_min(0) + dist2
    (grad,) = torch.autograd.grad(loss.sum(), samples.delta)
    success = margin.detach() + settings.kappa < 0
    return grad, loss.detach(), x_p.detach(), success


def _record_closest(samples: _Samples, x_p: Tensor, success: Tensor) -> Tensor:
    """Keep ``x_p`` where it is adversarial and closer than the closest so far; returns where."""
    norms = batch_norms(x_p - samples.x, "l2")
    improved = success & (norms < samples.closest_norm)
    samples.closest = torch.where(per_sample(improved, x_p), x_p, samples.closest)
    samples.closest_norm = torch.where(improved, norms, samples.closest_norm)
    samples.found = samples.found | success
    return improved


def _adam_step(samples: _Samples, grad: Tensor, t: int, lr: float) -> None:
    """Adam (Kingma & Ba) on ``δ = w − w₀``, bias-corrected, at step ``t ≥ 1``."""
    samples.adam_m.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
    samples.adam_v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
    # δ ← δ − lr · m̂/(√v̂ + ε) with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
    denom = samples.adam_v.sqrt().div_(math.sqrt(1 - _BETA2**t)).add_(_ADAM_EPS)
    step = -lr / (1 - _BETA1**t)
    samples.delta = samples.delta.detach().addcdiv_(samples.adam_m, denom, value=step)


def _clip_w(samples: _Samples) -> None:
    """Keep ``w = w₀ + δ`` in ``[−W, W]``, where ``x'`` spans the box and tanh' ≥ 2η − η²."""
    w = (samples.w0 + samples.delta).clamp_(-_W_MAX, _W_MAX)
    samples.delta = w.sub_(samples.w0)


def _stop_early(
    samples: _Samples, loss: Tensor, improved: Tensor, step: int, check_every: int
) -> Tensor | None:
    """Update the early-abort windows; at the end of a window, which samples stop (else None)."""
    samples.window_min = torch.minimum(samples.window_min, loss)
    samples.window_improved = samples.window_improved | improved
    if step % check_every:
        return None
    # NaN counts as stalled; the closest distance improves only where an adversarial was found
    stalled = ~(samples.window_min <= 0.9999 * samples.prev_window_min) & ~samples.window_improved
    samples.stalled_windows = torch.where(stalled, samples.stalled_windows + 1, 0)
    stop = samples.stalled_windows >= _PATIENCE
    samples.prev_window_min = samples.window_min
    samples.window_min = torch.full_like(samples.prev_window_min, torch.inf)
    samples.window_improved = torch.zeros_like(samples.window_improved)
    return stop
