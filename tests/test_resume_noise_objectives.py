"""Resume is exact with the noise objectives that own a generator (their state is checkpointed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from advbook import noise, train

MAKERS: dict[str, Callable[[torch.Generator], object]] = {
    "weight_noise_objective": lambda g: noise.weight_noise_objective(0.01, samples=2, generator=g),
    "penalty_objective": lambda g: noise.penalty_objective(0.1, output_probes=1, generator=g),
}


def _run(make: Callable[[torch.Generator], object], epochs: int, ck: Path | None,
         resume: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(7)
    x = torch.rand(40, 5, generator=torch.Generator().manual_seed(1))
    y = torch.arange(40) % 3
    train.fit(net, x, y, epochs=epochs, batch_size=16, objective=make(g),  # type: ignore[arg-type]
              progress=False, checkpoint=ck, resume=resume)
    return net.state_dict()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_one_epoch_plus_resume_equals_two_epochs(name: str, tmp_path: Path) -> None:
    make = MAKERS[name]
    whole = _run(make, 2, None, False)
    ck = tmp_path / "ck.pt"
    _run(make, 1, ck, False)
    resumed = _run(make, 2, ck, True)
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key


def test_state_round_trip_and_repr() -> None:
    g = torch.Generator().manual_seed(3)
    objective = noise.weight_noise_objective(0.01, generator=g)
    state = objective.state_dict()  # type: ignore[attr-defined]
    torch.randn(3, generator=g)
    objective.load_state_dict(state)  # type: ignore[attr-defined]
    assert torch.equal(g.get_state(), state["generator"])
    assert repr(objective) == "weight_noise_objective(eta=0.01, samples=1)"
    without = noise.weight_noise_objective(0.01)
    with pytest.raises(ValueError, match="without a generator"):
        without.load_state_dict(state)  # type: ignore[attr-defined]
