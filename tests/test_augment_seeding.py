"""Tests of the augmentation's seeding, bounds policy, model-state restoration and renamed names."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook import augment
from advbook.augment import (
    AdversarialAugment,
    Compose,
    RandomAffine,
    RandomBrightness,
    RandomGaussianNoise,
    domain_randomization,
    rand_augment,
)


def _fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + 0.1 * grad.sign()).clamp(0, 1).detach()


def _images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ model state (task: BN freeze)
def test_adversarial_augment_keeps_each_module_s_training_flag() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    ).train()
    model[1].eval()  # a BatchNorm frozen in eval mode inside a training model
    model[0].weight.requires_grad_(False)  # and one frozen parameter
    flags = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    seen: list[list[bool]] = []

    def spy(m: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        seen.append([sub.training for sub in m.modules()])
        return _fgsm(m, xs, ys)

    x, y = _images(), torch.arange(8) % 3
    AdversarialAugment(spy, 0.5, seed=0)(model, x, y)
    assert seen == [[False] * len(flags)], "the attack runs with every module in eval mode"
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == grads


# ------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomAffine(degrees=30),
        lambda: RandomBrightness(0.3),
        lambda: domain_randomization(1.0),
        lambda: rand_augment(2, 5),
        lambda: Compose([RandomGaussianNoise((0.1, 0.2))]),
    ],
)
def test_default_seeds_are_fresh_and_follow_torch_manual_seed(make) -> None:
    x = _images()
    a, b = make(), make()
    assert a.seed != b.seed
    shape = tuple(x.shape)
    pa, pb = a.sample_params(shape), b.sample_params(shape)
    assert any(not torch.equal(pa[k], pb[k]) for k in pa), "independent streams"
    torch.manual_seed(123)
    c = make()
    torch.manual_seed(123)
    d = make()
    assert c.seed == d.seed
    assert torch.equal(c(x), d(x)), "torch.manual_seed before construction makes runs repeat"
    # self.seed is the seed actually used: its generator replays the owned stream
    e = make()
    assert isinstance(e.seed, int) and e.seed >= 0
    assert torch.equal(e(x, generator=torch.Generator().manual_seed(e.seed)), e(x))


def test_explicit_seed_is_unchanged_and_touches_no_global_state() -> None:
    x = _images()
    state = torch.get_rng_state()
    t = RandomAffine(degrees=30, seed=5)
    preset = domain_randomization(1.0, seed=5)
    assert torch.equal(torch.get_rng_state(), state), "an explicit seed draws nothing globally"
    assert t.seed == 5 and preset.seed == 5
    assert torch.equal(t(x), t(x, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(preset(x), preset(x, generator=torch.Generator().manual_seed(5)))


def test_adversarial_augment_default_seed() -> None:
    a, b = AdversarialAugment(_fgsm, 0.5), AdversarialAugment(_fgsm, 0.5)
    assert a.seed != b.seed
    torch.manual_seed(7)
    c = AdversarialAugment(_fgsm, 0.5).sample_params(100)["index"]
    torch.manual_seed(7)
    d = AdversarialAugment(_fgsm, 0.5).sample_params(100)["index"]
    assert torch.equal(c, d)
    with pytest.raises(ValueError, match="seed"):
        AdversarialAugment(_fgsm, 0.5, seed=-1)


# -------------------------------------------------------------------------------------- bounds
def test_bounds_are_strict() -> None:
    x = _images()
    t = RandomBrightness(0.1, seed=0)
    edges = x.clone()
    edges[0, 0, 0, :2] = torch.tensor([0.0, 1.0])
    t(edges)  # the bounds themselves are inside
    above, below = edges.clone(), edges.clone()
    above[0, 0, 0, 1] = 1 + 1e-6
    below[0, 0, 0, 0] = -1e-6
    for outside in (above, below):
        with pytest.raises(ValueError, match=r"inside bounds \[0.0, 1.0\]"):
            t(outside)  # no slack, like the attacks
    with pytest.raises(ValueError, match="NaN"):
        t(torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="bounds"):
        AdversarialAugment(_fgsm, 0.5, seed=0)(nn.Flatten(), below, torch.zeros(8).long())


# -------------------------------------------------------------------------------------- rename
def test_gaussian_noise_alias_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match="RandomGaussianNoise"):
        alias = augment.GaussianNoise
    assert alias is RandomGaussianNoise
    assert "GaussianNoise" not in augment.__all__
    assert "RandomGaussianNoise" in augment.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from advbook.augment import RandomGaussianNoise as again  # noqa: F401
    with pytest.raises(AttributeError):
        augment.NoSuchTransform  # noqa: B018
