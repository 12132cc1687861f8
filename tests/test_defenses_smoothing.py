"""Training recipes for randomized smoothing: Gaussian augmentation, consistency, SmoothAdv.

Closed forms on reproduced noise draws, limits (σ → 0, λ = η = 0, ε = 0), the consistency
term of a model that ignores its input, a linear model's SmoothAdv maximiser, BatchNorm and
checkpoint behaviour, argument checks, and a two-moons run certified with
:func:`advbook.certify.certify`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbook.certify import certify
from advbook.data import make_two_moons
from advbook.defenses.smoothing import (
    ConsistencyObjective,
    GaussianAugmentationObjective,
    SmoothAdvObjective,
    consistency_objective,
    gaussian_augmentation_objective,
    smoothadv_objective,
)
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

Recipe = GaussianAugmentationObjective | ConsistencyObjective | SmoothAdvObjective
MAKERS: dict[str, Callable[[torch.Generator | None], Recipe]] = {
    "gaussian": lambda g: gaussian_augmentation_objective(0.3, m=2, generator=g),
    "consistency": lambda g: consistency_objective(0.3, m=3, generator=g),
    "smoothadv": lambda g: smoothadv_objective(0.2, 0.3, m=2, steps=3, generator=g),
}


def _mlp(d: int = 4, k: int = 3, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, k)).to(dtype)


def _batch(n: int = 6, d: int = 4, k: int = 3,
           dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(11)
    return torch.rand(n, d, generator=g, dtype=dtype), torch.arange(n) % k


def _gen(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_noise(x: Tensor, sigma: float, m: int, seed: int = 3) -> Tensor:
    """The documented draw: one ``randn`` of shape ``(N, m, *x.shape[1:])``, times ``σ``."""
    return sigma * torch.randn(x.shape[0], m, *x.shape[1:], generator=_gen(seed), dtype=x.dtype)


class _Constant(nn.Module):
    """Logits that ignore the input (but depend on a parameter)."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2, 0.5][:k], dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias.expand(x.shape[0], -1)


# ------------------------------------------------------------------ Gaussian augmentation
def test_gaussian_m1_is_cross_entropy_on_the_same_draw() -> None:
    model, (x, y) = _mlp(), _batch()
    loss, logp = gaussian_augmentation_objective(0.4, generator=_gen())(model, x, y)
    z = torch.randn(x.shape, generator=_gen(), dtype=x.dtype)
    logits = model(x + 0.4 * z)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(logp, F.log_softmax(logits, dim=1), rtol=1e-12, atol=1e-14)


def test_gaussian_m_draws_average_the_cross_entropy_sample_major() -> None:
    model, (x, y) = _mlp(), _batch()
    loss, logp = gaussian_augmentation_objective(0.4, m=3, generator=_gen())(model, x, y)
    noise = _reference_noise(x, 0.4, 3)
    per_copy = torch.stack([F.cross_entropy(model(x + noise[:, i]), y, reduction="none")
                            for i in range(3)], dim=1)
    torch.testing.assert_close(loss, per_copy.mean(), rtol=1e-12, atol=0)
    probs = torch.stack([model(x + noise[:, i]).softmax(1) for i in range(3)], dim=1).mean(1)
    torch.testing.assert_close(logp, probs.log(), rtol=1e-10, atol=1e-12)


def test_gaussian_noise_is_not_clipped_to_the_bounds() -> None:
    seen: list[Tensor] = []

    class Spy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(x.detach())
            return torch.stack([x.sum(1), -x.sum(1)], dim=1)

    x = torch.full((4, 3), 0.99, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    gaussian_augmentation_objective(0.5, m=4, generator=_gen())(Spy(), x, y)
    assert seen[0].shape == (16, 3)
    assert seen[0].max() > 1.0 and seen[0].min() < 0.99


def test_small_sigma_limit_is_plain_cross_entropy() -> None:
    model, (x, y) = _mlp(), _batch()
    loss, _ = gaussian_augmentation_objective(1e-9, m=2, generator=_gen())(model, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y), rtol=0, atol=1e-7)
    loss_c, _ = consistency_objective(1e-9, m=2, generator=_gen())(model, x, y)
    # the KL term vanishes; the entropy term is that of the clean prediction
    clean = model(x).softmax(1)
    entropy = -(clean * clean.log()).sum(1).mean()
    torch.testing.assert_close(loss_c, F.cross_entropy(model(x), y) + 0.5 * entropy,
                               rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- consistency
def _consistency_by_hand(model: nn.Module, x: Tensor, y: Tensor, sigma: float, m: int,
                         lam: float, eta: float) -> Tensor:
    """Jeong & Shin's loss written in probability space from the reproduced draws."""
    noise = _reference_noise(x, sigma, m)
    logits = [model(x + noise[:, i]) for i in range(m)]
    probs = [lg.softmax(1) for lg in logits]
    mean = sum(probs) / m
    assert isinstance(mean, Tensor)
    ce = sum(F.cross_entropy(lg, y) for lg in logits) / m
    kl = sum((mean * (mean.log() - p.log())).sum(1).mean() for p in probs) / m
    entropy = -(mean * mean.log()).sum(1).mean()
    out = ce + lam * kl + eta * entropy
    assert isinstance(out, Tensor)
    return out


@pytest.mark.parametrize(("m", "lam", "eta"), [(2, 10.0, 0.5), (4, 3.0, 0.0), (3, 0.0, 2.0)])
def test_consistency_matches_the_formula(m: int, lam: float, eta: float) -> None:
    model, (x, y) = _mlp(), _batch()
    loss, logp = consistency_objective(0.5, m=m, lam=lam, eta=eta, generator=_gen())(model, x, y)
    by_hand = _consistency_by_hand(model, x, y, 0.5, m, lam, eta)
    torch.testing.assert_close(loss, by_hand, rtol=1e-10, atol=1e-12)
    params = list(model.parameters())  # gradients flow through p̂ too, as in the reference
    for ours, ref in zip(torch.autograd.grad(loss, params), torch.autograd.grad(by_hand, params),
                         strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    assert logp.shape == (x.shape[0], 3)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(x.shape[0], dtype=x.dtype))


def test_consistency_without_regularisers_is_the_mean_cross_entropy_over_copies() -> None:
    model, (x, y) = _mlp(), _batch()
    loss, _ = consistency_objective(0.5, m=3, lam=0.0, eta=0.0, generator=_gen())(model, x, y)
    gauss, _ = gaussian_augmentation_objective(0.5, m=3, generator=_gen())(model, x, y)
    noise = _reference_noise(x, 0.5, 3)
    mean_ce = torch.stack([F.cross_entropy(model(x + noise[:, i]), y) for i in range(3)]).mean()
    torch.testing.assert_close(loss, mean_ce, rtol=1e-12, atol=0)
    assert torch.equal(loss, gauss)


def _kl_term(model: nn.Module, x: Tensor, y: Tensor, m: int = 3) -> float:
    """``loss(λ=1, η=0) − loss(λ=0, η=0)`` on the same draws: the mean KL term."""
    with_kl, _ = consistency_objective(0.5, m=m, lam=1.0, eta=0.0, generator=_gen())(model, x, y)
    without, _ = consistency_objective(0.5, m=m, lam=0.0, eta=0.0, generator=_gen())(model, x, y)
    return float((with_kl - without).detach())


def test_kl_term_is_zero_for_a_model_that_ignores_its_input_and_positive_otherwise() -> None:
    x, y = _batch()
    assert abs(_kl_term(_Constant(), x, y)) < 1e-12
    assert _kl_term(_mlp(), x, y) > 1e-4
    assert _kl_term(_mlp(), x, y, m=1) == 0.0  # one copy agrees with itself


def test_entropy_term_of_an_input_ignoring_model_is_the_entropy_of_its_prediction() -> None:
    x, y = _batch()
    model = _Constant()
    loss, _ = consistency_objective(0.5, m=2, lam=7.0, eta=2.0, generator=_gen())(model, x, y)
    p = model.bias.softmax(0)
    expected = F.cross_entropy(model(x), y) + 2.0 * -(p * p.log()).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_gradients_reach_every_parameter(name: str) -> None:
    model, (x, y) = _mlp(), _batch()
    loss, _ = MAKERS[name](_gen())(model, x, y)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_the_consistency_term_itself_has_a_gradient() -> None:
    model, (x, y) = _mlp(), _batch()
    reg, _ = consistency_objective(0.5, m=3, lam=1.0, eta=0.0, generator=_gen())(model, x, y)
    ce, _ = consistency_objective(0.5, m=3, lam=0.0, eta=0.0, generator=_gen())(model, x, y)
    grads = torch.autograd.grad(reg - ce, list(model.parameters()))
    assert sum(float(g.abs().sum()) for g in grads) > 1e-6


# ------------------------------------------------------------------------------ SmoothAdv
def test_smoothadv_maximiser_of_a_linear_binary_model_moves_eps_against_the_margin() -> None:
    # f(x) = W x: the gradient of −log p̂_y points along w_other − w_y for every draw
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0]]))
    x = torch.zeros(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    recipe = smoothadv_objective(0.3, 0.25, m=3, steps=4, bounds=(-5.0, 5.0), generator=_gen())
    noise = _reference_noise(x, 0.25, 3)
    x_adv = recipe.adversarial_examples(model, x, y, noise)
    w = model.weight.detach()
    direction = (w[1 - y] - w[y]) / (w[1 - y] - w[y]).norm(dim=1, keepdim=True)
    torch.testing.assert_close(x_adv, x + 0.3 * direction, rtol=1e-10, atol=1e-12)


def test_smoothadv_stays_in_ball_and_box_and_raises_the_smoothed_loss() -> None:
    model, (x, y) = _mlp(), _batch()
    recipe = smoothadv_objective(0.5, 0.3, m=4, steps=5, generator=_gen())
    noise = _reference_noise(x, 0.3, 4)
    x_adv = recipe.adversarial_examples(model, x, y, noise)
    assert ((x_adv - x).norm(dim=1) <= 0.5 + 1e-9).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1

    def smoothed_ce(z: Tensor) -> Tensor:
        probs = torch.stack([model(z + noise[:, i]).softmax(1) for i in range(4)], 1).mean(1)
        return F.nll_loss(probs.log(), y, reduction="none")

    assert (smoothed_ce(x_adv) >= smoothed_ce(x) - 1e-12).all()
    assert smoothed_ce(x_adv).mean() > smoothed_ce(x).mean() + 1e-3
    loss, _ = recipe(model, x, y)
    expected = torch.stack([F.cross_entropy(model(x_adv + noise[:, i]), y)
                            for i in range(4)]).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_one_smoothadv_step_follows_the_gradient_of_the_smoothed_not_the_mean_loss() -> None:
    # one step of α = 2ε, projected back to the sphere: x' = x + ε·∇J/‖∇J‖₂ with
    # J = −log((1/m) Σ_i softmax f(x + δ_i)_y), not the mean of the per-draw cross-entropies
    model, (x, y) = _mlp(), _batch()
    noise = _reference_noise(x, 0.6, 4)
    recipe = smoothadv_objective(0.1, 0.6, m=4, steps=1, bounds=(-5.0, 5.0), generator=_gen())
    x_adv = recipe.adversarial_examples(model, x, y, noise)

    def step(loss: Callable[[Tensor], Tensor]) -> Tensor:
        z = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(z).sum(), z)
        return x + 0.1 * grad / grad.norm(dim=1, keepdim=True)

    def smoothed(z: Tensor) -> Tensor:
        probs = torch.stack([model(z + noise[:, i]).softmax(1) for i in range(4)], 1).mean(1)
        return F.nll_loss(probs.log(), y, reduction="none")

    def per_draw(z: Tensor) -> Tensor:
        return torch.stack([F.cross_entropy(model(z + noise[:, i]), y, reduction="none")
                            for i in range(4)], 1).mean(1)

    torch.testing.assert_close(x_adv, step(smoothed), rtol=1e-9, atol=1e-12)
    assert (x_adv - step(per_draw)).abs().max() > 1e-6


def test_smoothadv_with_zero_eps_is_gaussian_augmentation() -> None:
    model, (x, y) = _mlp(), _batch()
    adv, _ = smoothadv_objective(0.0, 0.3, m=2, generator=_gen())(model, x, y)
    gauss, _ = gaussian_augmentation_objective(0.3, m=2, generator=_gen())(model, x, y)
    assert torch.equal(adv, gauss)


# ------------------------------------------------------------- modes, BatchNorm, state
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_batchnorm_sees_the_noisy_batch_once_and_modes_are_kept(name: str) -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4, momentum=1.0).double()
    model = nn.Sequential(bn, nn.Linear(4, 3)).double()
    x, y = _batch()
    model.train()
    MAKERS[name](_gen())(model, x, y)
    assert model.training and all(mod.training for mod in model.modules())
    assert int(bn.num_batches_tracked) == 1  # one train-mode pass (SmoothAdv attacks in eval)
    if name != "smoothadv":
        sigma, m = (0.3, 2) if name == "gaussian" else (0.3, 3)
        rows = (x.unsqueeze(1) + _reference_noise(x, sigma, m)).reshape(-1, 4)
        torch.testing.assert_close(bn.running_mean, rows.mean(0), rtol=1e-10, atol=1e-12)
    model.eval()
    before = bn.running_mean.clone()
    MAKERS[name](_gen())(model, x, y)
    assert not model.training and torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_seeded_runs_repeat_and_state_dict_resumes_the_next_loss(name: str) -> None:
    model, (x, y) = _mlp(), _batch()
    a, b = MAKERS[name](_gen(5)), MAKERS[name](_gen(5))
    first = a(model, x, y)[0]
    assert torch.equal(first, b(model, x, y)[0])
    state = copy.deepcopy(a.state_dict())
    assert set(state) == ({"eps", "generator"} if name == "smoothadv" else {"generator"})
    following = a(model, x, y)[0]
    assert not torch.equal(following, first)  # fresh noise for every batch
    assert torch.equal(following, b(model, x, y)[0])
    other = MAKERS[name](_gen(99))
    other.load_state_dict(state)
    assert torch.equal(other(model, x, y)[0], following)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_fit_resume_equals_an_uninterrupted_run(name: str, tmp_path: Path) -> None:
    x, y = _batch(24, dtype=torch.float32)

    def run(epochs: int, ck: Path | None, resume: bool) -> dict[str, Tensor]:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        fit(net, x, y, epochs=epochs, batch_size=8, objective=MAKERS[name](_gen(7)),
            progress=False, checkpoint=ck, resume=resume)
        return net.state_dict()

    whole = run(2, None, False)
    ck = tmp_path / "ck.pt"
    run(1, ck, False)
    resumed = run(2, ck, True)
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_cpu_generator_gives_the_same_loss_on_every_device(name: str,
                                                              device: torch.device) -> None:
    model, (x, y) = _mlp(dtype=torch.float32), _batch(dtype=torch.float32)
    expected, _ = MAKERS[name](_gen())(model, x, y)
    loss, logp = MAKERS[name](_gen())(model.to(device), x.to(device), y.to(device))
    assert loss.device.type == device.type and logp.dtype == torch.float32
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-4, atol=1e-5)


def test_repr_shows_the_settings() -> None:
    assert repr(consistency_objective(0.25, lam=5.0)) == (
        "ConsistencyObjective(sigma=0.25, m=2, bounds=(0.0, 1.0), lam=5.0, eta=0.5)")
    assert repr(gaussian_augmentation_objective(0.5, m=4)) == (
        "GaussianAugmentationObjective(sigma=0.5, m=4, bounds=(0.0, 1.0))")
    assert repr(smoothadv_objective(0.5, 0.25, steps=2)) == (
        "SmoothAdvObjective(eps=0.5, sigma=0.25, m=1, steps=2, alpha=0.5, bounds=(0.0, 1.0))")


def test_no_generator_uses_the_global_rng_and_has_no_state() -> None:
    model, (x, y) = _mlp(), _batch()
    recipe = gaussian_augmentation_objective(0.3)
    assert recipe.state_dict() == {}
    torch.manual_seed(1)
    first = recipe(model, x, y)[0]
    torch.manual_seed(1)
    assert torch.equal(recipe(model, x, y)[0], first)
    with pytest.raises(ValueError, match="no generator"):
        recipe.load_state_dict({"generator": _gen().get_state()})


# --------------------------------------------------------------------------- bad input
BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: gaussian_augmentation_objective(0.0), "sigma"),
    (lambda: gaussian_augmentation_objective(-0.1), "sigma"),
    (lambda: gaussian_augmentation_objective(math.nan), "sigma"),
    (lambda: gaussian_augmentation_objective(math.inf), "sigma"),
    (lambda: gaussian_augmentation_objective(0.3, m=0), "m"),
    (lambda: gaussian_augmentation_objective(0.3, bounds=(1.0, 0.0)), "bounds"),
    (lambda: consistency_objective(0.0), "sigma"),
    (lambda: consistency_objective(0.3, m=0), "m"),
    (lambda: consistency_objective(0.3, lam=-1.0), "lam"),
    (lambda: consistency_objective(0.3, lam=math.nan), "lam"),
    (lambda: consistency_objective(0.3, eta=-0.5), "eta"),
    (lambda: consistency_objective(0.3, eta=math.inf), "eta"),
    (lambda: smoothadv_objective(-0.1, 0.3), "eps"),
    (lambda: smoothadv_objective(0.5, 0.0), "sigma"),
    (lambda: smoothadv_objective(0.5, 0.3, m=0), "m"),
    (lambda: smoothadv_objective(0.5, 0.3, steps=0), "steps"),
    (lambda: smoothadv_objective(0.5, 0.3, alpha=0.0), "alpha"),
]


@pytest.mark.parametrize(("make", "arg"), BAD, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD)])
def test_bad_hyper_parameters_raise_value_errors_naming_the_argument(
        make: Callable[[], object], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        make()


def test_wrong_types_raise_type_errors() -> None:
    with pytest.raises(TypeError, match="m"):
        consistency_objective(0.3, m=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        gaussian_augmentation_objective(0.3, generator=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_bad_batches_are_refused_before_any_forward_pass(name: str) -> None:
    calls = []

    class Counting(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(1)
            return torch.zeros(x.shape[0], 3, dtype=x.dtype)

    recipe = MAKERS[name](_gen())
    x, y = _batch()
    with pytest.raises(ValueError, match="bounds"):
        recipe(Counting(), x + 2.0, y)
    with pytest.raises(ValueError, match="NaN"):
        recipe(Counting(), x.masked_fill(x > 0.5, math.nan), y)
    with pytest.raises(ValueError, match="shape"):
        recipe(Counting(), x, y[:-1])
    with pytest.raises(ValueError, match="at least one"):
        recipe(Counting(), x[:0], y[:0])
    assert not calls


def test_a_model_with_the_wrong_output_shape_is_named() -> None:
    class Flat(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.sum(1)

    x, y = _batch()
    with pytest.raises(ValueError, match=r"\(N·m, K\)"):
        consistency_objective(0.3)(Flat(), x, y)


# ------------------------------------------------------------------------ two-moons toy
def _noisy_accuracy(model: nn.Module, x: Tensor, y: Tensor, sigma: float) -> float:
    """``mean_n P(f(x_n + δ) = y_n)`` over 200 draws per point: accuracy under the noise."""
    noise = sigma * torch.randn(x.shape[0], 200, *x.shape[1:], generator=_gen(6))
    with torch.no_grad():
        pred = model((x.unsqueeze(1) + noise).reshape(-1, *x.shape[1:])).argmax(1)
    return float((pred.reshape(x.shape[0], 200) == y[:, None]).float().mean())


def _average_certified_radius(model: nn.Module, x: Tensor, y: Tensor, sigma: float) -> float:
    labels, radii = certify(model, x, sigma=sigma, n0=50, n=1000, alpha=0.001,
                            batch_size=20_000, bounds=(-3.0, 3.0), generator=_gen(5),
                            progress=False)
    return float(torch.where(labels == y, radii, torch.zeros_like(radii)).mean())


def test_two_moons_consistency_certifies_larger_radii_than_standard_training() -> None:
    # Jeong & Shin's claim: a larger average certified radius (ACR) than standard training
    # and than Gaussian augmentation at the same σ. (Measured over four seeds: ACR 0.37-0.38
    # standard, 0.52-0.57 Gaussian, 0.55-0.64 consistency. The accuracy of f under the noise
    # is higher after Gaussian augmentation, 0.80-0.83 against 0.79-0.80, but not robustly
    # after consistency training, 0.78-0.81: λ = 10 buys stable votes, not noisy accuracy.)
    sigma = 0.5
    x, y = make_two_moons(400, noise=0.1, seed=11)
    xt, yt = make_two_moons(200, noise=0.1, seed=101)
    recipes: dict[str, object] = {
        "standard": None,
        "gaussian": gaussian_augmentation_objective(sigma, bounds=(-3.0, 3.0), generator=_gen(1)),
        "consistency": consistency_objective(sigma, bounds=(-3.0, 3.0), generator=_gen(1)),
    }
    acr, noisy_acc = {}, {}
    for name, objective in recipes.items():
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                            nn.Linear(32, 2))
        fit(net, x, y, epochs=20, batch_size=32, lr=1e-2, objective=objective,  # type: ignore[arg-type]
            progress=False, seed=1)
        acr[name] = _average_certified_radius(net, xt, yt, sigma)
        noisy_acc[name] = _noisy_accuracy(net, xt, yt, sigma)
    assert acr["consistency"] > 1.25 * acr["standard"], acr
    assert acr["consistency"] > acr["gaussian"] + 0.01, acr
    assert noisy_acc["gaussian"] > noisy_acc["standard"], noisy_acc
