"""Bad input is rejected up front; attacks never change the model, x or y (also when they fail)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import apgd, auto_attack, carlini_wagner, deepfool, fab, fgsm, pgd, square

AttackFn = Callable[..., Tensor]

ATTACKS: dict[str, AttackFn] = {
    "fgsm": partial(fgsm, eps=0.1),
    "fgsm-l2-fast": partial(fgsm, eps=0.5, norm="l2", random_start=True),
    "pgd": partial(pgd, eps=0.1, steps=3),
    "pgd-l2-restarts": partial(pgd, eps=0.5, steps=2, norm="l2", restarts=2),
    "pgd-early-stop": partial(pgd, eps=0.3, steps=3, early_stop=True),
    "pgd-max-loss": partial(pgd, eps=0.1, steps=2, select="max_loss"),
    "deepfool": partial(deepfool, steps=4),
    "deepfool-linf": partial(deepfool, steps=4, norm="linf"),
    "cw": partial(carlini_wagner, steps=4, binary_search_steps=2),
    "apgd": partial(apgd, eps=0.1, steps=5),
    "apgd-l2-dlr-restarts": partial(apgd, eps=0.5, norm="l2", loss="dlr", steps=4, restarts=2),
    "apgd-t": partial(apgd, eps=0.1, steps=4, loss="dlr", targeted=True, n_targets=3),
    "apgd-eot": partial(apgd, eps=0.1, steps=3, eot_samples=2),
    "fab-t": partial(fab, eps=0.1, steps=4, n_targets=2),
    "fab-l2": partial(fab, eps=0.5, norm="l2", steps=4, targeted=False, restarts=2),
    "square": partial(square, eps=0.1, queries=30),
    "square-l2": partial(square, eps=0.5, norm="l2", queries=30),
    "auto-attack": partial(auto_attack, eps=0.1, progress=False),
}
EPS_ATTACKS = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd, "fab": fab,
               "square": partial(square, queries=10), "auto-attack": auto_attack}
STEP_ATTACKS = {"pgd": partial(pgd, eps=0.1), "deepfool": deepfool, "cw": carlini_wagner,
                "apgd": partial(apgd, eps=0.1), "fab": partial(fab, eps=0.1)}


pytestmark = pytest.mark.usefixtures("one_thread")


class CountingModel(nn.Module):
    """A small CNN with BatchNorm and Dropout that counts its forward calls.

    ``fail_at`` makes the k-th call raise; ``output`` reshapes the logits to test the checks.
    """

    def __init__(self, num_classes: int = 4, fail_at: int | None = None, output: str = "ok"):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, num_classes)
        self.calls = 0
        self.fail_at = fail_at
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        z = self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))
        if self.output == "flat":
            return z[:, 0]
        if self.output == "3d":
            return z[:, :, None]
        if self.output == "short":
            return z[:-1]
        if self.output == "one-class":
            return z[:, :1]
        return z


def _data(n: int = 5, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 6, 6, generator=g).to(device)
    y = torch.randint(0, 4, (n,), generator=g).to(device)
    return x, y


def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "modes": {name: m.training for name, m in model.named_modules()},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "grad_values": {
            k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()
        },
    }


def _assert_unchanged(model: nn.Module, snap: dict[str, object]) -> None:
    assert {n: m.training for n, m in model.named_modules()} == snap["modes"]
    state = model.state_dict()
    for k, v in snap["state"].items():  # type: ignore[union-attr]
        assert torch.equal(state[k], v), f"{k} changed"
    for k, p in model.named_parameters():
        assert p.grad is snap["grads"][k], f"{k}.grad replaced"  # type: ignore[index]
        before = snap["grad_values"][k]  # type: ignore[index]
        if before is not None:
            assert torch.equal(p.grad, before)


def _mixed_mode_model(device: torch.device | str = "cpu") -> CountingModel:
    """Train mode overall but with a frozen (eval) BatchNorm, as in fine-tuning."""
    model = CountingModel().to(device)
    model.train()
    model.bn.eval()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.1, 0.1)
        model.bn.running_var.uniform_(0.9, 1.1)
    return model


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("name", list(ATTACKS))
def test_model_x_y_left_unchanged(name: str, device: torch.device) -> None:
    model = _mixed_mode_model(device)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)  # an existing .grad must survive
    x, y = _data(device=device)
    x_before, y_before = x.clone(), y.clone()
    versions = (x._version, y._version)
    snap = _snapshot(model)
    x_adv = ATTACKS[name](model, x, y)
    _assert_unchanged(model, snap)
    assert model.conv.weight.grad is None and model.bn.weight.grad is None
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert (x._version, y._version) == versions
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert x_adv.data_ptr() != x.data_ptr()
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("when", ["first", "second", "last"])
def test_model_restored_when_attack_raises_midway(name: str, when: str) -> None:
    x, y = _data()
    counter = _mixed_mode_model()
    ATTACKS[name](counter, x, y, **_seeded(name))
    fail_at = {"first": 1, "second": 2, "last": counter.calls}[when]
    if fail_at > counter.calls:
        pytest.skip(f"{name} makes only {counter.calls} forward pass(es) here")
    model = _mixed_mode_model()
    model.load_state_dict(counter.state_dict())
    model.fail_at = fail_at
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        ATTACKS[name](model, x, y, **_seeded(name))
    _assert_unchanged(model, snap)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_batchnorm_statistics_untouched_in_train_mode(name: str) -> None:
    model = CountingModel().train()  # the whole model in train mode: BN would update
    snap = _snapshot(model)
    x, y = _data()
    ATTACKS[name](model, x, y)
    _assert_unchanged(model, snap)
    assert model.training and model.bn.training


@pytest.mark.parametrize("name", list(ATTACKS))
def test_runs_under_no_grad_and_inference_mode(name: str) -> None:
    model = CountingModel().eval()
    x, y = _data()
    expected = ATTACKS[name](model, x, y, **_seeded(name))
    with torch.no_grad():
        assert torch.equal(ATTACKS[name](model, x, y, **_seeded(name)), expected)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(ATTACKS[name](model, xi, yi, **_seeded(name)), expected)


def _seeded(name: str) -> dict[str, object]:
    if name.startswith(("pgd", "fgsm", "apgd", "fab", "square", "auto")):
        return {"generator": torch.Generator().manual_seed(3)}
    return {}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_float64_and_empty_batch(name: str) -> None:
    model = CountingModel().double().eval()
    x, y = _data()
    x_adv = ATTACKS[name](model, x.double(), y)
    assert x_adv.dtype == torch.float64
    empty = ATTACKS[name](model, x[:0].double(), y[:0])
    assert empty.shape == (0, 1, 6, 6)


def test_generator_reproducible_and_global_rng_untouched(device: torch.device) -> None:
    model = CountingModel().to(device).eval()
    x, y = _data(device=device)
    state = torch.get_rng_state()
    a = pgd(model, x, y, eps=0.2, steps=2, generator=torch.Generator().manual_seed(5))
    b = pgd(model, x, y, eps=0.2, steps=2, generator=torch.Generator().manual_seed(5))
    c = pgd(model, x, y, eps=0.2, steps=2, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --------------------------------------------------------------------------- bad input


def _assert_rejected_before_work(
    attack: AttackFn, exc: type[Exception], match: str, model: CountingModel | None = None, **kw
) -> None:
    model = model or CountingModel().eval()
    x, y = kw.pop("x", None), kw.pop("y", None)
    dx, dy = _data()
    x = dx if x is None else x
    y = dy if y is None else y
    with pytest.raises(exc, match=match):
        attack(model, x, y, **kw)
    assert model.calls == 0, "the model ran before the input was rejected"


@pytest.mark.parametrize("name", list(EPS_ATTACKS))
@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps(name: str, eps: float) -> None:
    _assert_rejected_before_work(EPS_ATTACKS[name], ValueError, "eps", eps=eps)


@pytest.mark.parametrize("name", list(EPS_ATTACKS))
def test_eps_of_wrong_type(name: str) -> None:
    _assert_rejected_before_work(EPS_ATTACKS[name], TypeError, "eps", eps="0.1")


@pytest.mark.parametrize("name", list(STEP_ATTACKS))
def test_bad_steps(name: str) -> None:
    _assert_rejected_before_work(STEP_ATTACKS[name], ValueError, "steps", steps=-1)
    _assert_rejected_before_work(STEP_ATTACKS[name], TypeError, "steps", steps=2.5)


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_x(name: str, bad: float) -> None:
    x, _ = _data()
    x[0, 0, 0, 0] = bad
    _assert_rejected_before_work(ATTACKS[name], ValueError, "NaN or infinite", x=x)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_x_outside_bounds(name: str) -> None:
    x, _ = _data()
    _assert_rejected_before_work(ATTACKS[name], ValueError, "inside bounds", x=x + 0.5)
    _assert_rejected_before_work(
        ATTACKS[name], ValueError, "inside bounds", x=x, bounds=(0.2, 1.0)
    )


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize(
    ("y", "exc", "match"),
    [
        (torch.tensor([0, 1, 2, 3, -1]), ValueError, ">= 0"),
        (torch.tensor([[0], [1], [2], [3], [0]]), ValueError, "shape"),
        (torch.tensor([0, 1, 2, 3]), ValueError, "shape"),
        (torch.tensor([0.0, 1, 2, 3, 0]), TypeError, "integer"),
        (torch.tensor([True, False, True, False, True]), TypeError, "integer"),
    ],
)
def test_bad_labels(name: str, y: Tensor, exc: type[Exception], match: str) -> None:
    _assert_rejected_before_work(ATTACKS[name], exc, match, y=y)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_label_out_of_range_caught_at_first_forward(name: str) -> None:
    model = CountingModel().eval()
    x, _ = _data()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match=r"\[0, K\)"):
        ATTACKS[name](model, x, torch.tensor([0, 1, 2, 3, 4]))
    assert model.calls == 1
    _assert_unchanged(model, snap)


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("output", ["flat", "3d", "short", "one-class"])
def test_logits_must_be_n_by_k(name: str, output: str) -> None:
    model = CountingModel(output=output).eval()
    x, y = _data()
    y = y.clamp(max=0)  # valid even for the one-class model, so the shape check is what fires
    with pytest.raises(ValueError, match=r"logits|at least 2 classes"):
        ATTACKS[name](model, x, y)
    assert model.calls == 1


@pytest.mark.parametrize("name", list(ATTACKS))
def test_wrong_types_and_devices(name: str) -> None:
    attack = ATTACKS[name]
    x, y = _data()
    _assert_rejected_before_work(attack, TypeError, "torch.Tensor", x=x.numpy())
    _assert_rejected_before_work(attack, TypeError, "floating-point", x=(x * 255).to(torch.uint8),
                                 bounds=(0, 255))
    _assert_rejected_before_work(attack, ValueError, "at least 2 dimensions", x=x[0, 0, 0])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        attack(lambda t: t.flatten(1), x, y)
    meta = CountingModel().to("meta")
    _assert_rejected_before_work(attack, ValueError, "same device|share one device", model=meta)


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.0, float("nan")), (0.0,), "01"])
def test_bad_bounds(name: str, bounds: object) -> None:
    exc = ValueError if isinstance(bounds, tuple) and len(bounds) == 2 else TypeError
    _assert_rejected_before_work(ATTACKS[name], exc, "bounds", bounds=bounds)


@pytest.mark.parametrize(
    ("attack", "kwargs", "match"),
    [
        (fgsm, {"eps": 0.1, "norm": "l1"}, "norm"),
        (fgsm, {"eps": 0.1, "alpha": 0.0}, "alpha"),
        (fgsm, {"eps": 0.1, "generator": 3}, "generator"),
        (pgd, {"eps": 0.1, "norm": "L2"}, "norm"),
        (pgd, {"eps": 0.1, "restarts": 0}, "restarts"),
        (pgd, {"eps": 0.1, "restarts": 2, "random_start": False}, "random_start"),
        (pgd, {"eps": 0.1, "alpha": -1.0}, "alpha"),
        (pgd, {"eps": 0.1, "select": "last"}, "select"),
        (deepfool, {"candidates": 1}, "candidates"),
        (deepfool, {"overshoot": -0.1}, "overshoot"),
        (deepfool, {"norm": "l1"}, "norm"),
        (carlini_wagner, {"c": 0.0}, "c must"),
        (carlini_wagner, {"lr": -1.0}, "lr"),
        (carlini_wagner, {"binary_search_steps": 0}, "binary_search_steps"),
        (carlini_wagner, {"confidence": -1.0}, "confidence"),
        (apgd, {"eps": 0.1, "rho": 1.5}, "rho"),
        (apgd, {"eps": 0.1, "loss": "kl"}, "loss"),
        (apgd, {"eps": 0.1, "restarts": 0}, "restarts"),
        (apgd, {"eps": 0.1, "eot_samples": 0}, "eot_samples"),
        (apgd, {"eps": 0.1, "norm": "l1"}, "norm"),
        (fab, {"eps": 0.1, "restarts": 0}, "restarts"),
        (fab, {"eps": 0.1, "norm": "l1"}, "norm"),
        (square, {"eps": 0.1, "queries": 0}, "queries"),
        (square, {"eps": 0.1, "p_init": 0.0}, "p_init"),
        (square, {"eps": 0.1, "p_init": 1.5}, "p_init"),
        (square, {"eps": 0.1, "norm": "l1"}, "norm"),
        (auto_attack, {"eps": 0.1, "version": "fast"}, "version"),
        (auto_attack, {"eps": 0.1, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_hyper_parameters(attack: AttackFn, kwargs: dict[str, object], match: str) -> None:
    exc: type[Exception] = TypeError if "generator" in kwargs else ValueError
    _assert_rejected_before_work(attack, exc, match, **kwargs)


def test_non_differentiable_model_is_reported() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(36, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x.detach().flatten(1)).detach()

    x, _ = _data()
    model = Detached()
    y = model(x).argmax(1)  # correctly classified: apgd attacks only those
    for attack in (partial(fgsm, eps=0.1), partial(pgd, eps=0.1), deepfool,
                   partial(apgd, eps=0.1, steps=2)):
        with pytest.raises(ValueError, match="does not depend on x"):
            attack(model, x, y)


@pytest.mark.cuda
def test_cpu_generator_with_cuda_data_matches_cpu() -> None:
    model = CountingModel().eval()
    x, y = _data()
    cpu = pgd(model, x, y, eps=0.2, steps=0, generator=torch.Generator().manual_seed(0))
    gpu = pgd(model.cuda(), x.cuda(), y.cuda(), eps=0.2, steps=0,
              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gpu.cpu(), cpu)
