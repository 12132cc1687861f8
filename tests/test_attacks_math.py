"""The attacks against closed forms on linear models, and the geometry of their building blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbook.attacks import carlini_wagner, deepfool, fgsm, pgd
from advbook.attacks._utils import batch_norms, project, sample_ball, sample_start

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def linear(w: Tensor, b: Tensor) -> nn.Linear:
    """The affine classifier ``z = W x + b`` on flattened inputs (``W`` is ``K × d``)."""
    layer = nn.Linear(w.shape[1], w.shape[0]).to(w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), layer)


def binary_linear(w: Tensor, b: float) -> nn.Module:
    """Two logits ``[0, w·x + b]``: class 1 iff ``w·x + b > 0``."""
    return linear(torch.stack([torch.zeros_like(w), w]), torch.tensor([0.0, b], dtype=w.dtype))


def _problem(
    n: int = 12, d: int = 10, k: int = 5, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g, dtype=DT)
    b = torch.randn(k, generator=g, dtype=DT)
    x = torch.rand(n, d, generator=g, dtype=DT) * 0.6 + 0.2
    y = torch.randint(0, k, (n,), generator=g)
    return w.to(device), b.to(device), x.to(device), y.to(device)


# --------------------------------------------------------------------------- FGSM / FGM


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_on_affine_model_matches_closed_form(
    norm: str, targeted: bool, device: torch.device
) -> None:
    """∇ₓ CE(Wx + b, y) = Wᵀ(softmax(Wx + b) − e_y), so FGSM/FGM are explicit."""
    w, b, x, y = _problem(device=device)
    eps = 0.15
    grad = (F.softmax(x @ w.T + b, dim=1) - F.one_hot(y, w.shape[0]).to(DT)) @ w
    if targeted:
        grad = -grad
    if norm == "linf":
        step = eps * grad.sign()
    else:
        step = eps * grad / grad.norm(dim=1, keepdim=True)
    expected = (x + step).clamp(0, 1)
    got = fgsm(linear(w, b).to(device), x, y, eps=eps, norm=norm, targeted=targeted)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_fgsm_binary_linear_is_sign_of_w() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(30, generator=g, dtype=DT)
    x = torch.rand(8, 30, generator=g, dtype=DT)
    model = binary_linear(w, 0.3)
    y0 = torch.zeros(8, dtype=torch.long)
    torch.testing.assert_close(fgsm(model, x, y0, eps=0.1), (x + 0.1 * w.sign()).clamp(0, 1))
    torch.testing.assert_close(  # away from class 1 is −sign(w); towards class 1 is +sign(w)
        fgsm(model, x, 1 - y0, eps=0.1), (x - 0.1 * w.sign()).clamp(0, 1)
    )
    torch.testing.assert_close(
        fgsm(model, x, 1 - y0, eps=0.1, targeted=True), (x + 0.1 * w.sign()).clamp(0, 1)
    )


def test_fast_fgsm_is_one_projected_step_from_the_random_start() -> None:
    w, b, x, y = _problem()
    eps, alpha = 0.1, 0.125
    model = linear(w, b)
    got = fgsm(model, x, y, eps=eps, random_start=True,
               generator=torch.Generator().manual_seed(4))
    delta0 = (torch.rand(x.shape, generator=torch.Generator().manual_seed(4), dtype=DT) * 2 - 1)
    start = (x + delta0 * eps).clamp(0, 1)
    grad = (F.softmax(start @ w.T + b, dim=1) - F.one_hot(y, 5).to(DT)) @ w
    expected = (x + (start - x + alpha * grad.sign()).clamp(-eps, eps)).clamp(0, 1)
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- PGD


def test_pgd_linf_on_binary_linear_reaches_the_box_corner() -> None:
    """For a binary affine model the loss is monotone in w·x, so its maximiser over the L∞ ball
    intersected with the box is coordinate-wise: clip(x − ε·sign(w)) for class 1."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(20, generator=g, dtype=DT)
    x = torch.rand(6, 20, generator=g, dtype=DT)
    y = torch.ones(6, dtype=torch.long)
    got = pgd(binary_linear(w, 0.0), x, y, eps=0.1, steps=10, alpha=0.05,
              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, (x - 0.1 * w.sign()).clamp(0, 1), atol=1e-12, rtol=0)


def test_pgd_l2_on_binary_linear_reaches_the_sphere_point() -> None:
    """Without active box constraints the L2 maximiser is x − ε·w/‖w‖ (class 1)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, generator=g, dtype=DT)
    x = torch.rand(6, 20, generator=g, dtype=DT)
    y = torch.ones(6, dtype=torch.long)
    got = pgd(binary_linear(w, 0.0), x, y, eps=0.5, steps=40, norm="l2", alpha=1.0,
              bounds=(-10.0, 10.0), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, x - 0.5 * w / w.norm(), atol=1e-6, rtol=0)


def test_pgd_targeted_success_means_prediction_is_target() -> None:
    w, b, x, _ = _problem(n=40)
    model = linear(w, b)
    target = torch.arange(40) % 5
    x_adv = pgd(model, x, target, eps=3.0, steps=20, norm="l2", targeted=True,
                generator=torch.Generator().manual_seed(0))
    pred = model(x_adv).argmax(1)
    assert (pred == target).float().mean() > 0.5
    assert (batch_norms(x_adv - x, "l2") <= 3.0 + 1e-9).all()


# --------------------------------------------------------------------------- DeepFool


def _affine_distance(w: Tensor, b: Tensor, x: Tensor, y: Tensor, dual: str) -> Tensor:
    """Exact distance to the complement of {argmax = y} of an affine classifier:
    min_{k≠y} (z_y − z_k) / ‖w_y − w_k‖_q (q = 2 for L2, q = 1 for L∞)."""
    z = x @ w.T + b
    gap = z.gather(1, y[:, None]) - z
    dw = w[y][:, None, :] - w[None, :, :]
    q = 2 if dual == "l2" else 1
    dist = gap / torch.linalg.vector_norm(dw, ord=q, dim=2)
    dist[torch.arange(len(y)), y] = math.inf
    return dist.amin(dim=1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_binary_linear_reaches_the_analytic_distance(
    norm: str, device: torch.device
) -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.randn(16, generator=g, dtype=DT).to(device)
    x = torch.rand(10, 16, generator=g, dtype=DT).to(device)
    b = 0.1
    y = ((x @ w + b) > 0).long()
    overshoot = 0.02
    model = binary_linear(w, b).to(device)
    x_adv = deepfool(model, x, y, overshoot=overshoot, norm=norm, bounds=(-50.0, 50.0))
    q = 2 if norm == "l2" else 1
    d = (x @ w + b).abs() / torch.linalg.vector_norm(w, ord=q)
    got = batch_norms(x_adv - x, norm)
    assert (model(x_adv).argmax(1) != y).all()
    assert (got >= d * (1 + overshoot) - 1e-9).all()
    assert (got <= (1 + overshoot) * (d + 1e-4) + 1e-9).all()
    if norm == "l2":  # the step is along ±w
        cos = F.cosine_similarity(x_adv - x, w[None].expand_as(x), dim=1).abs()
        torch.testing.assert_close(cos, torch.ones_like(cos))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_multiclass_linear_reaches_the_analytic_distance(norm: str) -> None:
    w, b, x, _ = _problem(n=30, d=8, k=5)
    model = linear(w, b)
    y = model(x).argmax(1)
    x_adv = deepfool(model, x, y, overshoot=0.02, norm=norm, bounds=(-50.0, 50.0))
    d = _affine_distance(w, b, x, y, norm)
    got = batch_norms(x_adv - x, norm)
    assert (model(x_adv).argmax(1) != y).all()
    assert (got >= d - 1e-9).all()
    assert (got <= 1.02 * (d + 1e-4) + 1e-9).all()


def test_deepfool_candidates_restrict_the_search() -> None:
    """With 2 candidates only the runner-up class is considered: never closer than with all."""
    w, b, x, _ = _problem(n=30, d=8, k=6)
    model = linear(w, b)
    y = model(x).argmax(1)
    full = batch_norms(deepfool(model, x, y, bounds=(-50.0, 50.0)) - x, "l2")
    two = batch_norms(deepfool(model, x, y, candidates=2, bounds=(-50.0, 50.0)) - x, "l2")
    assert (two >= full - 1e-9).all()
    assert (two > full + 1e-6).any()


def test_deepfool_targeted_reaches_target() -> None:
    w, b, x, _ = _problem(n=30, d=8, k=5)
    model = linear(w, b)
    target = (model(x).argmax(1) + 1) % 5
    x_adv = deepfool(model, x, target, targeted=True, bounds=(-50.0, 50.0))
    assert (model(x_adv).argmax(1) == target).all()


def test_deepfool_leaves_misclassified_samples_alone() -> None:
    w, b, x, _ = _problem(n=20, d=8, k=5)
    model = linear(w, b)
    y = (model(x).argmax(1) + 1) % 5  # every sample misclassified
    assert torch.equal(deepfool(model, x, y), x)


# --------------------------------------------------------------------------- Carlini–Wagner


def test_cw_on_affine_model_is_near_optimal_and_beats_deepfool() -> None:
    """C&W cannot beat the exact distance, and should come within a few percent of it."""
    w, b, x, _ = _problem(n=16, d=8, k=4)
    model = linear(w, b)
    y = model(x).argmax(1)
    bounds = (-2.0, 2.0)  # the box is inactive: the analytic distance applies
    d = _affine_distance(w, b, x, y, "l2")
    x_cw = carlini_wagner(model, x, y, steps=200, binary_search_steps=9, lr=0.01, c=1.0,
                          bounds=bounds)
    x_df = deepfool(model, x, y, bounds=bounds)
    cw = batch_norms(x_cw - x, "l2")
    df = batch_norms(x_df - x, "l2")
    assert (model(x_cw).argmax(1) != y).all()
    assert (cw >= d - 1e-9).all()
    assert (cw <= 1.01 * d).all()
    assert (cw <= df).all()


def test_cw_targeted_success_means_prediction_is_target(device: torch.device) -> None:
    w, b, x, _ = _problem(n=20, d=8, k=4, device=device)
    model = linear(w, b).to(device)
    target = (model(x).argmax(1) + 2) % 4
    x_adv = carlini_wagner(model, x, target, targeted=True, steps=100, binary_search_steps=6,
                           lr=0.05, c=0.1, bounds=(-20.0, 20.0))
    moved = (x_adv != x).any(dim=1)
    pred = model(x_adv).argmax(1)
    assert moved.float().mean() > 0.9
    assert (pred[moved] == target[moved]).all()


def test_cw_confidence_margin_is_met() -> None:
    w, b, x, _ = _problem(n=16, d=8, k=4)
    model = linear(w, b)
    y = model(x).argmax(1)
    kappa = 2.0
    x_adv = carlini_wagner(model, x, y, confidence=kappa, steps=100, binary_search_steps=6,
                           lr=0.05, c=0.1, bounds=(-20.0, 20.0))
    z = model(x_adv)
    own = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -math.inf).amax(1)
    moved = (x_adv != x).any(dim=1)
    assert moved.all()
    assert (other - own > kappa).all()


def test_cw_failure_returns_the_clean_input() -> None:
    w, b, x, _ = _problem(n=8, d=8, k=4)
    model = linear(w, b)
    y = model(x).argmax(1)
    x_adv = carlini_wagner(model, x, y, steps=3, binary_search_steps=1, c=1e-6)
    assert torch.equal(x_adv, x)


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("d", [1, 2, 5])
def test_l2_random_start_is_uniform_in_the_ball(d: int) -> None:
    """Radius CDF of a uniform point in the d-ball is (r/ε)^d; the direction is isotropic."""
    n, eps = 20000, 0.7
    delta = sample_ball(torch.zeros(n, d, dtype=DT), eps, "l2", torch.Generator().manual_seed(0))
    r = (delta.norm(dim=1) / eps).sort().values
    assert r.max() <= 1 + 1e-12
    ks = ((r**d) - torch.arange(1, n + 1, dtype=DT) / n).abs().max()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov–Smirnov at the 1 % level
    direction = delta / delta.norm(dim=1, keepdim=True)
    assert direction.mean(dim=0).abs().max() < 4 / math.sqrt(n)


def test_linf_random_start_is_uniform_in_the_cube() -> None:
    n, eps = 20000, 0.3
    delta = sample_ball(torch.zeros(n, 3, dtype=DT), eps, "linf",
                        torch.Generator().manual_seed(0))
    assert delta.abs().max() <= eps
    torch.testing.assert_close(delta.var(dim=0), torch.full((3,), eps**2 / 3, dtype=DT),
                               atol=0.03 * eps**2, rtol=0)
    assert delta.mean(dim=0).abs().max() < 4 * eps / math.sqrt(3 * n)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_the_nearest_point_of_the_ball(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(200, 6, generator=g, dtype=DT)
    eps = 0.8
    p = project(delta, eps, norm)
    assert (batch_norms(p, norm) <= eps + 1e-12).all()
    torch.testing.assert_close(project(p, eps, norm), p)  # idempotent
    inside = batch_norms(delta, norm) <= eps
    torch.testing.assert_close(p[inside], delta[inside])
    # no other point of the ball is closer: compare with random feasible points
    cand = project(torch.randn(200 * 50, 6, generator=g, dtype=DT), eps, norm)
    cand = cand.reshape(200, 50, 6)
    cand_dist = (cand - delta[:, None]).norm(dim=2).amin(dim=1)
    assert ((p - delta).norm(dim=1) <= cand_dist + 1e-12).all()


@pytest.mark.parametrize("d", [1, 5, 784])
def test_l2_pgd_start_has_uniform_radius_and_isotropic_direction(d: int) -> None:
    """PGD's L2 start: radius/ε ~ U[0, 1] whatever the dimension (not pushed to the sphere)."""
    n, eps = 20000, 1.5
    delta = sample_start(torch.zeros(n, d, dtype=DT), eps, "l2",
                         torch.Generator().manual_seed(0))
    r = (delta.norm(dim=1) / eps).sort().values
    assert r.max() <= 1 + 1e-12
    ks = (r - torch.arange(1, n + 1, dtype=DT) / n).abs().max()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov–Smirnov at the 1 % level
    direction = delta / delta.norm(dim=1, keepdim=True)
    assert direction.mean(dim=0).abs().max() < 4.5 / math.sqrt(n)


def test_linf_pgd_start_is_the_uniform_box() -> None:
    x = torch.zeros(7, 3, dtype=DT)
    a = sample_start(x, 0.3, "linf", torch.Generator().manual_seed(1))
    b = sample_ball(x, 0.3, "linf", torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
