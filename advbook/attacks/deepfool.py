"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016), batched over samples."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import NORMS, check_choice, check_nonneg_float, check_nonneg_int
from ._checks import check_inputs, check_logits, model_guard, plain
from ._utils import batch_norms, is_success, per_sample

__all__ = ["deepfool"]

# Added to each step's length, as in the authors' reference code, so that the linearised
# boundary is crossed rather than touched.
_STEP_PAD = 1e-4


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

    Derived in the book, section ``sec-deepfool`` of chapter *Adversarial examples*.

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

    Returns:
        ``x_adv`` with x's shape, dtype and device, inside ``bounds``. Samples that are
        misclassified from the start are returned unchanged; samples not fooled within
        ``steps`` iterations are returned at their last iterate.
    """
    name = "deepfool"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    steps = check_nonneg_int(steps, "steps")
    overshoot_ = check_nonneg_float(overshoot, "overshoot")
    assert overshoot_ is not None
    candidates = check_nonneg_int(candidates, "candidates", minimum=2)
    norm = check_choice(norm, "norm", NORMS)
    n = x.shape[0]
    if n == 0:
        return x.detach().clone()
    scale = 1.0 + overshoot_
    with model_guard(model):
        x0, y = plain(x), plain(y).long()
        if steps == 0:
            with torch.no_grad():
                check_logits(model(x0), n, y_max, name=name)
            return x0.clone()
        x_adv = x0.clone()
        r_tot = torch.zeros_like(x0)
        idx = torch.arange(n, device=x0.device)  # samples still being attacked
        xs, ys = x0, y
        cls: Tensor | None = None
        for it in range(steps):
            xi = x_adv[idx].requires_grad_(True)
            logits = model(xi)
            if it == 0:
                check_logits(logits, n, y_max, name=name)
                if not logits.requires_grad:
                    raise ValueError(
                        f"{name}: the model's output does not depend on x through autograd "
                        f"(does the model detach its input or run under torch.no_grad()?)"
                    )
                if not targeted:
                    cls = _candidate_classes(logits.detach(), y, candidates)
            with torch.no_grad():
                alive = ~is_success(logits, ys, targeted)
                rows: Tensor | None = None  # rows of this forward batch still attacked
                if not bool(alive.all()):
                    rows = alive.nonzero().squeeze(1)
                    idx, xs, ys = idx[rows], xs[rows], ys[rows]
                    if cls is not None:
                        cls = cls[rows]
                    if idx.numel() == 0:
                        break
            f, w = _differences_and_gradients(logits, xi, ys, cls, targeted, rows)
            with torch.no_grad():
                if norm == "l2":
                    wnorm = batch_norms(w.flatten(0, 1), "l2").view(f.shape)
                else:
                    wnorm = batch_norms(w.flatten(0, 1), "l1").view(f.shape)
                dist = torch.where(wnorm > 0, f.abs() / wnorm, torch.inf)
                best = dist.argmin(dim=1)
                ar = torch.arange(f.shape[0], device=f.device)
                d = dist[ar, best]
                wl, nl = w[ar, best], wnorm[ar, best]
                movable = torch.isfinite(d)
                length = torch.where(movable, d + _STEP_PAD, torch.zeros_like(d))
                if norm == "l2":
                    direction = wl / per_sample(torch.where(movable, nl, torch.ones_like(nl)), wl)
                else:
                    direction = wl.sign()
                r = per_sample(length.to(x0.dtype), wl) * direction
                r_tot[idx] += r
                x_adv[idx] = (xs + scale * r_tot[idx]).clamp(lo, hi)
    return x_adv


def _candidate_classes(logits: Tensor, y: Tensor, candidates: int) -> Tensor:
    """``(N, C)`` class indices: the true class first, then the top other classes by logit."""
    k = min(candidates, logits.shape[1])
    masked = logits.scatter(1, y[:, None], -torch.inf)
    others = masked.topk(k - 1, dim=1).indices
    return torch.cat([y[:, None], others], dim=1)


def _differences_and_gradients(
    logits: Tensor,
    xi: Tensor,
    y: Tensor,
    cls: Tensor | None,
    targeted: bool,
    keep: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Logit differences ``f_k = z_k − z_s`` ``(n, C−1)`` and gradients ``w_k`` ``(n, C−1, ...)``.

    ``logits``/``xi`` hold the batch of the forward pass; ``keep`` (or ``None`` for all rows)
    selects the rows still attacked, to which ``y`` and ``cls`` already refer.
    """
    rows_all = keep if keep is not None else torch.arange(logits.shape[0], device=logits.device)
    if targeted:
        lg = logits.detach()[rows_all]
        source = lg.scatter(1, y[:, None], -torch.inf).argmax(dim=1)
        pairs = torch.stack([source, y], dim=1)
    else:
        assert cls is not None
        pairs = cls
    c = pairs.shape[1]
    f_list, g_list = [], []
    for j in range(1, c):
        go = torch.zeros_like(logits)
        go[rows_all, pairs[:, j]] += 1
        go[rows_all, pairs[:, 0]] -= 1
        (g,) = torch.autograd.grad(logits, xi, go, retain_graph=j < c - 1, allow_unused=True)
        if g is None:
            g = torch.zeros_like(xi)
        g_list.append(g[rows_all] if keep is not None else g)
        lg = logits.detach()[rows_all]
        f_list.append(lg.gather(1, pairs[:, j : j + 1]) - lg.gather(1, pairs[:, :1]))
    f = torch.cat(f_list, dim=1)
    w = torch.stack(g_list, dim=1)
    return f, w
