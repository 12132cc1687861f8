"""Adversarial-training recipes: closed forms, a reference TRADES, BatchNorm bookkeeping."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advbook import attacks, data, defenses, models, train

EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clone_gen(g: torch.Generator) -> torch.Generator:
    out = torch.Generator()
    out.set_state(g.get_state())
    return out


def _batch(n: int = 16, d: int = 6, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs in [0.3, 0.7] (so the [0, 1] box is inactive at ε = 0.1) and labels."""
    g = _gen(seed)
    x = 0.3 + 0.4 * torch.rand(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _linear2(d: int = 6, seed: int = 1) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, 2)


def _bn_net(d: int = 6, k: int = 3, momentum: float = 0.3) -> nn.Sequential:
    """BatchNorm directly on the input, so its batch statistics are those of x itself."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm1d(d, momentum=momentum), nn.Linear(d, 8), nn.Tanh(),
                        nn.Linear(8, k))
    with torch.no_grad():
        net[0].running_mean.uniform_(-0.5, 0.5)
        net[0].running_var.uniform_(0.5, 2.0)
    return net


def _recipes(g: torch.Generator | None = None) -> dict[str, Callable[..., object]]:
    return {
        "pgd": lambda: defenses.pgd_at_objective(EPS, steps=4, generator=g),
        "fgsm": lambda: defenses.fgsm_at_objective(EPS, generator=g),
        "mixed": lambda: defenses.mixed_objective(EPS, 0.3),
        "trades": lambda: defenses.trades_objective(EPS, 2.0, steps=4, generator=g),
    }


# --------------------------------------------------------------------------- closed forms


def test_pgd_at_maximiser_of_a_linear_model_is_the_l_inf_corner() -> None:
    """CE of a 2-class linear model is maximised at x − ε·sign(w_y − w_other) (box inactive)."""
    x, _ = _batch()
    y = torch.randint(0, 2, (x.shape[0],), generator=_gen(3))
    net = _linear2()
    obj = defenses.pgd_at_objective(EPS, steps=5, generator=_gen())
    x_adv = obj.adversarial_examples(net, x, y)
    w = net.weight.detach()
    w_diff = w[y] - w[1 - y]
    expected = x - EPS * w_diff.sign()
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-6)
    loss, logits = obj(net, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(expected), y))
    torch.testing.assert_close(logits, net(expected))


def test_fgsm_at_without_random_start_is_fgsm_and_with_it_stays_in_the_predicted_band() -> None:
    x, _ = _batch()
    y = torch.randint(0, 2, (x.shape[0],), generator=_gen(3))
    net = _linear2()
    w_diff = (net.weight[y] - net.weight[1 - y]).detach()
    s = -w_diff.sign()  # the ascent direction of the CE of a linear model
    plain = defenses.fgsm_at_objective(EPS, random_start=False)
    assert plain.step_size == EPS
    torch.testing.assert_close(plain.adversarial_examples(net, x, y), x + EPS * s, rtol=0,
                               atol=1e-6)
    fast = defenses.fgsm_at_objective(EPS, generator=_gen())
    assert fast.step_size == pytest.approx(1.25 * EPS)
    delta = (fast.adversarial_examples(net, x, y) - x) * s
    # δ = clamp(δ₀ + 1.25ε·s, −ε, ε) with δ₀ ∈ [−ε, ε]: every coordinate ends in [ε/4, ε] along s
    assert delta.min() >= 0.25 * EPS - 1e-6 and delta.max() <= EPS + 1e-6
    assert (delta > 0.25 * EPS + 1e-3).any() and (delta < EPS - 1e-3).any()  # δ₀ was random


def test_trades_perturbation_of_a_linear_model_moves_the_logit_gap_by_eps_l1() -> None:
    """KL(p ‖ q) is convex in the logit gap z' with minimum at z: the maximiser moves every
    coordinate to ±ε along sign(w₁ − w₀), so |z' − z| = ε‖w₁ − w₀‖₁."""
    x, _ = _batch(n=32)
    net = _linear2()
    w = (net.weight[1] - net.weight[0]).detach()
    x_adv = defenses.trades_perturb(net, x, eps=EPS, steps=6, generator=_gen())
    delta = x_adv - x
    side = (delta @ w).sign()
    assert (side != 0).all()
    torch.testing.assert_close(delta, EPS * side[:, None] * w.sign(), rtol=0, atol=1e-6)
    z = net(x).detach() @ torch.tensor([-1.0, 1.0])
    z_adv = net(x_adv).detach() @ torch.tensor([-1.0, 1.0])
    torch.testing.assert_close((z_adv - z).abs(), EPS * w.abs().sum().expand(32), rtol=1e-5,
                               atol=1e-6)


def test_mixed_objective_matches_goodfellow_formula() -> None:
    x, y = _batch()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xr), y, reduction="sum"), xr)
    x_fgsm = (x + EPS * g.sign()).clamp(0, 1)
    for alpha in (0.0, 0.3, 1.0):
        loss, logits = defenses.mixed_objective(EPS, alpha)(net, x, y)
        expected = alpha * F.cross_entropy(net(x), y) + (1 - alpha) * F.cross_entropy(
            net(x_fgsm), y)
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(logits, net(x))


def test_mixed_objective_calls_a_custom_attack_with_eps_bounds_and_generator() -> None:
    x, y = _batch()
    net = nn.Linear(6, 3)
    g = _gen()
    calls: list[dict[str, object]] = []

    def attack(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, **kw: object):
        calls.append(kw)
        return attacks.pgd(model, xb, yb, steps=2, **kw)  # type: ignore[arg-type]

    defenses.mixed_objective(EPS, 0.5, attack=attack, bounds=(0.0, 1.0), generator=g)(net, x, y)
    assert calls == [{"eps": EPS, "bounds": (0.0, 1.0), "generator": g}]
    defenses.mixed_objective(EPS, 1.0, attack=attack)(net, x, y)
    assert len(calls) == 1  # α = 1 is standard training: no attack is run


# --------------------------------------------------------------------------- TRADES reference


def _reference_trades(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, eps: float,
    step: float, steps: int, beta: float,
) -> torch.Tensor:
    """Transcription of Zhang et al.'s ``trades_loss`` (github.com/yaodongyu/TRADES)."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * noise
    for _ in range(steps):
        x_adv.requires_grad_()
        loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / x.shape[0]) * criterion_kl(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
    return loss_natural + beta * loss_robust


def test_trades_matches_the_reference_implementation_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    g = _gen(7)
    x = 0.2 + 0.6 * torch.rand(12, 1, 6, 6, generator=g)
    y = torch.randint(0, 5, (12,), generator=g)
    gen = _gen(11)
    noise = torch.randn(x.shape, generator=_clone_gen(gen))
    obj = defenses.trades_objective(0.2, 3.0, steps=5, alpha=0.05, generator=gen)
    loss, _ = obj(net, x, y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    ref = _reference_trades(net, x, y, noise, 0.2, 0.05, 5, 3.0)
    ref_grads = torch.autograd.grad(ref, list(net.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_trades_perturb_increases_kl_stays_in_ball_and_box() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.rand(64, 6, generator=_gen(2))  # some coordinates near the box edges
    def kl(xa: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(net(xa), 1), F.softmax(net(x), 1),
                        reduction="none").sum(1)

    start = defenses.trades_perturb(net, x, eps=0.2, steps=0, generator=_gen())
    end = defenses.trades_perturb(net, x, eps=0.2, steps=10, generator=_gen())
    assert (start - x).abs().max() <= 0.01  # the 0.001·N(0, 1) start
    assert (end - x).abs().max() <= 0.2 + 1e-6 and end.min() >= 0 and end.max() <= 1
    with torch.no_grad():
        assert (kl(end) > kl(start)).float().mean() > 0.95
        assert kl(end).mean() > 10 * kl(start).mean()


def test_trades_with_beta_zero_is_cross_entropy() -> None:
    x, y = _batch()
    net = nn.Linear(6, 3)
    loss, logits = defenses.trades_objective(EPS, 0.0)(net, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    torch.testing.assert_close(logits, net(x))


# --------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("name", ["pgd", "fgsm", "mixed", "trades"])
def test_batchnorm_statistics_come_from_the_documented_batches(name: str) -> None:
    """PGD-AT/FGSM-AT: adversarial batch only; mixed and TRADES: clean, then adversarial."""
    m = 0.3
    x, y = _batch(n=32)
    net = _bn_net(momentum=m).train()
    bn = net[0]
    rm0, rv0 = bn.running_mean.clone(), bn.running_var.clone()
    g = _gen(5)
    obj = _recipes(g)[name]()
    # the adversarial batch the step will use, recomputed on a copy with the same random state
    twin_obj = _recipes(_clone_gen(g))[name]()
    x_adv = twin_obj.adversarial_examples(copy.deepcopy(net), x, y)  # type: ignore[attr-defined]
    assert not torch.equal(x_adv, x)
    obj(net, x, y)  # type: ignore[operator]

    def update(rm: torch.Tensor, rv: torch.Tensor, batch: torch.Tensor):
        return (1 - m) * rm + m * batch.mean(0), (1 - m) * rv + m * batch.var(0, unbiased=True)

    if name in ("pgd", "fgsm"):
        rm, rv = update(rm0, rv0, x_adv)
        passes = 1
    else:
        rm, rv = update(*update(rm0, rv0, x), x_adv)
        passes = 2
    torch.testing.assert_close(bn.running_mean, rm)
    torch.testing.assert_close(bn.running_var, rv)
    assert int(bn.num_batches_tracked) == passes
    assert net.training and bn.training


@pytest.mark.parametrize("name", ["pgd", "fgsm", "mixed", "trades"])
def test_generation_leaves_the_model_alone(name: str) -> None:
    """Generating x' changes no parameter, buffer, .grad or training flag, and not x."""
    x, y = _batch(n=32)
    net = _bn_net().train()
    net[2].eval()  # a sub-module frozen in eval mode must stay so
    state = copy.deepcopy(net.state_dict())
    x0, y0 = x.clone(), y.clone()
    obj = _recipes(_gen())[name]()
    x_adv = obj.adversarial_examples(net, x, y)  # type: ignore[attr-defined]
    assert not x_adv.requires_grad
    assert torch.equal(x, x0) and torch.equal(y, y0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in net.parameters())
    assert net.training and net[0].training and not net[2].training


def test_trades_restores_modes_when_the_model_raises_midway() -> None:
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(6)
            self.fc = nn.Linear(6, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return self.fc(self.bn(x))

    net = Flaky().train()
    x, y = _batch()
    with pytest.raises(RuntimeError, match="boom"):
        defenses.trades_objective(EPS, steps=5)(net, x, y)
    assert net.training and net.bn.training and int(net.bn.num_batches_tracked) == 0
    assert all(p.grad is None for p in net.parameters())


# --------------------------------------------------------------------------- mechanics


@pytest.mark.parametrize("name", ["pgd", "fgsm", "mixed", "trades"])
def test_recipes_run_on_device_and_dtype(name: str, device: torch.device) -> None:
    x, y = _batch()
    net = _bn_net().to(device=device, dtype=torch.float64)
    x, y = x.to(device, torch.float64), y.to(device)
    loss, logits = _recipes(_gen())[name]()(net, x, y)  # type: ignore[operator]
    assert loss.dtype == torch.float64 and loss.device.type == device.type
    assert logits.shape == (x.shape[0], 3) and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("name", ["pgd", "fgsm", "trades"])
def test_state_dict_replays_the_random_start(name: str) -> None:
    x, y = _batch()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    g = _gen(3)
    obj = {"pgd": defenses.pgd_at_objective(EPS, steps=1, alpha=EPS / 10, generator=g),
           "fgsm": defenses.fgsm_at_objective(EPS, generator=g),
           "trades": defenses.trades_objective(EPS, steps=1, generator=g)}[name]
    state = obj.state_dict()  # type: ignore[attr-defined]
    a = obj.adversarial_examples(net, x, y)  # type: ignore[attr-defined]
    b = obj.adversarial_examples(net, x, y)  # type: ignore[attr-defined]
    obj.load_state_dict(state)  # type: ignore[attr-defined]
    c = obj.adversarial_examples(net, x, y)  # type: ignore[attr-defined]
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_zero_eps_gives_the_clean_batch() -> None:
    x, y = _batch()
    net = nn.Linear(6, 3)
    for obj in (defenses.pgd_at_objective(0.0), defenses.fgsm_at_objective(0.0),
                defenses.trades_objective(0.0)):
        assert torch.equal(obj.adversarial_examples(net, x, y), x)
    loss, _ = defenses.pgd_at_objective(0.0)(net, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))


def test_bad_arguments_raise_clear_errors() -> None:
    x, y = _batch()
    net = nn.Linear(6, 3)
    with pytest.raises(ValueError, match="eps"):
        defenses.pgd_at_objective(-0.1)
    with pytest.raises(TypeError, match="eps"):
        defenses.trades_objective("0.3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        defenses.pgd_at_objective(0.1, steps=0)
    with pytest.raises(ValueError, match="alpha"):
        defenses.fgsm_at_objective(0.1, alpha=0.0)
    with pytest.raises(ValueError, match="norm"):
        defenses.trades_objective(0.1, norm="l1")
    with pytest.raises(ValueError, match="beta"):
        defenses.trades_objective(0.1, beta=-1.0)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        defenses.mixed_objective(0.1, alpha=1.5)
    with pytest.raises(TypeError, match="attack must be callable"):
        defenses.mixed_objective(0.1, attack="fgsm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bounds"):
        defenses.pgd_at_objective(0.1, bounds=(1.0, 0.0))
    with pytest.raises(TypeError, match="generator"):
        defenses.trades_objective(0.1, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="restarts"):
        defenses.pgd_at_objective(0.1, restarts=2, random_start=False)
    obj = defenses.trades_objective(0.1)
    with pytest.raises(ValueError, match=r"y must have shape \(N,\)"):
        obj(net, x, y[:-1])
    with pytest.raises(TypeError, match="floating-point"):
        obj(net, (x * 10).long(), y)
    with pytest.raises(ValueError, match="inside bounds"):
        obj(net, x + 1.0, y)
    with pytest.raises(TypeError, match="model must be"):
        defenses.trades_perturb(lambda t: t, x, eps=0.1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- end to end


def test_pgd_at_is_clearly_more_robust_than_standard_training_on_mnist() -> None:
    """A small MLP on 1,500 MNIST-5k images, ε = 0.15: PGD-AT beats standard under PGD-10."""
    mnist = data.load_mnist()
    g = _gen(0)
    tr = torch.randperm(4000, generator=g)[:1500]
    te = torch.randperm(1000, generator=g)[:300]
    x, y = mnist.x_train[tr], mnist.y_train[tr]
    robust = {}
    for name, obj in (("standard", None),
                      ("pgd", defenses.pgd_at_objective(0.15, steps=5, generator=_gen(1)))):
        torch.manual_seed(0)
        net = models.MLP(784, (128,), 10)
        train.fit(net, x, y, epochs=4, batch_size=32, objective=obj, seed=0, progress=False)
        res = attacks.robust_accuracy(
            net, mnist.x_test[te], mnist.y_test[te],
            {"pgd": lambda m, a, b: attacks.pgd(m, a, b, eps=0.15, steps=10, generator=_gen(2))},
        )
        robust[name] = res.accuracy["pgd"]
    assert robust["standard"] < 0.15
    assert robust["pgd"] > robust["standard"] + 0.25, robust


def test_training_time_attacks_do_not_warn_about_masked_gradients() -> None:
    """Recipes and the overfitting detector make training examples or report masking
    themselves: no GradientMaskingWarning, while an evaluation still warns. (Adversarial
    augmentation freezes the parameters, so there a detaching model is an error already.)"""
    import functools
    import warnings


    class Detaching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.detach())

    torch.manual_seed(0)
    model = Detaching()
    x = torch.rand(8, 1, 4, 4)
    y = model(x).argmax(1)
    makers = [
        lambda: defenses.fgsm_at_objective(0.1)(model, x, y),
        lambda: defenses.pgd_at_objective(0.1, steps=2)(model, x, y),
        lambda: defenses.CatastrophicOverfittingDetector(x, y, 0.1).measure(model),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", attacks.GradientMaskingWarning)
        for make in makers:
            make()
    with pytest.warns(attacks.GradientMaskingWarning):
        attacks.robust_accuracy(model, x, y, {"FGSM": functools.partial(attacks.fgsm, eps=0.1)})
