"""Failed loads change nothing, and every failure names the file and its cause."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from advbook import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def _trained(path: Path) -> Path:
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(torch.rand(5, 3)).sum().backward()
    opt.step()
    return checkpoint.save_checkpoint(path, model=net, epoch=1, optimizer=opt,
                                      generator=torch.Generator().manual_seed(1))


def _global_rng() -> tuple[Any, ...]:
    return (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())  # noqa: NPY002


def _same_rng(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1] and bool((a[2] == b[2]).all())


@pytest.mark.parametrize(("content", "match"), [
    (b"", "is empty"),
    (b"hello garbage " * 20, "not a checkpoint file"),
    ("truncate", "truncated or corrupt"),
    ("other", "not an advbook checkpoint"),
    ("object", "weights_only"),
])
def test_unreadable_files_are_named_with_their_cause(tmp_path: Path, content: Any,
                                                     match: str) -> None:
    path = tmp_path / "bad.pt"
    if content == "truncate":
        data = _trained(tmp_path / "good.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "other":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "object":
        torch.save(_net(), path)
    else:
        path.write_bytes(content)
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(checkpoint.CheckpointError, match=match) as info:
        checkpoint.load_checkpoint(path, model=net)
    assert str(path) in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


class Stateful:
    def __init__(self, fail: bool = False) -> None:
        self.value, self.fail = 0, fail

    def state_dict(self) -> dict[str, int]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self.fail:
            raise KeyError("boom")
        self.value = state["value"]


def _everything() -> dict[str, Any]:
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(2, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    return {"model": net, "optimizer": opt, "scheduler": sched,
            "generator": torch.Generator().manual_seed(42),
            "components": {"a": Stateful(), "b": Stateful(fail=True)}}


def _state(objs: dict[str, Any]) -> list[Any]:
    return [{k: v.clone() for k, v in objs["model"].state_dict().items()},
            repr(objs["optimizer"].state_dict()), objs["optimizer"].state_dict()["state"][0]
            ["exp_avg"].clone(), objs["scheduler"].state_dict(), objs["generator"].get_state(),
            objs["components"]["a"].value]


def _assert_unchanged(before: list[Any], after: list[Any]) -> None:
    assert all(torch.equal(v, before[0][k]) for k, v in after[0].items())
    assert before[1] == after[1] and torch.equal(before[2], after[2])
    assert before[3] == after[3] and torch.equal(before[4], after[4]) and before[5] == after[5]


@pytest.mark.parametrize("fault", ["architecture", "missing_key", "no_scheduler",
                                   "component_fails", "optimizer_shape"])
def test_a_failed_load_changes_nothing(tmp_path: Path, fault: str) -> None:
    src = _everything()
    src["components"] = {"a": Stateful(), "b": Stateful()}
    src["components"]["a"].value = 7
    net = src["model"]
    if fault == "architecture":
        src["model"] = _net(width=5)
    if fault == "missing_key":
        src["model"] = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    kwargs = {k: v for k, v in src.items() if k != "scheduler" or fault != "no_scheduler"}
    if fault in ("architecture", "missing_key"):
        kwargs.pop("optimizer")
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", epoch=1, **kwargs)
    if fault == "optimizer_shape":
        raw = torch.load(path, weights_only=True)
        raw["optimizer"]["state"][0]["exp_avg"] = torch.zeros(9)
        torch.save(raw, path)
    target = _everything()
    if fault != "component_fails":
        target["components"]["b"].fail = False
    torch.manual_seed(123)
    rng, before = _global_rng(), _state(target)
    match = {"architecture": r"size mismatch for '0.weight'.*\(5, 3\).*\(4, 3\)",
             "missing_key": r"the model has 2 key\(s\) the checkpoint lacks \(first '2.weight'\)",
             "no_scheduler": "no scheduler state", "component_fails": "nothing was changed",
             "optimizer_shape": r"'exp_avg' of parameter 0 has shape \(9,\)"}[fault]
    with pytest.raises(checkpoint.CheckpointError, match=match):
        checkpoint.load_checkpoint(path, **target)
    _assert_unchanged(before, _state(target))
    assert _same_rng(rng, _global_rng())
    assert net is not None


def test_extra_state_keys_are_checked_and_restored(tmp_path: Path) -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.g = torch.Generator().manual_seed(0)

        def get_extra_state(self) -> dict[str, torch.Tensor]:
            return {"generator": self.g.get_state()}

        def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
            self.g.set_state(state["generator"])

    src = Noisy()
    torch.rand(3, generator=src.g)
    path = checkpoint.save_checkpoint(tmp_path / "c.pt", model=src, epoch=1)
    dst = Noisy()
    checkpoint.load_checkpoint(path, model=dst)
    assert torch.equal(dst.g.get_state(), src.g.get_state())
    plain = nn.Module()
    plain.lin = nn.Linear(2, 2)
    path = checkpoint.save_checkpoint(tmp_path / "plain.pt", model=plain, epoch=1)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint lacks.*'_extra_state'"):
        checkpoint.load_checkpoint(path, model=dst)


def test_disk_full_on_save_keeps_the_previous_checkpoint(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = _trained(tmp_path / "c.pt")
    good = path.read_bytes()

    def full(obj: object, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="previous checkpoint there is intact") as info:
        checkpoint.save_checkpoint(path, model=_net(), epoch=2)
    assert str(path) in str(info.value) and "disk full" in str(info.value)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    with pytest.raises(OSError, match="no checkpoint was written"):
        checkpoint.save_checkpoint(tmp_path / "new.pt", model=_net(), epoch=2)
