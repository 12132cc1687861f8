"""Two defects of :func:`carlini_wagner`, each with a test that fails on the code before the fix.

(a) Binarised images. With ``x' = a + b·tanh(w)`` pixels at exactly ``lo``/``hi`` sit at
    ``w = ±∞`` (or at ``±7.25`` after a ``1 − 10⁻⁶`` shrink), where tanh is flat: they freeze,
    and binarised digits became far harder to attack than the same digits in gray (~6 % vs
    100 % success). The stretched tanh ``a + b·tanh(w)/(1 − η)`` with ``|w| ≤ artanh(1 − η)``
    keeps their gradient alive.
(b) Early abort. Stopping a sample after a single stalled window cost up to ~20 % of median
    distance against foolbox's C&W (whose abort looks at the batch sum and hardly ever fires);
    with a patience of two windows the abort costs nothing measurable.

Model and data as in ``tests/test_attacks_foolbox.py``: an MLP trained briefly on MNIST-5k.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from advbook.attacks import carlini_wagner
from advbook.attacks._utils import batch_norms
from advbook.data import load_mnist
from advbook.models import MLP
from advbook.train import fit

fb = pytest.importorskip("foolbox", minversion="3.3")

pytestmark = pytest.mark.usefixtures("one_thread")

Trained = tuple[nn.Module, Tensor, Tensor]


@pytest.fixture(scope="module")
def trained() -> Trained:
    ds = load_mnist()
    torch.manual_seed(0)
    model = MLP(hidden=(64,))
    fit(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, seed=0, progress=False)
    model.eval()
    return model, ds.x_test[:128], ds.y_test[:128]


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _distances(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> Tensor:
    """L2 distance where ``x_adv`` is misclassified, ``inf`` where not.

    foolbox's C&W returns an all-zero image where it failed, which is often misclassified;
    such rows count as failures.
    """
    fooled = (_predict(model, x_adv) != y) & (x_adv.flatten(1).abs().sum(1) > 0)
    d = batch_norms(x_adv - x, "l2")
    return torch.where(fooled, d, torch.full_like(d, torch.inf))


def test_binarised_digits_are_no_harder_than_gray_ones(trained: Trained) -> None:
    """Same 32 digits, gray and binarised at 0.5, same budget: at least the same success."""
    model, x, y = trained
    xb = (x > 0.5).to(x.dtype)
    both_correct = (_predict(model, x) == y) & (_predict(model, xb) == y)
    idx = both_correct.nonzero().squeeze(1)[:32]
    assert len(idx) == 32
    budget = dict(binary_search_steps=4, steps=100, c=1.0, lr=0.05)
    success = {}
    for name, inputs in (("gray", x[idx]), ("binary", xb[idx])):
        x_adv = carlini_wagner(model, inputs, y[idx], **budget)
        assert torch.isfinite(x_adv).all()
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        fooled = _predict(model, x_adv) != y[idx]
        success[name] = float(fooled.float().mean())
        if name == "binary":  # pixels at exactly 0 and at exactly 1 both move
            moved = x_adv != inputs
            assert moved[inputs == 0].any() and moved[inputs == 1].any()
    assert success["binary"] >= success["gray"], success
    assert success["binary"] >= 0.9, success


def test_early_abort_costs_no_distance_against_foolbox(trained: Trained) -> None:
    """foolbox's budget (5 rounds × 100 Adam steps, c = 10⁻³, step 10⁻²), same points.

    The box is a little wider than the data, ``(−0.1, 1.1)``: in ``(0, 1)`` foolbox freezes the
    pixels at exactly 0 (defect (a)) and fools too few digits for its median to be finite. In
    the wider box every pixel is movable for both attacks, both fool every digit, and the
    comparison isolates the early abort: ours must be at most 1 % farther than foolbox's, and
    at most 1 % farther than ours without early abort.
    """
    model, x, y = trained
    correct = _predict(model, x) == y
    x, y = x[correct], y[correct]
    assert len(y) >= 100
    bounds = (-0.1, 1.1)
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=5, steps=100, stepsize=1e-2, initial_const=1e-3
    )
    ref, _, _ = attack(fb.PyTorchModel(model, bounds=bounds), x, y, epsilons=None)
    budget = dict(binary_search_steps=5, steps=100, lr=1e-2, c=1e-3, bounds=bounds)
    ours = carlini_wagner(model, x, y, **budget)
    no_abort = carlini_wagner(model, x, y, abort_early=False, **budget)
    d_ref, d_ours, d_full = (_distances(model, x, y, a) for a in (ref, ours, no_abort))
    success_ref = float(torch.isfinite(d_ref).float().mean())
    assert success_ref >= 0.9  # a regime where the median means something
    assert float(torch.isfinite(d_ours).float().mean()) >= success_ref
    assert d_ours.median() <= 1.01 * d_ref.median(), (d_ours.median(), d_ref.median())
    assert d_ours.median() <= 1.01 * d_full.median(), (d_ours.median(), d_full.median())
