"""The gradient-masking guard: a vanished input gradient is reported, never silently "robust"."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import (
    GradientMaskingError,
    GradientMaskingWarning,
    accuracy_vs_eps,
    apgd,
    carlini_wagner,
    deepfool,
    fab,
    fgsm,
    min_norm_distances,
    pgd,
    robust_accuracy,
)

AttackFn = Callable[..., Tensor]

ATTACKS: dict[str, AttackFn] = {
    "fgsm": partial(fgsm, eps=0.1),
    "fgsm-l2-fast": partial(fgsm, eps=0.5, norm="l2", random_start=True,
                            generator=torch.Generator().manual_seed(0)),
    "pgd": partial(pgd, eps=0.1, steps=3, generator=torch.Generator().manual_seed(0)),
    "pgd-l2-restarts": partial(pgd, eps=0.5, steps=2, norm="l2", restarts=2,
                               generator=torch.Generator().manual_seed(0)),
    "pgd-early-stop": partial(pgd, eps=0.1, steps=3, restarts=2, early_stop=True,
                              generator=torch.Generator().manual_seed(0)),
    "pgd-max-loss": partial(pgd, eps=0.1, steps=2, select="max_loss",
                            generator=torch.Generator().manual_seed(0)),
    "deepfool": partial(deepfool, steps=4),
    "deepfool-linf": partial(deepfool, steps=4, norm="linf"),
    "cw": partial(carlini_wagner, steps=4, binary_search_steps=2),
    "apgd": partial(apgd, eps=0.1, steps=5, n_targets=2,
                    generator=torch.Generator().manual_seed(0)),
    "apgd-l2-dlr": partial(apgd, eps=0.5, norm="l2", loss="dlr", steps=4, restarts=2,
                           n_targets=2, generator=torch.Generator().manual_seed(0)),
    "fab-t": partial(fab, eps=0.1, steps=4, n_targets=2,
                     generator=torch.Generator().manual_seed(0)),
}

pytestmark = pytest.mark.usefixtures("one_thread")


class Detaching(nn.Module):
    """A CNN with BatchNorm and Dropout whose forward detaches its input (parameters trainable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = x.detach()
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


class Constant(nn.Module):
    """Outputs that do not change with the input (a trainable constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([2.0, 0.0, -1.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.detach().flatten(1)[:, :1]


class Gated(nn.Module):
    """A linear model that cuts the input off (constant logits) where pixel 0 is below 0.5."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(36, 3)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        gate = (flat[:, :1].detach() > 0.5).to(x.dtype)
        return self.fc(flat * gate)


def _data(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _correct_labels(model: nn.Module, x: Tensor) -> Tensor:
    """Labels equal to the clean prediction: every sample is attacked and starts unfooled."""
    with torch.no_grad():
        was = model.training
        model.eval()
        y = model(x).argmax(dim=1)
        model.train(was)
    return y


def _masking_warnings(record: list[warnings.WarningMessage]) -> list[GradientMaskingWarning]:
    return [w.message for w in record if isinstance(w.message, GradientMaskingWarning)]


def _run(attack: AttackFn, model: nn.Module, x: Tensor, y: Tensor,
         **kwargs: object) -> list[GradientMaskingWarning]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        attack(model, x, y, **kwargs)
    return _masking_warnings(record)


def test_classes_are_exported() -> None:
    assert issubclass(GradientMaskingWarning, UserWarning)
    assert issubclass(GradientMaskingError, ValueError)


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("model_cls", [Detaching, Constant])
def test_masked_model_warns_for_every_sample(name: str, model_cls: type[nn.Module]) -> None:
    model = model_cls().eval()
    x, _ = _data()
    y = _correct_labels(model, x)
    caught = _run(ATTACKS[name], model, x, y)
    assert len(caught) == 1
    message = str(caught[0])
    assert caught[0].masked == 6 and caught[0].total == 6
    assert "for all 6 samples it did not fool" in message
    assert "does not change with its input" in message
    assert "not evidence of robustness" in message
    assert 'see the book, section "Gradient masking" (sec-gradient-masking)' in message


@pytest.mark.parametrize("name", list(ATTACKS))
def test_raise_and_ignore(name: str) -> None:
    model = Detaching().eval()
    x, _ = _data()
    y = _correct_labels(model, x)
    with pytest.raises(GradientMaskingError, match="for all 6 samples"):
        ATTACKS[name](model, x, y, on_masking="raise")
    assert _run(ATTACKS[name], model, x, y, on_masking="ignore") == []
    with pytest.raises(ValueError, match="on_masking"):
        ATTACKS[name](model, x, y, on_masking="loud")


@pytest.mark.parametrize("name", list(ATTACKS))
def test_model_left_unchanged_when_raising(name: str) -> None:
    model = Detaching()
    x, _ = _data()
    y = _correct_labels(model.eval(), x)
    model.train()
    model.bn.eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad for k, p in model.named_parameters()}
    grad_value = model.fc.weight.grad.clone()
    x_before = x.clone()
    with pytest.raises(GradientMaskingError):
        ATTACKS[name](model, x, y, on_masking="raise")
    assert {n: m.training for n, m in model.named_modules()} == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for k, p in model.named_parameters():
        assert p.grad is grads[k], k
    assert torch.equal(model.fc.weight.grad, grad_value)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_partially_masked_batch_counts_the_subset(name: str) -> None:
    model = Gated().eval()
    x, _ = _data(8)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])  # 3 cut off
    y = _correct_labels(model, x)
    caught = _run(ATTACKS[name], model, x, y)
    assert len(caught) == 1
    assert caught[0].masked == 3 and caught[0].total == 8
    message = str(caught[0])
    if caught[0].unfooled > 3:
        assert "for 3 of the 8 samples attacked" in message


def _healthy_model() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()
    y = y + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0.5).long()
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Flatten(), nn.Linear(384, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def test_healthy_trained_model_does_not_warn() -> None:
    model, x, y = _healthy_model()
    for name, attack in ATTACKS.items():
        assert _run(attack, model, x[:16], y[:16]) == [], name
        assert _run(attack, model, x[:16], (y[:16] + 1) % 4, targeted=True) == [], name
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        robust_accuracy(model, x, y, {k: ATTACKS[k] for k in ("fgsm", "pgd", "deepfool")},
                        batch_size=20)
    assert _masking_warnings(record) == []


def test_robust_accuracy_warns_once_per_attack() -> None:
    model = Detaching().eval()
    x, _ = _data(10)
    y = _correct_labels(model, x)
    attacks = {"FGSM": ATTACKS["fgsm"], "PGD": ATTACKS["pgd"], "DeepFool": ATTACKS["deepfool"]}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = robust_accuracy(model, x, y, attacks, batch_size=4)
    assert result.accuracy == {"FGSM": 1.0, "PGD": 1.0, "DeepFool": 1.0}
    caught = _masking_warnings(record)
    assert len(caught) == 3
    for label, w in zip(attacks, caught, strict=True):
        assert f"attack {label!r}" in str(w) and w.masked == 10
        assert "for all 10 samples it did not fool (of 10 attacked)" in str(w)
        assert "sec-gradient-masking" in str(w)
    with pytest.raises(GradientMaskingError, match=re.escape("attack 'FGSM'")):
        robust_accuracy(model, x, y, attacks, batch_size=4, on_masking="raise")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        robust_accuracy(model, x, y, attacks, batch_size=4, on_masking="ignore")
    assert _masking_warnings(record) == []


def test_robust_accuracy_counts_a_partially_masked_batch() -> None:
    model = Gated().eval()
    x, _ = _data(8)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    y = _correct_labels(model, x)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        robust_accuracy(model, x, y, {"PGD": ATTACKS["pgd"]}, batch_size=3)
    (w,) = _masking_warnings(record)
    assert w.masked == 3 and "attack 'PGD'" in str(w)


def test_other_evaluation_helpers_warn_once() -> None:
    model = Detaching().eval()
    x, _ = _data(10)
    y = _correct_labels(model, x)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        accuracy_vs_eps(model, x, y, partial(pgd, steps=2), [0.05, 0.1], batch_size=4)
        min_norm_distances(model, x, y, ATTACKS["deepfool"], batch_size=4)
    caught = _masking_warnings(record)
    assert len(caught) == 3
    assert "min_norm_distances" in str(caught[2])
    with pytest.raises(GradientMaskingError):
        min_norm_distances(model, x, y, ATTACKS["deepfool"], on_masking="raise")
    with pytest.raises(GradientMaskingError):
        accuracy_vs_eps(model, x, y, partial(pgd, steps=2), [0.1], on_masking="raise")


def test_non_attack_warnings_pass_through_robust_accuracy() -> None:
    def noisy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        warnings.warn("hello from the attack", RuntimeWarning, stacklevel=1)
        return x

    model, x, y = _healthy_model()
    with pytest.warns(RuntimeWarning, match="hello"):
        robust_accuracy(model, x, y, {"noisy": noisy})


def test_steps_zero_does_not_warn() -> None:
    model = Detaching().eval()
    x, _ = _data()
    y = _correct_labels(model, x)
    assert _run(partial(pgd, eps=0.1, steps=0), model, x, y) == []
    assert _run(partial(deepfool, steps=0), model, x, y) == []
    assert _run(partial(carlini_wagner, steps=0), model, x, y) == []
