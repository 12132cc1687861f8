"""Tests of advbook.noise.weight_noise: draws, the Monte-Carlo loss, and the training objective."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook.noise import (
    draw_weight_noise,
    hessian_trace_term,
    select_parameters,
    squared_error,
    weight_gradient_penalty,
    weight_noise_loss,
    weight_noise_objective,
)
from advbook.train import fit


def _mlp(outputs: int = 1, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, outputs)).to(dtype)


def _regression(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1)) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters())


# --- parameter selection and draws -------------------------------------------------------------


def test_parameter_selection() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    assert list(select_parameters(model, "all")) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "2.weight",
    ]
    assert list(select_parameters(model, "weights")) == ["0.weight", "2.weight"]
    assert list(select_parameters(model, lambda n, p: n.startswith("2."))) == ["2.weight"]
    with pytest.raises(ValueError, match="selects no"):
        select_parameters(model, lambda n, p: False)
    with pytest.raises(ValueError, match="'all', 'weights'"):
        select_parameters(model, "biases")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        select_parameters("model", "all")  # type: ignore[arg-type]


def test_draws_have_parameter_shapes_and_are_reproducible(device: torch.device) -> None:
    model = _mlp(dtype=torch.float32).to(device)
    a = draw_weight_noise(model, 5, params="weights", generator=torch.Generator().manual_seed(0))
    b = draw_weight_noise(model, 5, params="weights", generator=torch.Generator().manual_seed(0))
    assert list(a) == ["0.weight", "2.weight"]
    for name, p in select_parameters(model, "weights").items():
        assert a[name].shape == (5, *p.shape) and a[name].dtype == p.dtype
        assert a[name].device == p.device and torch.equal(a[name], b[name])


def test_antithetic_and_moment_matched_draws() -> None:
    model = _mlp()
    g = torch.Generator().manual_seed(0)
    anti = draw_weight_noise(model, 10, antithetic=True, generator=g)
    assert all(torch.equal(v[:5], -v[5:]) for v in anti.values())
    size = sum(p.numel() for p in model.parameters())
    for antithetic in (False, True):
        xi = draw_weight_noise(
            model, 4 * size, antithetic=antithetic, moment_matched=True, generator=g
        )
        flat = torch.cat([v.flatten(1) for v in xi.values()], 1)
        torch.testing.assert_close(
            flat.mean(0), torch.zeros(size, dtype=flat.dtype), atol=1e-12, rtol=0
        )
        cov = flat.T @ flat / flat.shape[0]
        torch.testing.assert_close(cov, torch.eye(size, dtype=flat.dtype), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="even"):
        draw_weight_noise(model, 3, antithetic=True)
    with pytest.raises(ValueError, match="moment_matched"):
        draw_weight_noise(model, size, moment_matched=True)
    with pytest.raises(ValueError, match="samples"):
        draw_weight_noise(model, 0)


# --- the Monte-Carlo weight-noise loss ---------------------------------------------------------


def test_zero_noise_gives_the_clean_loss() -> None:
    model, (x, y) = _mlp(), _regression()
    losses = weight_noise_loss(model, x, y, 0.0, samples=4, reduction="none")
    clean = squared_error(model(x), y)
    assert losses.shape == (4,)
    torch.testing.assert_close(losses, clean.detach().expand(4), atol=0, rtol=0)


def test_linear_model_weight_noise_loss_closed_form() -> None:
    """For ŷ = wᵀx + b: E[(ŷ_{W+ε} − y)²] = J + η·E[‖x‖² + 1], a quadratic in ε."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = _regression()
    eta = 0.05
    with torch.no_grad():
        predicted = squared_error(model(x), y) + eta * (x.pow(2).sum(1) + 1).mean()
    # plain Monte Carlo: within its standard error
    g = torch.Generator().manual_seed(2)
    losses = weight_noise_loss(model, x, y, eta, samples=4000, reduction="none", generator=g)
    stderr = losses.std() / math.sqrt(len(losses))
    assert abs(float(losses.mean() - predicted)) < 4 * float(stderr)
    # moment-matched draws reproduce second moments exactly, hence this quadratic exactly
    xi = draw_weight_noise(model, 16, antithetic=True, moment_matched=True, generator=g)
    torch.testing.assert_close(weight_noise_loss(model, x, y, eta, noise=xi), predicted)


def test_weight_noise_expansion_remainder_shrinks_like_eta_squared() -> None:
    """|MC(η) − (J + η·penalty + η·Hessian term)| ∝ η² on a small MLP (log-log slope ≈ 2).

    Common random numbers: the same draws ξ for every η (ε = √η·ξ), antithetic and
    moment-matched so that the O(√η) and O(η) sampling errors vanish and only the O(η²)
    Taylor remainder is left. float64 throughout.
    """
    model, (x, y) = _mlp(), _regression()
    j = float(squared_error(model(x), y).detach())
    penalty = float(weight_gradient_penalty(model, x, create_graph=False))
    term = float(hessian_trace_term(model, x, y, probes=None))
    assert abs(term) > 0.05 * penalty  # the Hessian term matters for this (untrained) model
    xi = draw_weight_noise(
        model,
        2000,
        antithetic=True,
        moment_matched=True,
        generator=torch.Generator().manual_seed(0),
    )
    etas = np.geomspace(1e-3, 1e-1, 6)
    mc = np.array([float(weight_noise_loss(model, x, y, float(e), noise=xi)) for e in etas])
    gap = np.abs(mc - (j + etas * (penalty + term)))
    slope = np.polyfit(np.log(etas), np.log(gap), 1)[0]
    assert 1.7 < slope < 2.3, slope
    # without the Hessian term the remainder is O(η): the test can tell the difference
    gap_first = np.abs(mc - (j + etas * penalty))
    slope_first = np.polyfit(np.log(etas[:3]), np.log(gap_first[:3]), 1)[0]
    assert abs(slope_first - 1) < 0.3, slope_first


def test_weight_noise_loss_leaves_the_model_alone() -> None:
    model, (x, y) = _mlp(), _regression()
    model.train()
    snap = _snapshot(model)
    value = weight_noise_loss(model, x, y, 0.1, samples=3, create_graph=True)
    grads = torch.autograd.grad(value, list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    weight_noise_loss(model, x, y, 0.1, samples=3)
    _assert_unchanged(model, snap)
    assert model.training


def test_weight_noise_loss_refuses_training_batchnorm() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    x, y = _regression()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        weight_noise_loss(model, x, y, 0.1, samples=2)
    _assert_unchanged(model, snap)
    model.eval()
    weight_noise_loss(model, x, y, 0.1, samples=2)  # eval mode is fine and changes nothing
    _assert_unchanged(model, snap)


def test_weight_noise_loss_bad_arguments() -> None:
    model, (x, y) = _mlp(), _regression()
    with pytest.raises(ValueError, match="eta"):
        weight_noise_loss(model, x, y, -1.0)
    with pytest.raises(ValueError, match="reduction"):
        weight_noise_loss(model, x, y, 0.1, reduction="sum")
    with pytest.raises(ValueError, match="shape"):
        weight_noise_loss(model, x, y, 0.1, noise={"0.weight": torch.zeros(2, 3, 3)})
    with pytest.raises(ValueError, match="not a parameter"):
        weight_noise_loss(model, x, y, 0.1, noise={"nope": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="one target per model output"):
        weight_noise_loss(model, x, y[:-1], 0.1, samples=2)
    with pytest.raises(TypeError):
        weight_noise_loss(model, x.long(), y, 0.1)


# --- the training objective --------------------------------------------------------------------


@pytest.mark.parametrize("params", ["all", "weights"])
def test_objective_gradient_is_the_gradient_at_the_noisy_point(params: str) -> None:
    model, (x, y) = _mlp(), _regression()
    eta, samples = 0.02, 3
    snap = _snapshot(model)
    objective = weight_noise_objective(
        eta,
        samples=samples,
        loss_fn=squared_error,
        params=params,
        generator=torch.Generator().manual_seed(7),
    )
    loss, out = objective(model, x, y)
    loss.backward()
    # parameters bit-identical after the forward/backward; only .grad was written
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k])
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    # independent reference: add the same draws in place to copies of the model
    xi = draw_weight_noise(
        model, samples, params=params, generator=torch.Generator().manual_seed(7)
    )
    ref_loss, ref_out = 0.0, 0.0
    ref_grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for s in range(samples):
        noisy = copy.deepcopy(model)
        noisy.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, p in noisy.named_parameters():
                if n in xi:
                    p.add_(math.sqrt(eta) * xi[n][s])
        o = noisy(x)
        l_s = squared_error(o, y)
        l_s.backward()
        ref_loss, ref_out = ref_loss + l_s.detach() / samples, ref_out + o.detach() / samples
        for n, p in noisy.named_parameters():
            ref_grads[n] += p.grad / samples
    torch.testing.assert_close(loss.detach(), ref_loss)
    torch.testing.assert_close(out, ref_out)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n])
    clean = squared_error(model(x), y)
    assert not torch.allclose(loss, clean)


def test_objective_with_zero_noise_is_the_plain_loss() -> None:
    model, (x, y) = _mlp(outputs=3), _regression()
    labels = (y > 0).long()
    loss, out = weight_noise_objective(0.0, samples=2)(model, x, labels)
    torch.testing.assert_close(out, model(x), atol=0, rtol=0)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), labels), atol=0, rtol=0)


def test_objective_failing_midway_leaves_the_model_alone() -> None:
    model, (x, y) = _mlp(), _regression()
    snap = _snapshot(model)

    def broken(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        weight_noise_objective(0.5, loss_fn=broken)(model, x, y)
    _assert_unchanged(model, snap)


def test_objective_plugs_into_fit(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    objective = weight_noise_objective(1e-3, samples=2, generator=torch.Generator().manual_seed(1))
    history = fit(
        model, x, y, epochs=5, batch_size=32, lr=0.05, objective=objective, progress=False
    )
    assert history["train_acc"].iloc[-1] > 0.8
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_objective_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eta"):
        weight_noise_objective(-0.1)
    with pytest.raises(ValueError, match="samples"):
        weight_noise_objective(0.1, samples=0)
    with pytest.raises(TypeError, match="generator"):
        weight_noise_objective(0.1, generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_fn"):
        weight_noise_objective(0.1, loss_fn=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'all', 'weights'"):
        weight_noise_objective(0.1, params="bias")(_mlp(), *_regression())  # type: ignore[arg-type]
