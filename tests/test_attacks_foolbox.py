"""Independent oracle: foolbox 3.3.4 (a test-only dependency) on a small trained MNIST model.

FGSM/FGM must agree with foolbox to rounding; PGD's robust accuracy must be within 1 pp of
foolbox's at the same settings; DeepFool and C&W must find perturbations whose median L2 norm is
at most 1.02× foolbox's, with at least foolbox's success rate.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import carlini_wagner, deepfool, fgsm, pgd
from advbook.attacks._utils import batch_norms
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

fb = pytest.importorskip("foolbox", minversion="3.3")

N_IMAGES = 300

Setup = tuple[nn.Module, object, Tensor, Tensor]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup() -> Setup:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    model.eval()
    return model, fb.PyTorchModel(model, bounds=(0, 1)), ds.x_test[:N_IMAGES], ds.y_test[:N_IMAGES]


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _distances(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    """L2 distance where ``x_adv`` is misclassified, ``inf`` where not; clean-correct only.

    foolbox's C&W returns an all-zero image where it failed (it initialises its "best" points
    with zeros), which is often misclassified; such rows count as failures here.
    """
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        fooled = model(x_adv).argmax(1) != y
    fooled &= x_adv.flatten(1).abs().sum(1) > 0
    d = batch_norms(x_adv - x, "l2")
    d = torch.where(fooled, d, torch.full_like(d, torch.inf))
    return d[correct]


@pytest.mark.parametrize(
    ("norm", "eps", "fb_attack"),
    [("linf", 0.1, "LinfFastGradientAttack"), ("l2", 1.5, "L2FastGradientAttack")],
)
def test_fgsm_matches_foolbox(setup: Setup, norm: str, eps: float, fb_attack: str) -> None:
    model, fmodel, x, y = setup
    _, ref, _ = getattr(fb.attacks, fb_attack)(random_start=False)(fmodel, x, y, epsilons=eps)
    ours = fgsm(model, x, y, eps=eps, norm=norm)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("norm", "eps", "random_start"),
    [("linf", 0.06, True), ("linf", 0.1, True), ("linf", 0.1, False), ("l2", 1.0, True),
     ("l2", 1.5, False)],
)
def test_pgd_robust_accuracy_matches_foolbox(
    setup: Setup, norm: str, eps: float, random_start: bool
) -> None:
    model, fmodel, x, y = setup
    steps, alpha = 20, 2.5 * eps / 20
    cls = fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD
    attack = cls(abs_stepsize=alpha, steps=steps, random_start=random_start)
    torch.manual_seed(0)  # foolbox draws its random start from the global generator
    _, ref, _ = attack(fmodel, x, y, epsilons=eps)
    ours = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm,
               random_start=random_start, generator=torch.Generator().manual_seed(0))
    acc_ref, acc_ours = _accuracy(model, ref, y), _accuracy(model, ours, y)
    assert 0.05 < acc_ref < 0.95  # a regime where the comparison means something
    assert abs(acc_ours - acc_ref) <= 0.01, (acc_ours, acc_ref)
    assert (batch_norms(ours - x, norm) <= eps + 1e-6).all()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_matches_foolbox(setup: Setup, norm: str) -> None:
    model, fmodel, x, y = setup
    cls = fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack
    ref, _, _ = cls(steps=50, candidates=10, overshoot=0.02)(fmodel, x, y, epsilons=None)
    ours = deepfool(model, x, y, steps=50, candidates=10, overshoot=0.02, norm=norm)
    d_ref, d_ours = _distances(model, x, y, ref), _distances(model, x, y, ours)
    assert torch.isfinite(d_ours).float().mean() >= torch.isfinite(d_ref).float().mean()
    assert d_ours.median() <= 1.02 * d_ref.median()
    if norm == "l2":  # the same algorithm: per-sample agreement too
        both = torch.isfinite(d_ref) & torch.isfinite(d_ours)
        assert ((d_ours[both] - d_ref[both]).abs() <= 1e-3 * d_ref[both]).float().mean() > 0.95


def test_carlini_wagner_matches_foolbox(setup: Setup) -> None:
    model, fmodel, x, y = setup
    x, y = x[:150], y[:150]
    budget = dict(binary_search_steps=6, steps=100)
    ref, _, _ = fb.attacks.L2CarliniWagnerAttack(stepsize=0.05, initial_const=0.01, **budget)(
        fmodel, x, y, epsilons=None
    )
    ours = carlini_wagner(model, x, y, lr=0.05, c=0.01, **budget)
    d_ref, d_ours = _distances(model, x, y, ref), _distances(model, x, y, ours)
    assert torch.isfinite(d_ref).float().mean() > 0.9
    assert torch.isfinite(d_ours).float().mean() >= torch.isfinite(d_ref).float().mean()
    assert d_ours.median() <= 1.02 * d_ref.median()
