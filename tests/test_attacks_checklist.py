"""The evaluation checklist of Carlini et al. (2019, "On evaluating adversarial robustness").

Run on a small MLP trained briefly on the bundled MNIST-5k: robust accuracy falls with ε and
reaches ~0, iterative beats single-step, more steps/restarts never help the model, a constant
added to the logits changes nothing, C&W works on binary images, and batching changes nothing.
"""

from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import (
    accuracy_vs_eps,
    carlini_wagner,
    deepfool,
    fgsm,
    min_norm_distances,
    pgd,
    robust_accuracy,
)
from advbook.attacks._utils import batch_norms
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    model.eval()
    return model, ds.x_test[:200], ds.y_test[:200]


@pytest.fixture(scope="module")
def trained64(trained: tuple[nn.Module, Tensor, Tensor]) -> tuple[nn.Module, Tensor, Tensor]:
    """The same model in float64, where batching cannot change rounding decisions."""
    model, x, y = trained
    return copy.deepcopy(model).double(), x[:40].double(), y[:40]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _robust(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


class Shifted(nn.Module):
    """``model`` with a constant added to every logit."""

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) + self.shift


@pytest.mark.parametrize(
    ("norm", "epsilons"),
    [("linf", [0.0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3]), ("l2", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0])],
)
def test_robust_accuracy_falls_with_eps_and_reaches_zero(
    trained: tuple[nn.Module, Tensor, Tensor], norm: str, epsilons: list[float]
) -> None:
    model, x, y = trained
    attack = partial(pgd, steps=20, norm=norm, generator=_gen())
    curve = accuracy_vs_eps(model, x, y, attack, epsilons[::-1], batch_size=128)
    assert curve["eps"].tolist() == epsilons  # sorted
    acc = curve["accuracy"].to_numpy()
    clean = float(_robust(model, x, y).float().mean())
    assert acc[0] == pytest.approx(clean)
    assert acc[0] > 0.85
    assert (np.diff(acc) <= 0).all(), acc
    assert acc[-1] <= 0.01
    env = curve["accuracy_envelope"].to_numpy()
    assert (env <= acc).all() and (np.diff(env) <= 0).all()


def test_pgd_at_least_as_strong_as_fgsm(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    for norm, eps in [("linf", 0.1), ("l2", 1.5)]:
        result = robust_accuracy(
            model, x, y,
            {"fgsm": partial(fgsm, eps=eps, norm=norm),
             "pgd": partial(pgd, eps=eps, norm=norm, steps=20, generator=_gen())},
            batch_size=64,
        )
        assert result.accuracy["pgd"] < result.accuracy["fgsm"]
        assert result.worst_case <= min(result.accuracy.values())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_more_steps_or_restarts_never_help_the_model(
    trained: tuple[nn.Module, Tensor, Tensor], norm: str
) -> None:
    model, x, y = trained
    eps = 0.08 if norm == "linf" else 1.0
    # fixed step size and the same start: the short run is a prefix of the long one, and the
    # worst iterate is kept, so the implication holds sample by sample
    short = _robust(model, pgd(model, x, y, eps=eps, norm=norm, steps=3, alpha=eps / 4,
                               generator=_gen(1)), y)
    long = _robust(model, pgd(model, x, y, eps=eps, norm=norm, steps=15, alpha=eps / 4,
                              generator=_gen(1)), y)
    assert not (long & ~short).any()
    assert long.sum() < short.sum()
    # restarts: the first restart uses the same random draws as a single run
    one = _robust(model, pgd(model, x, y, eps=eps, norm=norm, steps=3, generator=_gen(2)), y)
    three = _robust(model, pgd(model, x, y, eps=eps, norm=norm, steps=3, restarts=3,
                               generator=_gen(2)), y)
    assert not (three & ~one).any()
    # default step size 2.5·ε/steps: more steps, no higher robust accuracy
    acc = [
        float(_robust(model, pgd(model, x, y, eps=eps, norm=norm, steps=s, generator=_gen()),
                      y).float().mean())
        for s in (5, 20, 50)
    ]
    assert acc[0] >= acc[1] >= acc[2]


def test_early_stop_gives_the_same_robust_accuracy(
    trained64: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = trained64
    for restarts in (1, 3):
        full = pgd(model, x, y, eps=0.06, steps=10, restarts=restarts, generator=_gen(3))
        fast = pgd(model, x, y, eps=0.06, steps=10, restarts=restarts, generator=_gen(3),
                   early_stop=True)
        assert torch.equal(_robust(model, full, y), _robust(model, fast, y))
        assert (batch_norms(fast - x, "linf") <= 0.06 + 1e-12).all()


class ForwardCounter(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("restarts", [1, 3])
def test_select_fooled_and_max_loss_give_the_same_robust_accuracy(
    trained64: tuple[nn.Module, Tensor, Tensor], norm: str, restarts: int
) -> None:
    """``select`` only decides whether fooled samples also get their last iterate judged.

    Samples that no iterate fooled get the identical point (their last iterate is evaluated
    either way); fooled samples stay fooled, and ``max_loss`` returns a point whose loss is at
    least that of ``fooled``'s, since it judges a superset of the same iterates.
    """
    model, x, y = trained64
    eps = 0.06 if norm == "linf" else 0.8
    kw = dict(eps=eps, norm=norm, steps=6, restarts=restarts)
    fast = pgd(model, x, y, select="fooled", generator=_gen(4), **kw)
    full = pgd(model, x, y, select="max_loss", generator=_gen(4), **kw)
    robust = _robust(model, full, y)
    assert torch.equal(_robust(model, fast, y), robust)
    assert 0 < int(robust.sum()) < len(y)  # both kinds of sample are present
    assert torch.equal(fast[robust], full[robust])
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        loss_fast = ce(model(fast), y, reduction="none")
        loss_full = ce(model(full), y, reduction="none")
    assert (loss_full >= loss_fast - 1e-12).all()


def test_select_fooled_evaluates_the_last_iterate_only_where_needed(
    trained64: tuple[nn.Module, Tensor, Tensor],
) -> None:
    """Forward passes: ``steps`` full batches, then the last iterate of the unfooled samples
    only (``fooled``) or of every sample (``max_loss``)."""
    model, x, y = trained64
    steps = 4
    counted = ForwardCounter(model)
    pgd(counted, x, y, eps=0.06, steps=steps, select="max_loss", generator=_gen(5))
    assert counted.sizes == [len(y)] * (steps + 1)
    # the number of samples fooled by the first `steps` iterates, from a run one step shorter
    # judged at every iterate (same random start, same fixed step size)
    counted.sizes.clear()
    x_prefix = pgd(model, x, y, eps=0.06, steps=steps - 1, alpha=0.015, select="max_loss",
                   generator=_gen(5))
    unfooled = int(_robust(model, x_prefix, y).sum())
    pgd(counted, x, y, eps=0.06, steps=steps, alpha=0.015, select="fooled", generator=_gen(5))
    assert counted.sizes == [len(y)] * steps + [unfooled]
    assert 0 < unfooled < len(y)


@pytest.mark.parametrize("shift", [-50.0, 50.0])
def test_constant_logit_shift_changes_neither_cw_nor_deepfool(
    trained64: tuple[nn.Module, Tensor, Tensor], shift: float
) -> None:
    """A shift of all logits leaves every decision unchanged; masking the true class by a
    one-hot product (instead of −∞) would break on the all-negative logits of ``shift=−50``."""
    model, x, y = trained64
    x, y = x[:20], y[:20]
    shifted = Shifted(model, shift)
    with torch.no_grad():
        assert (shifted(x) < 0).all() == (shift < 0)
    for attack in (
        partial(deepfool, steps=50),
        partial(deepfool, steps=50, norm="linf"),
        partial(carlini_wagner, steps=60, binary_search_steps=4, lr=0.05, c=0.1),
    ):
        torch.testing.assert_close(attack(shifted, x, y), attack(model, x, y),
                                   atol=1e-9, rtol=0)


def test_cw_succeeds_on_binary_images(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    """Pixels at exactly 0 or 1 would sit at ±∞ in tanh space; the stretched map
    ``x' = ½ + ½·tanh(w)/(1 − η)`` starts them at ``w = ±artanh(1 − η)``, where the gradient is
    alive (tests/test_carlini_wagner_defects.py checks the default step size too)."""
    model, x, y = trained
    xb = (x[:60] > 0.5).to(x.dtype)
    yb = y[:60]
    correct = _robust(model, xb, yb)
    x_adv = carlini_wagner(model, xb, yb, steps=100, binary_search_steps=5, lr=0.3, c=1.0)
    assert torch.isfinite(x_adv).all()
    fooled = ~_robust(model, x_adv, yb)
    assert fooled[correct].float().mean() >= 0.95
    moved = (x_adv != xb)[correct]
    assert moved[xb[correct] == 0].any() and moved[xb[correct] == 1].any()


@pytest.mark.parametrize(
    "attack",
    [
        partial(fgsm, eps=0.1),
        partial(fgsm, eps=1.0, norm="l2"),
        partial(pgd, eps=0.1, steps=5, random_start=False),
        partial(pgd, eps=1.0, steps=5, norm="l2", random_start=False, early_stop=True),
        partial(deepfool, steps=30),
        partial(deepfool, steps=30, norm="linf", candidates=4),
        partial(carlini_wagner, steps=40, binary_search_steps=3, lr=0.05, c=0.1),
        partial(carlini_wagner, steps=40, binary_search_steps=2, lr=0.05, c=0.1, targeted=True),
    ],
    ids=["fgsm", "fgm", "bim", "pgd-l2-early-stop", "deepfool", "deepfool-linf", "cw", "cw-t"],
)
def test_attacking_a_batch_equals_attacking_each_sample(
    trained64: tuple[nn.Module, Tensor, Tensor], attack: partial[Tensor]
) -> None:
    model, x, y = trained64
    x, y = x[:8], y[:8]
    if attack.keywords.get("targeted"):
        y = (y + 1) % 10
    batch = attack(model, x, y)
    single = torch.cat([attack(model, x[i : i + 1], y[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, single, atol=1e-10, rtol=0)


def test_robust_accuracy_bookkeeping(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    attacks = {"fgsm": partial(fgsm, eps=0.1), "deepfool": partial(deepfool, steps=3)}
    result = robust_accuracy(model, x, y, attacks, batch_size=70)
    clean = _robust(model, x, y)
    assert torch.equal(result.clean_correct, clean)
    assert result.clean_accuracy == pytest.approx(float(clean.float().mean()))
    for j, (name, attack) in enumerate(attacks.items()):
        direct = _robust(model, attack(model, x, y), y) & clean
        assert torch.equal(result.robust[:, j], direct), name
        assert result.accuracy[name] == pytest.approx(float(direct.float().mean()))
    assert not result.robust[~clean].any()
    assert result.worst_case == pytest.approx(float(result.robust.all(1).float().mean()))
    assert torch.equal(result.robust_all, result.robust.all(1))
    frame = result.to_frame()
    assert frame["attack"].tolist() == ["clean", "fgsm", "deepfool", "worst case"]


def test_min_norm_distances(trained: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = trained
    attack = partial(deepfool, steps=50)
    res = min_norm_distances(model, x, y, attack, norm="l2", batch_size=64)
    clean = _robust(model, x, y)
    assert torch.equal(res.distances == 0, ~clean)
    assert res.success.float().mean() > 0.95
    assert torch.isinf(res.distances[~res.success]).all()
    direct = batch_norms(attack(model, x[clean], y[clean]) - x[clean], "l2").double()
    ok = res.success[clean]
    torch.testing.assert_close(res.distances[clean][ok], direct[ok], rtol=1e-6, atol=1e-6)
    assert res.accuracy_at(0.0) == pytest.approx(float(clean.float().mean()))
    radii = [0.0, 0.5, 1.0, 2.0, 4.0]
    accs = [res.accuracy_at(r) for r in radii]
    assert accs == sorted(accs, reverse=True)
    assert res.median() == pytest.approx(float(np.median(res.distances.numpy())))
