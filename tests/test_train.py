from __future__ import annotations

import pytest
import torch
from torch import nn

from advbook import data, models, train, utils


def _blobs(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + 3.0 * (2 * y[:, None] - 1)
    return x, y


def test_fit_learns_a_separable_problem_and_reports_history() -> None:
    x, y = _blobs()
    net = models.MLP(2, (8,), 2)
    hist = train.fit(net, x, y, epochs=5, batch_size=32, lr=1e-2, val=(x, y), progress=False)
    assert list(hist.columns[:6]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                      "seconds"]
    assert len(hist) == 5 and hist["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
    assert hist["val_acc"].iloc[-1] > 0.95
    assert train.evaluate(net, x, y)["accuracy"] == pytest.approx(hist["val_acc"].iloc[-1])


def test_fit_is_reproducible() -> None:
    x, y = _blobs()
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        net = models.MLP(2, (8,), 2)
        train.fit(net, x, y, epochs=2, batch_size=50, seed=3, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_hooks_objective_and_callbacks_are_called() -> None:
    x, y = _blobs(64)
    net = models.MLP(2, (4,), 2)
    seen = {"hook": 0, "objective": 0}

    def hook(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        assert model.training
        seen["hook"] += 1
        return xb * 0.0, yb  # the model now only sees zeros

    def objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        seen["objective"] += 1
        assert torch.count_nonzero(xb) == 0
        return nn.functional.cross_entropy(model(xb), yb)

    hist = train.fit(
        net, x, y, epochs=2, batch_size=16, batch_hook=hook, objective=objective,
        epoch_callbacks=[lambda model, epoch: {"double": 2.0 * epoch}], progress=False,
    )
    assert seen == {"hook": 8, "objective": 8}
    assert hist["double"].tolist() == [2.0, 4.0]
    assert hist["train_acc"].isna().all()  # a loss-only objective reports no accuracy


def test_fit_validates_arguments() -> None:
    x, y = _blobs(10)
    net = models.MLP(2, (4,), 2)
    with pytest.raises(ValueError, match="same number of samples"):
        train.fit(net, x, y[:5])
    with pytest.raises(ValueError, match="epochs"):
        train.fit(net, x, y, epochs=-1)
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(net, x, y, batch_size=0)
    with pytest.raises(TypeError, match="tensors"):
        train.fit(net, x.numpy(), y)


def test_predict_restores_mode_and_needs_no_grad() -> None:
    net = models.MLP(2, (4,), 2).train()
    out = train.predict(net, torch.randn(7, 2), batch_size=3)
    assert out.shape == (7, 2) and not out.requires_grad and net.training
    net.eval()
    train.predict(net, torch.randn(2, 2))
    assert not net.training


def test_baseline_cnn_reaches_96_percent_on_mnist5k() -> None:
    """The setup chapter's promise: >= 96 % test accuracy from a short CPU run."""
    utils.seed_everything(0)
    mnist = data.load_mnist()
    net = models.SmallCNN()
    train.fit(net, mnist.x_train, mnist.y_train, epochs=8, batch_size=64, lr=2e-3, seed=0,
              progress=False)
    assert train.evaluate(net, mnist.x_test, mnist.y_test)["accuracy"] >= 0.96


@pytest.mark.cuda
def test_fit_on_cuda_with_cpu_data() -> None:
    """CPU data, CUDA model: ``fit`` moves each batch, and learns as well as on the CPU (the
    same seed; GPU kernels round differently, so the accuracies agree only approximately)."""
    x, y = _blobs()
    accuracy = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = models.MLP(2, (8,), 2).to(device)
        hist = train.fit(net, x, y, epochs=10, lr=1e-2, val=(x, y), seed=0, progress=False)
        assert next(net.parameters()).device.type == device
        accuracy[device] = hist["val_acc"].iloc[-1]
    assert accuracy["cpu"] > 0.9
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= 0.03


def test_predict_and_evaluate_keep_a_frozen_sub_module_in_eval_mode() -> None:
    """``model.train(was_training)`` would switch the frozen BatchNorm back to training."""
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    net.train()
    net[1].eval()  # frozen statistics inside a training model
    x, y = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    train.predict(net, x)
    train.evaluate(net, x, y)
    assert [m.training for m in net] == [True, False, True]
    assert net.training
