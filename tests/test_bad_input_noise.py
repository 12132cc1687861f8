"""advbook.noise rejects bad input up front; its random components resume exactly under fit."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from advbook import noise
from advbook.train import fit

NAN = torch.tensor([[0.1, float("nan")], [0.2, 0.3]])
INF = torch.tensor([[0.1, float("inf")], [0.2, 0.3]])
INTS = torch.ones(2, 2, dtype=torch.long)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).eval()


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("add_input_noise-nan", lambda: noise.add_input_noise(NAN, 0.1), ValueError,
     "x must be finite"),
    ("add_input_noise-inf", lambda: noise.add_input_noise(INF, 0.1), ValueError, "NaN or infinite"),
    ("add_input_noise-int", lambda: noise.add_input_noise(INTS, 0.1), TypeError,
     "expected a floating-point tensor, got torch.int64"),
    ("add_input_noise-list", lambda: noise.add_input_noise([[0.1]], 0.1), TypeError,
     "torch.Tensor"),
    ("add_input_noise-empty", lambda: noise.add_input_noise(torch.empty(0, 2), 0.1), ValueError,
     "non-empty"),
    ("hook-int", lambda: noise.input_noise_hook(0.1)(_mlp(), INTS, torch.zeros(2)), TypeError,
     "expected a floating-point tensor"),
    ("wgp-1d", lambda: noise.weight_gradient_penalty(_mlp(), torch.rand(4)), ValueError,
     "at least 2 dimensions"),
    ("wgp-nan", lambda: noise.weight_gradient_penalty(_mlp(), NAN), ValueError, "x must be finite"),
    ("wgp-int", lambda: noise.weight_gradient_penalty(_mlp(), INTS), TypeError, "torch.int64"),
    ("ijp-nan", lambda: noise.input_jacobian_penalty(_mlp(), INF), ValueError, "finite"),
    ("htt-nan-y", lambda: noise.hessian_trace_term(_mlp(), torch.rand(2, 2), NAN), ValueError,
     "y must be finite"),
    ("igp-nan", lambda: noise.input_gradient_penalty(_mlp(), NAN, torch.zeros(2, dtype=torch.long)),
     ValueError, "x must be finite"),
    ("wnl-nan", lambda: noise.weight_noise_loss(_mlp(), NAN, torch.rand(2, 2), 0.1, samples=2),
     ValueError, "x must be finite"),
    ("wnl-nan-y", lambda: noise.weight_noise_loss(_mlp(), torch.rand(2, 2), NAN, 0.1, samples=2),
     ValueError, "y must be finite"),
    ("wnl-nan-noise", lambda: noise.weight_noise_loss(
        _mlp(), torch.rand(2, 2), torch.rand(2, 2), 0.1,
        noise={"0.weight": torch.full((2, 3, 2), float("nan"))}), ValueError, "noise['0.weight']"),
    ("gn-int", lambda: noise.GaussianNoise(0.1).train()(INTS), TypeError,
     "GaussianNoise: x must be a floating-point tensor: expected a floating-point tensor, got "
     "torch.int64"),
    ("gd-int", lambda: noise.GaussianDropout(0.1).train()(INTS), TypeError, "torch.int64"),
    ("gd-list", lambda: noise.GaussianDropout(0.1)([1.0]), TypeError, "torch.Tensor"),
    ("gn-sigma-nan", lambda: noise.GaussianNoise(float("nan")), ValueError, "sigma"),
    ("wno-int", lambda: noise.weight_noise_objective(0.1)(_mlp(), INTS, torch.zeros(2)), TypeError,
     "torch.int64"),
]


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_rejected(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert match in str(info.value)


def test_layer_state_dict_loads_with_weights_only_and_without_extra_state() -> None:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), noise.GaussianNoise(0.5, generator=g))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert "1._extra_state" in state
    old = {k: v for k, v in state.items() if k != "1._extra_state"}  # saved before the key existed
    model.load_state_dict(old, strict=True)
    model.load_state_dict(state, strict=True)
    assert noise.GaussianDropout(0.1).state_dict() == {"_extra_state": {}}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)


def _resume_case(tmp_path: Path, make: Callable[[], tuple[nn.Module, dict[str, object]]]) -> None:
    x, y = _data()
    torch.manual_seed(0)
    model, kwargs = make()
    fit(model, x, y, epochs=2, batch_size=16, progress=False, **kwargs)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model2, kwargs2 = make()
    path = tmp_path / "ck.pt"
    fit(model2, x, y, epochs=1, batch_size=16, progress=False, checkpoint=path, **kwargs2)  # type: ignore[arg-type]
    torch.manual_seed(123)  # a resumed run must not depend on the global state at resume time
    model3, kwargs3 = make()
    fit(model3, x, y, epochs=2, batch_size=16, progress=False, checkpoint=path, resume=True,
        **kwargs3)  # type: ignore[arg-type]
    for a, b in zip(model.state_dict().values(), model3.state_dict().values(), strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


def test_gaussian_noise_layer_resumes_exactly(tmp_path: Path) -> None:
    def make() -> tuple[nn.Module, dict[str, object]]:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(5)
        m = nn.Sequential(nn.Linear(4, 8), noise.GaussianNoise(0.5, generator=g), nn.Linear(8, 3))
        return m, {}
    _resume_case(tmp_path, make)


def test_input_noise_hook_resumes_exactly(tmp_path: Path) -> None:
    def make() -> tuple[nn.Module, dict[str, object]]:
        torch.manual_seed(0)
        hook = noise.input_noise_hook(0.5, generator=torch.Generator().manual_seed(6))
        return nn.Sequential(nn.Linear(4, 3)), {"batch_hook": hook}
    _resume_case(tmp_path, make)
