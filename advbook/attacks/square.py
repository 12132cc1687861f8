"""The Square attack: score-based black-box random search (Andriushchenko et al. 2020)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from .._core.guard import detached_copy, model_guard
from .._core.objectives import margin_objective
from .._core.random import draw_like
from ._checks import check_inputs, check_logits
from ._utils import batch_norms, is_success, per_sample

__all__ = ["SquareResult", "p_schedule", "square", "square_with_queries"]

# the reference's schedule: p is halved after each of these (rescaled) iterations
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# the reference's guard against division by zero when normalising
_TINY = 1e-12


@dataclass(frozen=True)
class SquareResult:
    """What :func:`square_with_queries` returns.

    Attributes:
        x_adv: the adversarial inputs (as :func:`square` returns them).
        queries: ``(N,)`` int64, the forward evaluations each sample used: up to and including
            its first successful one, or the whole budget where the attack failed (``1`` for
            every sample when ``eps = 0``: the clean evaluation is all there is to do).
        fooled: ``(N,)`` bool, whether ``x_adv`` fools the model (tells a success on the last
            query from a failure, which both report ``queries`` equal to the budget).
    """

    x_adv: Tensor
    queries: Tensor
    fooled: Tensor


@dataclass(frozen=True)
class _Settings:
    """The checked hyper-parameters of one Square run."""

    eps: float
    norm: str
    queries: int
    p_init: float
    bounds: tuple[float, float]
    targeted: bool
    generator: torch.Generator | None


def p_schedule(p_init: float, iteration: int, queries: int) -> float:
    """The fraction ``p`` of the image a square covers at ``iteration`` (0-based).

    The reference schedule (``p_selection``): ``p = p_init / 2^k`` where ``k`` counts the
    thresholds ``10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000`` that the rescaled iteration
    ``int(iteration / queries · 10000)`` exceeds (strictly), so the schedule of a budget of
    ``queries`` is that of 10,000 queries, stretched.
    """
    p_init = _check_p_init(p_init)
    iteration = check_nonneg_int(iteration, "iteration")
    queries = check_positive_int(queries, "queries")
    it = int(iteration / queries * 10000)
    halvings = sum(it > threshold for threshold in _HALVINGS)
    return p_init / float(2**halvings)


# long: signature and docstring (the algorithm's reference) alone are 74 lines
def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> Tensor:
    """Square attack (Andriushchenko, Croce, Flammarion & Hein 2020): random search on the margin.

    Score-based and black-box: it only evaluates ``model`` (forward passes under
    ``torch.no_grad()``, never a gradient), so it also works on models that are not
    differentiable or whose gradients are masked. It minimises the margin loss ::

        L(x') = z_y(x') − max_{i≠y} z_i(x')          (untargeted; fooled once argmax ≠ y)
        L(x') = max_{i≠t} z_i(x') − z_t(x')          (targeted towards t = y)

    by greedy random search over perturbations on the boundary of the ball. Images
    ``(N, C, H, W)`` with ``H = W`` (``n = H·W`` pixels per channel):

    * query 1: the clean ``x``; samples it already fools are done and returned unchanged;
    * query 2, the start ``x̂``: L∞ vertical stripes, ``x̂ = clip(x + ε·σ)`` with one sign
      ``σ_{c,w} = ±1`` per channel and column; L2 a grid of blocks of side ``b = ⌊H/5⌋``
      (from pixel ``⌊(H − 5b)/2⌋``; 5 × 5 blocks when ``5 | H``), each ``±η`` per channel,
      ``x̂ = clip(x + ε·δ/‖δ‖₂)``. ``η`` is the reference's "meta-pseudo-gaussian": a ``+`` top
      and a ``−`` bottom half of nested centred squares, pixel weight ``Σ_{k≥d} 1/(k+1)²`` at
      Chebyshev distance ``d`` from the half's centre, unit norm, transposed with probability ½;
    * queries 3, 4, …: with ``p = p_schedule(p_init, t, queries)`` at iteration ``t = 0, 1, …``
      a window ``W`` of side ``s = round(√(p·n))`` at a uniform position is proposed ::

          L∞:  x'_W = clip(x_W + ε·σ_c), a new sign σ_c = ±1 per channel;  x' = x̂ elsewhere
          L2:  s ← max(s, 3), made odd; δ = x̂ − x; a second window W₂; for each channel c
               u_c = ±η + δ_{W,c}/‖δ_{W,c}‖₂,   δ'_{W,c} = r·u_c/‖u_c‖₂,
               r² = max(ε² − ‖δ‖₂², 0)/C + ‖δ_{W∪W₂}‖₂²,   δ'_{W₂∖W} = 0,  δ' = δ elsewhere;
               x' = clip(x + ε·δ'/‖δ'‖₂)      (W₂'s mass moves into W, ‖δ'‖₂ = ε)

      and accepted, ``x̂ ← x'``, when ``L(x') < L(x̂)`` or ``x'`` fools the model.

    Only the samples not yet fooled are evaluated (the batch shrinks), and each stops after
    ``queries`` evaluations. The iterates stay in the box and in the ball:
    ``‖x' − x‖_∞ ≤ ε`` resp. ``‖x' − x‖₂ ≤ ε``. The algorithm, the schedule, the L2 windows and
    the margin loss follow the reference code (fra31/auto-attack, ``square.py``, which
    torchattacks copies) with two differences: every sample draws its own window positions,
    signs and transpositions (the reference shares one position, and in L∞ one sign vector,
    across the batch per iteration, which gives each sample the same distribution but ties the
    samples together), and positions range over all ``H − s + 1`` offsets (the reference's
    ``randint(0, H − s)`` never reaches the last row and column). For ``H < 5`` the L2 blocks
    have side 1 and windows never exceed the image (the reference fails there).

    Derived in the book, section :ref:`sec-square` of chapter *Evaluating robustness*.

    Args:
        model: returns logits ``(N, K)``; run in eval mode and left unchanged.
        x: images ``(N, C, H, W)`` with ``H = W``, inside ``bounds``.
        y: true labels ``(N,)`` (target labels when ``targeted=True``).
        eps: radius of the ball (``≥ 0``).
        norm: ``"linf"`` or ``"l2"``.
        queries: forward evaluations per sample, the clean one and the start included
            (``≥ 1``); batched forward passes number at most ``queries``.
        p_init: initial fraction of the image a window covers, in ``(0, 1]``.
        bounds: valid input range ``(lo, hi)``.
        generator: source of every random draw (on its device, then moved to x's).
        targeted: move towards the class ``y`` instead of away from it.

    Returns:
        ``x_adv`` with x's shape, dtype and device, inside ``bounds`` and the ε-ball: the best
        point found per sample (``x`` itself where ``x`` is already misclassified). Use
        :func:`square_with_queries` for the number of queries each sample needed.
    """
    return square_with_queries(
        model, x, y, eps=eps, norm=norm, queries=queries, p_init=p_init, bounds=bounds,
        generator=generator, targeted=targeted,
    ).x_adv


def square_with_queries(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> SquareResult:
    """:func:`square`, also returning the number of queries each sample used.

    Same arguments and algorithm as :func:`square` (:ref:`sec-square`); returns a
    :class:`SquareResult` ``(x_adv, queries, fooled)``, where ``queries[i]`` counts the forward
    evaluations of sample ``i`` up to its first success (``1`` if the clean input is already
    misclassified) or the whole budget ``queries`` where the attack failed.
    """
    name = "square"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(
            f"{name}: x must be a batch of square images (N, C, H, W) with H == W, got shape "
            f"{tuple(x.shape)}"
        )
    settings = _Settings(
        eps=check_nonneg_float(eps, "eps"),
        norm=check_choice(norm, "norm", NORMS),
        queries=check_positive_int(queries, "queries"),
        p_init=_check_p_init(p_init),
        bounds=(lo, hi),
        targeted=bool(targeted),
        generator=check_generator(generator, name),
    )
    n = x.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=x.device)
        return SquareResult(x.detach().clone(), empty, empty.bool())
    with model_guard(model), torch.no_grad():
        x0, y0 = detached_copy(x), detached_copy(y).long()
        logits = model(x0)
        check_logits(logits, n, y_max, name=name)
        state = _State(
            x=x0.clone(),
            fooled=is_success(logits, y0, settings.targeted),
            queries=torch.ones(n, dtype=torch.int64, device=x.device),
        )
        if settings.queries > 1 and settings.eps > 0:  # with ε = 0 the ball is {x}
            _search(model, x0, y0, state, settings)
    return SquareResult(state.x, state.queries, state.fooled)


def _check_p_init(p_init: object) -> float:
    """``p_init`` as a float in ``(0, 1]``."""
    p = check_positive_float(p_init, "p_init")
    if p > 1:
        raise ValueError(f"p_init must lie in (0, 1] (a fraction of the image), got {p}")
    return p


@dataclass
class _State:
    """The result being built, ``(N, ...)``: best points, success, queries used."""

    x: Tensor
    fooled: Tensor
    queries: Tensor


@dataclass
class _Active:
    """The samples still being attacked (rows ``rows`` of the batch): clean input, label, best
    point so far and its loss."""

    rows: Tensor
    x: Tensor
    y: Tensor
    x_best: Tensor
    loss: Tensor


def _loss(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """The margin loss the search minimises (negative once the model is fooled)."""
    return margin_objective(logits, y) if targeted else -margin_objective(logits, y)


def _search(model: nn.Module, x0: Tensor, y: Tensor, state: _State, settings: _Settings) -> None:
    """The start (query 2) and the random-search iterations (queries 3 … ``queries``).

    Samples leave the batch at their first success; one host synchronisation per query.
    """
    rows = (~state.fooled).nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    x_clean, y_rows = x0[rows], y[rows]
    x_start = _start(x_clean, settings)
    logits = model(x_start)
    start = _Active(rows, x_clean, y_rows, x_start, _loss(logits, y_rows, settings.targeted))
    run = _retire(start, is_success(logits, y_rows, settings.targeted), state, 2)
    for query in range(3, settings.queries + 1):
        if run is None:
            return
        p = p_schedule(settings.p_init, query - 3, settings.queries)
        x_new = _proposal(run.x, run.x_best, p, settings)
        logits = model(x_new)
        loss = _loss(logits, run.y, settings.targeted)
        fooled = is_success(logits, run.y, settings.targeted)
        accept = fooled | (loss < run.loss)
        run.x_best = torch.where(per_sample(accept, x_new), x_new, run.x_best)
        run.loss = torch.where(accept, loss, run.loss)
        run = _retire(run, fooled, state, query)
    if run is not None:  # the budget is spent
        state.x[run.rows] = run.x_best
        state.queries[run.rows] = settings.queries


def _retire(run: _Active, fooled: Tensor, state: _State, query: int) -> _Active | None:
    """Write the samples fooled at ``query`` into ``state`` and drop them from the batch."""
    if not bool(fooled.any()):
        return run
    done = fooled.nonzero().squeeze(1)
    rows = run.rows[done]
    state.x[rows] = run.x_best[done]
    state.fooled[rows] = True
    state.queries[rows] = query
    keep = (~fooled).nonzero().squeeze(1)
    if keep.numel() == 0:
        return None
    return _Active(run.rows[keep], run.x[keep], run.y[keep], run.x_best[keep], run.loss[keep])


def _start(x: Tensor, settings: _Settings) -> Tensor:
    """The starting point: L∞ vertical stripes, L2 the grid of ``±η`` blocks."""
    lo, hi = settings.bounds
    n, c, h, w = x.shape
    if settings.norm == "linf":
        return (x + settings.eps * _signs(x, (n, c, 1, w), settings.generator)).clamp(lo, hi)
    side = max(h // 5, 1)
    offset = max((h - 5 * side) // 2, 0)
    blocks = h // side
    eta = _patterns(x, side, (n, 1, blocks, blocks), settings.generator)
    tiles = eta * _signs(x, (n, c, blocks, blocks, 1, 1), settings.generator)
    grid = tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, blocks * side, blocks * side)
    size = min(blocks * side, h - offset)
    delta = torch.zeros_like(x)
    delta[:, :, offset:offset + size, offset:offset + size] = grid[:, :, :size, :size]
    return _to_sphere(x, delta, settings)


def _proposal(x: Tensor, x_best: Tensor, p: float, settings: _Settings) -> Tensor:
    """One random-search candidate per sample (see :func:`square`)."""
    lo, hi = settings.bounds
    n, c, h, _ = x.shape
    side = round(math.sqrt(p * h * h))
    if settings.norm == "linf":
        side = min(max(side, 1), h)
        window = _window(x, side, settings.generator)
        signs = _signs(x, (n, c, 1), settings.generator)
        vertex = (x.reshape(n, c, -1).gather(2, window) + settings.eps * signs).clamp(lo, hi)
        return x_best.reshape(n, c, -1).scatter(2, window, vertex).view_as(x)
    side = max(side, 3)
    side = min(side + 1 if side % 2 == 0 else side, h)
    return _l2_proposal(x, x_best - x, side, settings)


def _l2_proposal(x: Tensor, delta: Tensor, side: int, settings: _Settings) -> Tensor:
    """The reference's L2 update: window ``W₂`` emptied into window ``W``, then ``‖δ‖₂ = ε``."""
    n, c, _, _ = x.shape
    gen = settings.generator
    first, second = _window(x, side, gen), _window(x, side, gen)
    flat = delta.reshape(n, c, -1)
    old = flat.gather(2, first)
    both = torch.zeros_like(flat[:, :1]).scatter_(2, first[:, :1], 1.0)
    both.scatter_(2, second[:, :1], 1.0)
    norm_image = flat.square().sum(dim=(1, 2), keepdim=True).sqrt()
    norm_windows = (flat.square() * both).sum(dim=(1, 2), keepdim=True).sqrt()
    eta = _patterns(x, side, (n, 1), gen).reshape(n, 1, side * side)
    new = eta * _signs(x, (n, c, 1), gen) + old / (_TINY + _window_norms(old))
    budget = (settings.eps**2 - norm_image.square()).clamp_min(0) / c + norm_windows.square()
    new = new / (_TINY + _window_norms(new)) * budget.sqrt()
    flat = flat.scatter(2, second, 0.0).scatter_(2, first, new)
    return _to_sphere(x, flat.view_as(x), settings)


def _to_sphere(x: Tensor, delta: Tensor, settings: _Settings) -> Tensor:
    """``clip(x + ε·δ/‖δ‖₂)``."""
    unit = delta / (per_sample(batch_norms(delta, "l2"), delta) + _TINY)
    return (x + settings.eps * unit).clamp(*settings.bounds)


def _window_norms(t: Tensor) -> Tensor:
    """``‖·‖₂`` of each flattened window of ``t`` ``(N, C, s²)``, shaped ``(N, C, 1)``."""
    return t.square().sum(dim=-1, keepdim=True).sqrt()


def _signs(like: Tensor, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Independent signs ``±1`` (probability ½ each) in ``like``'s dtype and device."""
    u = draw_like("rand", like, generator, shape)
    return torch.where(u < 0.5, -1.0, 1.0).to(like.dtype)


def _window(x: Tensor, side: int, generator: torch.Generator | None) -> Tensor:
    """A ``side × side`` window at a uniform position per sample, as flat pixel indices.

    Returns ``(N, C, side²)`` int64 indices into ``x.reshape(N, C, H·W)`` (row-major in the
    window), the corner uniform over the ``(H − side + 1)²`` positions.
    """
    n, c, size, _ = x.shape
    count = size - side + 1
    u = draw_like("rand", x.new_empty(0, dtype=torch.float32), generator, (n, 2, 1, 1))
    corner = (u * count).long().clamp_(max=count - 1)
    span = torch.arange(side, device=x.device)
    pixels = (corner[:, 0] + span[:, None]) * size + corner[:, 1] + span[None, :]
    return pixels.reshape(n, 1, side * side).expand(n, c, side * side)


def _patterns(
    like: Tensor, side: int, batch: tuple[int, ...], generator: torch.Generator | None
) -> Tensor:
    """``η`` of ``side`` (``batch + (side, side)``), each transposed with probability ½."""
    eta = _eta(side, like.dtype, like.device)
    flip = draw_like("rand", like, generator, (*batch, 1, 1)) > 0.5
    return torch.where(flip, eta.T, eta)


def _eta(side: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The reference's ``eta(s)``: a ``+`` top and a ``−`` bottom half, unit Frobenius norm."""
    return _eta_cpu(side).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _eta_cpu(side: int) -> Tensor:
    """:func:`_eta` in float64 on the CPU, computed once per side (never modified)."""
    top = _eta_rectangle(side // 2, side)
    bottom = _eta_rectangle(side - side // 2, side)
    eta = torch.cat([top, -bottom])
    return eta / eta.square().sum().sqrt()


def _eta_rectangle(rows: int, cols: int) -> Tensor:
    """The reference's ``eta_rectangles``: nested centred squares of weight ``1/(k+1)²``.

    Pixel ``(i, j)`` lies in the squares ``k ≥ d = max(|i − ⌊rows/2⌋|, |j − ⌊cols/2⌋|)`` of the
    reference's loop ``k = 0 … max(⌊rows/2⌋, ⌊cols/2⌋)``, so it gets ``Σ_{k≥d} 1/(k+1)²``;
    the rectangle is then scaled to unit Frobenius norm.
    """
    if rows == 0:
        return torch.zeros(0, cols, dtype=torch.float64)
    i = (torch.arange(rows) - rows // 2).abs()
    j = (torch.arange(cols) - cols // 2).abs()
    distance = torch.maximum(i[:, None], j[None, :])
    last = max(rows // 2, cols // 2)
    weights = 1.0 / torch.arange(1, last + 2, dtype=torch.float64) ** 2
    tails = weights.flip(0).cumsum(0).flip(0)  # tails[d] = Σ_{k≥d} 1/(k+1)²
    rect = tails[distance]
    return rect / rect.square().sum().sqrt()
