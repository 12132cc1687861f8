"""Property-based tests (hypothesis) over shapes, radii, norms and bounds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from advbook.attacks import carlini_wagner, deepfool, fgsm, pgd
from advbook.attacks._utils import batch_norms

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # tiny random ReLU models can have every unit dead for a sample: an exactly zero input
    # gradient, which the attacks rightly report (tests/test_attacks_masking.py)
    pytest.mark.filterwarnings("ignore::advbook.attacks.GradientMaskingWarning"),
]


Problem = tuple[nn.Module, Tensor, Tensor, tuple[float, float]]


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    """A random conv-or-linear classifier and a batch inside random bounds."""
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(1, 5))
    k = draw(st.integers(2, 5))
    lo = draw(st.sampled_from([0.0, -1.0, -0.5]))
    hi = lo + draw(st.sampled_from([1.0, 2.0, 0.25]))
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, c, h, w, generator=g, dtype=dtype)
    if draw(st.booleans()):  # pixels exactly on the bounds
        x = torch.where(x > (lo + hi) / 2, hi, lo).to(dtype)
    y = torch.randint(0, k, (n,), generator=g)
    torch.manual_seed(seed)
    if draw(st.booleans()):
        model: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 8), nn.Tanh(),
                                         nn.Linear(8, k))
    else:
        model = nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(3 * h * w, k))
    return model.to(dtype), x, y, (lo, hi)


def _check_output(x_adv: Tensor, x: Tensor, bounds: tuple[float, float]) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= bounds[0] and x_adv.max() <= bounds[1]


EPS = st.floats(0.0, 2.0, allow_nan=False)
NORM = st.sampled_from(["linf", "l2"])


@SETTINGS
@given(problem=problems(), eps=EPS, norm=NORM, random_start=st.booleans(),
       targeted=st.booleans(), seed=st.integers(0, 100))
def test_fgsm_properties(
    problem: Problem, eps: float, norm: str, random_start: bool, targeted: bool, seed: int
) -> None:
    model, x, y, bounds = problem
    kw = dict(norm=norm, random_start=random_start, targeted=targeted, bounds=bounds,
              generator=torch.Generator().manual_seed(seed))
    x_adv = fgsm(model, x, y, eps=eps, **kw)
    _check_output(x_adv, x, bounds)
    assert (batch_norms(x_adv - x, norm) <= eps + 1e-6).all()
    assert torch.equal(fgsm(model, x, y, eps=0.0, **kw), x)


@SETTINGS
@given(problem=problems(), eps=EPS, norm=NORM, steps=st.integers(0, 4),
       restarts=st.integers(1, 2), early_stop=st.booleans(), targeted=st.booleans(),
       select=st.sampled_from(["fooled", "max_loss"]), seed=st.integers(0, 100))
def test_pgd_properties(
    problem: Problem,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    early_stop: bool,
    targeted: bool,
    select: str,
    seed: int,
) -> None:
    model, x, y, bounds = problem
    kw = dict(steps=steps, norm=norm, restarts=restarts, early_stop=early_stop,
              targeted=targeted, select=select, bounds=bounds,
              generator=torch.Generator().manual_seed(seed))
    x_adv = pgd(model, x, y, eps=eps, **kw)
    _check_output(x_adv, x, bounds)
    assert (batch_norms(x_adv - x, norm) <= eps + 1e-6).all()
    assert torch.equal(pgd(model, x, y, eps=0.0, **kw), x)


@SETTINGS
@given(problem=problems(), norm=st.sampled_from(["l2", "linf"]), steps=st.integers(0, 6),
       candidates=st.integers(2, 6), overshoot=st.floats(0.0, 0.5), targeted=st.booleans())
def test_deepfool_properties(
    problem: Problem, norm: str, steps: int, candidates: int, overshoot: float, targeted: bool
) -> None:
    model, x, y, bounds = problem
    x_adv = deepfool(model, x, y, steps=steps, norm=norm, candidates=candidates,
                     overshoot=overshoot, bounds=bounds, targeted=targeted)
    _check_output(x_adv, x, bounds)
    if steps == 0:
        assert torch.equal(x_adv, x)


@SETTINGS
@given(problem=problems(), steps=st.integers(0, 8), bss=st.integers(1, 3),
       confidence=st.floats(0.0, 1.0), targeted=st.booleans(), abort=st.booleans())
def test_carlini_wagner_properties(
    problem: Problem, steps: int, bss: int, confidence: float, targeted: bool, abort: bool
) -> None:
    model, x, y, bounds = problem
    x_adv = carlini_wagner(model, x, y, steps=steps, binary_search_steps=bss, lr=0.1,
                           confidence=confidence, targeted=targeted, abort_early=abort,
                           bounds=bounds)
    _check_output(x_adv, x, bounds)
    # every sample is either untouched or meets the confidence criterion
    with torch.no_grad():
        z = model(x_adv)
    own = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], -torch.inf).amax(1)
    margin = (own - other) if targeted else (other - own)
    moved = (x_adv != x).flatten(1).any(1)
    assert (margin[moved] > confidence - 1e-5).all()
