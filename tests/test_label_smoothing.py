"""Tests of advbook.label_smoothing against closed forms and PyTorch's own label smoothing."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advbook.label_smoothing import (
    from_torch_label_smoothing,
    inject_label_noise,
    label_noise_transition_matrix,
    logit_gap,
    optimal_logit_gap,
    smooth_targets,
    smoothed_cross_entropy,
    smoothed_objective,
    soft_cross_entropy,
    torch_label_smoothing,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- smoothed targets


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 12), eps=st.floats(0.0, 1.0), n=st.integers(1, 20), seed=st.integers(0, 99))
def test_smooth_targets_are_distributions_with_the_book_convention(
    k: int, eps: float, n: int, seed: int
) -> None:
    y = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    q = smooth_targets(y, k, eps, dtype=torch.float64)
    assert q.shape == (n, k) and q.dtype == torch.float64
    torch.testing.assert_close(q.sum(1), torch.ones(n, dtype=torch.float64))
    onehot = F.one_hot(y, k).bool()
    assert torch.all(q[onehot] == 1 - eps)
    torch.testing.assert_close(
        q[~onehot], torch.full(((k - 1) * n,), eps / (k - 1), dtype=torch.float64)
    )


def test_smooth_targets_limits() -> None:
    y = torch.tensor([0, 2, 1])
    torch.testing.assert_close(smooth_targets(y, 3, 0.0), F.one_hot(y, 3).float())
    torch.testing.assert_close(smooth_targets(y, 3, 2 / 3), torch.full((3, 3), 1 / 3))


# --------------------------------------------------------------------------- the PyTorch mapping


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 0.5])
def test_torch_mapping_matches_cross_entropy_numerically(k: int, eps: float) -> None:
    if eps > (k - 1) / k:
        pytest.skip("outside PyTorch's range")
    g = torch.Generator().manual_seed(k)
    logits = 3 * torch.randn(64, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (64,), generator=g)
    eps_t = torch_label_smoothing(eps, k)
    assert eps_t == pytest.approx(eps * k / (k - 1))
    reference = F.cross_entropy(logits, y, label_smoothing=eps_t)
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, eps), reference)
    # PyTorch's target distribution written out independently: (1 − ε')·onehot + ε'/k.
    torch_targets = (1 - eps_t) * F.one_hot(y, k).double() + eps_t / k
    torch.testing.assert_close(smooth_targets(y, k, eps, dtype=torch.float64), torch_targets)
    torch.testing.assert_close(
        smoothed_cross_entropy(logits, y, eps, reduction="none"),
        F.cross_entropy(logits, y, label_smoothing=eps_t, reduction="none"),
    )
    assert from_torch_label_smoothing(eps_t, k) == pytest.approx(eps)


def test_torch_mapping_rejects_what_pytorch_cannot_express() -> None:
    assert torch_label_smoothing(0.9, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(k-1\)/k"):
        torch_label_smoothing(0.95, 10)


def test_smoothed_loss_equals_soft_cross_entropy_and_reductions() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=g)
    q = smooth_targets(y, 5, 0.2, dtype=torch.float64)
    per = smoothed_cross_entropy(logits, y, 0.2, reduction="none")
    assert per.shape == (16,)
    torch.testing.assert_close(per, soft_cross_entropy(logits, q, reduction="none"))
    manual = -(q * logits.log_softmax(1)).sum(1)
    torch.testing.assert_close(per, manual)
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.2, reduction="sum"), per.sum())
    torch.testing.assert_close(smoothed_cross_entropy(logits, y, 0.2), per.mean())


def test_smoothed_objective_plugs_into_fit_convention() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss, logits = smoothed_objective(0.1)(model, x, y)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(loss, smoothed_cross_entropy(model(x), y, 0.1))


# --------------------------------------------------------------------------- optimal logit gap


def _logits_with_gap(gap: float, y: torch.Tensor, k: int) -> torch.Tensor:
    z = torch.randn(y.shape[0], 1, dtype=torch.float64).expand(-1, k).clone()  # common offset
    z[torch.arange(y.shape[0]), y] += gap
    return z


@pytest.mark.parametrize(("eps", "k"), [(0.1, 10), (0.05, 3), (0.3, 2), (0.01, 100)])
def test_gradient_of_smoothed_loss_vanishes_at_optimal_gap(eps: float, k: int) -> None:
    gap = optimal_logit_gap(eps, k)
    assert gap == pytest.approx(math.log((1 - eps) * (k - 1) / eps))
    y = torch.randint(0, k, (7,))
    z = _logits_with_gap(gap, y, k).requires_grad_(True)
    (grad,) = torch.autograd.grad(smoothed_cross_entropy(z, y, eps, reduction="sum"), z)
    assert grad.abs().max() < 1e-12
    torch.testing.assert_close(z.softmax(1).detach(), smooth_targets(y, k, eps, dtype=z.dtype))
    torch.testing.assert_close(
        logit_gap(z.detach(), y, reduction="none"), torch.full((7,), gap, dtype=torch.float64)
    )
    for off in (-0.5, 0.5):  # the gradient is not zero away from the optimum
        z_off = _logits_with_gap(gap + off, y, k).requires_grad_(True)
        (g_off,) = torch.autograd.grad(smoothed_cross_entropy(z_off, y, eps), z_off)
        assert g_off.abs().max() > 1e-4
        # sign: a too-large gap is pushed down (gradient on the true logit positive), and back
        g_true = g_off[torch.arange(7), y]
        assert torch.all(torch.sign(g_true) == math.copysign(1.0, off))


def test_gradient_descent_on_free_logits_converges_to_optimal_gap() -> None:
    k, eps = 5, 0.1
    y = torch.tensor([0, 3, 1, 4])
    z = torch.randn(4, k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([z], lr=5.0)
    for _ in range(500):
        opt.zero_grad()
        smoothed_cross_entropy(z, y, eps, reduction="sum").backward()
        opt.step()
    gaps = logit_gap(z.detach(), y, reduction="none")
    torch.testing.assert_close(
        gaps, torch.full((4,), optimal_logit_gap(eps, k), dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_hard_targets_have_no_finite_optimum() -> None:
    assert optimal_logit_gap(0.0, 10) == math.inf
    assert optimal_logit_gap(0.9, 10) == pytest.approx(0.0)  # uniform targets: gap 0
    # With hard targets the loss gradient along the gap direction is −(1 − p_y) < 0 for any gap.
    y = torch.tensor([0, 1])
    for gap in (1.0, 10.0, 30.0):
        z = _logits_with_gap(gap, y, 3).requires_grad_(True)
        (grad,) = torch.autograd.grad(smoothed_cross_entropy(z, y, 0.0, reduction="sum"), z)
        assert torch.all(grad[torch.arange(2), y] < 0)


def test_logit_gap_against_a_loop() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    expected = torch.stack(
        [z[i, y[i]] - torch.cat([z[i, : y[i]], z[i, y[i] + 1 :]]).mean() for i in range(6)]
    )
    torch.testing.assert_close(logit_gap(z, y, reduction="none"), expected)
    torch.testing.assert_close(logit_gap(z, y), expected.mean())


# --------------------------------------------------------------------------- label noise


def test_label_noise_flips_expected_fraction_and_never_to_itself() -> None:
    n, k, eps = 40_000, 10, 0.3
    y = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(0))
    y_before = y.clone()
    noisy = inject_label_noise(y, k, eps, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(y, y_before)  # input untouched
    assert noisy.dtype == y.dtype and noisy.shape == y.shape
    assert int(noisy.min()) >= 0 and int(noisy.max()) < k
    frac = (noisy != y).double().mean().item()
    assert abs(frac - eps) < 4 * math.sqrt(eps * (1 - eps) / n)
    # Empirical transition matrix ≈ T: diagonal 1 − ε, off-diagonal ε/(k − 1) each.
    counts = torch.zeros(k, k, dtype=torch.float64)
    counts.index_put_((y, noisy), torch.ones(n, dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True)
    torch.testing.assert_close(
        empirical, label_noise_transition_matrix(k, eps, dtype=torch.float64), atol=0.02, rtol=0
    )


def test_label_noise_with_eps_one_changes_every_label_uniformly() -> None:
    k = 4
    y = torch.full((20_000,), 2)
    noisy = inject_label_noise(y, k, 1.0, generator=torch.Generator().manual_seed(2))
    assert torch.all(noisy != 2)
    freq = torch.bincount(noisy, minlength=k).double() / len(y)
    torch.testing.assert_close(
        freq, torch.tensor([1 / 3, 1 / 3, 0, 1 / 3], dtype=torch.float64), atol=0.015, rtol=0
    )


def test_label_noise_is_seeded_and_zero_noise_is_identity() -> None:
    y = torch.randint(0, 7, (500,))
    a = inject_label_noise(y, 7, 0.2, generator=torch.Generator().manual_seed(5))
    b = inject_label_noise(y, 7, 0.2, generator=torch.Generator().manual_seed(5))
    c = inject_label_noise(y, 7, 0.2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(inject_label_noise(y, 7, 0.0, generator=torch.Generator()), y)
    y32 = y.to(torch.int32)
    assert inject_label_noise(y32, 7, 0.5).dtype == torch.int32


def test_expected_noisy_cross_entropy_is_the_smoothed_loss() -> None:
    """E_ỹ[CE(z, ỹ) | y] = Σ_j T[y, j]·CE(z, j) = ℓ_ε(z, y): noise folds into smoothed targets."""
    k, eps = 6, 0.25
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (5,), generator=g)
    t = label_noise_transition_matrix(k, eps, dtype=torch.float64)
    torch.testing.assert_close(t.sum(1), torch.ones(k, dtype=torch.float64))
    ce_all = -z.log_softmax(1)  # CE(z_i, j) for every j
    expected = (t[y] * ce_all).sum(1)
    torch.testing.assert_close(smoothed_cross_entropy(z, y, eps, reduction="none"), expected)
    # and by Monte Carlo through inject_label_noise
    reps = 20_000
    noisy = inject_label_noise(y.repeat(reps), k, eps, generator=g).view(reps, 5)
    mc = ce_all.gather(1, noisy.T).mean(1)
    torch.testing.assert_close(mc, expected, atol=0.05, rtol=0)


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: smooth_targets(torch.tensor([0, 1]), 1, 0.1), ValueError, "k"),
        (lambda: smooth_targets(torch.tensor([0, 1]), 3, 1.5), ValueError, r"\[0, 1\]"),
        (lambda: smooth_targets(torch.tensor([0, 1]), 3, True), TypeError, "eps"),
        (lambda: smooth_targets(torch.tensor([0.0, 1.0]), 3, 0.1), TypeError, "integer"),
        (lambda: smooth_targets(torch.tensor([0, 3]), 3, 0.1), ValueError, r"\[0, 2\]"),
        (lambda: smooth_targets(torch.tensor([[0, 1]]), 3, 0.1), ValueError, "1-D"),
        (
            lambda: smoothed_cross_entropy(torch.randn(3, 4), torch.tensor([0, 1]), 0.1),
            ValueError,
            "number of samples",
        ),
        (
            lambda: smoothed_cross_entropy(torch.randn(3), torch.tensor([0, 1, 0]), 0.1),
            ValueError,
            r"\(N, k\)",
        ),
        (
            lambda: smoothed_cross_entropy(
                torch.randn(3, 4), torch.tensor([0, 1, 0]), 0.1, reduction="max"
            ),
            ValueError,
            "reduction",
        ),
        (lambda: soft_cross_entropy(torch.randn(3, 4), torch.rand(3, 5)), ValueError, "shaped"),
        (lambda: inject_label_noise(torch.tensor([0, 1]), 2, -0.1), ValueError, "eps"),
        (
            lambda: inject_label_noise(torch.tensor([0, 1]), 2, 0.1, generator=0),
            TypeError,
            "generator",
        ),
        (lambda: optimal_logit_gap(float("nan"), 3), ValueError, "eps"),
    ],
)
def test_bad_input_raises_clear_errors(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- devices


def test_on_device(device: torch.device) -> None:
    k, eps = 10, 0.1
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(32, k, device=device, generator=g)
    y = torch.randint(0, k, (32,), device=device, generator=g)
    torch.testing.assert_close(
        smoothed_cross_entropy(logits, y, eps),
        F.cross_entropy(logits, y, label_smoothing=torch_label_smoothing(eps, k)),
    )
    assert smooth_targets(y, k, eps).device == y.device
    noisy = inject_label_noise(y, k, 0.5, generator=g)
    cpu_gen_noisy = inject_label_noise(y, k, 0.5, generator=torch.Generator().manual_seed(0))
    assert noisy.device == y.device and cpu_gen_noisy.device == y.device
    assert logit_gap(logits, y).device == y.device
