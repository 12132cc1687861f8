"""fit under faults: NaN losses, failed resumes, changed settings, bad arguments."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from advbook import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_nan_in_the_data_stops_fit_before_the_step() -> None:
    x, y = _data()
    x[13, 2] = float("nan")
    net = _net()
    with pytest.raises(train.NonFiniteLossError, match=r"epoch 1, batch \d of 4"):
        train.fit(net, x, y, epochs=2, batch_size=10, progress=False)
    assert torch.isfinite(_flat(net)).all()
    assert issubclass(train.NonFiniteLossError, FloatingPointError)


def test_skip_drops_the_batch_warns_and_counts() -> None:
    x, y = _data()
    x[13, 2] = float("nan")
    net = _net()
    with pytest.warns(RuntimeWarning, match="skipped 1 of 4 batches"):
        hist = train.fit(net, x, y, epochs=2, batch_size=10, progress=False, nonfinite="skip")
    assert hist["skipped_batches"].tolist() == [1, 1]
    assert np.isfinite(hist["train_loss"]).all() and torch.isfinite(_flat(net)).all()
    clean = train.fit(_net(), *_data(), epochs=1, batch_size=10, progress=False,
                      nonfinite="skip")
    assert "skipped_batches" not in clean.columns


def test_infinite_lr_never_overwrites_the_last_good_checkpoint(tmp_path: Path) -> None:
    x, y = _data()
    path = tmp_path / "c.pt"
    train.fit(_net(), x, y, epochs=1, batch_size=10, checkpoint=path, progress=False)
    good = path.read_bytes()
    opt_net = _net()
    opt = torch.optim.SGD(opt_net.parameters(), lr=float("inf"))
    with pytest.raises(train.NonFiniteLossError):
        train.fit(opt_net, x, y, epochs=1, batch_size=10, optimizer=opt, checkpoint=path,
                  progress=False, settings={"note": "inf"})
    assert path.read_bytes() == good
    one_step = _net()  # one batch: the step itself makes the weights infinite
    with pytest.raises(train.NonFiniteLossError, match=r"checkpoint .* was not overwritten"):
        train.fit(one_step, x, y, epochs=1, batch_size=40, optimizer=torch.optim.SGD(
            one_step.parameters(), lr=float("inf")), checkpoint=path, progress=False)
    assert path.read_bytes() == good


class NoiseHook:
    """A stateful batch hook with its own generator (what the library's noise hooks are)."""

    def __init__(self) -> None:
        self.g = torch.Generator().manual_seed(9)

    def __call__(self, model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 0.1 * torch.randn(x.shape, generator=self.g), y

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.set_state(state["generator"])


def _hooked(path: Path, epochs: int, resume: bool | str = False, **kw: Any) -> Any:
    net = _net()
    hist = train.fit(net, *_data(), epochs=epochs, batch_size=10, batch_hook=NoiseHook(),
                     checkpoint=path, resume=resume, progress=False, **kw)  # type: ignore[arg-type]
    return net, hist


def test_resume_with_a_stateful_batch_hook_is_exact(tmp_path: Path) -> None:
    full, full_hist = _hooked(tmp_path / "full.pt", 3)
    _hooked(tmp_path / "part.pt", 1)
    resumed, hist = _hooked(tmp_path / "part.pt", 3, resume=True)
    assert torch.equal(_flat(full), _flat(resumed))
    assert hist["train_loss"].tolist() == full_hist["train_loss"].tolist()


def test_changed_settings_raise_or_are_overridden(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _hooked(path, 1, lr=1e-3, settings={"method": "pgd", "eps": 0.1})
    with pytest.raises(ValueError, match=r"param_groups\[0\].lr: 0.001 -> 0.01.*eps: 0.1 -> 0.2"):
        _hooked(path, 2, resume=True, lr=1e-2, settings={"method": "pgd", "eps": 0.2})
    with pytest.warns(RuntimeWarning, match="overridden settings"):
        _, hist = _hooked(path, 2, resume="override", lr=1e-2,
                            settings={"method": "pgd", "eps": 0.2})
    assert hist.attrs["overrides"] == {"param_groups[0].lr": [0.001, 0.01], "eps": [0.1, 0.2]}
    with pytest.raises(TypeError, match=r"settings\['f'\]"):
        _hooked(tmp_path / "d.pt", 1, settings={"f": object()})


def _snapshot(net: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> list[Any]:
    return [_flat(net).clone(), repr(opt.state_dict()), sched and sched.state_dict(),
            torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()]  # noqa: NPY002


@pytest.mark.parametrize("fault", ["beyond_epochs", "scheduler", "architecture"])
def test_a_failed_resume_changes_nothing(tmp_path: Path, fault: str) -> None:
    x, y = _data()
    path = tmp_path / "c.pt"
    train.fit(_net(), x, y, epochs=2, batch_size=10, checkpoint=path, progress=False)
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)) if fault == "architecture" \
        else nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 1) if fault == "scheduler" else None
    before = _snapshot(net, opt, sched)
    match = {"beyond_epochs": "beyond epochs=1", "scheduler": "scheduler",
             "architecture": "size mismatch"}[fault]
    with pytest.raises(ValueError, match=match):
        train.fit(net, x, y, epochs=1 if fault == "beyond_epochs" else 3, batch_size=10,
                  optimizer=opt, scheduler=sched, checkpoint=path, resume=True, progress=False)
    after = _snapshot(net, opt, sched)
    assert torch.equal(before[0], after[0]) and before[1:3] == after[1:3]
    assert torch.equal(before[3], after[3]) and before[4] == after[4]
    assert (before[5] == after[5]).all()


def test_argument_messages() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="x has no rows"):
        train.predict(_net(), torch.zeros(0, 4))
    with pytest.raises(ValueError, match=r"val must be a pair \(x_val, y_val\)"):
        train.fit(_net(), x, y, val=(x,), progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        train.fit(_net(), x, y, seed=1.5, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonfinite"):
        train.fit(_net(), x, y, nonfinite="ignore", progress=False)  # type: ignore[arg-type]
