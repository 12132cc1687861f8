"""The Square attack: its schedule and η pattern against the reference code, closed forms on
linear models, the query budget, score-based invariances, bad input, and torchattacks.Square as
an oracle on a trained MNIST model."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from advbook.attacks.square import _eta, p_schedule, square, square_with_queries
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

NORMS = ("linf", "l2")
Linear = tuple[Tensor, float]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the reference, written out
def _reference_p_selection(p_init: float, it: int, n_queries: int) -> float:
    """``SquareAttack.p_selection`` of fra31/auto-attack (``resc_schedule=True``)."""
    it = int(it / n_queries * 10000)
    if 10 < it <= 50:
        return p_init / 2
    if 50 < it <= 200:
        return p_init / 4
    if 200 < it <= 500:
        return p_init / 8
    if 500 < it <= 1000:
        return p_init / 16
    if 1000 < it <= 2000:
        return p_init / 32
    if 2000 < it <= 4000:
        return p_init / 64
    if 4000 < it <= 6000:
        return p_init / 128
    if 6000 < it <= 8000:
        return p_init / 256
    if 8000 < it:
        return p_init / 512
    return p_init


def _reference_eta(s: int) -> Tensor:
    """``SquareAttack.eta`` (without its random transposition), loops as in the reference."""

    def rectangles(x: int, y: int) -> Tensor:
        delta = torch.zeros(x, y, dtype=torch.float64)
        x_c, y_c = x // 2 + 1, y // 2 + 1
        corner = [x_c - 1, y_c - 1]
        for counter in range(max(x_c, y_c)):
            delta[
                max(corner[0], 0):min(corner[0] + (2 * counter + 1), x),
                max(0, corner[1]):min(corner[1] + (2 * counter + 1), y),
            ] += 1.0 / (counter + 1) ** 2
            corner[0] -= 1
            corner[1] -= 1
        return delta / delta.square().sum().sqrt()

    delta = torch.zeros(s, s, dtype=torch.float64)
    if s // 2:
        delta[: s // 2] = rectangles(s // 2, s)
    delta[s // 2:] = -rectangles(s - s // 2, s)
    return delta / delta.square().sum().sqrt()


@pytest.mark.parametrize("p_init", [0.8, 0.05, 1.0])
def test_p_schedule_matches_the_reference_formula(p_init: float) -> None:
    for queries in (1, 37, 1000, 5000, 10000):
        for it in range(queries):
            assert p_schedule(p_init, it, queries) == _reference_p_selection(p_init, it, queries)
    assert p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 500, 1000) == 0.8 / 128  # rescaled to iteration 5000 of 10000
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512


@pytest.mark.parametrize("args", [(0.0, 1, 10), (1.5, 1, 10), (0.8, -1, 10), (0.8, 1, 0)])
def test_p_schedule_rejects_bad_arguments(args: tuple[float, int, int]) -> None:
    with pytest.raises(ValueError, match=r"p_init|iteration|queries"):
        p_schedule(*args)


def test_eta_matches_the_reference_loops() -> None:
    for s in range(1, 16):
        torch.testing.assert_close(
            _eta(s, torch.float64, torch.device("cpu")), _reference_eta(s), atol=1e-12, rtol=0
        )


# --------------------------------------------------------------- linear models, closed forms
def _linear_model(a: Tensor, b: float, scale: float = 1.0) -> nn.Module:
    """Two classes on 1×8×8 inputs with ``z₀ − z₁ = a·x + b`` (times ``scale``), float64."""
    lin = nn.Linear(a.numel(), 2, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(scale * torch.stack([a, -a]) / 2)
        lin.bias.copy_(scale * torch.tensor([b, -b], dtype=torch.float64) / 2)
    return nn.Sequential(nn.Flatten(), lin)


@pytest.fixture(scope="module")
def linear() -> Linear:
    a = torch.randn(64, generator=_gen(0), dtype=torch.float64)
    return a, -0.5 * float(a.sum())  # z₀ − z₁ = a·(x − ½): both classes fill the box


def _margin(x: Tensor, linear: Linear) -> Tensor:
    a, b = linear
    return x.flatten(1) @ a + b


def _labels(x: Tensor, linear: Linear) -> Tensor:
    """The model's own predictions: every clean point is classified correctly."""
    return (_margin(x, linear) < 0).long()


def _norms(v: Tensor, norm: str) -> Tensor:
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _check_in_ball(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert (_norms(x_adv - x, norm) <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def _linf_optimum(x: Tensor, y: Tensor, eps: float, linear: Linear) -> Tensor:
    """``min L = s·(a·x* + b)`` over the L∞ ball and the box: ``x* = clip(x − ε·s·sign(a))``,
    ``s = ±1`` the sign of the correct class's margin; the model can be fooled iff it is < 0."""
    a, _ = linear
    s = (1 - 2 * y).to(x.dtype)
    x_star = (x - eps * s[:, None, None, None] * a.sign().view(1, 1, 8, 8)).clamp(0, 1)
    return s * _margin(x_star, linear)


def _fooled(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def test_linf_fools_exactly_where_the_closed_form_says(
    linear: Linear, device: torch.device
) -> None:
    eps = 0.05
    x = torch.rand(96, 1, 8, 8, generator=_gen(1), dtype=torch.float64)
    y = _labels(x, linear)
    optimum = _linf_optimum(x, y, eps, linear)
    possible = optimum < 0
    assert 10 <= int(possible.sum()) <= 86 and (optimum.abs() > 1e-6).all()
    model = _linear_model(*linear).to(device)
    result = square_with_queries(
        model, x.to(device), y.to(device), eps=eps, queries=2000, generator=_gen(2)
    )
    x_adv = result.x_adv.cpu()
    _check_in_ball(x_adv, x, eps, "linf")
    fooled = _fooled(model.cpu(), x_adv, y)
    assert torch.equal(fooled, possible)
    assert torch.equal(result.fooled.cpu(), fooled)
    assert (result.queries.cpu()[~possible] == 2000).all()


def test_l2_fools_where_the_closed_form_says_and_never_where_impossible(
    linear: Linear, device: torch.device
) -> None:
    """Inside ``[0.3, 0.7]`` with ``ε ≤ 0.3`` the box never binds, so the best the L2 ball can do
    is ``s·(a·x + b) − ε‖a‖₂`` (δ = −ε·s·a/‖a‖). Random search only approaches that optimum: it
    must fool every point that a perturbation of norm ``0.65·ε`` (in the best direction) fools,
    get at least 65 % of the optimal decrease of the loss everywhere, and fool nothing that the
    whole ball cannot."""
    a, _ = linear
    eps = 0.1
    x = 0.3 + 0.4 * torch.rand(96, 1, 8, 8, generator=_gen(3), dtype=torch.float64)
    y = _labels(x, linear)
    s = (1 - 2 * y).to(x.dtype)
    clean_loss, best_decrease = s * _margin(x, linear), eps * float(a.norm())
    assert 10 <= int((clean_loss < 0.65 * best_decrease).sum())
    assert 10 <= int((clean_loss > best_decrease).sum())
    model = _linear_model(*linear).to(device)
    x_adv = square(
        model, x.to(device), y.to(device), eps=eps, norm="l2", queries=2000, generator=_gen(4)
    ).cpu()
    _check_in_ball(x_adv, x, eps, "l2")
    fooled = _fooled(model.cpu(), x_adv, y)
    assert fooled[clean_loss < 0.65 * best_decrease].all()
    assert not fooled[clean_loss >= best_decrease].any()
    decrease = clean_loss - s * _margin(x_adv, linear)
    assert (decrease[~fooled] >= 0.65 * best_decrease).all()


class _Rounding(nn.Module):
    """``inner(round(x/step)·step)`` with the rounding done in NumPy: no autograd path at all,
    and the forward refuses to run with gradients enabled."""

    def __init__(self, inner: nn.Module, step: float) -> None:
        super().__init__()
        self.inner = inner
        self.step = step

    def forward(self, x: Tensor) -> Tensor:
        assert not torch.is_grad_enabled(), "a score-based attack needs no gradients"
        quantised = np.round(x.detach().cpu().numpy() / self.step) * self.step
        return self.inner(torch.from_numpy(quantised).to(x))


def test_linf_on_a_rounding_model_is_the_linear_attack(linear: Linear) -> None:
    """On the grid ``{0, 1/16, …, 1}`` with ``ε = 1/16`` every L∞ iterate is a grid point, which
    rounding to sixteenths leaves unchanged: the attack must run exactly as on the linear model
    itself, and fool exactly where the closed form says."""
    eps = 1 / 16
    x = torch.randint(0, 17, (64, 1, 8, 8), generator=_gen(5)).double() / 16
    y = _labels(x, linear)
    rounded = _Rounding(_linear_model(*linear), step=1 / 16)
    result = square_with_queries(rounded, x, y, eps=eps, queries=1000, generator=_gen(6))
    plain = square(_linear_model(*linear), x, y, eps=eps, queries=1000, generator=_gen(6))
    assert torch.equal(result.x_adv, plain)
    possible = _linf_optimum(x, y, eps, linear) < 0
    assert 5 <= int(possible.sum()) <= 59
    assert torch.equal(result.fooled, possible)
    assert torch.equal(result.fooled, _fooled(rounded, result.x_adv, y))


def test_l2_on_a_rounding_model(linear: Linear) -> None:
    """8-bit quantisation moves each pixel by at most 1/512, hence the margin by at most
    ``‖a‖₁/512``: with that slack the L2 closed form of the linear model still decides."""
    a, _ = linear
    eps = 0.1
    x = 0.3 + 0.4 * torch.rand(64, 1, 8, 8, generator=_gen(17), dtype=torch.float64)
    y = _labels(x, linear)
    s = (1 - 2 * y).to(x.dtype)
    clean_loss, best = s * _margin(x, linear), eps * float(a.norm())
    slack = float(a.abs().sum()) / 512
    rounded = _Rounding(_linear_model(*linear), step=1 / 256)
    result = square_with_queries(rounded, x, y, eps=eps, norm="l2", queries=1000,
                                 generator=_gen(18))
    _check_in_ball(result.x_adv, x, eps, "l2")
    assert torch.equal(result.fooled, _fooled(rounded, result.x_adv, y))
    sure = clean_loss < 0.6 * best - slack
    assert int(sure.sum()) >= 10 and result.fooled[sure].all()
    impossible = clean_loss >= best + slack
    assert int(impossible.sum()) >= 10 and not result.fooled[impossible].any()


@pytest.mark.parametrize("norm", NORMS)
def test_scaling_the_logits_changes_nothing(linear: Linear, norm: str) -> None:
    """Only comparisons of margins matter: logits × 2¹⁰ (exact in floating point) give the very
    same run, logits × 1000 the same successes."""
    eps = 0.02 if norm == "linf" else 0.1
    x = 0.3 + 0.4 * torch.rand(48, 1, 8, 8, generator=_gen(7), dtype=torch.float64)
    y = _labels(x, linear)
    runs = [
        square_with_queries(_linear_model(*linear, scale=scale), x, y, eps=eps, norm=norm,
                            queries=500, generator=_gen(8))
        for scale in (1.0, 2.0**10, 1e3)
    ]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert torch.equal(runs[0].queries, runs[1].queries)
    assert 0 < int(runs[0].fooled.sum()) < 48
    assert torch.equal(runs[0].fooled, runs[2].fooled)


@pytest.mark.parametrize("norm", NORMS)
def test_targeted_towards_the_other_class_is_the_untargeted_attack(
    linear: Linear, norm: str
) -> None:
    eps = 0.02 if norm == "linf" else 0.1
    x = 0.3 + 0.4 * torch.rand(32, 1, 8, 8, generator=_gen(9), dtype=torch.float64)
    y = _labels(x, linear)
    model = _linear_model(*linear)
    plain = square_with_queries(model, x, y, eps=eps, norm=norm, queries=300, generator=_gen(1))
    towards = square_with_queries(model, x, 1 - y, eps=eps, norm=norm, queries=300,
                                  generator=_gen(1), targeted=True)
    assert torch.equal(plain.x_adv, towards.x_adv)
    assert torch.equal(plain.fooled, towards.fooled)
    assert 0 < int(plain.fooled.sum()) < 32


# ----------------------------------------------------------------------------- query budget
class _Counting(nn.Module):
    """Records the batch size of every forward call and whether gradients were enabled."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []
        self.grad: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(x.shape[0])
        self.grad.append(torch.is_grad_enabled())
        return self.inner(x)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("budget", [1, 2, 3, 40])
def test_forward_passes_stay_within_the_budget(linear: Linear, norm: str, budget: int) -> None:
    eps = 0.02 if norm == "linf" else 0.1
    x = 0.3 + 0.4 * torch.rand(40, 1, 8, 8, generator=_gen(10), dtype=torch.float64)
    y = _labels(x, linear)
    y[:5] = 1 - y[:5]  # misclassified already: fooled by the first query
    model = _Counting(_linear_model(*linear))
    result = square_with_queries(model, x, y, eps=eps, norm=norm, queries=budget,
                                 generator=_gen(11))
    sizes = model.sizes
    assert 1 <= len(sizes) <= budget and not any(model.grad)
    assert sizes == sorted(sizes, reverse=True)  # only the samples not yet fooled are queried
    for k, size in enumerate(sizes, start=1):  # queries[i] = the calls sample i was part of
        assert size == int((result.queries >= k).sum())
    assert int(result.queries.max()) <= budget
    assert (result.queries[~result.fooled] == budget).all()
    assert torch.equal(result.fooled, _fooled(model.inner, result.x_adv, y))
    assert (result.queries[:5] == 1).all() and torch.equal(result.x_adv[:5], x[:5])
    if budget == 1:
        assert torch.equal(result.x_adv, x)
    _check_in_ball(result.x_adv, x, eps, norm)


def test_a_seeded_generator_repeats_the_attack(linear: Linear) -> None:
    x = torch.rand(16, 1, 8, 8, generator=_gen(12), dtype=torch.float64)
    y = _labels(x, linear)
    model = _linear_model(*linear)
    for norm in NORMS:
        runs = [square(model, x, y, eps=0.05, norm=norm, queries=30, generator=_gen(s))
                for s in (0, 0, 1)]
        assert torch.equal(runs[0], runs[1])
        assert not torch.equal(runs[0], runs[2])


def _small_cnn(channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    )


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 3), (3, 4, 4), (2, 12, 12), (3, 28, 28)])
def test_any_square_image_size_stays_in_the_ball(norm: str, shape: tuple[int, int, int]) -> None:
    """Tiny images (below the reference's 5 × 5 grid), several channels, ``p_init = 1``."""
    x = torch.rand(6, *shape, generator=_gen(13))
    model = _small_cnn(shape[0]).eval()
    y = torch.arange(6) % 3
    eps = 0.1 if norm == "linf" else 0.5
    for p_init in (1.0, 0.3):
        result = square_with_queries(model, x, y, eps=eps, norm=norm, queries=25,
                                     p_init=p_init, generator=_gen(14))
        _check_in_ball(result.x_adv, x, eps, norm)
        assert result.queries.dtype == torch.int64 and result.queries.shape == (6,)
        if norm == "l2":  # the reference keeps the perturbation on the sphere (up to clipping)
            interior = (result.x_adv > 0) & (result.x_adv < 1)
            on_sphere = interior.flatten(1).all(1) & ~result.fooled
            norms = _norms(result.x_adv - x, "l2")[on_sphere]
            torch.testing.assert_close(norms, torch.full_like(norms, eps))


def test_empty_batch() -> None:
    x = torch.rand(0, 1, 8, 8)
    result = square_with_queries(_small_cnn(1), x, torch.zeros(0, dtype=torch.long), eps=0.1)
    assert result.x_adv.shape == x.shape and result.x_adv is not x
    assert result.queries.shape == (0,) and result.fooled.shape == (0,)


# ---------------------------------------------------------------------------- bad input
class _NeverCalled(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("the model ran before the arguments were checked")


BAD_ARGUMENTS: list[tuple[dict[str, object], str]] = [
    ({"eps": -0.1}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"eps": float("inf")}, "eps"),
    ({"eps": None}, "eps"),
    ({"queries": 0}, "queries"),
    ({"queries": -3}, "queries"),
    ({"queries": 2.5}, "queries"),
    ({"p_init": 0.0}, "p_init"),
    ({"p_init": 1.5}, "p_init"),
    ({"p_init": -0.2}, "p_init"),
    ({"p_init": float("nan")}, "p_init"),
    ({"norm": "l1"}, "norm"),
    ({"generator": 0}, "generator"),
    ({"bounds": (0.5, 1.0)}, "bounds"),
]


@pytest.mark.parametrize("attack", [square, square_with_queries])
@pytest.mark.parametrize(("kwargs", "argument"), BAD_ARGUMENTS)
def test_bad_arguments_are_rejected_before_any_forward_pass(
    attack: Callable[..., object], kwargs: dict[str, object], argument: str
) -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    settings: dict[str, object] = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        attack(_NeverCalled(), x, y, **settings)


@pytest.mark.parametrize("shape", [(4, 64), (4, 1, 8), (4, 1, 8, 6), (4, 1, 2, 4, 4)])
def test_images_must_be_square(shape: tuple[int, ...]) -> None:
    x, y = torch.rand(*shape), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with H == W"):
        square(_NeverCalled(), x, y, eps=0.1)


def test_bad_logits_are_reported() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        square(model, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), eps=0.1)


# ------------------------------------------------------------- nothing changed, also on raise
class _Failing(nn.Module):
    """A CNN with BatchNorm and Dropout (left in training mode) whose k-th call raises."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__()
        self.net = _small_cnn(1)
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        out: Tensor = self.net(x)
        return out


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("fail_at", [None, 1, 2, 5])
def test_model_x_and_y_are_left_unchanged(norm: str, fail_at: int | None) -> None:
    model = _Failing(fail_at).train()
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)
    grad = model.net[0].weight.grad
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 8, 8, generator=_gen(15))
    y = torch.arange(8) % 3
    x_saved, y_saved = x.clone(), y.clone()
    if fail_at is None:
        x_adv = square(model, x, y, eps=0.1, norm=norm, queries=20, generator=_gen(16))
        x_adv.add_(1.0)  # the result shares no memory with x
    else:
        with pytest.raises(RuntimeError, match="boom"):
            square(model, x, y, eps=0.1, norm=norm, queries=20, generator=_gen(16))
    assert torch.equal(x, x_saved) and torch.equal(y, y_saved)
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.net[0].weight.grad is grad and model.net[0].bias.grad is None


# ------------------------------------------------------------- oracle: torchattacks.Square
@pytest.fixture(scope="module")
def mnist_mlp() -> tuple[nn.Module, Tensor, Tensor]:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    return model.eval(), ds.x_test[:200], ds.y_test[:200]


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps", "queries"), [("linf", 0.1, 500), ("l2", 1.25, 500)])
def test_robust_accuracy_matches_torchattacks(
    mnist_mlp: tuple[nn.Module, Tensor, Tensor], norm: str, eps: float, queries: int
) -> None:
    """Same budget, ``p_init = 0.8``, one restart, three seeds each: the mean robust accuracy
    is within 2 pp of torchattacks' (which is the reference code of fra31/auto-attack)."""
    ta = pytest.importorskip("torchattacks", minversion="3.5")
    model, x, y = mnist_mlp
    ours, ref = [], []
    for seed in (0, 1, 2):
        x_adv = square(model, x, y, eps=eps, norm=norm, queries=queries, generator=_gen(seed))
        _check_in_ball(x_adv, x, eps, norm)
        ours.append(_accuracy(model, x_adv, y))
        attack = ta.Square(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                           n_queries=queries, n_restarts=1, p_init=0.8, seed=seed)
        ref.append(_accuracy(model, attack(x, y), y))
    acc_ours, acc_ref = statistics.mean(ours), statistics.mean(ref)
    assert 0.1 < acc_ref < _accuracy(model, x, y) - 0.1  # a regime where the comparison bites
    assert abs(acc_ours - acc_ref) <= 0.02, (ours, ref)


def test_eps_zero_costs_one_query(linear: Linear) -> None:
    x = torch.rand(8, 1, 8, 8, generator=_gen(19), dtype=torch.float64)
    y = _labels(x, linear)
    y[0] = 1 - y[0]
    model = _Counting(_linear_model(*linear))
    result = square_with_queries(model, x, y, eps=0.0, norm="l2", queries=100)
    assert model.sizes == [8] and torch.equal(result.x_adv, x)
    assert (result.queries == 1).all() and result.fooled.tolist() == [True] + [False] * 7
