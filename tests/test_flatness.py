"""Tests of advbook.flatness against quadratic losses with known Hessians and a full Hessian."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbook.flatness import (
    direction_between,
    epsilon_sharpness,
    expected_loss_increase,
    filter_normalized_direction,
    hessian_trace,
    hessian_vector_product,
    loss_landscape_1d,
    loss_landscape_2d,
    top_hessian_eigenvalue,
)
from advbook.train import evaluate

DTYPE = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


class Quadratic(nn.Module):
    """A "model" whose output for every sample is the loss ½θᵀAθ (use ``mean_loss`` as loss_fn)."""

    def __init__(self, a: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.a @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def _spd(eigenvalues: list[float], seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(
            len(eigenvalues),
            len(eigenvalues),
            dtype=DTYPE,
            generator=torch.Generator().manual_seed(seed),
        )
    )
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=DTYPE)) @ q.T


EIGS = [5.0, 2.0, 1.0, 0.5, 0.1]
A = _spd(EIGS, seed=0)
THETA = torch.tensor([0.3, -1.0, 0.5, 2.0, -0.2], dtype=DTYPE)
X_DUMMY, Y_DUMMY = torch.zeros(10, 1, dtype=DTYPE), torch.zeros(10, dtype=DTYPE)


def quad(a: torch.Tensor = A, theta: torch.Tensor = THETA) -> Quadratic:
    return Quadratic(a, theta)


def q_value(a: torch.Tensor, theta: torch.Tensor) -> float:
    return float(0.5 * theta @ a @ theta)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- a tiny real network


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small trained tanh net (31 parameters), its data and its full Hessian (independent)."""
    torch.manual_seed(0)
    model = TinyNet().double()
    x = torch.randn(30, 3, dtype=DTYPE, generator=gen(1))
    y = torch.randint(0, 3, (30,), generator=gen(2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of_flat(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, [math.prod(s) for s in shapes])
        params = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss_of_flat, flat0)
    return model, x, y, hessian


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in d.values()])


def _unflat(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, p in model.named_parameters():
        out[n] = flat[i : i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


# ------------------------------------------------------------------------ Hessian-vector products


def test_hvp_on_quadratic_is_a_times_v() -> None:
    v = torch.randn(5, dtype=DTYPE, generator=gen())
    hv = hessian_vector_product(quad(), mean_loss, X_DUMMY, Y_DUMMY, {"theta": v}, batch_size=3)
    torch.testing.assert_close(hv["theta"], A @ v)


def test_hvp_on_least_squares_with_uneven_chunks() -> None:
    """L(θ) = ½·mean (xᵢᵀθ − yᵢ)² has H = XᵀX/N; chunks of 7 over N = 30 must combine exactly."""
    x = torch.randn(30, 4, dtype=DTYPE, generator=gen(3))
    y = torch.randn(30, 1, dtype=DTYPE, generator=gen(4))
    model = nn.Linear(4, 1, bias=False).double()
    v = {"weight": torch.randn(1, 4, dtype=DTYPE, generator=gen(5))}

    def half_mse(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * F.mse_loss(out, t)

    h = x.T @ x / 30
    for batch_size in (7, None):
        hv = hessian_vector_product(model, half_mse, x, y, v, batch_size=batch_size)
        torch.testing.assert_close(hv["weight"], v["weight"] @ h)
    eig = top_hessian_eigenvalue(
        model, half_mse, x, y, tol=0.0, iters=200, batch_size=7, generator=gen()
    )
    assert eig.eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-8)
    tr = hessian_trace(model, half_mse, x, y, n_probes=300, batch_size=7, generator=gen())
    assert abs(tr.trace - float(h.trace())) < 4 * tr.stderr + 1e-9


def test_hvp_matches_full_hessian_of_a_network(tiny) -> None:
    model, x, y, hessian = tiny
    v = _unflat(model, torch.randn(hessian.shape[0], dtype=DTYPE, generator=gen(6)))
    hv = hessian_vector_product(model, F.cross_entropy, x, y, v, batch_size=8)
    torch.testing.assert_close(_flat(hv), hessian @ _flat(v))


# --------------------------------------------------------------------------- eigenvalue and trace


def test_power_iteration_returns_top_eigenvalue_of_quadratic() -> None:
    res = top_hessian_eigenvalue(
        quad(), mean_loss, X_DUMMY, Y_DUMMY, iters=200, tol=1e-12, generator=gen()
    )
    assert res.converged
    assert res.eigenvalue == pytest.approx(EIGS[0], rel=1e-8)
    v = res.eigenvector["theta"]
    assert float(v.norm()) == pytest.approx(1.0)
    top = torch.linalg.eigh(A).eigenvectors[:, -1]
    assert abs(float(v @ top)) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(A @ v, EIGS[0] * v, atol=1e-6, rtol=0)


def test_power_iteration_matches_full_hessian_of_a_network(tiny) -> None:
    model, x, y, hessian = tiny
    eigs = torch.linalg.eigvalsh(hessian)
    dominant = eigs[eigs.abs().argmax()]
    res = top_hessian_eigenvalue(
        model, F.cross_entropy, x, y, iters=500, tol=1e-12, generator=gen()
    )
    assert res.eigenvalue == pytest.approx(float(dominant), rel=1e-5)


def test_hutchinson_returns_trace_of_quadratic() -> None:
    est = hessian_trace(quad(), mean_loss, X_DUMMY, Y_DUMMY, n_probes=2000, generator=gen())
    assert est.n_probes == 2000 and est.stderr > 0
    assert abs(est.trace - sum(EIGS)) < 4 * est.stderr
    assert abs(est.trace - sum(EIGS)) < 0.1
    # For a diagonal Hessian every Rademacher probe is exact: zᵀDz = Σ d_i z_i² = tr D.
    diag = torch.diag(torch.tensor(EIGS, dtype=DTYPE))
    exact = hessian_trace(quad(diag), mean_loss, X_DUMMY, Y_DUMMY, n_probes=3, generator=gen())
    assert exact.trace == pytest.approx(sum(EIGS), rel=1e-12) and exact.stderr < 1e-12


def test_hutchinson_matches_full_hessian_of_a_network(tiny) -> None:
    model, x, y, hessian = tiny
    est = hessian_trace(model, F.cross_entropy, x, y, n_probes=400, generator=gen())
    assert abs(est.trace - float(hessian.trace())) < 4 * est.stderr


# --------------------------------------------------------------------------- sharpness


def test_box_sharpness_on_diagonal_quadratic_is_closed_form() -> None:
    a = torch.tensor(EIGS, dtype=DTYPE)
    eps = 0.05
    # At θ = 0 every vertex of the box |δ_i| <= ε is a global maximum: ½ε²·tr A.
    res = epsilon_sharpness(
        quad(torch.diag(a), torch.zeros(5, dtype=DTYPE)),
        mean_loss,
        X_DUMMY,
        Y_DUMMY,
        eps=eps,
        generator=gen(),
    )
    assert res.loss == 0.0
    assert res.max_loss == pytest.approx(0.5 * eps**2 * float(a.sum()), rel=1e-10)
    assert res.sharpness == pytest.approx(100 * res.max_loss)
    # Away from 0 the maximiser moves every θ_i outwards by b_i = ε(|θ_i| + 1).
    res = epsilon_sharpness(
        quad(torch.diag(a)), mean_loss, X_DUMMY, Y_DUMMY, eps=eps, random_start=False
    )
    b = eps * (THETA.abs() + 1)
    expected_max = float(0.5 * (a * (THETA.abs() + b) ** 2).sum())
    loss = q_value(torch.diag(a), THETA)
    assert res.loss == pytest.approx(loss)
    assert res.max_loss == pytest.approx(expected_max, rel=1e-10)
    assert res.sharpness == pytest.approx(100 * (expected_max - loss) / (1 + loss), rel=1e-10)


def test_box_sharpness_is_bounded_by_the_best_vertex() -> None:
    """L is convex, so its maximum over the box is at a vertex: enumerate all 2⁵ of them."""
    eps = 0.1
    b = eps * (THETA.abs() + 1)
    vertices = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=5)), dtype=DTYPE)
    true_max = max(q_value(A, THETA + s * b) for s in vertices)
    res = epsilon_sharpness(quad(), mean_loss, X_DUMMY, Y_DUMMY, eps=eps, generator=gen())
    assert q_value(A, THETA) < res.max_loss <= true_max + 1e-12
    assert res.max_loss > q_value(A, THETA) + 0.5 * (true_max - q_value(A, THETA))


def test_l2_sharpness_at_minimum_is_half_eps_squared_lambda_max() -> None:
    eps = 0.2
    res = epsilon_sharpness(
        quad(A, torch.zeros(5, dtype=DTYPE)),
        mean_loss,
        X_DUMMY,
        Y_DUMMY,
        eps=eps,
        norm="l2",
        steps=100,
        step_size=1.0,
        generator=gen(),
    )
    assert res.max_loss == pytest.approx(0.5 * eps**2 * EIGS[0], rel=1e-6)


def test_weight_noise_increase_on_quadratic_is_half_eta_trace() -> None:
    eta = 0.01
    expected = 0.5 * eta * sum(EIGS)
    for antithetic in (True, False):
        est = expected_loss_increase(
            quad(),
            mean_loss,
            X_DUMMY,
            Y_DUMMY,
            eta=eta,
            n_samples=1000,
            antithetic=antithetic,
            generator=gen(),
        )
        assert abs(est.increase - expected) < 4 * est.stderr
        assert est.loss == pytest.approx(q_value(A, THETA))
        assert est.perturbed_loss == pytest.approx(est.loss + est.increase)
    zero = expected_loss_increase(quad(), mean_loss, X_DUMMY, Y_DUMMY, eta=0.0, n_samples=3)
    assert zero.increase == 0.0


def test_weight_noise_increase_is_half_eta_trace_to_second_order(tiny) -> None:
    model, x, y, hessian = tiny
    eta = 1e-4
    est = expected_loss_increase(
        model, F.cross_entropy, x, y, eta=eta, n_samples=400, generator=gen()
    )
    expected = 0.5 * eta * float(hessian.trace())
    assert abs(est.increase - expected) < 4 * est.stderr + 0.02 * abs(expected)


# --------------------------------------------------------------------------- landscapes


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture(scope="module")
def conv_data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(40, 1, 6, 6, generator=gen(8)), torch.randint(0, 3, (40,), generator=gen(9))


def _conv_net(seed: int) -> ConvNet:
    torch.manual_seed(seed)
    net = ConvNet()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net


def test_filter_normalized_direction() -> None:
    net = _conv_net(0)
    d = filter_normalized_direction(net, generator=gen(1))
    assert set(d) == {n for n, _ in net.named_parameters()}
    for n, p in net.named_parameters():
        if p.ndim > 1:
            torch.testing.assert_close(
                d[n].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1)
            )
            assert not torch.allclose(d[n], p.detach())
        else:
            assert torch.all(d[n] == 0)
    copied = filter_normalized_direction(net, generator=gen(1), one_d="copy")
    for n, p in net.named_parameters():
        if p.ndim == 1:
            assert torch.equal(copied[n], p.detach())
        else:
            assert torch.equal(copied[n], d[n])  # same generator seed, same draws
    other = filter_normalized_direction(net, generator=gen(2))
    assert not torch.equal(other["conv.weight"], d["conv.weight"])


def test_landscapes_on_quadratic_are_closed_form() -> None:
    d1 = torch.randn(5, dtype=DTYPE, generator=gen(10))
    d2 = torch.randn(5, dtype=DTYPE, generator=gen(11))
    alphas, betas = [-1.0, -0.25, 0.0, 0.5, 1.0], [-0.5, 0.0, 0.75]
    df = loss_landscape_1d(
        quad(), mean_loss, X_DUMMY, Y_DUMMY, direction={"theta": d1}, alphas=torch.tensor(alphas)
    )
    assert list(df.columns) == ["alpha", "loss"]
    np.testing.assert_allclose(df["alpha"], alphas)
    np.testing.assert_allclose(df["loss"], [q_value(A, THETA + a * d1) for a in alphas], rtol=1e-12)
    land = loss_landscape_2d(
        quad(),
        mean_loss,
        X_DUMMY,
        Y_DUMMY,
        alphas=alphas,
        betas=betas,
        directions=({"theta": d1}, {"theta": d2}),
    )
    assert land.loss.shape == (len(betas), len(alphas))
    expected = [[q_value(A, THETA + a * d1 + b * d2) for a in alphas] for b in betas]
    np.testing.assert_allclose(land.loss, expected, rtol=1e-12)
    frame = land.to_frame()
    row = frame[(frame.alpha == 0.5) & (frame.beta == 0.75)]
    assert float(row.loss.iloc[0]) == pytest.approx(q_value(A, THETA + 0.5 * d1 + 0.75 * d2))


def test_landscape_center_and_interpolation_match_evaluate(conv_data) -> None:
    x, y = conv_data
    net_a, net_b = _conv_net(0), _conv_net(1)
    for name, buf in net_a.named_buffers():  # only parameters are interpolated, not statistics
        net_b.get_buffer(name).copy_(buf)
    df = loss_landscape_1d(
        net_a, F.cross_entropy, x, y, alphas=[0.0, 0.5], batch_size=16, generator=gen()
    )
    assert df["loss"].iloc[0] == pytest.approx(evaluate(net_a, x, y)["loss"], rel=1e-5)
    assert df["loss"].iloc[1] != pytest.approx(df["loss"].iloc[0])
    line = loss_landscape_1d(
        net_a, F.cross_entropy, x, y, direction=direction_between(net_a, net_b), alphas=[0.0, 1.0]
    )
    assert line["loss"].iloc[1] == pytest.approx(evaluate(net_b, x, y)["loss"], rel=1e-5)

    # any batch-mean metric works, e.g. the accuracy
    def accuracy(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == t).float().mean()

    land = loss_landscape_2d(net_a, accuracy, x, y, alphas=[0.0], betas=[0.0], generator=gen())
    assert land.loss[0, 0] == pytest.approx(evaluate(net_a, x, y)["accuracy"])


# ---------------------------------------------------------------------- the model is never changed


def _measures(x: torch.Tensor, y: torch.Tensor) -> list[Callable[[nn.Module, Callable], object]]:
    def kw() -> dict:
        return {"batch_size": 16, "generator": gen()}  # a fresh, identically seeded generator

    return [
        lambda m, f: hessian_vector_product(
            m, f, x, y, {n: torch.ones_like(p) for n, p in m.named_parameters()}, batch_size=16
        ),
        lambda m, f: top_hessian_eigenvalue(m, f, x, y, iters=3, **kw()),
        lambda m, f: hessian_trace(m, f, x, y, n_probes=2, **kw()),
        lambda m, f: epsilon_sharpness(m, f, x, y, steps=3, **kw()),
        lambda m, f: epsilon_sharpness(m, f, x, y, steps=3, norm="l2", **kw()),
        lambda m, f: expected_loss_increase(m, f, x, y, eta=1e-3, n_samples=2, **kw()),
        lambda m, f: loss_landscape_1d(m, f, x, y, alphas=[0.0, 1.0], **kw()),
        lambda m, f: loss_landscape_2d(m, f, x, y, alphas=[0.0, 1.0], betas=[1.0], **kw()),
    ]


def _assert_same_result(a: object, b: object) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, dict):
        for k in a:
            torch.testing.assert_close(a[k], b[k])
    elif isinstance(a, tuple):
        assert type(a) is type(b)
        for u, v in zip(a, b, strict=True):
            _assert_same_result(u, v)
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b)
    else:
        assert a == pytest.approx(b)


@pytest.mark.parametrize("which", range(8))
def test_measures_never_change_the_model(conv_data, which: int) -> None:
    x, y = conv_data
    net = _conv_net(0)
    net.train()
    net.drop.eval()  # mixed modes must come back exactly
    before = copy.deepcopy(net.state_dict())
    modes = [m.training for m in net.modules()]
    measure = _measures(x, y)[which]
    result_train_mode = measure(net, F.cross_entropy)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())
    assert [m.training for m in net.modules()] == modes
    # the measures use eval mode, so the model's own mode does not matter
    net.eval()
    result_eval_mode = measure(net, F.cross_entropy)
    _assert_same_result(result_train_mode, result_eval_mode)

    calls = 0

    def failing_loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return F.cross_entropy(out, t)

    net.train()
    net.drop.eval()
    with pytest.raises(RuntimeError, match="boom"):
        measure(net, failing_loss)
    assert [m.training for m in net.modules()] == modes
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_random_measures_are_reproducible_from_the_generator(conv_data) -> None:
    x, y = conv_data
    net = _conv_net(0)
    a = hessian_trace(net, F.cross_entropy, x, y, n_probes=3, generator=gen(4))
    b = hessian_trace(net, F.cross_entropy, x, y, n_probes=3, generator=gen(4))
    c = hessian_trace(net, F.cross_entropy, x, y, n_probes=3, generator=gen(5))
    assert a == b and a != c


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: hessian_vector_product(quad(), mean_loss, X_DUMMY, Y_DUMMY, {"x": THETA}),
            ValueError,
            "missing",
        ),
        (
            lambda: hessian_vector_product(
                quad(), mean_loss, X_DUMMY, Y_DUMMY, {"theta": THETA[:3]}
            ),
            ValueError,
            "shape",
        ),
        (
            lambda: hessian_vector_product(quad(), mean_loss, X_DUMMY, Y_DUMMY, [THETA]),
            TypeError,
            "dict",
        ),
        (
            lambda: top_hessian_eigenvalue(quad(), lambda o, t: o, X_DUMMY, Y_DUMMY),
            ValueError,
            "0-dim",
        ),
        (
            lambda: hessian_trace(quad(), mean_loss, X_DUMMY, Y_DUMMY[:3]),
            ValueError,
            "same number of samples",
        ),
        (
            lambda: hessian_trace(quad(), mean_loss, X_DUMMY, Y_DUMMY, batch_size=0),
            ValueError,
            "batch_size",
        ),
        (
            lambda: hessian_trace(quad(), mean_loss, X_DUMMY, Y_DUMMY, n_probes=0),
            ValueError,
            "n_probes",
        ),
        (
            lambda: hessian_trace(quad(), mean_loss, X_DUMMY, Y_DUMMY, generator=1),
            TypeError,
            "generator",
        ),
        (lambda: hessian_trace(quad(), mean_loss, X_DUMMY[:0], Y_DUMMY[:0]), ValueError, "empty"),
        (
            lambda: hessian_trace(quad().requires_grad_(False), mean_loss, X_DUMMY, Y_DUMMY),
            ValueError,
            "no trainable parameters",
        ),
        (lambda: hessian_trace("model", mean_loss, X_DUMMY, Y_DUMMY), TypeError, "nn.Module"),
        (
            lambda: expected_loss_increase(quad(), mean_loss, X_DUMMY, Y_DUMMY, eta=-1.0),
            ValueError,
            "eta",
        ),
        (
            lambda: epsilon_sharpness(quad(), mean_loss, X_DUMMY, Y_DUMMY, norm="linf"),
            ValueError,
            "norm",
        ),
        (
            lambda: epsilon_sharpness(quad(), mean_loss, X_DUMMY, Y_DUMMY, eps=0.0),
            ValueError,
            "eps",
        ),
        (
            lambda: loss_landscape_1d(quad(), mean_loss, X_DUMMY, Y_DUMMY, alphas=[]),
            ValueError,
            "alphas",
        ),
        (
            lambda: loss_landscape_2d(quad(), mean_loss, X_DUMMY, Y_DUMMY, directions=({},)),
            ValueError,
            "pair",
        ),
        (lambda: filter_normalized_direction(quad(), one_d="keep"), ValueError, "one_d"),
        (lambda: direction_between(quad(), nn.Linear(2, 2)), ValueError, "missing"),
    ],
)
def test_bad_input_raises_clear_errors(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- devices


def test_on_device(device: torch.device, tiny) -> None:
    model, x, y, hessian = tiny
    model = copy.deepcopy(model).to(device)
    v = _unflat(model, torch.randn(hessian.shape[0], dtype=DTYPE, generator=gen(6)))
    hv = hessian_vector_product(model, F.cross_entropy, x, y, v)  # data stays on the CPU
    assert all(t.device.type == device.type for t in hv.values())
    torch.testing.assert_close(_flat(hv).cpu(), hessian @ _flat(v).cpu())
    res = top_hessian_eigenvalue(model, F.cross_entropy, x, y, iters=5, generator=gen())
    assert res.eigenvector["fc1.weight"].device.type == device.type
    d = filter_normalized_direction(model, generator=gen())
    assert d["fc1.weight"].device.type == device.type
    assert math.isfinite(
        epsilon_sharpness(model, F.cross_entropy, x, y, steps=2, generator=gen()).sharpness
    )
