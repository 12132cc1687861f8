"""Tests of adversarial augmentation and of the ``batch_hook`` adapter for ``advbook.train.fit``.

The attacks here are tiny local FGSM-like callables so that these tests do not depend on
``advbook.attacks``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook.augment import AdversarialAugment, RandomAffine, RandomGaussianNoise, as_batch_hook
from advbook.train import fit

EPS = 0.1


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + ε·sign(∇ₓ CE), clipped to [0, 1] — computed with autograd.grad w.r.t. x only."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + EPS * grad.sign()).clamp(0, 1).detach()


def fgsm_with_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A careless attack that calls ``.backward()`` (would leave ``.grad`` on parameters)."""
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    assert x.grad is not None
    return (x + EPS * x.grad.sign()).clamp(0, 1).detach()


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    )


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 3, (12,), generator=g)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_replaces_the_chosen_fraction_by_attack_outputs(data, device: torch.device) -> None:
    x, y = (t.to(device) for t in data)
    model = make_model().to(device).train()
    aug = AdversarialAugment(fgsm, fraction=0.25)
    out, params = aug(model, x, y, return_params=True)
    index = params["index"]
    assert index.numel() == 3 == aug.num_replaced(12)
    assert index.unique().numel() == 3 and ((index >= 0) & (index < 12)).all()
    kept = torch.ones(12, dtype=torch.bool, device=device)
    kept[index] = False
    assert torch.equal(out[kept], x[kept])
    reference = fgsm(copy.deepcopy(model).eval(), x[index], y[index])  # independent, eval mode
    torch.testing.assert_close(out[index], reference)
    assert ((out[index] - x[index]).abs().amax(dim=(1, 2, 3)) > EPS / 2).all()
    assert (out - x).abs().max() <= EPS + 1e-6
    assert not out.requires_grad
    assert torch.equal(aug(model, x, y, params=params), out), "replay"


def test_model_is_left_untouched(data) -> None:
    x, y = data
    for attack in (fgsm, fgsm_with_backward):
        model = make_model()
        model[0].bias.requires_grad_(False)  # a frozen parameter stays frozen
        flags = [p.requires_grad for p in model.parameters()]
        before = _snapshot(model)
        for mode in (True, False):
            model.train(mode)
            AdversarialAugment(attack, fraction=0.5)(model, x, y)
            assert model.training is mode
        after = _snapshot(model)
        assert all(torch.equal(before[k], after[k]) for k in before), "parameters/BN stats"
        assert all(p.grad is None for p in model.parameters())
        assert [p.requires_grad for p in model.parameters()] == flags


def test_attack_runs_in_eval_mode_without_parameter_gradients(data) -> None:
    x, y = data
    seen: list[tuple[bool, bool, int]] = []

    def spy(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        seen.append((model.training, any(p.requires_grad for p in model.parameters()), len(xs)))
        return xs

    model = make_model().train()
    out = AdversarialAugment(spy, fraction=0.5)(model, x, y)
    assert seen == [(False, False, 6)]
    assert torch.equal(out, x)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_state_is_restored_when_the_attack_raises(data) -> None:
    x, y = data

    def broken(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        model(xs)
        raise RuntimeError("attack failed")

    model = make_model().train()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="attack failed"):
        AdversarialAugment(broken, fraction=0.5)(model, x, y)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fraction_extremes_and_seeding(data) -> None:
    x, y = data
    model = make_model()
    calls: list[int] = []

    def counting(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        calls.append(len(xs))
        return fgsm(model, xs, ys)

    assert torch.equal(AdversarialAugment(counting, 0.0)(model, x, y), x)
    assert calls == []
    out = AdversarialAugment(counting, 1.0)(model, x, y)
    assert calls == [12] and ((out - x).abs().amax(dim=(1, 2, 3)) > 0).all()
    a = AdversarialAugment(fgsm, 0.5, seed=1).sample_params(100)["index"]
    b = AdversarialAugment(fgsm, 0.5, seed=1).sample_params(100)["index"]
    c = AdversarialAugment(fgsm, 0.5, seed=2).sample_params(100)["index"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every position is equally likely to be replaced
    aug = AdversarialAugment(fgsm, 0.25)
    counts = torch.zeros(8)
    for _ in range(400):
        counts[aug.sample_params(8)["index"]] += 1
    assert (counts / 400 - 0.25).abs().max() < 0.1


def test_bad_inputs(data) -> None:
    x, y = data
    model = make_model()
    with pytest.raises(TypeError, match="callable"):
        AdversarialAugment("fgsm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fraction"):
        AdversarialAugment(fgsm, 1.5)
    aug = AdversarialAugment(fgsm, 0.5)
    with pytest.raises(ValueError, match="same positive number"):
        aug(model, x, y[:5])
    with pytest.raises(ValueError, match="bounds"):
        aug(model, x + 1.5, y)
    with pytest.raises(TypeError, match="Module"):
        aug(lambda t: t, x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="6 positions"):
        aug(model, x, y, params={"index": torch.arange(5)})
    with pytest.raises(ValueError, match="repeat"):
        aug(model, x, y, params={"index": torch.zeros(6, dtype=torch.long)})
    with pytest.raises(ValueError, match="shape"):
        AdversarialAugment(lambda m, xs, ys: xs[:, :, :4], 0.5)(model, x, y)


def test_hook_augments_in_train_mode_only(data) -> None:
    x, y = data
    model = make_model()
    hook = as_batch_hook(RandomGaussianNoise((0.1, 0.2)), AdversarialAugment(fgsm, 0.5))
    model.eval()
    x_out, y_out = hook(model, x, y)
    assert x_out is x and y_out is y
    model.train()
    x_out, y_out = hook(model, x, y)
    assert y_out is y and not torch.equal(x_out, x)
    assert x_out.min() >= 0 and x_out.max() <= 1 and model.training
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = as_batch_hook(RandomAffine(degrees=20), generator=g1)(model, x, y)[0]
    second = as_batch_hook(RandomAffine(degrees=20, seed=9), generator=g2)(model, x, y)[0]
    assert torch.equal(first, second), "a shared generator makes the hook reproducible"
    with pytest.raises(TypeError, match="Transform"):
        as_batch_hook(fgsm)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        as_batch_hook()


def test_hook_in_the_training_loop(data) -> None:
    x, y = data
    model = make_model()
    calls: list[bool] = []

    def spy(model: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        calls.append(model.training)
        return fgsm(model, xs, ys)

    before = _snapshot(model)
    hook = as_batch_hook(RandomAffine(degrees=15), AdversarialAugment(spy, 0.5))
    history = fit(model, x, y, epochs=2, batch_size=4, batch_hook=hook, progress=False)
    assert len(history) == 2 and history["train_loss"].notna().all()
    assert calls == [False] * 6  # 3 batches × 2 epochs, attacked in eval mode
    assert model.training
    after = _snapshot(model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the model trained"
