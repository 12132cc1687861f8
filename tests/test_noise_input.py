"""Tests of advbook.noise.input_noise: moments of the noise, clipping, and the ridge identity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advbook.noise import add_input_noise, input_jacobian_penalty, input_noise_hook
from advbook.train import fit


def test_noise_has_mean_zero_and_variance_sigma_squared(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5000, 4, dtype=torch.float64, device=device)
    before = x.clone()
    sigma = 0.7
    noisy = add_input_noise(x, sigma, generator=g)
    assert noisy.shape == x.shape and noisy.dtype == x.dtype and noisy.device == x.device
    assert torch.equal(x, before)  # input not mutated
    delta = (noisy - x).flatten()
    n = delta.numel()
    assert abs(float(delta.mean())) < 5 * sigma / math.sqrt(n)
    # the sample variance of n Gaussians has standard error σ²·√(2/(n−1))
    assert abs(float(delta.var()) - sigma**2) < 5 * sigma**2 * math.sqrt(2 / (n - 1))


def test_sigma_zero_returns_an_equal_copy() -> None:
    x = torch.rand(3, 1, 4, 4)
    out = add_input_noise(x, 0.0)
    assert torch.equal(out, x) and out is not x and out.data_ptr() != x.data_ptr()


def test_generator_makes_noise_reproducible() -> None:
    x = torch.zeros(8, 3)
    a = add_input_noise(x, 1.0, generator=torch.Generator().manual_seed(3))
    b = add_input_noise(x, 1.0, generator=torch.Generator().manual_seed(3))
    c = add_input_noise(x, 1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cpu_generator_gives_the_same_noise_on_every_device(device: torch.device) -> None:
    x = torch.rand(6, 5)
    on_cpu = add_input_noise(x, 0.3, generator=torch.Generator().manual_seed(1))
    on_dev = add_input_noise(x.to(device), 0.3, generator=torch.Generator().manual_seed(1))
    assert on_dev.device.type == device.type
    torch.testing.assert_close(on_dev.cpu(), on_cpu)


def test_bounds_clip_only_what_leaves_the_box() -> None:
    x = torch.rand(200, 10)
    clipped = add_input_noise(x, 0.5, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(2))
    free = add_input_noise(x, 0.5, generator=torch.Generator().manual_seed(2))
    assert clipped.min() >= 0 and clipped.max() <= 1
    inside = (free >= 0) & (free <= 1)
    assert inside.any() and (~inside).any()
    assert torch.equal(clipped[inside], free[inside])
    assert torch.equal(clipped[~inside], free[~inside].clamp(0, 1))


def test_input_noise_on_linear_least_squares_is_ridge() -> None:
    """E_δ[(wᵀ(x+δ) + b − y)²] = (wᵀx + b − y)² + σ²‖w‖², checked by Monte Carlo."""
    g = torch.Generator().manual_seed(0)
    n, d, draws, sigma = 40, 5, 4000, 0.4
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    b = 0.3
    clean = ((x @ w + b - y) ** 2).mean()
    noisy_x = add_input_noise(x.expand(draws, n, d), sigma, generator=g)
    per_draw = ((noisy_x @ w + b - y) ** 2).mean(dim=1)  # one loss per noise draw
    estimate, stderr = per_draw.mean(), per_draw.std() / math.sqrt(draws)
    predicted = clean + sigma**2 * w.pow(2).sum()
    assert abs(float(estimate - predicted)) < 4 * float(stderr)
    # the effect is resolved: the clean loss alone is rejected by the same test
    assert abs(float(estimate - clean)) > 10 * float(stderr)
    # and σ²‖w‖² is σ² times the Tikhonov penalty E‖∇_x ŷ‖² of the linear model
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(w.unsqueeze(0))
        model.bias.fill_(b)
    torch.testing.assert_close(input_jacobian_penalty(model, x), w.pow(2).sum())


def test_hook_passes_labels_and_plugs_into_fit() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 6, generator=g)
    y = (x.sum(1) > 3).long()
    hook = input_noise_hook(0.2, bounds=(0, 1), generator=torch.Generator().manual_seed(5))
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    xb, yb = hook(model, x, y)
    assert yb is y and xb.shape == x.shape and not torch.equal(xb, x)
    assert xb.min() >= 0 and xb.max() <= 1
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, x, y, epochs=2, batch_size=16, batch_hook=hook, progress=False)
    assert len(history) == 2 and history["train_loss"].notna().all()
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sigma": -0.1}, ValueError),
        ({"sigma": float("nan")}, ValueError),
        ({"sigma": "0.1"}, TypeError),
        ({"sigma": 0.1, "bounds": (1.0, 0.0)}, ValueError),
        ({"sigma": 0.1, "bounds": (0.0,)}, TypeError),
        ({"sigma": 0.1, "generator": 1}, TypeError),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        add_input_noise(torch.rand(2, 3), **kwargs)
    with pytest.raises(error):
        input_noise_hook(**kwargs)


def test_non_float_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        add_input_noise(torch.ones(2, 3, dtype=torch.long), 0.1)
