"""AutoAttack: the protocol (each stage on the points still robust), its report and its flags;
transfer attacks; BPDA. The stages themselves are tested in test_apgd, test_fab, test_square."""

from __future__ import annotations

import itertools
import warnings
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import (
    BPDA,
    AutoAttackReport,
    AutoAttackWarning,
    GradientMaskingWarning,
    apgd,
    auto_attack,
    auto_attack_report,
    pgd,
    transfer_attack,
)
from advbook.attacks._utils import batch_norms
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

N_POINTS = 100
EPS = 0.1

Setup = tuple[nn.Module, Tensor, Tensor]


@pytest.fixture(scope="module")
def setup() -> Setup:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    model.eval()
    return model, ds.x_test[:N_POINTS], ds.y_test[:N_POINTS]


@pytest.fixture(scope="module")
def report(setup: Setup) -> AutoAttackReport:
    model, x, y = setup
    return auto_attack_report(model, x, y, eps=EPS, generator=_seed(), progress=False)


def _seed(k: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(k)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


class Quantised(nn.Module):
    """Round the input to ``levels`` grey levels, then classify: a gradient-masking defence."""

    def __init__(self, net: nn.Module, levels: int = 2, straight_through: bool = False) -> None:
        super().__init__()
        quantise = partial(_quantise, levels=levels)
        self.front: nn.Module = BPDA(quantise) if straight_through else _Lambda(quantise)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(self.front(x))
        return out


class _Lambda(nn.Module):
    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)  # type: ignore[operator, no-any-return]


def _quantise(x: Tensor, levels: int) -> Tensor:
    return torch.round(x * (levels - 1)) / (levels - 1)


# --------------------------------------------------------------------------- the protocol


def test_report_is_consistent(setup: Setup, report: AutoAttackReport) -> None:
    model, x, y = setup
    assert report.stages == ("apgd-ce", "apgd-t", "fab-t", "square")
    pred_clean, pred_adv = _predict(model, x), _predict(model, report.x_adv)
    assert report.clean_accuracy == pytest.approx(float((pred_clean == y).float().mean()))
    accs = [report.clean_accuracy, *report.robust_accuracy.values()]
    assert all(a >= b for a, b in itertools.pairwise(accs)), accs
    robust = report.broken_by == -1
    assert report.final == pytest.approx(float(robust.float().mean()))
    assert torch.equal(pred_adv == y, robust), "a point counted robust is misclassified (or not)"
    assert torch.equal(report.x_adv[robust], x[robust]), "robust points must come back unchanged"
    assert (batch_norms(report.x_adv - x, "linf") <= EPS + 1e-6).all()
    assert report.x_adv.min() >= 0 and report.x_adv.max() <= 1
    assert torch.equal(report.broken_by == 0, pred_clean != y)
    frame = report.to_frame()
    assert list(frame["stage"]) == ["clean", *report.stages]
    assert int(frame["broken"].sum()) == int((report.broken_by >= 0).sum())


def test_never_weaker_than_its_first_stage_or_pgd(setup: Setup, report: AutoAttackReport) -> None:
    model, x, y = setup
    final = report.final
    for x_adv in (
        apgd(model, x, y, eps=EPS, generator=_seed()),
        pgd(model, x, y, eps=EPS, steps=20, generator=_seed()),
    ):
        assert final <= float((_predict(model, x_adv) == y).float().mean())


def test_passes_are_counted(report: AutoAttackReport) -> None:
    clean_forward, clean_backward = report.passes["clean"]
    assert clean_backward == 0 and clean_forward >= N_POINTS
    n_correct = round(report.clean_accuracy * N_POINTS)
    forward, backward = report.passes["apgd-ce"]
    # at most 100 steps (one backward each) per correctly classified point; a point stops at
    # its first success (early stop), and the points still robust afterwards ran all 100
    n_survived = round(report.robust_accuracy["apgd-ce"] * N_POINTS)
    assert max(n_correct, 100 * n_survived) <= backward <= 101 * n_correct
    assert backward <= forward <= backward + 3 * n_correct
    assert report.passes["square"][1] == 0, "Square must not use gradients"
    assert report.passes_per_point() > 0


def test_version_plus_and_batches(setup: Setup) -> None:
    model, x, y = setup
    x, y = x[:20], y[:20]
    plus = auto_attack_report(model, x, y, eps=EPS, version="plus", batch_size=8,
                              generator=_seed(), progress=False)
    assert plus.stages == ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
    standard = auto_attack_report(model, x, y, eps=EPS, generator=_seed(), progress=False)
    assert plus.final <= standard.final + 1 / 20  # plus is a superset, up to one lucky point


def test_l2(setup: Setup) -> None:
    model, x, y = setup
    x, y = x[:20], y[:20]
    report = auto_attack_report(model, x, y, eps=1.0, norm="l2", generator=_seed(),
                                progress=False)
    assert (batch_norms(report.x_adv - x, "l2") <= 1.0 + 1e-5).all()
    assert report.final < report.clean_accuracy


def test_model_and_inputs_unchanged(setup: Setup) -> None:
    model, x, y = setup
    x, y = x[:20].clone(), y[:20].clone()
    x0, y0 = x.clone(), y.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        auto_attack(model, x, y, eps=EPS, generator=_seed(), progress=False)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model._forward_hooks, "the pass-counting hook must be removed"


def test_seeded_runs_repeat(setup: Setup) -> None:
    model, x, y = setup
    x, y = x[:10], y[:10]
    a = auto_attack(model, x, y, eps=EPS, generator=_seed(4), progress=False)
    b = auto_attack(model, x, y, eps=EPS, generator=_seed(4), progress=False)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- flags


def test_softmax_outputs_are_flagged(setup: Setup) -> None:
    model, x, y = setup
    probabilities = nn.Sequential(model, nn.Softmax(dim=1))
    with pytest.warns(AutoAttackWarning, match="probabilities"):
        report = auto_attack_report(probabilities, x[:4], y[:4], eps=EPS, generator=_seed(),
                                    progress=False)
    assert any("probabilities" in f for f in report.flags)


class Noisy(nn.Module):
    """A randomised defence: Gaussian noise on the input, also in eval mode."""

    def __init__(self, net: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x + self.sigma * torch.randn_like(x))
        return out


def test_randomised_model_is_flagged_unless_rand(setup: Setup) -> None:
    model, x, y = setup
    noisy = Noisy(model)
    with pytest.warns(AutoAttackWarning, match="version='rand'"):
        auto_attack(noisy, x[:10], y[:10], eps=EPS, generator=_seed(), progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = auto_attack_report(noisy, x[:10], y[:10], eps=EPS, version="rand",
                                    generator=_seed(), progress=False)
    assert report.stages == ("apgd-ce", "apgd-dlr")
    assert not [w for w in caught if "version='rand'" in str(w.message)]
    # 20-sample EOT: 20 backward passes per step and point attacked, for 1 to 100 steps
    n_attacked = round(report.clean_accuracy * 10)
    backward = report.passes["apgd-ce"][1]
    assert backward % 20 == 0
    assert 20 * n_attacked <= backward <= 20 * 101 * n_attacked


def test_masked_gradients_caught_by_square(setup: Setup) -> None:
    """Input quantisation zeroes every input gradient: the gradient stages fail and say so,
    Square (no gradients) breaks the points, and the protocol flags the discrepancy."""
    model, x, y = setup
    defended = Quantised(model).eval()
    with pytest.warns(GradientMaskingWarning), pytest.warns(AutoAttackWarning, match="Square"):
        report = auto_attack_report(defended, x[:50], y[:50], eps=0.3, generator=_seed(),
                                    progress=False)
    assert report.robust_accuracy["square"] < report.robust_accuracy["fab-t"] - 0.1


def test_too_few_classes_skip_the_targeted_stage() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(8, 1, 4, 4)
    y = _predict(model, x)
    with pytest.warns(AutoAttackWarning, match="apgd-t"):
        report = auto_attack_report(model, x, y, eps=0.1, generator=_seed(), progress=False)
    assert "apgd-t" not in report.stages and "fab-t" in report.stages


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": 0.1, "norm": "l1"}, "norm"),
        ({"eps": 0.1, "version": "fast"}, "version"),
        ({"eps": 0.1, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_before_any_forward(kwargs: dict[str, object], match: str) -> None:
    calls = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=match):
        auto_attack(model, x, y, progress=False, **kwargs)  # type: ignore[arg-type]
    assert not calls


# --------------------------------------------------------------------------- BPDA, transfer


def test_bpda_forward_is_the_transform_backward_the_approximation() -> None:
    x = torch.rand(5, 3, requires_grad=True)
    layer = BPDA(torch.round)
    out = layer(x)
    assert torch.equal(out, torch.round(x.detach()))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # straight through
    square_approx = BPDA(torch.round, approx=lambda t: t**2)
    (grad,) = torch.autograd.grad(square_approx(x).sum(), x)
    assert torch.allclose(grad, 2 * x.detach())
    with pytest.raises(TypeError, match="transform"):
        BPDA(3)  # type: ignore[arg-type]


def test_bpda_breaks_quantisation(setup: Setup) -> None:
    model, x, y = setup
    x, y = x[:60], y[:60]
    masked = Quantised(model, levels=8).eval()
    through = Quantised(model, levels=8, straight_through=True).eval()
    with pytest.warns(GradientMaskingWarning):
        x_masked = pgd(masked, x, y, eps=0.3, steps=20, generator=_seed())
    x_bpda = pgd(through, x, y, eps=0.3, steps=20, generator=_seed())
    acc_masked = float((_predict(masked, x_masked) == y).float().mean())
    acc_bpda = float((_predict(masked, x_bpda) == y).float().mean())
    assert acc_bpda < acc_masked - 0.3, (acc_masked, acc_bpda)


def test_transfer_attack(setup: Setup) -> None:
    model, x, y = setup
    attack = partial(pgd, eps=EPS, steps=10, generator=_seed())
    same = transfer_attack(model, model, x, y, attack, batch_size=32)
    assert same.target_accuracy <= same.surrogate_accuracy + 1e-9
    assert same.transfer_rate == pytest.approx(1.0)
    torch.manual_seed(1)
    other = MLP(hidden=(32,))
    ds = load_mnist()
    fit(other, ds.x_train, ds.y_train, epochs=2, batch_size=128, seed=1, progress=False)
    other.eval()
    result = transfer_attack(model, other, x, y, attack)
    assert result.x_adv.shape == x.shape
    assert 0.0 < result.transfer_rate <= 1.0
    with pytest.raises(TypeError, match="attack"):
        transfer_attack(model, other, x, y, 3)  # type: ignore[arg-type]
