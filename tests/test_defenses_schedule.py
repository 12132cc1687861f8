"""The ε warm-up: values, effect on the recipe, and resuming through a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advbook import defenses, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return 0.3 + 0.4 * torch.rand(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)


def test_ramp_values_and_history_column() -> None:
    x, y = _data()
    recipe = defenses.fgsm_at_objective(0.3, random_start=False)
    ramp = defenses.EpsilonRamp(recipe, 0.3, 3)
    assert recipe.eps == pytest.approx(0.1)
    assert [ramp.eps_at(t) for t in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    seen: list[float] = []

    def spy(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        x_adv = recipe.adversarial_examples(model, xb, yb)
        seen.append(float((x_adv - xb).abs().amax()))  # plain FGSM moves every pixel by ε
        return recipe(model, xb, yb)

    hist = train.fit(nn.Linear(5, 3), x, y, epochs=4, batch_size=40, objective=spy,
                     epoch_callbacks=[ramp], progress=False)
    assert hist["train_eps"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.3], abs=1e-6)


def test_resume_continues_the_ramp(tmp_path: Path) -> None:
    x, y = _data()

    def run(epochs: int, path: Path, resume: bool) -> tuple[nn.Module, list[float]]:
        torch.manual_seed(0)
        net = nn.Linear(5, 3)
        recipe = defenses.pgd_at_objective(0.3, steps=2, generator=torch.Generator())
        hist = train.fit(net, x, y, epochs=epochs, batch_size=10, objective=recipe,
                         epoch_callbacks=[defenses.EpsilonRamp(recipe, 0.3, 3)],
                         progress=False, checkpoint=path, resume=resume)
        return net, hist["train_eps"].tolist()

    full, full_eps = run(4, tmp_path / "a.pt", False)
    run(2, tmp_path / "b.pt", False)
    resumed, res_eps = run(4, tmp_path / "b.pt", True)
    assert res_eps == full_eps == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert torch.equal(full.weight, resumed.weight) and torch.equal(full.bias, resumed.bias)


def test_bad_arguments() -> None:
    recipe = defenses.pgd_at_objective(0.3)
    with pytest.raises(ValueError, match="warmup"):
        defenses.EpsilonRamp(recipe, 0.3, 0)
    with pytest.raises(ValueError, match="eps"):
        defenses.EpsilonRamp(recipe, -0.3, 2)
    with pytest.raises(TypeError, match="attribute 'eps'"):
        defenses.EpsilonRamp(object(), 0.3, 2)
