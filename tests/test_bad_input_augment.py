"""advbook.augment rejects absurd parameter ranges and non-finite replayed parameters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from advbook import augment
from advbook.train import fit

X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _replay_nan() -> object:
    t = augment.RandomAffine(10, seed=0)
    _, params = t(X, return_params=True)
    params["angle"] = params["angle"].clone()
    params["angle"][1] = float("nan")
    return t(X, params=params)


def _replay_inf_compose() -> object:
    t = augment.Compose([augment.RandomBrightness(seed=0), augment.GaussianBlur(seed=1)])
    _, params = t(X, return_params=True)
    params["1.sigma"] = torch.full_like(params["1.sigma"], float("inf"))
    return t(X, params=params)


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("degrees-huge", lambda: augment.RandomAffine(degrees=1e300), ValueError, "degrees"),
    ("degrees-400", lambda: augment.RandomRotation(400), ValueError, "[-360, 360]"),
    ("degrees-inf", lambda: augment.RandomAffine(degrees=float("inf")), ValueError, "finite"),
    ("scale-huge", lambda: augment.RandomAffine(scale=(1.0, 1e300)), ValueError, "scale"),
    ("gamma-huge", lambda: augment.RandomGamma((0.5, 1e30)), ValueError, "gamma"),
    ("noise-nan", lambda: augment.RandomGaussianNoise(float("nan")), ValueError, "sigma"),
    ("replay-nan", _replay_nan, ValueError, "params['angle']"),
    ("replay-inf-compose", _replay_inf_compose, ValueError, "params['1.sigma']"),
    ("x-nan", lambda: augment.RandomBrightness(seed=0)(torch.full((1, 1, 4, 4), float("nan"))),
     ValueError, "NaN"),
    ("x-int", lambda: augment.RandomBrightness(seed=0)(torch.ones(1, 1, 4, 4, dtype=torch.long)),
     TypeError, "floating"),
    ("x-3d", lambda: augment.RandomBrightness(seed=0)(torch.rand(1, 4, 4)), ValueError, "N×C×H×W"),
    ("hook-type", lambda: augment.as_batch_hook(lambda x: x), TypeError, "Transform"),
]


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_rejected(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert match in str(info.value)


def test_batch_hook_resumes_exactly(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)

    def make(shared: bool) -> tuple[nn.Module, object]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
        gen = torch.Generator().manual_seed(7) if shared else None
        hook = augment.as_batch_hook(augment.RandomRotation(20, seed=3),
                                     augment.RandomGaussianNoise(seed=4), generator=gen)
        return model, hook

    for shared in (True, False):
        m1, h1 = make(shared)
        fit(m1, x, y, epochs=2, batch_size=8, progress=False, batch_hook=h1)  # type: ignore[arg-type]
        path = tmp_path / f"ck{shared}.pt"
        m2, h2 = make(shared)
        fit(m2, x, y, epochs=1, batch_size=8, progress=False, batch_hook=h2, checkpoint=path)  # type: ignore[arg-type]
        m3, h3 = make(shared)
        fit(m3, x, y, epochs=2, batch_size=8, progress=False, batch_hook=h3, checkpoint=path,  # type: ignore[arg-type]
            resume=True)
        for a, b in zip(m1.state_dict().values(), m3.state_dict().values(), strict=True):
            assert torch.equal(a, b)
