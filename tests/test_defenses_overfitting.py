"""The catastrophic-overfitting detector: its rule, its measurements, and a real reproduction."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from advbook import attacks, data, defenses, models, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist() -> data.Dataset:
    return data.load_mnist()


class Scripted(defenses.CatastrophicOverfittingDetector):
    """A detector whose measurements are scripted, to test the decision rule alone."""

    def __init__(self, values: list[tuple[float, float]], **kw: object) -> None:
        super().__init__(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 0.3, **kw)
        self.values = list(values)

    def measure(self, model: nn.Module) -> dict[str, float]:
        fgsm_acc, pgd_acc = self.values.pop(0)
        return {"fgsm_acc": fgsm_acc, "pgd_acc": pgd_acc}


def test_rule_detects_the_first_large_gap_and_warns() -> None:
    net = nn.Linear(2, 2)
    # robust (small gap), not robust (both low), collapse, collapse again
    det = Scripted([(0.9, 0.8), (0.1, 0.0), (0.85, 0.05), (0.9, 0.0)], threshold=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert det(net, 1) == {"fgsm_acc": 0.9, "pgd_acc": 0.8}
        det(net, 2)
    assert det.detected_epoch is None and not det.detected
    with pytest.warns(RuntimeWarning, match=r"catastrophic overfitting at epoch 3.*85\.0%.*5\.0%"):
        det(net, 3)
    with pytest.warns(RuntimeWarning, match="epoch 4"):
        det(net, 4)
    assert det.detected_epoch == 3 and det.detected
    assert [r["epoch"] for r in det.history] == [1, 2, 3, 4]


def test_threshold_is_inclusive_and_warn_false_still_records() -> None:
    net = nn.Linear(2, 2)
    det = Scripted([(0.6, 0.35), (0.6, 0.25)], threshold=0.3, warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det(net, 1)  # gap 0.25 < 0.3
        assert det.detected_epoch is None
        det(net, 2)  # gap 0.35 >= 0.3, recorded without a warning
    assert det.detected_epoch == 2


def test_state_dict_round_trip() -> None:
    net = nn.Linear(2, 2)
    det = Scripted([(0.9, 0.0)], warn=False)
    det(net, 7)
    other = Scripted([])
    other.load_state_dict(det.state_dict())
    assert other.detected_epoch == 7 and other.history == det.history


def test_as_fit_callback_adds_history_columns() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 2, generator=g), torch.randint(0, 2, (32,), generator=g)
    det = Scripted([(0.5, 0.4), (0.9, 0.1)], warn=False)
    hist = train.fit(nn.Linear(2, 2), x, y, epochs=2, batch_size=16, epoch_callbacks=[det],
                     progress=False)
    assert hist["fgsm_acc"].tolist() == [0.5, 0.9] and hist["pgd_acc"].tolist() == [0.4, 0.1]
    assert det.detected_epoch == 2


def test_measure_matches_the_attacks_and_leaves_the_model_alone(mnist: data.Dataset) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(),
                        nn.Linear(32, 10))
    train.fit(net, mnist.x_train[:600], mnist.y_train[:600], epochs=1, batch_size=32,
              progress=False)
    xv, yv = mnist.x_test[::10], mnist.y_test[::10]  # 100 images of every class
    eps = 0.05
    det = defenses.CatastrophicOverfittingDetector(xv, yv, eps, pgd_steps=5, seed=4)
    net.train()
    net.zero_grad(set_to_none=True)
    before = copy.deepcopy(net.state_dict())
    got = det.measure(net)
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        clean = net(xv).argmax(1) == yv
        x_f = attacks.fgsm(net, xv, yv, eps=eps)
        x_p = attacks.pgd(net, xv[clean], yv[clean], eps=eps, steps=5,
                          generator=torch.Generator().manual_seed(4))
        fgsm_ok = clean & (net(x_f).argmax(1) == yv)
        pgd_ok = net(x_p).argmax(1) == yv[clean]
    assert got["fgsm_acc"] == pytest.approx(fgsm_ok.float().mean().item())
    assert got["pgd_acc"] == pytest.approx(pgd_ok.float().sum().item() / len(yv))
    assert 0 < got["pgd_acc"] <= got["fgsm_acc"] < 1  # a model that is partly robust at ε
    assert det.measure(net) == got  # the same PGD start every epoch


def test_reproduces_catastrophic_overfitting_of_plain_fgsm_training(mnist: data.Dataset) -> None:
    """FGSM-AT without random start at ε = 0.3 on a small MLP: the FGSM accuracy climbs while
    the PGD accuracy stays near zero (Wong et al. 2020), and the detector says so."""
    g = torch.Generator().manual_seed(0)
    te = torch.randperm(1000, generator=g)[:200]
    tr = torch.randperm(4000, generator=g)[:2000]
    det = defenses.CatastrophicOverfittingDetector(mnist.x_test[te], mnist.y_test[te], 0.3)
    torch.manual_seed(0)
    net = models.MLP(784, (256,), 10)
    with pytest.warns(RuntimeWarning, match="catastrophic overfitting"):
        hist = train.fit(
            net, mnist.x_train[tr], mnist.y_train[tr], epochs=8, batch_size=32,
            objective=defenses.fgsm_at_objective(0.3, random_start=False),
            epoch_callbacks=[det], progress=False,
        )
    assert det.detected_epoch is not None
    row = hist.set_index("epoch").loc[det.detected_epoch]
    assert row["fgsm_acc"] - row["pgd_acc"] >= 0.3 and row["pgd_acc"] < 0.1
    assert hist["fgsm_acc"].iloc[-1] > 2 * hist["fgsm_acc"].iloc[0]  # FGSM "robustness" grew


def test_bad_arguments() -> None:
    x, y = torch.rand(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="eps"):
        defenses.CatastrophicOverfittingDetector(x, y, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        defenses.CatastrophicOverfittingDetector(x, y, 0.3, threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        defenses.CatastrophicOverfittingDetector(x, y, 0.3, threshold=0)
    with pytest.raises(ValueError, match="pgd_steps"):
        defenses.CatastrophicOverfittingDetector(x, y, 0.3, pgd_steps=0)
    with pytest.raises(ValueError, match=r"y_val \(N,\)"):
        defenses.CatastrophicOverfittingDetector(x, y[:2], 0.3)
    with pytest.raises(ValueError, match="empty"):
        defenses.CatastrophicOverfittingDetector(x[:0], y[:0], 0.3)
    with pytest.raises(TypeError, match="tensors"):
        defenses.CatastrophicOverfittingDetector(x.numpy(), y, 0.3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        defenses.CatastrophicOverfittingDetector(x, y, 0.3).measure("net")  # type: ignore[arg-type]
