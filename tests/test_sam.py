"""Tests of advbook.sam: the analytic SAM step on a quadratic and independent reference loops."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbook.sam import SAM
from advbook.train import fit

DTYPE = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


class Quadratic(nn.Module):
    """Outputs the loss ½θᵀAθ once per sample (use ``mean_loss``)."""

    def __init__(self, a: torch.Tensor, theta: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.theta @ self.a @ self.theta).expand(x.shape[0])


def mean_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], dtype=DTYPE)
THETA = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
X4, Y4 = torch.zeros(4, 1, dtype=DTYPE), torch.zeros(4, dtype=DTYPE)


def analytic_sam_step(
    theta: torch.Tensor, lr: float, rho: float, adaptive: bool = False
) -> torch.Tensor:
    """θ' = θ − lr·A(θ + ε̂), ε̂ = ρ·Aθ/‖Aθ‖ (SAM) or ρ·T²Aθ/‖TAθ‖ with T = |θ| (ASAM)."""
    g = A @ theta
    if adaptive:
        t = theta.abs()
        e = rho * t * t * g / (t * g).norm()
    else:
        e = rho * g / g.norm()
    return theta - lr * A @ (theta + e)


def _closure(
    model: nn.Module, loss_fn: Callable = mean_loss, x: torch.Tensor = X4, y: torch.Tensor = Y4
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("path", ["closure", "explicit", "objective", "fit"])
def test_sam_on_quadratic_takes_the_analytic_step(path: str, adaptive: bool) -> None:
    lr, rho = 0.1, 0.2
    model = Quadratic(A, THETA)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)
    expected = THETA.clone()
    for _ in range(3):
        expected = analytic_sam_step(expected, lr, rho, adaptive)
    if path == "closure":
        for _ in range(3):
            loss = opt.step(_closure(model))
            assert loss is not None
    elif path == "explicit":
        for _ in range(3):
            mean_loss(model(X4), Y4).backward()
            opt.first_step(zero_grad=True)
            assert opt.perturbed
            mean_loss(model(X4), Y4).backward()
            opt.second_step(zero_grad=True)
            assert not opt.perturbed
    elif path == "objective":
        objective = opt.objective(model, mean_loss)
        for _ in range(3):
            loss, _ = objective(model, X4, Y4)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        history = fit(
            model,
            X4,
            Y4,
            optimizer=opt,
            objective=opt.objective(model, mean_loss),
            epochs=3,
            batch_size=4,
            progress=False,
        )
        assert len(history) == 3
    torch.testing.assert_close(model.theta.detach(), expected)
    assert not opt.perturbed


def test_rho_zero_is_the_base_optimizer() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    ref = copy.deepcopy(net)
    x = torch.randn(16, 3, dtype=DTYPE)
    y = torch.randint(0, 2, (16,))
    sam = SAM(net.parameters(), torch.optim.Adam, rho=0.0, lr=0.01)
    adam = torch.optim.Adam(ref.parameters(), lr=0.01)
    for _ in range(3):
        sam.step(_closure(net, F.cross_entropy, x, y))
        adam.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        adam.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def _manual_sam_gradient(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float
) -> dict[str, torch.Tensor]:
    """∇L(θ + ρ g/‖g‖) computed with functional_call, independently of advbook.sam."""
    params = {n: p.detach().requires_grad_(True) for n, p in net.named_parameters()}
    loss = F.cross_entropy(functional_call(net, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    perturbed = {
        n: (p + rho * g / norm).detach().requires_grad_(True)
        for (n, p), g in zip(params.items(), grads, strict=True)
    }
    loss = F.cross_entropy(functional_call(net, perturbed, (x,)), y)
    return dict(zip(perturbed, torch.autograd.grad(loss, list(perturbed.values())), strict=True))


def test_sam_with_momentum_and_weight_decay_matches_a_reference_loop() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    ref = copy.deepcopy(net)
    x = torch.randn(20, 3, dtype=DTYPE)
    y = torch.randint(0, 3, (20,))
    kwargs = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
    sam = SAM(net.parameters(), torch.optim.SGD, rho=0.1, **kwargs)
    sgd = torch.optim.SGD(ref.parameters(), **kwargs)
    for _ in range(4):
        sam.step(_closure(net, F.cross_entropy, x, y))
        grads = _manual_sam_gradient(ref, x, y, 0.1)
        for n, p in ref.named_parameters():
            p.grad = grads[n]
        sgd.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_fit_with_sam_objective_matches_a_reference_loop() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    ref = copy.deepcopy(net)
    x = torch.randn(24, 4, dtype=DTYPE)
    y = torch.randint(0, 3, (24,))
    sam = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    history = fit(
        net,
        x,
        y,
        optimizer=sam,
        objective=sam.objective(net),
        epochs=2,
        batch_size=10,
        seed=3,
        progress=False,
    )
    assert history["train_acc"].notna().all()
    generator = torch.Generator().manual_seed(3)  # fit's batch order, reproduced
    for _ in range(2):
        perm = torch.randperm(24, generator=generator)
        for i in range(0, 24, 10):
            idx = perm[i : i + 10]
            grads = _manual_sam_gradient(ref, x[idx], y[idx], 0.05)
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    p -= 0.1 * grads[n]
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("freeze", [True, False])
def test_objective_leaves_batchnorm_statistics_to_the_unperturbed_pass(freeze: bool) -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    once = copy.deepcopy(net).train()
    once(x)  # the running statistics after exactly one forward pass at θ
    sam = SAM(net.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    net.train()
    sam.objective(net, freeze_batchnorm_stats=freeze)(net, x, y)
    bn, bn_once = net[1], once[1]
    same = torch.equal(bn.running_mean, bn_once.running_mean) and torch.equal(
        bn.running_var, bn_once.running_var
    )
    assert same is freeze
    assert int(bn.num_batches_tracked) == (1 if freeze else 2)
    assert bn.momentum == 0.1
    sam.restore()


def test_failing_closure_or_objective_restores_the_weights() -> None:
    model = Quadratic(A, THETA)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.3, lr=0.1)
    calls = 0

    def closure() -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        loss = mean_loss(model(X4), Y4)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    assert not opt.perturbed
    torch.testing.assert_close(model.theta.detach(), THETA)

    def failing_loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("boom")
        return out.mean()

    with pytest.raises(RuntimeError, match="boom"):
        opt.objective(model, failing_loss)(model, X4, Y4)
    assert not opt.perturbed
    torch.testing.assert_close(model.theta.detach(), THETA)


def test_zero_gradient_gives_no_step_and_no_nan() -> None:
    model = Quadratic(A, torch.zeros(3, dtype=DTYPE))
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    opt.step(_closure(model))
    assert torch.equal(model.theta.detach(), torch.zeros(3, dtype=DTYPE))


def test_state_dict_round_trip_and_shared_param_groups() -> None:
    torch.manual_seed(4)
    net = nn.Linear(3, 2).double()
    x, y = torch.randn(8, 3, dtype=DTYPE), torch.randint(0, 2, (8,))
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.step(_closure(net, F.cross_entropy, x, y))
    clone = copy.deepcopy(net)
    opt2 = SAM(clone.parameters(), torch.optim.SGD, rho=0.3, lr=0.5, momentum=0.9)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if saved to disk
    assert opt2.param_groups[0]["rho"] == 0.05 and opt2.param_groups[0]["lr"] == 0.1
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    opt.step(_closure(net, F.cross_entropy, x, y))
    opt2.step(_closure(clone, F.cross_entropy, x, y))
    for p, q in zip(net.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the momentum buffers travelled too
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(_closure(net, F.cross_entropy, x, y))
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_misuse_raises_clear_errors() -> None:
    model = Quadratic(A, THETA)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="before first_step"):
        opt.second_step()
    with pytest.raises(RuntimeError, match="backward"):
        opt.first_step()
    mean_loss(model(X4), Y4).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="between"):
        opt.state_dict()
    opt.restore()
    torch.testing.assert_close(model.theta.detach(), THETA)
    with pytest.raises(ValueError, match="rho"):
        SAM(model.parameters(), torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(TypeError, match="class"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="different model"):
        opt.objective(model)(Quadratic(A, THETA), X4, Y4)
    with pytest.raises(ValueError, match="shares no parameters"):
        opt.objective(nn.Linear(2, 2))


def test_on_device(device: torch.device) -> None:
    lr, rho = 0.1, 0.2
    model = Quadratic(A, THETA).to(device)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    opt.step(_closure(model, mean_loss, X4.to(device), Y4.to(device)))
    torch.testing.assert_close(model.theta.detach().cpu(), analytic_sam_step(THETA, lr, rho))
