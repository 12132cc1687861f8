"""Checkpoints: round trips, weights_only loading, and bit-exact resume of ``fit``."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from advbook import checkpoint, defenses, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class CountingCallback:
    """An epoch callback with state, to check that fit saves and restores components."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        self.calls += 1
        return {"calls": float(self.calls), "noise": torch.rand(()).item()}

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"]


def _run(path: Path, epochs: int, *, resume: bool, seed: int, scheduler: bool) -> tuple[Any, ...]:
    """One training run with every source of state: dropout (global RNG), a recipe with its own
    generator, Adam moments, an LR schedule, a stateful callback and the batch order."""
    x, y = _data()
    net = _net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7) if scheduler else None
    obj = defenses.fgsm_at_objective(0.1, generator=torch.Generator().manual_seed(5))
    cb = CountingCallback()
    torch.manual_seed(1000 + seed)  # a resumed run starts from a different global RNG state
    hist = train.fit(net, x, y, epochs=epochs, batch_size=20, optimizer=opt, scheduler=sched,
                     objective=obj, epoch_callbacks=[cb], seed=3, progress=False,
                     checkpoint=path, resume=resume)
    return net, opt, hist, cb


@pytest.mark.parametrize("scheduler", [False, True])
def test_resume_after_epoch_2_repeats_the_uninterrupted_run_bit_for_bit(
    tmp_path: Path, scheduler: bool
) -> None:
    full, full_opt, full_hist, _ = _run(tmp_path / "full.pt", 3, resume=False, seed=0,
                                        scheduler=scheduler)
    _run(tmp_path / "part.pt", 2, resume=False, seed=0, scheduler=scheduler)
    # the "new process": other initial weights, fresh optimizer/objective, other global RNG
    resumed, res_opt, res_hist, cb = _run(tmp_path / "part.pt", 3, resume=True, seed=1,
                                          scheduler=scheduler)
    assert torch.equal(_flat(resumed), _flat(full))
    for p, q in zip(full_opt.state.values(), res_opt.state.values(), strict=True):
        assert torch.equal(p["exp_avg"], q["exp_avg"]) and torch.equal(p["step"], q["step"])
    assert full_opt.param_groups[0]["lr"] == res_opt.param_groups[0]["lr"]
    cols = [c for c in full_hist.columns if c != "seconds"]
    assert res_hist["epoch"].tolist() == [1, 2, 3]
    assert res_hist[cols].equals(full_hist[cols])  # incl. the callback's torch.rand draws
    assert cb.calls == 3
    # and without resuming, a different start gives different weights (the test can fail)
    other, *_ = _run(tmp_path / "other.pt", 3, resume=False, seed=1, scheduler=scheduler)
    assert not torch.equal(_flat(other), _flat(full))


def test_checkpoint_file_loads_with_weights_only_and_holds_the_run(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "run.pt"
    net, *_ = _run(path, 2, resume=False, seed=0, scheduler=False)
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 2 and raw["format"] == checkpoint.FORMAT
    assert len(raw["history"]) == 2 and raw["history"][1]["calls"] == 2.0
    for k, v in net.state_dict().items():
        assert torch.equal(raw["model"][k], v)
    assert raw["components"]["epoch_callbacks[0]"] == {"calls": 2}
    assert "generator" in raw["components"]["objective"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt"]  # no temporary files


def test_rng_states_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)  # noqa: NPY002 - the global state is what is being saved
    net = nn.Linear(2, 2)
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model=net, epoch=4, generator=g,
                                      meta={"note": "x", "n": np.int64(5)})

    def draw() -> tuple[Any, ...]:
        return (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=g))  # noqa: NPY002

    first = draw()
    net2 = nn.Linear(2, 2)
    g2 = torch.Generator().manual_seed(99)
    ck = checkpoint.load_checkpoint(path, model=net2, generator=g2)
    g = g2
    second = draw()
    assert torch.equal(first[0], second[0]) and first[1] == second[1] and first[2] == second[2]
    assert torch.equal(first[3], second[3])
    assert torch.equal(net2.weight, net.weight)
    assert ck.epoch == 4 and ck.meta == {"note": "x", "n": 5}


@pytest.mark.cuda
def test_rng_states_round_trip_for_a_cuda_model(tmp_path: Path) -> None:
    """Loading onto a CUDA model maps every saved tensor to the GPU, the RNG states included;
    they must still be restored (the generators and NumPy take host tensors only)."""
    torch.manual_seed(1)
    np.random.seed(3)  # noqa: NPY002 - the global state is what is being saved
    g = torch.Generator().manual_seed(3)
    net = nn.Linear(2, 2).cuda()
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model=net, epoch=1, generator=g)
    first = (torch.rand(3), np.random.rand(), torch.rand(2, generator=g))  # noqa: NPY002
    g2 = torch.Generator().manual_seed(99)
    checkpoint.load_checkpoint(path, model=nn.Linear(2, 2).cuda(), generator=g2)
    second = (torch.rand(3), np.random.rand(), torch.rand(2, generator=g2))  # noqa: NPY002
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    assert torch.equal(first[2], second[2])


def test_rng_state_tensors_are_read_from_host_copies() -> None:
    """``set_rng_state`` copies each state tensor to the host before using it."""

    class Recorder(torch.Tensor):
        cpu_calls = 0

        def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            Recorder.cpu_calls += 1
            return torch.Tensor(self).clone()

    state = checkpoint.get_rng_state(torch.Generator().manual_seed(0))
    wrapped = {
        **state,
        "torch": state["torch"].as_subclass(Recorder),
        "numpy": {**state["numpy"], "keys": state["numpy"]["keys"].as_subclass(Recorder)},
        "generator": state["generator"].as_subclass(Recorder),
    }
    checkpoint.set_rng_state(wrapped, torch.Generator())
    assert Recorder.cpu_calls == 3


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an advbook checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "other.pt")
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model=nn.Linear(2, 2), epoch=1)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"size mismatch for .weight.*\(2, 2\).*\(2, 3\)"):
        checkpoint.load_checkpoint(path, model=nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no optimizer state"):
        net = nn.Linear(2, 2)
        checkpoint.load_checkpoint(path, model=net, optimizer=torch.optim.SGD(net.parameters()))
    with pytest.raises(ValueError, match="epoch"):
        checkpoint.save_checkpoint(tmp_path / "d.pt", model=nn.Linear(2, 2), epoch=-1)
    with pytest.raises(TypeError, match="model"):
        checkpoint.save_checkpoint(tmp_path / "d.pt", model="net", epoch=1)  # type: ignore[arg-type]


def test_fit_checkpoint_arguments(tmp_path: Path) -> None:
    x, y = _data(40)
    path = tmp_path / "c.pt"
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        train.fit(_net(), x, y, epochs=1, resume=True, progress=False)
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        train.fit(_net(), x, y, epochs=1, checkpoint=3, progress=False)  # type: ignore[arg-type]
    # resume without a file starts afresh and writes one
    hist = train.fit(_net(), x, y, epochs=2, batch_size=10, checkpoint=path, resume=True,
                     progress=False)
    assert hist["epoch"].tolist() == [1, 2] and torch.load(path, weights_only=True)["epoch"] == 2
    with pytest.raises(ValueError, match="after epoch 2, beyond epochs=1"):
        train.fit(_net(), x, y, epochs=1, batch_size=10, checkpoint=path, resume=True,
                  progress=False)
    with pytest.warns(RuntimeWarning, match="batch_size: 10 -> 20"):
        train.fit(_net(), x, y, epochs=2, batch_size=20, checkpoint=path, resume=True,
                  progress=False)
    # a finished run resumes to the saved weights and history without training
    net = _net(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = train.fit(net, x, y, epochs=2, batch_size=10, checkpoint=path, resume=True,
                          progress=False)
    saved = torch.load(path, weights_only=True)
    assert again["train_loss"].tolist() == [r["train_loss"] for r in saved["history"]]
    for k, v in net.state_dict().items():
        assert torch.equal(saved["model"][k], v)
