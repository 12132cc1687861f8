"""Tests of advbook.noise.penalties against closed forms and independent autograd computations."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from advbook.noise import (
    hessian_trace_term,
    input_gradient_penalty,
    input_jacobian_penalty,
    penalty_objective,
    squared_error,
    weight_gradient_penalty,
)
from advbook.train import fit

DT = torch.float64


def _data(n: int = 12, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, generator=g, dtype=DT)


def _linear(d: int = 3, k: int = 1) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(d, k).to(DT)


def _mlp(k: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, k)).to(DT)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return list(model.parameters())


def _grad(value: torch.Tensor, model: nn.Module) -> list[torch.Tensor]:
    if not value.requires_grad:  # a value that does not depend on the parameters
        return [torch.zeros_like(p) for p in model.parameters()]
    return list(
        torch.autograd.grad(value, _params(model), allow_unused=True, materialize_grads=True)
    )


# --- independent reference implementations (explicit loops over examples and outputs) -------


def _loop_weight_penalty(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    total = x.new_zeros(())
    for i in range(len(x)):
        out = model(x[i : i + 1]).reshape(-1)
        for k in range(out.numel()):
            g = torch.autograd.grad(
                out[k],
                _params(model),
                create_graph=True,
                allow_unused=True,
                materialize_grads=True,
                retain_graph=True,
            )
            total = total + sum(t.pow(2).sum() for t in g)
    return total / len(x)


def _flat_view(model: nn.Module) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict]]:
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflatten(v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, p in named:
            out[name] = v[start : start + p.numel()].reshape(p.shape)
            start += p.numel()
        return out

    return flat, unflatten


def _exact_hessian_term(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Hessian of Φ(v) = mean_i Σ_k r_ik·ŷ_k(x_i; v), r held fixed (autograd.functional)."""
    flat, unflatten = _flat_view(model)
    with torch.no_grad():
        r = model(x).reshape(len(x), -1) - y.reshape(len(x), -1)

    def phi(v: torch.Tensor) -> torch.Tensor:
        return (r * functional_call(model, unflatten(v), (x,)).reshape(len(x), -1)).sum() / len(x)

    return torch.autograd.functional.hessian(phi, flat)


# --- weight-gradient penalty -------------------------------------------------------------------


def test_linear_model_penalty_is_mean_squared_norm_plus_one_and_has_zero_gradient() -> None:
    model, (x, _) = _linear(), _data()
    penalty = weight_gradient_penalty(model, x)
    torch.testing.assert_close(penalty, (x.pow(2).sum(1) + 1).mean(), atol=1e-12, rtol=0)
    assert all(float(g.abs().max()) == 0 for g in _grad(penalty, model))
    # only the weights: the bias' contribution 1 disappears
    weights_only = weight_gradient_penalty(model, x, params="weights")
    torch.testing.assert_close(weights_only, x.pow(2).sum(1).mean(), atol=1e-12, rtol=0)


def test_linear_model_with_k_outputs_sums_over_outputs() -> None:
    model, (x, _) = _linear(k=4), _data()
    expected = 4 * (x.pow(2).sum(1) + 1).mean()
    torch.testing.assert_close(weight_gradient_penalty(model, x), expected, atol=1e-12, rtol=0)
    # ‖∇(vᵀŷ)‖² = ‖v‖²(‖x‖²+1) = K(‖x‖²+1) for any sign vector: the estimate is exact here
    estimate = weight_gradient_penalty(
        model, x, output_probes=1, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(estimate, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1, 2])
def test_mlp_penalty_value_and_gradient_match_an_explicit_loop(k: int) -> None:
    model, (x, _) = _mlp(k), _data()
    penalty = weight_gradient_penalty(model, x)
    reference = _loop_weight_penalty(model, x)
    torch.testing.assert_close(penalty, reference)
    for a, b in zip(_grad(penalty, model), _grad(reference, model), strict=True):
        torch.testing.assert_close(a, b)
    chunked = weight_gradient_penalty(model, x, create_graph=False, chunk_size=5)
    assert not chunked.requires_grad
    torch.testing.assert_close(chunked, reference.detach())


def test_output_probe_estimate_is_unbiased() -> None:
    """(1/m)Σ_j ‖∇_W(v_jᵀŷ)‖² with Rademacher v has mean Σ_k‖∇ŷ_k‖² and a known variance."""
    model, (x, _) = _mlp(3), _data(n=4)
    exact = float(weight_gradient_penalty(model, x, create_graph=False))
    # Var of vᵀGv for Rademacher v is 2·Σ_{a≠b} G_ab², G = per-example Gram matrix of ∇ŷ_k
    var = 0.0
    for i in range(len(x)):
        out = model(x[i : i + 1]).reshape(-1)
        rows = [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in torch.autograd.grad(out[k], _params(model), retain_graph=True)
                ]
            )
            for k in range(3)
        ]
        jac = torch.stack(rows)
        gram = jac @ jac.T
        var += 2 * float(gram.pow(2).sum() - gram.diagonal().pow(2).sum())
    m = 3000
    estimate = float(
        weight_gradient_penalty(
            model,
            x,
            create_graph=False,
            output_probes=m,
            generator=torch.Generator().manual_seed(1),
        )
    )
    stderr = math.sqrt(var / m) / len(x)
    assert abs(estimate - exact) < 5 * stderr
    assert stderr < 0.05 * exact  # the comparison is sharp enough to mean something


# --- the Hessian term --------------------------------------------------------------------------


def test_hessian_term_vanishes_for_a_linear_model() -> None:
    model, (x, y) = _linear(), _data()
    assert float(hessian_trace_term(model, x, y, probes=None)) == 0.0
    assert float(hessian_trace_term(model, x, y, probes=8)) == 0.0


@pytest.mark.parametrize("k", [1, 2])
def test_exact_hessian_term_matches_autograd_hessian(k: int) -> None:
    model, (x, _) = _mlp(k), _data()
    y = torch.randn(len(x), k, generator=torch.Generator().manual_seed(3), dtype=DT)
    target = y if k > 1 else y.reshape(-1)
    exact = torch.trace(_exact_hessian_term(model, x, target))
    torch.testing.assert_close(hessian_trace_term(model, x, target, probes=None), exact)


def test_hutchinson_estimate_is_within_its_standard_error() -> None:
    model, (x, y) = _mlp(), _data()
    hessian = _exact_hessian_term(model, x, y)
    off_diagonal = hessian - torch.diag(hessian.diagonal())
    m = 400
    stderr = math.sqrt(2 * float(off_diagonal.pow(2).sum()) / m)
    estimate = hessian_trace_term(model, x, y, probes=m, generator=torch.Generator().manual_seed(0))
    assert abs(float(estimate - torch.trace(hessian))) < 5 * stderr
    assert stderr < abs(float(torch.trace(hessian)))  # sharper than the value itself
    again = hessian_trace_term(model, x, y, probes=m, generator=torch.Generator().manual_seed(0))
    assert torch.equal(estimate, again)


def test_hessian_term_gradient_matches_autograd() -> None:
    """d/dW of mean_i r_i(W)·tr∇²ŷ_i(W), including the dependence of the residual on W."""
    model, (x, y) = _mlp(), _data(n=6)
    term = hessian_trace_term(model, x, y, probes=None, create_graph=True)
    flat, unflatten = _flat_view(model)
    flat.requires_grad_(True)

    def total(v: torch.Tensor) -> torch.Tensor:
        value = v.new_zeros(())
        for i in range(len(x)):

            def out_i(u: torch.Tensor, i: int = i) -> torch.Tensor:
                return functional_call(model, unflatten(u), (x[i : i + 1],)).reshape(())

            hess = torch.autograd.functional.hessian(out_i, v, create_graph=True)
            value = value + (out_i(v) - y[i]) * torch.trace(hess)
        return value / len(x)

    reference = total(flat)
    torch.testing.assert_close(term, reference)
    (ref_grad,) = torch.autograd.grad(reference, flat)
    lib_grad = torch.cat([g.reshape(-1) for g in _grad(term, model)])
    torch.testing.assert_close(lib_grad, ref_grad)
    assert not hessian_trace_term(model, x, y, probes=None).requires_grad


# --- input-space penalties ---------------------------------------------------------------------


def test_input_jacobian_penalty_closed_form_and_loop() -> None:
    model, (x, _) = _linear(k=3), _data()
    torch.testing.assert_close(input_jacobian_penalty(model, x), model.weight.pow(2).sum())
    mlp = _mlp(2)
    reference = sum(
        torch.autograd.functional.jacobian(lambda z: mlp(z[None]).reshape(-1), xi).pow(2).sum()
        for xi in x
    ) / len(x)
    torch.testing.assert_close(input_jacobian_penalty(mlp, x), reference)


def test_input_gradient_penalty_squared_error_closed_form() -> None:
    """ℓ = (wᵀx + b − y)² ⇒ ∇_x ℓ = 2(ŷ − y)·w ⇒ E‖∇_x ℓ‖² = 4·E[(ŷ − y)²]·‖w‖²."""
    model, (x, y) = _linear(), _data()
    x_before = x.clone()
    penalty = input_gradient_penalty(model, x, y, loss_fn=squared_error)
    residual = model(x).reshape(-1) - y
    closed = 4 * residual.pow(2).mean() * model.weight.pow(2).sum()
    torch.testing.assert_close(penalty, closed)
    for a, b in zip(_grad(penalty, model), _grad(closed, model), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.equal(x, x_before) and x.grad is None
    assert all(p.grad is None for p in model.parameters())


def test_input_gradient_penalty_cross_entropy_closed_form() -> None:
    """Softmax regression: ∇_x ℓ_i = Wᵀ(softmax(Wx_i + b) − e_{y_i})."""
    model, (x, _) = _linear(k=4), _data()
    labels = torch.arange(len(x)) % 4
    penalty = input_gradient_penalty(model, x, labels)
    with torch.no_grad():
        delta = torch.softmax(model(x), 1) - F.one_hot(labels, 4).to(DT)
        closed = (delta @ model.weight).pow(2).sum(1).mean()
    torch.testing.assert_close(penalty.detach(), closed)
    per_example = input_gradient_penalty(
        model,
        x,
        labels,
        loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="none"),
        create_graph=False,
    )
    assert not per_example.requires_grad
    torch.testing.assert_close(per_example, closed)


# --- model safety, modes and errors ------------------------------------------------------------


PENALTIES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "weight_gradient": lambda m, x, y: weight_gradient_penalty(m, x),
    "hessian_trace": lambda m, x, y: hessian_trace_term(m, x, y, probes=4),
    "input_jacobian": lambda m, x, y: input_jacobian_penalty(m, x),
    "input_gradient": lambda m, x, y: input_gradient_penalty(m, x, y, loss_fn=squared_error),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_penalties_leave_the_model_alone(name: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    model = model.to(device)
    x = torch.randn(8, 3, device=device)
    y = torch.randn(8, device=device)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="BatchNorm"):
        PENALTIES[name](model, x, y)
    model.eval()
    value = PENALTIES[name](model, x, y)
    assert value.ndim == 0 and torch.isfinite(value) and value.device.type == device.type
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_bad_arguments_are_rejected() -> None:
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="output_probes"):
        weight_gradient_penalty(model, x, output_probes=0)
    with pytest.raises(ValueError, match="probes"):
        hessian_trace_term(model, x, y, probes=0)
    with pytest.raises(ValueError, match="one target per model output"):
        hessian_trace_term(model, x, y[:, None].expand(-1, 2), probes=2)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        weight_gradient_penalty(model, x.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        input_jacobian_penalty(model, x[:0])
    with pytest.raises(ValueError, match="per-example losses"):
        input_gradient_penalty(model, x, y, loss_fn=lambda o, t: (o.reshape(-1) - t)[:3])
    with pytest.raises(ValueError, match="penalty must be one of"):
        penalty_objective(0.1, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta"):
        penalty_objective(-1.0)


# --- the penalty objective ---------------------------------------------------------------------


def test_penalty_objective_adds_eta_times_the_penalty() -> None:
    model, (x, y) = _mlp(), _data()
    eta = 0.3
    for penalty, value in [
        ("weight_gradient", weight_gradient_penalty(model, x)),
        ("input_jacobian", input_jacobian_penalty(model, x)),
        ("input_gradient", input_gradient_penalty(model, x, y, loss_fn=squared_error)),
        (lambda m, a, b: m(a).pow(2).mean(), model(x).pow(2).mean()),
    ]:
        loss, out = penalty_objective(eta, penalty, loss_fn=squared_error)(model, x, y)
        torch.testing.assert_close(out, model(x))
        torch.testing.assert_close(loss, squared_error(model(x), y) + eta * value)


def test_training_on_the_penalty_reduces_it() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = torch.randn(64, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    before = float(weight_gradient_penalty(model, x, create_graph=False))
    objective = penalty_objective(1.0, "weight_gradient", loss_fn=lambda o, t: o.sum() * 0)
    fit(model, x, y, epochs=3, batch_size=16, lr=0.02, objective=objective, progress=False)
    after = float(weight_gradient_penalty(model, x, create_graph=False))
    assert after < 0.5 * before
