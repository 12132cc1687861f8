"""The attack objectives of the iterative core, against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook._core.objectives import (
    ce_objective,
    dlr_objective,
    kl_objective,
    margin_objective,
    objective_and_grad,
    targeted_dlr_objective,
)


def _logits(n: int = 64, k: int = 10) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_margin_and_dlr_by_definition() -> None:
    z = _logits()
    y = torch.arange(64) % 10
    z_sorted = z.sort(dim=1, descending=True).values
    others = z.clone()
    others[torch.arange(64), y] = -torch.inf
    margin = others.max(dim=1).values - z[torch.arange(64), y]
    torch.testing.assert_close(margin_objective(z, y), margin)
    torch.testing.assert_close(dlr_objective(z, y), margin / (z_sorted[:, 0] - z_sorted[:, 2]))
    assert torch.equal(margin_objective(z, y) > 0, z.argmax(1) != y)


@pytest.mark.parametrize(("scale", "shift"), [(1e3, 0.0), (1e-3, 5.0), (7.0, -100.0)])
def test_dlr_is_invariant_to_shift_and_scale_ce_is_not(scale: float, shift: float) -> None:
    z = _logits()
    y, t = torch.arange(64) % 10, (torch.arange(64) + 3) % 10
    torch.testing.assert_close(dlr_objective(scale * z + shift, y), dlr_objective(z, y))
    torch.testing.assert_close(targeted_dlr_objective(scale * z + shift, y, t),
                               targeted_dlr_objective(z, y, t))
    assert not torch.allclose(ce_objective(scale * z + shift, y, False), ce_objective(z, y, False))


def test_kl_objective_matches_kl_div() -> None:
    a, b = _logits(), _logits().flip(0)
    expected = F.kl_div(F.log_softmax(b, 1), F.log_softmax(a, 1), reduction="none",
                        log_target=True).sum(1)
    torch.testing.assert_close(kl_objective(a, b), expected)
    assert torch.allclose(kl_objective(a, a), torch.zeros(64, dtype=torch.float64))


def test_objective_and_grad_is_per_sample_and_leaves_parameters_alone() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x = torch.rand(4, 5)
    y = torch.tensor([0, 1, 2, 0])
    value, logits, grad = objective_and_grad(model, x, lambda z: ce_objective(z, y, False))
    assert model.weight.grad is None
    one, _, grad_one = objective_and_grad(model, x[:1], lambda z: ce_objective(z, y[:1], False))
    torch.testing.assert_close(grad[:1], grad_one)  # summed, not averaged: batch-independent
    torch.testing.assert_close(value[:1], one)
    torch.testing.assert_close(logits, model(x).detach())
    with pytest.raises(ValueError, match="does not depend on x"):
        objective_and_grad(model, x, lambda z: z.detach().sum(1))
