"""Auto-PGD: the checkpoint schedule and step-size rule, closed forms on linear models, DLR's
scale invariance, monotonicity, torchattacks 3.5.1 as an oracle, bad input and side effects."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbook._core.objectives import dlr_objective, targeted_dlr_objective
from advbook._core.warnings import GradientMaskingError, GradientMaskingWarning
from advbook.attacks.apgd import (
    _Batch,
    _checkpoint,
    _random_start,
    _settings,
    _State,
    apgd,
    checkpoints,
)
from advbook.attacks.pgd import pgd
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 200

Setup = tuple[nn.Module, Tensor, Tensor]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _fooled(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


def _linf(d: Tensor) -> Tensor:
    return d.flatten(1).abs().amax(1)


def _l2(d: Tensor) -> Tensor:
    return d.flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def setup() -> Setup:
    """A small MLP trained on MNIST-5k (as in test_attacks_foolbox) and 200 test images."""
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    model.eval()
    return model, ds.x_test[:N_IMAGES], ds.y_test[:N_IMAGES]


class Scaled(nn.Module):
    """``c · model(x)``: the same decisions, a softmax that saturates (c ≫ 1) or flattens."""

    def __init__(self, model: nn.Module, c: float) -> None:
        super().__init__()
        self.model, self.c = model, c

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c * self.model(x)
        return out


# ----------------------------------------------------------------------- schedule and rule


def test_checkpoints_follow_the_reference_formula() -> None:
    # N = 100: periods start at ⌊0.22·100⌋ = 22 and shrink by ⌊0.03·100⌋ = 3 down to
    # ⌊0.06·100⌋ = 6: 22, 19, 16, 13, 10, 7, 6, 6, ... so the marks are 0, 22, 41 (= 22 + 19),
    # 57, 70, 80, 87, 93, 99; the next one, 105, lies beyond N (p_j of the paper: 0, .22, .41,
    # .57, .70, .80, .87, .93, .99).
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # N = 10: periods max(⌊2.2⌋, 1) = 2, then shrink by max(⌊0.3⌋, 1) = 1 to max(⌊0.6⌋, 1) = 1.
    assert checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # N = 50: 11, 10, 9, ... (⌊1.5⌋ = 1 shorter each time, at least ⌊3⌋ = 3).
    assert checkpoints(50) == [0, 11, 21, 30, 38, 45]
    assert checkpoints(1) == [0, 1]
    with pytest.raises(ValueError, match="steps"):
        checkpoints(0)


def test_step_size_rule_at_a_checkpoint() -> None:
    """Condition 1 (rose in ≤ ρ of the steps, the reference's ≤) or 2 (not halved last time and
    no new best) halves η and restarts from the best point; otherwise nothing changes."""
    n = 5
    batch = _Batch(torch.zeros(n, 3), torch.zeros(n, dtype=torch.long), None, torch.arange(n))
    state = _State.begin(batch, torch.zeros(n, 3), torch.ones(n, 3), torch.zeros(n), eps=0.5)
    state.x, state.x_best, state.grad_best = torch.ones(n, 3), 2 * torch.ones(n, 3), -state.grad
    state.best = torch.ones(n)
    # length 8, ρ = 0.75: condition 1 holds for at most 6 rises
    state.increases = torch.tensor([6.0, 7.0, 7.0, 7.0, 2.0])
    state.best_at_check = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0])  # 2, 3: no new best
    state.halved_at_check = torch.tensor([False, False, False, True, True])
    _checkpoint(state, 8, 0.75)
    halved = torch.tensor([True, False, True, False, True])
    torch.testing.assert_close(state.eta, torch.where(halved, 0.5, 1.0))
    torch.testing.assert_close(state.x, torch.where(halved[:, None], 2.0, 1.0).expand(n, 3))
    torch.testing.assert_close(state.grad, torch.where(halved[:, None], -1.0, 1.0).expand(n, 3))
    assert torch.equal(state.halved_at_check, halved)
    assert torch.equal(state.best_at_check, state.best)
    assert torch.equal(state.increases, torch.zeros(n))


# ----------------------------------------------------------------------- closed forms


def _linear_2class(device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(20, 2).to(device, dtype)


@pytest.mark.parametrize(
    "kwargs", [{}, {"targeted": True, "loss": "ce", "n_targets": 1}], ids=["ce", "targeted-ce"]
)
def test_linf_reaches_the_box_corner_of_a_linear_model(
    device: torch.device, kwargs: dict[str, object]
) -> None:
    """For a 2-class linear model CE(z, y) and −CE(z, t) are monotone in ⟨w_o − w_y, x⟩: the
    maximum over the ball ∩ box is clip(x + ε·sign(w_o − w_y)), FGSM's closed form, which the
    first step of size 2ε already reaches from any start."""
    model = _linear_2class(device)
    g = _gen(1)
    x = torch.rand(64, 20, generator=g).to(device)
    x[:8, :5] = 0.0  # coordinates on the box's faces: clipped there
    x[8:16, 5:10] = 1.0
    y = torch.randint(0, 2, (64,), generator=g).to(device)
    eps = 0.1
    x_adv = apgd(model, x, y, eps=eps, steps=20, generator=_gen(), on_masking="raise",
                 **kwargs)  # type: ignore[arg-type]
    w = model.weight.detach()
    corner = (x + eps * torch.sign(w[1 - y] - w[y])).clamp(0, 1)
    clean_wrong = _fooled(model, x, y)
    assert clean_wrong.any() and not clean_wrong.all()
    torch.testing.assert_close(x_adv[~clean_wrong], corner[~clean_wrong], atol=1e-6, rtol=0)
    assert torch.equal(x_adv[clean_wrong], x[clean_wrong])  # already misclassified: unchanged
    assert (_linf(x_adv - x) <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_l2_converges_to_the_fgm_point_of_a_linear_model(device: torch.device) -> None:
    """L2: the maximiser over the ball (not clipped here) is x + ε·(w_o − w_y)/‖w_o − w_y‖₂,
    FGM's closed form; APGD converges to it from a random point of the sphere (float64: in
    float32 J stops resolving the last 10⁻³ rad)."""
    model = _linear_2class(device, torch.float64)
    x = (0.3 + 0.4 * torch.rand(64, 20, generator=_gen(1), dtype=torch.float64)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.25  # ≤ 0.3: the box is never reached
    x_adv = apgd(model, x, y, eps=eps, norm="l2", steps=100, generator=_gen())
    d = (model.weight[1 - y] - model.weight[y]).detach()
    expected = x + eps * d / d.norm(dim=1, keepdim=True)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)
    assert (_l2(x_adv - x) <= eps * (1 + 1e-9)).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_on_the_sphere(norm: str) -> None:
    """x⁰ = x + ε·t/‖t‖: on the sphere (inside the box here, so nothing is clipped)."""
    x = 0.3 + 0.4 * torch.rand(6, 50)
    settings = _settings(eps=0.2, norm=norm, steps=5, loss=None, targeted=False, n_targets=9,
                         restarts=1, rho=0.75, bounds=(0.0, 1.0), eot_samples=1,
                         early_stop=False)
    start = _random_start(x, settings, _gen())
    size = _linf if norm == "linf" else _l2
    torch.testing.assert_close(size(start - x), torch.full((6,), 0.2), atol=1e-6, rtol=0)
    assert not torch.equal(start, _random_start(x, settings, _gen(1)))


# ----------------------------------------------------------------------- DLR


def test_dlr_is_invariant_to_shift_and_positive_scale() -> None:
    z = torch.randn(50, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (50,))
    t = (y + 1 + torch.randint(0, 9, (50,))) % 10
    for a, b in ((1e-3, 0.0), (7.0, -3.0), (1e3, 5.0)):
        torch.testing.assert_close(dlr_objective(a * z + b, y), dlr_objective(z, y))
        torch.testing.assert_close(
            targeted_dlr_objective(a * z + b, y, t), targeted_dlr_objective(z, y, t)
        )


def test_saturated_softmax_defeats_ce_not_dlr(setup: Setup) -> None:
    """Logits ×10³ saturate the softmax: CE's input gradient is exactly 0 in float32 for
    confident points (reported as masking), so CE-PGD and APGD-CE fail there, while APGD-DLR
    is unaffected."""
    model, x, y = setup
    scaled = Scaled(model, 1e3)
    with pytest.warns(GradientMaskingWarning, match="apgd"):
        acc_ce = _accuracy(scaled, apgd(scaled, x, y, eps=0.1, generator=_gen()), y)
    with pytest.warns(GradientMaskingWarning, match="pgd"):
        acc_pgd = _accuracy(scaled, pgd(scaled, x, y, eps=0.1, steps=100, generator=_gen()), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        adv_dlr = apgd(scaled, x, y, eps=0.1, loss="dlr", generator=_gen())
    acc_dlr = _accuracy(scaled, adv_dlr, y)
    acc_plain = _accuracy(model, apgd(model, x, y, eps=0.1, loss="dlr", generator=_gen()), y)
    assert acc_dlr <= min(acc_ce, acc_pgd) - 0.3, (acc_dlr, acc_ce, acc_pgd)
    assert abs(acc_dlr - acc_plain) <= 0.01


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_dlr_attack_ignores_the_logit_scale(setup: Setup, norm: str) -> None:
    model, x, y = setup
    eps = 0.1 if norm == "linf" else 1.5
    accs = [
        _accuracy(model, apgd(Scaled(model, c), x, y, eps=eps, norm=norm, loss="dlr",
                              steps=50, generator=_gen()), y)
        for c in (1e-3, 1.0, 1e3)
    ]
    assert max(accs) - min(accs) <= 0.01, accs


# ----------------------------------------------------------------------- monotone


def test_more_restarts_and_targets_never_weaker(setup: Setup) -> None:
    """Later restarts/targets only attack points still robust and the first runs draw the same
    starts: the fooled set can only grow, per sample."""
    model, x, y = setup
    base = _fooled(model, apgd(model, x, y, eps=0.08, steps=10, generator=_gen()), y)
    more = _fooled(model, apgd(model, x, y, eps=0.08, steps=10, restarts=3, generator=_gen()), y)
    assert (more >= base).all()
    few = apgd(model, x, y, eps=0.08, steps=10, targeted=True, n_targets=2, generator=_gen())
    many = apgd(model, x, y, eps=0.08, steps=10, targeted=True, n_targets=6, generator=_gen())
    few_f, many_f = _fooled(model, few, y), _fooled(model, many, y)
    assert (many_f >= few_f).all() and many_f.sum() > few_f.sum()


def test_more_steps_never_weaker(setup: Setup) -> None:
    """Not a theorem for APGD (the schedule scales with the budget), but robust accuracy at
    ε₂ = 1.5 falls monotonically here (measured: 50.5, 49, 47.5, 46.5 %)."""
    model, x, y = setup
    accs = [
        _accuracy(model, apgd(model, x, y, eps=1.5, norm="l2", steps=s, generator=_gen()), y)
        for s in (3, 10, 25, 100)
    ]
    assert all(b <= a for a, b in itertools.pairwise(accs)), accs
    assert accs[-1] < accs[0]


def test_early_stop_keeps_robust_accuracy(setup: Setup) -> None:
    model, x, y = setup
    full = apgd(model, x, y, eps=0.08, steps=30, generator=_gen())
    early = apgd(model, x, y, eps=0.08, steps=30, early_stop=True, generator=_gen())
    assert abs(_accuracy(model, full, y) - _accuracy(model, early, y)) <= 0.01
    assert (_linf(early - x) <= 0.08 + 1e-6).all()


# ----------------------------------------------------------------------- torchattacks oracle


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
@pytest.mark.parametrize("targeted", [False, True], ids=["apgd-ce", "apgd-t"])
def test_robust_accuracy_matches_torchattacks(
    setup: Setup, norm: str, eps: float, targeted: bool
) -> None:
    """Measured: ℓ∞ 0.1: CE 33.5 % both, T 31.5 % both; ℓ2 1.5: CE 46.5 %, T 44.0 % both."""
    ta = pytest.importorskip("torchattacks", minversion="3.5")
    model, x, y = setup
    ta_norm = "Linf" if norm == "linf" else "L2"
    if targeted:
        ref_attack = ta.APGDT(model, norm=ta_norm, eps=eps, steps=100, n_restarts=1, seed=0,
                              n_classes=10)
    else:
        ref_attack = ta.APGD(model, norm=ta_norm, eps=eps, steps=100, n_restarts=1, seed=0,
                             loss="ce")
    acc_ref = _accuracy(model, ref_attack(x, y), y)
    ours = apgd(model, x, y, eps=eps, norm=norm, steps=100, targeted=targeted, n_targets=9,
                generator=_gen())
    acc_ours = _accuracy(model, ours, y)
    assert 0.05 < acc_ref < 0.95
    assert abs(acc_ours - acc_ref) <= 0.01, (acc_ours, acc_ref)
    size = _linf if norm == "linf" else _l2
    assert (size(ours - x) <= eps * (1 + 1e-5)).all()
    assert ours.min() >= 0 and ours.max() <= 1


@pytest.mark.parametrize(("norm", "eps", "share"), [("linf", 0.1, 0.95), ("l2", 1.5, 0.9)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_best_objective_per_sample_matches_torchattacks(
    setup: Setup, norm: str, eps: float, share: float, loss: str
) -> None:
    """The same starts give the same trajectories: torchattacks draws ``torch.rand``/``randn``
    of x's shape from the global generator, we draw the same numbers from a CPU generator with
    the same seed. For the points neither fools, the best objective agrees per sample, except
    where float32 rounding of the L2 projection parts the trajectories, or the first period,
    where the reference compares J(x¹) with 0 instead of J(x⁰), decides otherwise. Measured
    agreement: ℓ∞ CE 100 %, DLR 97.6 %; ℓ2 CE 94.6 %, DLR 98.1 %."""
    ta = pytest.importorskip("torchattacks", minversion="3.5")
    model, x, y = setup
    correct = ~_fooled(model, x, y)  # the reference's best-loss mode attacks every point
    x, y = x[correct], y[correct]
    attack = ta.APGD(model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=100,
                     n_restarts=1, loss=loss)
    torch.manual_seed(0)
    loss_ref, _ = attack.perturb(x, y, best_loss=True)
    ours = apgd(model, x, y, eps=eps, norm=norm, steps=100, loss=loss, generator=_gen())
    with torch.no_grad():
        logits = model(ours)
    value = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else dlr_objective(
        logits, y
    )
    unfooled = logits.argmax(1) == y
    assert unfooled.sum() > 50
    agree = (value - loss_ref).abs() <= 1e-4 * loss_ref.abs().clamp_min(1e-6)
    assert agree[unfooled].float().mean() >= share, agree[unfooled].float().mean()


# ----------------------------------------------------------------------- EOT and masking


class Counting(nn.Module):
    """A small CNN with BatchNorm and Dropout that counts its forward calls (``fail_at``: the
    k-th raises)."""

    def __init__(self, num_classes: int = 4, fail_at: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, num_classes)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        out: Tensor = self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))
        return out


def _data(n: int = 5, classes: int = 4) -> tuple[Tensor, Tensor]:
    g = _gen(1)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_eot_averages_over_passes() -> None:
    """``eot_samples`` passes per iterate (1 clean pass + (steps + 1)·eot); on a deterministic
    model the averaged gradient has the same sign, so L∞ APGD is unchanged."""
    model = Counting().eval()
    x, y = _data()
    with torch.no_grad():
        y = model(x).argmax(1)  # all clean-correct: one run on every point
    model.calls = 0
    one = apgd(model, x, y, eps=1e-3, steps=4, generator=_gen())
    assert model.calls == 1 + 5
    model.calls = 0
    three = apgd(model, x, y, eps=1e-3, steps=4, eot_samples=3, generator=_gen())
    assert model.calls == 1 + 5 * 3
    torch.testing.assert_close(one, three, atol=1e-7, rtol=0)


def test_vanished_gradient_is_reported() -> None:
    class Ignores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Parameter(torch.arange(4.0))

        def forward(self, x: Tensor) -> Tensor:
            return self.b + 0.0 * x.flatten(1)[:, :4]

    x, _ = _data()
    y = torch.full((5,), 3)
    with pytest.warns(GradientMaskingWarning, match="all 5 samples"):
        apgd(Ignores(), x, y, eps=0.1, steps=3, generator=_gen())
    with pytest.raises(GradientMaskingError):
        apgd(Ignores(), x, y, eps=0.1, steps=3, loss="dlr", on_masking="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apgd(Ignores(), x, y, eps=0.1, steps=3, on_masking="ignore")


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"steps": 0}, "steps"),
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.0}, "rho"),
        ({"rho": float("nan")}, "rho"),
        ({"n_targets": 0}, "n_targets"),
        ({"loss": "hinge"}, "loss"),
        ({"norm": "l1"}, "norm"),
        ({"restarts": 0}, "restarts"),
        ({"eot_samples": 0}, "eot_samples"),
        ({"on_masking": "loud"}, "on_masking"),
        ({"generator": 3}, "generator"),
        ({"bounds": (1.0, 0.0)}, "bounds"),
    ],
)
def test_bad_hyper_parameters_rejected_before_any_forward(
    kwargs: dict[str, object], match: str
) -> None:
    model = Counting().eval()
    x, y = _data()
    args: dict[str, object] = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        apgd(model, x, y, **args)  # type: ignore[arg-type]
    assert model.calls == 0


@pytest.mark.parametrize(
    ("classes", "kwargs", "match"),
    [
        (2, {"loss": "dlr"}, "at least 3 classes"),
        (3, {"targeted": True}, "at least 4 classes"),
        (3, {"targeted": True, "loss": "dlr"}, "at least 4 classes"),
        (4, {"targeted": True, "n_targets": 4}, r"n_targets must be at most K − 1 = 3"),
        (2, {"targeted": True, "loss": "ce", "n_targets": 2}, r"at most K − 1 = 1"),
    ],
)
def test_too_few_classes_rejected_after_the_first_forward(
    classes: int, kwargs: dict[str, object], match: str
) -> None:
    """K is known only from the logits: the clean pass is the only forward before the error."""
    model = Counting(num_classes=classes).eval()
    x, y = _data(classes=classes)
    with pytest.raises(ValueError, match=match):
        apgd(model, x, y, eps=0.1, steps=2, **kwargs)  # type: ignore[arg-type]
    assert model.calls == 1


def test_smallest_class_counts_work() -> None:
    x, y = _data(classes=2)
    apgd(Counting(2).eval(), x, y, eps=0.1, steps=2, targeted=True, loss="ce", n_targets=1)
    x, y = _data(classes=3)
    apgd(Counting(3).eval(), x, y, eps=0.1, steps=2, loss="dlr")
    x, y = _data(classes=4)
    apgd(Counting(4).eval(), x, y, eps=0.1, steps=2, targeted=True, n_targets=3)


# ----------------------------------------------------------------------- side effects


def _mixed_mode_model(fail_at: int | None = None) -> Counting:
    """Train mode overall, a frozen (eval) BatchNorm with non-trivial statistics, a .grad."""
    torch.manual_seed(3)
    model = Counting(fail_at=fail_at)
    model.train()
    model.bn.eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.9, 1.1)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    return model


def _snapshot(model: nn.Module) -> tuple[object, ...]:
    return (
        {n: m.training for n, m in model.named_modules()},
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {k: p.grad for k, p in model.named_parameters()},
        {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
    )


def _assert_unchanged(model: nn.Module, snap: tuple[object, ...]) -> None:
    modes, state, grads, values = snap
    assert {n: m.training for n, m in model.named_modules()} == modes
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items())  # type: ignore[attr-defined]
    for k, p in model.named_parameters():
        assert p.grad is grads[k]  # type: ignore[index]
        if values[k] is not None:  # type: ignore[index]
            assert torch.equal(p.grad, values[k])  # type: ignore[index,arg-type]


@pytest.mark.parametrize(
    "kwargs", [{}, {"targeted": True, "n_targets": 2, "restarts": 2, "norm": "l2"}]
)
def test_model_x_y_unchanged(kwargs: dict[str, object]) -> None:
    model = _mixed_mode_model()
    x, y = _data()
    x_before, y_before, versions = x.clone(), y.clone(), (x._version, y._version)
    snap = _snapshot(model)
    x_adv = apgd(model, x, y, eps=0.3, steps=5, generator=_gen(), **kwargs)  # type: ignore[arg-type]
    _assert_unchanged(model, snap)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert (x._version, y._version) == versions
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("when", ["clean", "first-gradient", "last"])
def test_model_restored_when_the_model_raises_midway(when: str) -> None:
    x, y = _data()
    probe = _mixed_mode_model()
    apgd(probe, x, y, eps=0.01, steps=4, eot_samples=2, generator=_gen())
    fail_at = {"clean": 1, "first-gradient": 2, "last": probe.calls}[when]
    model = _mixed_mode_model(fail_at=fail_at)
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        apgd(model, x, y, eps=0.01, steps=4, eot_samples=2, generator=_gen())
    _assert_unchanged(model, snap)


def test_dtype_empty_batch_grad_modes_and_reproducibility() -> None:
    model = Counting().double().eval()
    x, y = _data()
    x = x.double()
    out = apgd(model, x, y, eps=0.2, steps=3, generator=_gen(5))
    assert out.dtype == torch.float64
    assert apgd(model, x[:0], y[:0], eps=0.2).shape == (0, 1, 6, 6)
    state = torch.get_rng_state()
    assert torch.equal(apgd(model, x, y, eps=0.2, steps=3, generator=_gen(5)), out)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(apgd(model, x, y, eps=0.2, steps=3, generator=_gen(6)), out)
    with torch.no_grad():
        assert torch.equal(apgd(model, x, y, eps=0.2, steps=3, generator=_gen(5)), out)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(apgd(model, xi, yi, eps=0.2, steps=3, generator=_gen(5)), out)


def test_device_matches_cpu(device: torch.device) -> None:
    """A seeded CPU generator gives the same starts on every device; on CUDA the fooled sets of
    a small MLP on random images agree (trajectories may part where a gradient sign is ±0)."""
    torch.manual_seed(0)
    model = MLP(in_features=36, hidden=(32,), num_classes=4).eval()
    x, _ = _data(n=256)
    with torch.no_grad():
        y = model(x).argmax(1)
    for kwargs in ({}, {"norm": "l2", "loss": "dlr"}, {"targeted": True, "n_targets": 3}):
        eps = 0.3 if kwargs.get("norm") == "l2" else 0.05
        cpu = apgd(model, x, y, eps=eps, steps=20, generator=_gen(), **kwargs)  # type: ignore[arg-type]
        on_device = apgd(model.to(device), x.to(device), y.to(device), eps=eps, steps=20,
                         generator=_gen(), **kwargs).cpu()  # type: ignore[arg-type]
        model.cpu()
        assert on_device.dtype == x.dtype
        f_cpu, f_device = _fooled(model, cpu, y), _fooled(model, on_device, y)
        assert 0 < f_cpu.float().mean() < 1
        assert (f_cpu != f_device).float().mean() <= 0.02
        close = (cpu - on_device).flatten(1).abs().amax(1) <= 1e-5
        assert close.float().mean() >= 0.9
