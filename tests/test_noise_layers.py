"""Tests of advbook.noise.layers: train/eval behaviour and the moments of the hidden-unit noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from advbook.noise import GaussianDropout, GaussianNoise, noisy_mlp


def _moments(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return draws.mean(0), draws.var(0)


@pytest.mark.parametrize("layer", [GaussianNoise(0.5), GaussianDropout(0.3)])
def test_identity_in_eval_mode(layer: nn.Module, device: torch.device) -> None:
    x = torch.randn(4, 7, device=device)
    layer.eval()
    assert layer(x) is x
    layer.train()
    out = layer(x)
    assert out.shape == x.shape and out.device == x.device and not torch.equal(out, x)


def test_gaussian_noise_moments(device: torch.device) -> None:
    draws, sigma = 20000, 0.4
    x = torch.linspace(-2, 2, 5, dtype=torch.float64, device=device).expand(draws, 5)
    out = GaussianNoise(sigma, generator=torch.Generator().manual_seed(0)).train()(x)
    assert out.dtype == torch.float64
    mean, var = _moments(out)
    assert (mean - x[0]).abs().max() < 5 * sigma / math.sqrt(draws)
    assert (var - sigma**2).abs().max() < 5 * sigma**2 * math.sqrt(2 / (draws - 1))


def test_gaussian_dropout_preserves_the_mean_and_matches_dropout_variance() -> None:
    """E[h⊙m] = h and Var[h⊙m] = h²·p/(1−p), the moments of inverted Bernoulli dropout."""
    draws, p = 40000, 0.3
    alpha = p / (1 - p)
    h = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64).expand(draws, 4)
    out = GaussianDropout(p, generator=torch.Generator().manual_seed(0)).train()(h)
    mean, var = _moments(out)
    sd = h[0].abs() * math.sqrt(alpha)
    assert ((mean - h[0]).abs() < 5 * sd / math.sqrt(draws)).all()
    assert ((var - h[0] ** 2 * alpha).abs() < 5 * sd**2 * math.sqrt(2 / (draws - 1))).all()
    # independent reference: PyTorch's Bernoulli dropout has the same first two moments
    bernoulli = nn.Dropout(p).train()(h)
    b_mean, b_var = _moments(bernoulli)
    torch.testing.assert_close(b_mean, h[0], atol=0.0, rtol=0.05)
    torch.testing.assert_close(b_var, var, atol=0.0, rtol=0.1)


def test_zero_rates_are_the_identity_even_when_training() -> None:
    x = torch.randn(3, 4)
    assert torch.equal(GaussianNoise(0.0).train()(x), x)
    assert torch.equal(GaussianDropout(0.0).train()(x), x)


def test_generator_makes_layers_reproducible() -> None:
    x = torch.randn(10, 3)
    for kind, rate in ((GaussianNoise, 1.0), (GaussianDropout, 0.5)):
        a = kind(rate, generator=torch.Generator().manual_seed(1)).train()(x)
        b = kind(rate, generator=torch.Generator().manual_seed(1)).train()(x)
        c = kind(rate, generator=torch.Generator().manual_seed(2)).train()(x)
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradients_flow_through_the_layers() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    layer = GaussianDropout(0.5, generator=torch.Generator().manual_seed(0)).train()
    out = layer(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    # d(x⊙m)/dx = m, and m can be recomputed from the same generator seed
    xi = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grad, 1 + math.sqrt(layer.alpha) * xi)


@pytest.mark.parametrize(
    ("noise", "kind"),
    [("gaussian", GaussianNoise), ("gaussian_dropout", GaussianDropout), ("dropout", nn.Dropout)],
)
def test_noisy_mlp_layout_and_modes(noise: str, kind: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = noisy_mlp(6, (8, 5), 3, noise=noise, rate=0.3)
    noise_layers = [m for m in model if isinstance(m, kind)]
    assert len(noise_layers) == 2
    linears = [m for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(4, 6)
    # eval mode: exactly the deterministic MLP, written out by hand
    model.eval()
    h = torch.relu(linears[0](x))
    h = torch.relu(linears[1](h))
    torch.testing.assert_close(model(x), linears[2](h))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_noisy_mlp_without_noise_is_deterministic_in_training() -> None:
    model = noisy_mlp(4, (6,), 2).train()
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: GaussianNoise(-1.0), ValueError),
        (lambda: GaussianNoise("a"), TypeError),  # type: ignore[arg-type]
        (lambda: GaussianDropout(1.0), ValueError),
        (lambda: GaussianDropout(-0.1), ValueError),
        (lambda: GaussianDropout(0.1, generator="seed"), TypeError),  # type: ignore[arg-type]
        (lambda: noisy_mlp(noise="salt"), ValueError),  # type: ignore[arg-type]
        (lambda: noisy_mlp(noise="dropout", rate=1.0), ValueError),
        (lambda: noisy_mlp(4, (0,), 2), ValueError),
    ],
)
def test_bad_arguments_are_rejected(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()
