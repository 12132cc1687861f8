"""FAB and FAB-T (:mod:`advbook.attacks.fab`): the hyperplane-and-box projection against an LP/QP
solver and the reference's, exact distances on linear models, invariants, bad input, and
torchattacks' FAB as an oracle on a trained MNIST MLP.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import GradientMaskingError, GradientMaskingWarning
from advbook.attacks._utils import batch_norms
from advbook.attacks.fab import fab, fab_distances, project_hyperplane_box
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

DUAL = {"linf": 1.0, "l2": 2.0}  # the dual norm of the attacked one (L∞ → L1, L2 → L2)
P = {"linf": math.inf, "l2": 2.0}
WIDE = (-100.0, 100.0)  # bounds that the linear-model tests never reach


# --------------------------------------------------------------------------- the projection
def _instance(
    g: torch.Generator, n: int, d: int, lo: float, hi: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Points in the box, normals with some zero entries, and planes through a random box
    point ``z`` (so every instance is feasible and ``z − p`` is a feasible step)."""
    p = lo + (hi - lo) * torch.rand(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = w * (torch.rand(n, d, generator=g) > 0.2)
    z = lo + (hi - lo) * torch.rand(n, d, generator=g, dtype=torch.float64)
    return p, w, (w * z).sum(1), z


def _solver_norm(p: np.ndarray, w: np.ndarray, b: float, norm: str, lo: float, hi: float,
                 start: np.ndarray) -> float:
    """min ‖δ‖ s.t. ⟨w, p + δ⟩ = b, lo ≤ p + δ ≤ hi, by scipy: an LP for L∞, SLSQP for L2."""
    optimize = pytest.importorskip("scipy.optimize")
    d = p.size
    box = list(zip(lo - p, hi - p, strict=True))
    if norm == "linf":  # variables (δ, t): min t, −t ≤ δ_i ≤ t
        eye = np.eye(d)
        a_ub = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
        res = optimize.linprog(
            np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d),
            A_eq=np.r_[w, 0.0][None], b_eq=[b - w @ p], bounds=[*box, (0, None)],
            method="highs",
        )
        assert res.status == 0
        return float(res.fun)
    res = optimize.minimize(
        lambda v: v @ v, start, jac=lambda v: 2 * v, method="SLSQP", bounds=box,
        constraints=[{"type": "eq", "fun": lambda v: w @ (p + v) - b, "jac": lambda v: w}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert res.success
    return float(np.sqrt(res.fun))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_projection_is_the_shortest_feasible_step(norm: str, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    p, w, b, z = _instance(torch.Generator().manual_seed(0), 30, 7, lo, hi)
    delta = project_hyperplane_box(p, w, b, norm=norm, bounds=bounds)
    q = p + delta
    assert ((w * q).sum(1) - b).abs().max() < 1e-12  # on the plane
    assert q.min() >= lo - 1e-12 and q.max() <= hi + 1e-12  # in the box
    lengths = delta.norm(p=P[norm], dim=1)
    assert (lengths <= (z - p).norm(p=P[norm], dim=1) + 1e-12).all()  # no longer than z − p
    for i in range(p.shape[0]):
        best = _solver_norm(p[i].numpy(), w[i].numpy(), float(b[i]), norm, lo, hi,
                            (z - p)[i].numpy())
        assert lengths[i].item() == pytest.approx(best, rel=1e-6, abs=1e-9), i


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_matches_the_reference_implementation(norm: str) -> None:
    fab_module = pytest.importorskip("torchattacks.attacks.fab")
    reference = {"linf": fab_module.projection_linf, "l2": fab_module.projection_l2}[norm]
    p, w, b, _ = _instance(torch.Generator().manual_seed(1), 64, 50, 0.0, 1.0)
    w = torch.randn_like(w)  # the reference's L2 projection treats |w_i| < 1e-8 as zero
    ours = project_hyperplane_box(p, w, b, norm=norm)
    torch.testing.assert_close(ours, reference(p.clone(), w.clone(), b.clone()),
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_when_the_plane_misses_the_box(norm: str) -> None:
    g = torch.Generator().manual_seed(2)
    p, w, _, _ = _instance(g, 20, 9, 0.0, 1.0)
    above = torch.rand(20, generator=g) < 0.5  # half the planes beyond max ⟨w, ·⟩, half below min
    corner = torch.where(above[:, None], w > 0, w < 0).double()  # the box point nearest the plane
    b = (w * corner).sum(1) + torch.where(above, 0.5, -0.5).double()
    delta = project_hyperplane_box(p, w, b, norm=norm)
    expected = torch.where(w != 0, corner - p, torch.zeros_like(p))
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-12)


def test_projection_edge_cases_and_shapes() -> None:
    p = torch.rand(3, 2, 4)
    w = torch.randn(3, 2, 4)
    b = (w * p).flatten(1).sum(1)  # p already on its plane: no step
    for norm in ("linf", "l2"):
        delta = project_hyperplane_box(p, w, b, norm=norm)
        assert delta.shape == p.shape and delta.dtype == p.dtype
        assert delta.abs().max() < 1e-6
        zero = project_hyperplane_box(p, torch.zeros_like(w), torch.ones(3), norm=norm)
        assert torch.equal(zero, torch.zeros_like(p))  # a vanished normal: no move, no NaN
    with pytest.raises(ValueError, match="norm"):
        project_hyperplane_box(p, w, b, norm="l1")
    with pytest.raises(ValueError, match="shape"):
        project_hyperplane_box(p, w[:, :1], b)
    with pytest.raises(ValueError, match="shape"):
        project_hyperplane_box(p, w, b[:2])


# ------------------------------------------------------------------------ linear models
def _ratio(eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1,
           steps: int = 100) -> float:
    """FAB's distance over the exact one on an affine classifier, box inactive.

    All iterates then lie on the segment from ``x`` through its projection ``x + δ*`` onto the
    nearest boundary: ``xⁱ = x + sᵢ·δ*``, ``δⁱ = (1 − sᵢ)·δ*``, ``δ_orig = δ*``, so the attack
    is the scalar recursion below. The overshoot ``η`` makes the first adversarial point
    ``η·‖δ*‖``; the backward steps bring later ones closer, to about ``1.0052·‖δ*‖`` for the
    default ``η = 1.05``, ``β = 0.9`` (``1 + 1.8·10⁻⁴`` for ``η = 1.001``).
    """
    s, best = 0.0, math.inf
    for _ in range(steps):
        along = max(abs(1 - s), 1e-8)
        alpha = min(along / (along + 1.0), alpha_max)
        s = (1 - alpha) * (s + eta * (1 - s)) + alpha * eta
        if s > 1:
            best, s = min(best, s), beta * s
    return best


def _linear(k: int = 4, d: int = 12, n: int = 40, seed: int = 0) -> tuple[nn.Module, Tensor,
                                                                           Tensor]:
    torch.manual_seed(seed)
    model = nn.Linear(d, k).double()
    x = torch.rand(n, d, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point is classified correctly
    return model, x, y


def _exact_distance(model: nn.Linear, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """``min_{t≠y} |(w_t − w_y)·x + b_t − b_y| / ‖w_t − w_y‖_dual``: the distance to the
    closest misclassified point of an affine classifier (no box)."""
    with torch.no_grad():
        z = model(x)
        gap = (z - z.gather(1, y[:, None])).abs()
        normal = model.weight[None] - model.weight[y][:, None]
        dist = gap / normal.norm(p=DUAL[norm], dim=2)
        return dist.scatter(1, y[:, None], math.inf).amin(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [True, False])
def test_linear_model_distance_is_exact(norm: str, targeted: bool) -> None:
    """FAB-T (every target) and FAB (the nearest boundary) find ``_ratio()·‖δ*‖``."""
    model, x, y = _linear()
    exact = _exact_distance(model, x, y, norm)
    _, dist = fab_distances(model, x, y, norm=norm, targeted=targeted, n_targets=3,
                            bounds=WIDE)
    torch.testing.assert_close(dist, _ratio() * exact, rtol=1e-9, atol=0)
    # overshoot-adjusted: with η = 1.001 the distance is exact up to 1.8e-4 < 1e-3, from above
    _, dist = fab_distances(model, x, y, norm=norm, targeted=targeted, n_targets=3,
                            bounds=WIDE, eta=1.001)
    assert (dist >= exact).all()
    torch.testing.assert_close(dist, exact, rtol=1e-3, atol=0)
    torch.testing.assert_close(dist, _ratio(eta=1.001) * exact, rtol=1e-9, atol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_success_within_eps_iff_the_distance_is(norm: str) -> None:
    model, x, y = _linear(n=60, seed=1)
    found = _ratio() * _exact_distance(model, x, y, norm)
    middle = found.sort().values[29:31]
    eps = float(middle.mean())  # between two distances: no ties
    x_adv = fab(model, x, y, eps=eps, norm=norm, n_targets=3, bounds=WIDE)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert torch.equal(fooled, found <= eps)
    assert torch.equal(x_adv[~fooled], x[~fooled])  # x itself where not fooled within eps
    assert (batch_norms(x_adv - x, norm) <= eps).all()
    # below the exact distance no point can be fooled
    below = float(_exact_distance(model, x, y, norm).min()) * 0.999
    assert torch.equal(fab(model, x, y, eps=below, norm=norm, n_targets=3, bounds=WIDE), x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_active_box_keeps_points_inside_and_no_closer_than_exact(norm: str) -> None:
    model, x, y = _linear(n=40, seed=2)
    bounds = (0.0, 1.0)
    x_adv, dist = fab_distances(model, x, y, norm=norm, n_targets=3, bounds=bounds)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    finite = torch.isfinite(dist)
    assert finite.any()
    with torch.no_grad():
        assert (model(x_adv[finite]).argmax(1) != y[finite]).all()
    assert (dist[finite] >= _exact_distance(model, x, y, norm)[finite]).all()
    torch.testing.assert_close(dist[finite], batch_norms(x_adv - x, norm)[finite])


# ------------------------------------------------------------------ a trained MNIST model
Setup = tuple[nn.Module, Tensor, Tensor]


@pytest.fixture(scope="module")
def mnist() -> Setup:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    return model.eval(), ds.x_test[:200], ds.y_test[:200]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_returned_points_and_distances_are_consistent(mnist: Setup, norm: str,
                                                      eps: float) -> None:
    model, x, y = mnist
    x, y = x[:60], y[:60]
    kwargs = {"norm": norm, "steps": 20, "n_targets": 3}
    x_adv = fab(model, x, y, eps=eps, **kwargs)
    best, dist = fab_distances(model, x, y, eps=eps, **kwargs)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (batch_norms(x_adv - x, norm) <= eps).all()
    within = dist <= eps
    assert 0 < within.sum() < within.numel()  # a non-trivial split
    assert torch.equal(x_adv, torch.where(within[:, None, None, None], best, x))
    with torch.no_grad():
        clean_wrong = model(x).argmax(1) != y
        fooled = model(x_adv).argmax(1) != y
        fooled_best = model(best).argmax(1) != y
    assert torch.equal(fooled, within)
    assert torch.equal(dist == 0, clean_wrong) and torch.equal(best[clean_wrong], x[clean_wrong])
    assert torch.equal(torch.isfinite(dist), fooled_best)
    torch.testing.assert_close(dist[fooled_best], batch_norms(best - x, norm)[fooled_best])


def test_more_steps_restarts_and_targets_are_never_weaker(mnist: Setup) -> None:
    model, x, y = mnist
    x, y = x[:50], y[:50]
    eps = 0.08

    def fooled(**kwargs: object) -> Tensor:
        x_adv = fab(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0), **kwargs)
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    few = fooled(steps=10, n_targets=2)
    assert 0 < few.sum() < few.numel()
    for more in (fooled(steps=30, n_targets=2), fooled(steps=10, n_targets=4),
                 fooled(steps=10, n_targets=2, restarts=3)):
        assert (more | ~few).all()  # whatever fewer steps/targets/restarts fool, more fool too
    # the minimum-norm distances only shrink with more steps, targets and restarts (FAB finds
    # the points within eps in its first steps; later ones bring them closer)
    _, d_few = fab_distances(model, x, y, steps=10, n_targets=2)
    _, d_more = fab_distances(model, x, y, steps=30, n_targets=4, restarts=2)
    assert (d_more <= d_few).all() and (d_more < d_few).any()


class _Recording(nn.Module):
    """Passes ``x`` to ``model`` and keeps a copy of every input it was called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x.detach().clone())
        out: Tensor = self.model(x)
        return out


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_start_at_half_the_best_distance_or_eps(norm: str) -> None:
    """The second run starts at ``min(ε, best)/2`` from ``x`` (the reference's random start);
    its inputs are the model's call ``1 + 2·steps`` (the clean pass, two calls per step)."""
    model, x, y = _linear(n=20, seed=5)
    steps = 4
    kwargs = {"norm": norm, "steps": steps, "n_targets": 1, "bounds": WIDE}
    _, first = fab_distances(model, x, y, **kwargs)
    eps = float(first.min()) / 4  # nobody is fooled within eps: every restart starts at eps/2

    def second_start(attack: object, seed: int, **more: object) -> Tensor:
        recording = _Recording(model)
        attack(recording, x, y, restarts=2, generator=torch.Generator().manual_seed(seed),
               **kwargs, **more)  # type: ignore[operator]
        return recording.inputs[1 + 2 * steps]

    start = second_start(fab, 0, eps=eps)
    torch.testing.assert_close(batch_norms(start - x, norm), torch.full_like(y, eps / 2,
                                                                             dtype=x.dtype))
    start = second_start(fab_distances, 0)  # the minimum-norm attack: at best/2
    torch.testing.assert_close(batch_norms(start - x, norm), first / 2)
    assert torch.equal(second_start(fab_distances, 0), start)  # reproducible for a seed
    assert not torch.equal(second_start(fab_distances, 1), start)


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_robust_accuracy_and_distances_match_torchattacks(mnist: Setup, norm: str,
                                                          eps: float) -> None:
    """FAB-T, 100 steps, 9 targets, 1 restart, on 200 MNIST test points.

    Measured (CPU, float32): robust accuracy 32.0% (L∞, ε = 0.1) and 44.5% (L2, ε = 1.5) for
    both; the median distance over the clean-correct points (inf where not fooled within ε)
    0.09089 (L∞) and 1.4687 (L2) for both, per-sample distances within 2e-5 relative: the same
    trajectories (our iterates judged for free never changed the outcome here).
    """
    ta = pytest.importorskip("torchattacks")
    model, x, y = mnist
    _, dist = fab_distances(model, x, y, eps=eps, norm=norm, steps=100, n_targets=9)
    attack = ta.FAB(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=100,
                    n_restarts=1, multi_targeted=True, n_classes=10, seed=0)
    theirs = attack(x, y)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        fooled = model(theirs).argmax(1) != y
    d_theirs = torch.where(fooled, batch_norms(theirs - x, norm), math.inf)
    ours_robust = float((dist > eps).float().mean())
    theirs_robust = float((correct & ~fooled).float().mean())
    assert 0.1 < theirs_robust < 0.9  # a meaningful comparison
    assert abs(ours_robust - theirs_robust) <= 0.01, (ours_robust, theirs_robust)
    ours_d = torch.where(dist <= eps, dist, math.inf)[correct]
    med_ours, med_theirs = float(ours_d.median()), float(d_theirs[correct].median())
    assert math.isfinite(med_theirs)
    assert med_ours == pytest.approx(med_theirs, rel=0.01), (med_ours, med_theirs)


# ------------------------------------------------------------------------------ the cost
class _Counted(nn.Module):
    """An affine model that counts forward calls and backward passes through its output."""

    def __init__(self, k: int = 4, d: int = 12, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 8), nn.BatchNorm1d(8), nn.Dropout(0.3),
                                 nn.Linear(8, k))
        self.calls = self.backwards = 0
        self.fail_at = fail_at

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        out: Tensor = self.net(x)
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad: Tensor) -> None:
        self.backwards += 1


@pytest.mark.parametrize(("targeted", "per_step"), [(True, 1), (False, 4)])
def test_passes_per_step(targeted: bool, per_step: int) -> None:
    """One forward and backward pass for ``g`` (FAB-T; ``K`` backward passes untargeted) and
    one forward pass for the success of the new iterate, per step; plus the clean pass."""
    model = _Counted().eval()
    x = torch.rand(10, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    model.calls = 0
    fab(model, x, y, eps=0.0, steps=5, n_targets=2, targeted=targeted)
    runs = 2 if targeted else 1
    assert model.calls == 1 + runs * 5 * 2
    assert model.backwards == runs * 5 * per_step


# ------------------------------------------------------------------------------ bad input
def _data(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"), ({"eps": math.nan}, "eps"), ({"eps": math.inf}, "eps"),
        ({"steps": 0}, "steps"), ({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"),
        ({"n_targets": 0}, "n_targets"), ({"restarts": 0}, "restarts"),
        ({"norm": "l1"}, "norm"), ({"alpha_max": 1.5}, "alpha_max"),
        ({"alpha_max": -0.1}, "alpha_max"), ({"eta": 0.9}, "eta"), ({"eta": math.nan}, "eta"),
        ({"beta": 0.0}, "beta"), ({"beta": 1.1}, "beta"), ({"targeted": "yes"}, "targeted"),
        ({"on_masking": "loud"}, "on_masking"), ({"generator": 0}, "generator"),
        ({"bounds": (1.0, 0.0)}, "bounds"),
    ],
)
def test_bad_hyper_parameters_are_rejected_before_any_forward_pass(
    kwargs: dict[str, object], match: str
) -> None:
    model = _Counted()
    x, y = _data()
    call = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        fab(model, x, y, **call)  # type: ignore[arg-type]
    if "eps" not in kwargs:
        with pytest.raises(ValueError, match=match):
            fab_distances(model, x, y, **kwargs)  # type: ignore[arg-type]
    assert model.calls == 0


def test_eps_of_fab_distances_is_checked() -> None:
    model = _Counted()
    x, y = _data()
    with pytest.raises(ValueError, match="eps"):
        fab_distances(model, x, y, eps=-1.0)
    assert model.calls == 0


def test_class_count_is_checked_on_the_clean_logits() -> None:
    """``n_targets ≤ K − 1`` and ``K ≥ 2`` need ``K``: checked on the clean forward pass, before
    any gradient (one forward call, no backward pass)."""
    x, y = _data()
    for n_targets in (4, 9):
        model = _Counted(k=4).eval()
        with pytest.raises(ValueError, match="n_targets must be at most K − 1 = 3"):
            fab(model, x, y, eps=0.1, n_targets=n_targets)
        assert model.calls == 1 and model.backwards == 0
    fab(_Counted(k=4).eval(), x, y, eps=0.1, steps=2, n_targets=9, targeted=False)  # ignored
    with pytest.raises(ValueError, match="at least 2 classes"):
        fab(_Counted(k=1).eval(), x, torch.zeros_like(y), eps=0.1, n_targets=1)
    with pytest.raises(ValueError, match="labels must lie in"):
        fab(_Counted(k=4).eval(), x, y + 4, eps=0.1, n_targets=3)


# ------------------------------------------------------------- the model, x and y unchanged
def _snapshot(model: nn.Module) -> tuple[dict[str, bool], dict[str, Tensor], dict[str, Tensor]]:
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return modes, state, grads


@pytest.mark.parametrize("fail_at", [None, 1, 2, 7])
@pytest.mark.parametrize("targeted", [True, False])
def test_model_x_and_y_are_left_unchanged(fail_at: int | None, targeted: bool) -> None:
    model = _Counted().train()
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)
    with torch.no_grad():
        model.net[1].running_mean.uniform_(-0.1, 0.1)
        x, _ = _data()
        y = model.eval()(x).argmax(1)  # every point is attacked (the attack runs in eval mode)
    model.train()
    model.fail_at, model.calls = fail_at, 0
    x_before, y_before = x.clone(), y.clone()
    before = _snapshot(model)
    if fail_at is None:
        fab(model, x, y, eps=0.2, steps=3, n_targets=2, targeted=targeted, restarts=2,
            on_masking="ignore")
    else:
        with pytest.raises(RuntimeError, match="boom"):
            fab(model, x, y, eps=0.2, steps=3, n_targets=2, targeted=targeted)
    after = _snapshot(model)
    assert after[0] == before[0]
    for k, v in before[1].items():
        assert torch.equal(after[1][k], v), k
    assert after[2].keys() == before[2].keys()
    for k, v in before[2].items():
        assert torch.equal(after[2][k], v), k
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


def test_empty_batch_and_float64() -> None:
    model, x, y = _linear()
    out = fab(model, x[:0], y[:0], eps=0.1, bounds=WIDE)
    assert out.shape == x[:0].shape
    best, dist = fab_distances(model, x[:0], y[:0], bounds=WIDE)
    assert best.shape == x[:0].shape and dist.shape == (0,)
    best, dist = fab_distances(model, x, y, steps=3, n_targets=1, bounds=WIDE)
    assert best.dtype == dist.dtype == torch.float64


# ------------------------------------------------------------------------ gradient masking
class _Constant(nn.Module):
    """Logits that do not change with the input (exactly zero input gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([2.0, 0.0, -1.0, -2.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x[:, :1]


@pytest.mark.parametrize("targeted", [True, False])
def test_gradient_masking_is_reported(targeted: bool) -> None:
    x, _ = _data()
    y = torch.zeros(x.shape[0], dtype=torch.long)
    with pytest.warns(GradientMaskingWarning, match="fab"):
        out = fab(_Constant(), x, y, eps=0.1, steps=3, n_targets=2, targeted=targeted)
    assert torch.equal(out, x)
    with pytest.raises(GradientMaskingError):
        fab(_Constant(), x, y, eps=0.1, steps=3, n_targets=2, on_masking="raise")
    with pytest.raises(GradientMaskingError):
        fab_distances(_Constant(), x, y, steps=3, n_targets=2, on_masking="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fab(_Constant(), x, y, eps=0.1, steps=3, n_targets=2, on_masking="ignore")
        model, xl, yl = _linear()  # a healthy model does not warn
        fab(model, xl, yl, eps=0.1, steps=3, n_targets=2, bounds=WIDE)


def test_a_model_detached_from_its_input_is_an_error() -> None:
    class NoGrad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 4)

        def forward(self, x: Tensor) -> Tensor:
            with torch.no_grad():
                return self.fc(x)

    model = NoGrad()
    x, _ = _data()
    y = model(x).argmax(1)
    for targeted in (True, False):
        with pytest.raises(ValueError, match="autograd"):
            fab(model, x, y, eps=0.1, steps=2, n_targets=2, targeted=targeted)


# --------------------------------------------------------------------------------- devices
def test_same_result_on_every_device(device: torch.device) -> None:
    model, x, y = _linear(n=20, seed=4)
    kwargs = {"eps": 0.05, "norm": "l2", "steps": 10, "n_targets": 2, "restarts": 2,
              "bounds": (0.0, 1.0)}
    ref = fab(model, x, y, generator=torch.Generator().manual_seed(0), **kwargs)
    out = fab(model.to(device), x.to(device), y.to(device),
              generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.device.type == device.type
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-9)
