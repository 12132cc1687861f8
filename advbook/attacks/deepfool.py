"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), batched over samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._core.checks import NORMS, check_choice, check_nonneg_float, check_nonneg_int
from .._core.guard import detached_copy, model_guard
from ._checks import check_inputs, check_logits
from ._masking import and_vanished, check_on_masking, report_masking
from ._utils import batch_norms, input_gradient, is_success, per_sample

__all__ = ["deepfool"]

# Added to each step's length, as in the authors' reference code, so that the linearised
# boundary is crossed rather than touched.
_STEP_PAD = 1e-4


# long: signature and docstring (the algorithm's reference) alone are 54 lines
def deepfool(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    norm: str = "l2",
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    on_masking: str = "warn",
) -> Tensor:
    """DeepFool: step to the nearest linearised decision boundary until the label flips.

    At the current point ``xᵢ`` with logits ``z`` and source class ``s`` (the true label), each
    candidate class ``k`` defines ``f_k = z_k − z_s`` and ``w_k = ∇ₓ f_k``. The linearised
    boundary ``f_k + ⟨w_k, r⟩ = 0`` is nearest for ::

        l = argmin_k |f_k| / ‖w_k‖_q        (q = 2 for L2, q = 1, the dual of L∞, for L∞)

    and the minimal step onto it is ::

        L2:  r = (|f_l|/‖w_l‖₂ + 10⁻⁴) · w_l / ‖w_l‖₂
        L∞:  r = (|f_l|/‖w_l‖₁ + 10⁻⁴) · sign(w_l)

    The steps are accumulated, ``r_tot ← r_tot + r``, and the overshoot is applied once to the
    total, ``xᵢ₊₁ = clip_[lo, hi](x + (1 + overshoot) · r_tot)``. For an affine classifier a
    single step reaches the exact minimal distance ``min_k |f_k|/‖w_k‖``.

    Batched: one forward pass per iteration and one backward pass per candidate (``candidates −
    1`` of them, through ``torch.autograd.grad`` with a retained graph) for all samples at once;
    candidates are the true class plus the ``candidates − 1`` other classes with the highest
    clean logits; a sample is frozen as soon as it is misclassified and the others continue on
    a smaller batch. With ``targeted=True`` the single candidate is the target ``t`` and the
    source is the current top class, ``f = z_t − z_top`` (a greedy targeted variant).

    Derived in the book, section :ref:`sec-deepfool` of chapter *Adversarial examples*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: inputs ``(N, ...)`` inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        steps: maximum number of linearisation steps.
        overshoot: relative overshoot ``η ≥ 0`` of the accumulated perturbation.
        candidates: number of classes considered (true class included), ``≥ 2``.
        norm: ``"l2"`` or ``"linf"``.
        bounds: valid input range ``(lo, hi)``.
        targeted: reach the class ``y`` instead of leaving it.
        on_masking: ``"warn"``, ``"raise"`` or ``"ignore"``: what to do when every candidate's
            input gradient was exactly zero at every step for samples still not fooled
            (gradient masking, :ref:`sec-gradient-masking`): :class:`GradientMaskingWarning`
            or :class:`GradientMaskingError`.

    Returns:
        ``x_adv`` with x's shape, dtype and device, inside ``bounds``. Samples that are
        misclassified from the start are returned unchanged; samples not fooled within
        ``steps`` iterations are returned at their last iterate.
    """
    name = "deepfool"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    steps = check_nonneg_int(steps, "steps")
    overshoot_ = check_nonneg_float(overshoot, "overshoot")
    candidates = check_nonneg_int(candidates, "candidates", minimum=2)
    norm = check_choice(norm, "norm", NORMS)
    on_masking = check_on_masking(on_masking)
    if x.shape[0] == 0:
        return x.detach().clone()
    settings = _Settings(
        steps=steps, scale=1.0 + overshoot_, candidates=candidates, norm=norm, bounds=(lo, hi),
        targeted=targeted,
    )
    with model_guard(model):
        x0, y = detached_copy(x), detached_copy(y).long()
        x_adv, masked, unfooled = _step_until_fooled(model, x0, y, settings, y_max, name)
    report_masking(name, masked, unfooled, x.shape[0], on_masking)
    return x_adv


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of :func:`deepfool` (``scale = 1 + overshoot``)."""

    steps: int
    scale: float
    candidates: int
    norm: str
    bounds: tuple[float, float]
    targeted: bool


def _step_until_fooled(
    model: nn.Module, x0: Tensor, y: Tensor, settings: _Settings, y_max: int, name: str
) -> tuple[Tensor, Tensor, Tensor]:
    """DeepFool's iterations on the batch; each sample leaves the batch once it is fooled.

    Returns ``x_adv``, the samples whose every gradient vanished (never moved) among those still
    attacked after the last step, and those still attacked.
    """
    n = x0.shape[0]
    masked = torch.ones(n, dtype=torch.bool, device=x0.device)
    if settings.steps == 0:
        with torch.no_grad():
            check_logits(model(x0), n, y_max, name=name)
        return x0.clone(), ~masked, ~masked
    x_adv = x0.clone()
    r_tot = torch.zeros_like(x0)
    active = torch.arange(n, device=x0.device)  # samples still being attacked
    x_active, y_active = x0, y
    cls: Tensor | None = None  # candidate classes (untargeted only)
    for it in range(settings.steps):
        x_i = x_adv[active].requires_grad_(True)
        logits = model(x_i)
        if it == 0:
            cls = _check_first_logits(logits, y, settings, y_max, name)
        with torch.no_grad():
            alive = ~is_success(logits, y_active, settings.targeted)
            rows: Tensor | None = None  # rows of this forward batch still attacked
            if not bool(alive.all()):
                rows = alive.nonzero().squeeze(1)
                active, x_active, y_active = active[rows], x_active[rows], y_active[rows]
                if cls is not None:
                    cls = cls[rows]
                if active.numel() == 0:
                    break
        pairs = _targeted_pairs(logits, y_active, rows) if cls is None else cls
        f, w = _differences_and_gradients(logits, x_i, pairs, rows)
        with torch.no_grad():
            r_tot[active] += _step_to_boundary(f, w, settings.norm, x0.dtype)
            x_adv[active] = (x_active + settings.scale * r_tot[active]).clamp(*settings.bounds)
            masked[active] = and_vanished(masked[active], w)
    unfooled = torch.zeros_like(masked).index_fill_(0, active, True)
    return x_adv, masked & unfooled, unfooled


def _check_first_logits(
    logits: Tensor, y: Tensor, settings: _Settings, y_max: int, name: str
) -> Tensor | None:
    """Validate the first logits; the candidate classes when untargeted (``None`` targeted)."""
    check_logits(logits, y.shape[0], y_max, name=name)
    if not logits.requires_grad:
        raise ValueError(
            f"{name}: the model's output does not depend on x through autograd "
            f"(does the model detach its input or run under torch.no_grad()?)"
        )
    if settings.targeted:
        return None
    return _candidate_classes(logits.detach(), y, settings.candidates)


def _step_to_boundary(f: Tensor, w: Tensor, norm: str, dtype: torch.dtype) -> Tensor:
    """The minimal step ``r`` onto the nearest linearised boundary (plus ``_STEP_PAD``)."""
    wnorm = batch_norms(w.flatten(0, 1), "l2" if norm == "l2" else "l1").view(f.shape)
    dist = torch.where(wnorm > 0, f.abs() / wnorm, torch.inf)
    nearest = dist.argmin(dim=1)
    rows = torch.arange(f.shape[0], device=f.device)
    d = dist[rows, nearest]
    w_nearest, wnorm_nearest = w[rows, nearest], wnorm[rows, nearest]
    movable = torch.isfinite(d)
    length = torch.where(movable, d + _STEP_PAD, torch.zeros_like(d))
    if norm == "l2":
        safe_norm = torch.where(movable, wnorm_nearest, torch.ones_like(wnorm_nearest))
        direction = w_nearest / per_sample(safe_norm, w_nearest)
    else:
        direction = w_nearest.sign()
    return per_sample(length.to(dtype), w_nearest) * direction


def _candidate_classes(logits: Tensor, y: Tensor, candidates: int) -> Tensor:
    """``(N, C)`` class indices: the true class first, then the top other classes by logit."""
    k = min(candidates, logits.shape[1])
    masked = logits.scatter(1, y[:, None], -torch.inf)
    others = masked.topk(k - 1, dim=1).indices
    return torch.cat([y[:, None], others], dim=1)


def _targeted_pairs(logits: Tensor, y: Tensor, keep: Tensor | None) -> Tensor:
    """``(n, 2)`` classes ``(source, target)``: the current top class other than ``y``, and ``y``.

    ``keep`` (or ``None`` for all rows) selects the rows of ``logits`` that ``y`` refers to.
    """
    top = logits.detach() if keep is None else logits.detach()[keep]
    source = top.scatter(1, y[:, None], -torch.inf).argmax(dim=1)
    return torch.stack([source, y], dim=1)


def _differences_and_gradients(
    logits: Tensor, x_i: Tensor, pairs: Tensor, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Logit differences ``f_k = z_k − z_s`` ``(n, C−1)`` and gradients ``w_k`` ``(n, C−1, ...)``.

    ``logits``/``x_i`` hold the batch of the forward pass; ``keep`` (or ``None`` for all rows)
    selects the rows still attacked, to which ``pairs`` (source class first, then the
    candidates ``k``) already refers.
    """
    rows = keep if keep is not None else torch.arange(logits.shape[0], device=logits.device)
    c = pairs.shape[1]
    f_list, w_list = [], []
    for j in range(1, c):
        grad_output = torch.zeros_like(logits)
        grad_output[rows, pairs[:, j]] += 1
        grad_output[rows, pairs[:, 0]] -= 1
        w_j = input_gradient(logits, x_i, grad_output, retain_graph=j < c - 1)
        w_list.append(w_j[rows] if keep is not None else w_j)
        kept_logits = logits.detach()[rows]
        source = kept_logits.gather(1, pairs[:, :1])
        f_list.append(kept_logits.gather(1, pairs[:, j : j + 1]) - source)
    return torch.cat(f_list, dim=1), torch.stack(w_list, dim=1)
