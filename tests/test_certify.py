"""advbook.certify: randomized smoothing against closed forms on a linear classifier, the exact
binomial statistics against SciPy, an attack that must not beat a certificate, and Lipschitz
bounds against exact operator norms and input Jacobians.

For the two-class linear model with logits ``(s, −s)``, ``s = w·x + b``, the base classifier
under noise ``δ ~ N(0, σ²I)`` picks class 0 with probability ``Φ(s / (σ‖w‖))``, so
``p_A = Φ(|s| / (σ‖w‖))`` and Cohen's radius ``σ·Φ⁻¹(p_A) = |s|/‖w‖`` is the distance to the
hyperplane: the exact certified radius. Every count of votes is then exactly binomial, so the
probabilities of each outcome of ``certify`` and ``smoothed_predict`` are known in closed form
and the Monte-Carlo frequencies are tested against them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from advbook._core.binomial import binomial_test_half, clopper_pearson_lower
from advbook.attacks import pgd
from advbook.certify import (
    average_certified_radius,
    certified_accuracy,
    certify,
    lipschitz_certificate,
    lipschitz_upper_bound,
    smoothed_predict,
)
from advbook.models import MLP, BasicBlock, SmallCNN
from advbook.noise import input_noise_hook
from advbook.train import fit

stats = pytest.importorskip("scipy.stats")

pytestmark = pytest.mark.usefixtures("one_thread")

W = torch.tensor([1.0, -2.0, 0.5, 1.5])
B = -0.3
SIGMA = 0.5


def _linear(w: Tensor = W, b: float = B) -> nn.Linear:
    """The two-class linear model with logits ``(w·x + b, −(w·x + b))``."""
    model = nn.Linear(w.numel(), 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([w, -w]))
        model.bias.copy_(torch.tensor([b, -b]))
    return model


def _point_with_pa(p_a: float, sigma: float = SIGMA) -> Tensor:
    """A point in [0, 1]⁴ whose class 0 has probability ``p_a`` under ``N(0, σ²I)`` noise."""
    s = sigma * W.norm() * stats.norm.ppf(p_a)
    x = torch.full((1, 4), 0.5)
    x = x + (s - (x @ W + B)) * W / W.norm() ** 2  # moved along w
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    return x


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cp_scipy(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    safe = np.maximum(k, 1)
    return np.where(k == 0, 0.0, stats.beta.ppf(alpha, safe, n - safe + 1))


# ------------------------------------------------------------------- the exact statistics
@pytest.mark.parametrize("n", [1, 2, 10, 100, 1000, 100_000])
def test_clopper_pearson_matches_scipy(n: int) -> None:
    k = np.array(sorted({0, 1, 2, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1))))
    for alpha in (1e-3, 0.1, 0.5):
        ours = clopper_pearson_lower(torch.from_numpy(k), n, alpha).numpy()
        ref = _cp_scipy(k, n, alpha)
        # relative in p and in 1 − p (the radius depends on 1 − p near 1)
        np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=0)
        np.testing.assert_allclose(1 - ours, 1 - ref, rtol=1e-7, atol=1e-300)


def test_binomial_test_matches_scipy() -> None:
    pairs = [(0, 0), (1, 0), (5, 5), (6, 4), (50, 49), (50, 0), (60, 40), (99, 1), (100, 0),
             (3, 2), (7, 0), (520, 480), (5000, 4000)]
    n_a = torch.tensor([a for a, _ in pairs])
    n_b = torch.tensor([b for _, b in pairs])
    ours = binomial_test_half(n_a, n_b).numpy()
    ref = [stats.binomtest(a, a + b, 0.5).pvalue if a + b else 1.0 for a, b in pairs]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-300)


# ------------------------------------------------------- certify on the linear classifier
def test_certify_false_certificates_match_the_exact_probability() -> None:
    """Over 3000 seeded trials at ``p_A = 0.8``, the frequency of false certificates (a wrong
    label, or a radius above the true distance) matches its exact probability and is ≤ α."""
    p_a, n0, n, alpha, trials = 0.8, 20, 100, 0.1, 3000
    x = _point_with_pa(p_a).repeat(trials, 1)
    true_radius = float((x[0] @ W + B).abs() / W.norm())
    labels, radii = certify(_linear(), x, sigma=SIGMA, n0=n0, n=n, alpha=alpha,
                            batch_size=20_000, generator=_gen(0), progress=False)
    false = ((labels != 0) & (labels != -1)) | (radii > true_radius * (1 + 1e-6))
    rate = float(false.double().mean())
    # exact: class 0 is selected when it gets at least half of the n0 votes (argmax ties go to
    # the first class); then the certificate is false iff p̲(n_A) > p_A; with class 1 selected
    # it is false iff p̲ > ½ (a wrong certified label)
    k = np.arange(n + 1)
    bound = _cp_scipy(k, n, alpha)
    selected = stats.binom.sf(math.ceil(n0 / 2) - 1, n0, p_a)
    q = selected * stats.binom.pmf(k, n, p_a)[bound > p_a].sum() + (1 - selected) * (
        stats.binom.pmf(k, n, 1 - p_a)[bound > 0.5].sum()
    )
    assert 0.02 < q <= alpha
    assert abs(rate - q) <= 4 * math.sqrt(q * (1 - q) / trials), (rate, q)
    # the abstentions match too: class 0 selected and p̲(n_A) ≤ ½
    abstain = float((labels == -1).double().mean())
    q_abstain = selected * stats.binom.pmf(k, n, p_a)[bound <= 0.5].sum() + (1 - selected) * (
        stats.binom.pmf(k, n, 1 - p_a)[bound <= 0.5].sum()
    )
    assert abs(abstain - q_abstain) <= 4 * math.sqrt(q_abstain * (1 - q_abstain) / trials)
    # and each radius is σ·Φ⁻¹(p̲) of some count
    allowed = torch.tensor(SIGMA * stats.norm.ppf(bound[bound > 0.5]), dtype=radii.dtype)
    certified = radii[labels == 0]
    gap = (certified[:, None] - allowed[None, :]).abs().amin(1)
    assert float(gap.max()) < 1e-5


def test_certify_radius_approaches_the_true_radius() -> None:
    """At ``p_A = Φ(1)`` the true radius is σ; the gap shrinks from ≈14 % (n = 10³) to ≈1.5 %
    (n = 10⁵), as the Clopper–Pearson width ∝ 1/√n predicts, never above the truth."""
    x = _point_with_pa(float(stats.norm.cdf(1.0))).repeat(16, 1)
    true_radius = float((x[0] @ W + B).abs() / W.norm())
    assert true_radius == pytest.approx(SIGMA, rel=1e-5)
    gaps = {}
    for n in (1_000, 100_000):
        labels, radii = certify(_linear(), x, sigma=SIGMA, n0=100, n=n, alpha=1e-3,
                                batch_size=50_000, generator=_gen(n), progress=False)
        assert bool((labels == 0).all())
        assert float(radii.max()) <= true_radius * (1 + 1e-6)
        gaps[n] = 1 - float(radii.median()) / true_radius
        # the gap predicted from the count at its mean, n·p_A
        expected = 1 - stats.norm.ppf(_cp_scipy(np.array([round(n * stats.norm.cdf(1.0))]), n,
                                                1e-3))[0]
        assert gaps[n] == pytest.approx(expected, abs=0.3 * expected + 0.002)
    assert gaps[100_000] < 0.03
    assert gaps[100_000] < gaps[1_000] / 5


def test_certify_batches_pairs_and_does_not_clip_the_noise() -> None:
    """``ceil(N·n0/b) + ceil(N·n/b)`` forward passes of at most ``b`` rows, and noisy inputs
    outside the box (x on its edge)."""
    calls: list[tuple[int, float]] = []
    model = _linear()
    model.register_forward_hook(lambda m, i, o: calls.append((i[0].shape[0], float(i[0].min()))))
    x = torch.zeros(7, 4)
    certify(model, x, sigma=0.25, n0=10, n=33, alpha=0.01, batch_size=40, generator=_gen(1),
            progress=False)
    assert len(calls) == math.ceil(70 / 40) + math.ceil(231 / 40)
    assert max(rows for rows, _ in calls) == 40
    assert sum(rows for rows, _ in calls) == 7 * (10 + 33)
    assert min(low for _, low in calls) < -0.5


# ------------------------------------------------------------------------ smoothed_predict
def test_smoothed_predict_outcomes_match_the_exact_probabilities() -> None:
    """At ``p_A = 0.6``: class 0 iff the two-sided binomial test of the votes rejects at α; the
    frequencies of class 0, class 1 and abstention match their exact probabilities."""
    p_a, n, alpha, trials = 0.6, 100, 0.1, 3000
    x = _point_with_pa(p_a).repeat(trials, 1)
    pred = smoothed_predict(_linear(), x, sigma=SIGMA, n=n, alpha=alpha, batch_size=30_000,
                            generator=_gen(2))
    k = np.arange(n + 1)
    reject = np.array([stats.binomtest(int(c), n, 0.5).pvalue <= alpha for c in k])
    pmf = stats.binom.pmf(k, n, p_a)
    exact = {0: pmf[reject & (k > n - k)].sum(), 1: pmf[reject & (k < n - k)].sum()}
    exact[-1] = 1 - exact[0] - exact[1]
    for outcome, q in exact.items():
        rate = float((pred == outcome).double().mean())
        assert abs(rate - q) <= 4 * math.sqrt(q * (1 - q) / trials) + 1e-9, (outcome, rate, q)
    assert float((pred == 1).double().mean()) <= alpha


def test_smoothed_predict_abstains_on_the_boundary_and_agrees_away_from_it() -> None:
    on_boundary = _point_with_pa(0.5).repeat(500, 1)
    pred = smoothed_predict(_linear(), on_boundary, sigma=SIGMA, n=100, alpha=1e-3,
                            generator=_gen(3))
    assert int((pred != -1).sum()) <= 3  # each answer has probability ≤ α = 0.001
    x = torch.rand(400, 4, generator=_gen(4))
    s = x @ W + B
    far = s.abs() / (0.2 * W.norm()) > 2.5  # p_A > 0.9938: abstaining is vanishingly rare
    assert int(far.sum()) > 30
    pred = smoothed_predict(_linear(), x[far], sigma=0.2, n=100, alpha=1e-3, generator=_gen(5))
    torch.testing.assert_close(pred, (s[far] < 0).long())


# ------------------------------------------------------------- an attack cannot beat it
class _NoisyEnsemble(nn.Module):
    """The smoothed classifier as attackers see it: log of the mean softmax over ``m`` fresh
    Gaussian draws per call (EOT), as in SmoothAdv (Salman et al. 2019)."""

    def __init__(self, base: nn.Module, sigma: float, m: int = 64) -> None:
        super().__init__()
        self.base, self.sigma, self.m = base, sigma, m

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn((self.m, *x.shape), dtype=x.dtype) * self.sigma
        probs = self.base((x[None] + noise).flatten(0, 1)).softmax(1)
        return probs.view(self.m, x.shape[0], -1).mean(0).clamp_min(1e-12).log()


@pytest.fixture(scope="module")
def toy() -> tuple[nn.Module, float]:
    """A 2-D two-blob MLP trained with Gaussian input noise σ = 0.12."""
    gen = _gen(10)
    y = torch.arange(600) % 2
    centers = torch.tensor([[0.35, 0.5], [0.65, 0.5]])
    x = (centers[y] + 0.08 * torch.randn(600, 2, generator=gen)).clamp(0, 1)
    sigma = 0.12
    torch.manual_seed(0)
    model = MLP(in_features=2, hidden=(32, 32), num_classes=2)
    fit(model, x, y, epochs=40, batch_size=64, lr=3e-3, seed=0, progress=False,
        batch_hook=input_noise_hook(sigma, generator=_gen(11)))
    return model.eval(), sigma


def test_l2_pgd_with_eot_does_not_beat_certificates(toy: tuple[nn.Module, float]) -> None:
    """ℓ2 PGD with EOT against the smoothed classifier, at ε = r₀: no point certified with
    ``R ≥ r₀`` changes its smoothed prediction; most points with ``R < r₀/2`` do (the attack
    has teeth)."""
    model, sigma = toy
    x = torch.stack([torch.linspace(0.35, 0.65, 160), 0.5 + 0.1 * torch.rand(160)], 1)
    labels, radii = certify(model, x, sigma=sigma, n0=100, n=4000, alpha=1e-3,
                            generator=_gen(12), progress=False)
    r0 = 0.06
    for group, must_hold in ((radii >= r0, True), ((labels >= 0) & (radii < r0 / 2), False)):
        assert int(group.sum()) >= 15, int(group.sum())
        torch.manual_seed(13)
        x_adv = pgd(_NoisyEnsemble(model, sigma), x[group], labels[group], eps=r0, norm="l2",
                    steps=20, alpha=r0 / 5, generator=_gen(14))
        assert float((x_adv - x[group]).norm(dim=1).max()) <= r0 * (1 + 1e-5)
        after = smoothed_predict(model, x_adv, sigma=sigma, n=4000, alpha=1e-3,
                                 generator=_gen(15))
        changed = (after != labels[group]) & (after != -1)
        if must_hold:
            assert int(changed.sum()) == 0  # each would have probability ≤ 2α
        else:
            assert float(changed.double().mean()) >= 0.5


# -------------------------------------------------------------------- certified accuracy
def test_certified_accuracy_by_hand() -> None:
    labels = torch.tensor([0, 1, -1, 2, 1])
    radii = torch.tensor([0.5, 0.25, 0.0, 1.0, 0.3])
    y = torch.tensor([0, 1, 2, 2, 0])
    acc = certified_accuracy(labels, radii, y, [0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 1.5])
    # right: rows 0 (R = .5), 1 (R = .25), 3 (R = 1); row 2 abstains, row 4 is wrong
    expected = torch.tensor([3, 3, 2, 2, 1, 1, 0], dtype=torch.float64) / 5
    torch.testing.assert_close(acc, expected)
    torch.testing.assert_close(certified_accuracy(labels, radii, y, 0.25), expected[1:2])
    torch.testing.assert_close(certified_accuracy(labels, radii, y, torch.tensor([1.0])),
                               expected[5:6])
    with pytest.raises(ValueError, match="y must hold true labels"):
        certified_accuracy(labels, radii, torch.tensor([0, 1, -1, 2, 0]), [0.0])
    with pytest.raises(ValueError, match=">= 0"):
        certified_accuracy(labels, radii, y, [-0.1])
    with pytest.raises(ValueError, match="shape"):
        certified_accuracy(labels, radii[:4], y, [0.0])


def test_average_certified_radius_by_hand_and_as_the_area_under_the_curve() -> None:
    labels = torch.tensor([0, 1, -1, 2, 1])
    radii = torch.tensor([0.5, 0.25, 0.0, 1.0, 0.3])
    y = torch.tensor([0, 1, 2, 2, 0])
    # right: rows 0, 1 and 3; the abstention and the wrong row count 0
    assert average_certified_radius(labels, radii, y) == pytest.approx((0.5 + 0.25 + 1.0) / 5)
    # the area under certified_accuracy (a step function), by a fine Riemann sum
    g = torch.rand(200, generator=torch.Generator().manual_seed(0))
    labels, y = (g > 0.2).long(), torch.ones(200, dtype=torch.long)
    radii = 2 * torch.rand(200, generator=torch.Generator().manual_seed(1))
    grid = torch.linspace(0, 2, 20_001)
    area = float(certified_accuracy(labels, radii, y, grid)[:-1].sum() * (grid[1] - grid[0]))
    assert average_certified_radius(labels, radii, y) == pytest.approx(area, abs=2e-4)
    with pytest.raises(ValueError, match=r"average_certified_radius: .*shape"):
        average_certified_radius(labels, radii[:4], y)
    with pytest.raises(ValueError, match=">= 0"):
        average_certified_radius(labels, -radii, y)


# ------------------------------------------------------------------------ Lipschitz bounds
def _jacobian_norm(model: nn.Module, x: Tensor) -> float:
    """``‖∂z/∂x‖₂`` at one point ``x`` (no batch dimension), exactly (SVD)."""
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None])[0].flatten(), x)
    return float(torch.linalg.matrix_norm(jac.reshape(-1, x.numel()).double(), ord=2))


def _operator_norm(layer: nn.Module, shape: tuple[int, ...]) -> float:
    """The exact operator norm of a linear(-affine) layer on ``shape``, from its Jacobian."""
    layer = copy.deepcopy(layer).double()
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, *shape)).flatten(),
                                             torch.zeros(math.prod(shape), dtype=torch.float64))
    return float(torch.linalg.matrix_norm(jac, ord=2))


def test_lipschitz_bound_of_a_linear_layer_is_its_spectral_norm() -> None:
    layer = nn.Linear(30, 10)
    exact = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    assert lipschitz_upper_bound(layer, (30,)) == pytest.approx(exact, rel=1e-10)
    assert lipschitz_upper_bound(nn.Sequential(nn.Flatten(), layer), (5, 6)) == pytest.approx(
        exact, rel=1e-10)


LINEAR_LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "conv": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 8, 8)),
    "conv-stride": (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=1), (2, 9, 9)),
    "conv-dilated-groups-circular": (
        lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2, padding_mode="circular", padding=2),
        (4, 7, 7),
    ),
    "conv1d": (lambda: nn.Conv1d(3, 2, 5), (3, 12)),
    "conv-transpose": (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2), (3, 4, 4)),
    "avgpool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
    "adaptive-avgpool": (lambda: nn.AdaptiveAvgPool2d(2), (1, 5, 5)),
}


@pytest.mark.parametrize("kind", list(LINEAR_LAYERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lanczos_finds_the_exact_operator_norm(kind: str, seed: int) -> None:
    """Convolutions' top singular values cluster (plain power iteration is up to 1 % short
    after 100 steps on the first layer here); the Lanczos bound is exact to 1e-9."""
    torch.manual_seed(seed)
    factory, shape = LINEAR_LAYERS[kind]
    layer = factory()
    bound = lipschitz_upper_bound(layer, shape, generator=_gen(20))
    assert bound == pytest.approx(_operator_norm(layer, shape), rel=1e-9)


def test_batchnorm_and_max_pooling_bounds_are_attained() -> None:
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([3.0, -2.0, 0.5]))  # |γ|/√var = 6, 1, 5; 1/√var = 2, ½, 10
        bn.running_var.copy_(torch.tensor([0.25, 4.0, 0.01]))
    scale = bn.weight.detach().double().abs() / (bn.running_var.double() + bn.eps).sqrt()
    expected = float(scale.max())
    assert expected == pytest.approx(6.0, rel=1e-3)
    bn.eval()
    assert lipschitz_upper_bound(bn, (3, 4, 4)) == pytest.approx(expected, rel=1e-10)
    assert _jacobian_norm(bn, torch.rand(3, 4, 4)) == pytest.approx(expected, rel=1e-5)
    # a spike that is the maximum of all 9 overlapping 3×3 windows around it: ‖J‖ = 3
    spike = torch.zeros(1, 7, 7)
    spike[0, 3, 3] = 1.0
    pool = nn.MaxPool2d(3, stride=1)
    assert lipschitz_upper_bound(pool, (1, 7, 7)) == pytest.approx(3.0)
    assert _jacobian_norm(pool, spike) == pytest.approx(3.0)
    assert lipschitz_upper_bound(nn.MaxPool2d(2), (1, 8, 8)) == 1.0


def _small_cnn_bn() -> nn.Sequential:
    torch.manual_seed(21)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2), nn.BatchNorm2d(8), nn.LeakyReLU(0.1), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 5),
    )
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(5):
            model(torch.rand(16, 1, 12, 12) * 3)
    return model.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn-bn", "small-cnn"])
def test_lipschitz_bound_is_above_the_jacobian_norms(kind: str) -> None:
    torch.manual_seed(22)
    model: nn.Module
    if kind == "mlp":
        model, shape = MLP(in_features=20, hidden=(16, 16), num_classes=4), (20,)
    elif kind == "cnn-bn":
        model, shape = _small_cnn_bn(), (1, 12, 12)
    else:
        model, shape = SmallCNN(image_size=8, width=4), (1, 8, 8)
    bound = lipschitz_upper_bound(model.eval(), shape, generator=_gen(23))
    xs = torch.rand(8, *shape, generator=_gen(24))
    largest = max(_jacobian_norm(model, x) for x in xs)
    assert 0 < largest <= bound, (largest, bound)


def test_lipschitz_certificate_is_exact_for_the_linear_classifier() -> None:
    """``‖W‖₂ = √2‖w‖`` and margin ``2|s|``: the radius is the distance ``|s|/‖w‖``."""
    model = _linear()
    bound = lipschitz_upper_bound(model, (4,))
    assert bound == pytest.approx(math.sqrt(2) * float(W.norm()), rel=1e-6)
    x = torch.rand(50, 4, generator=_gen(25))
    labels, radii = lipschitz_certificate(model, x, bound=bound)
    s = x @ W + B
    torch.testing.assert_close(labels, (s < 0).long())
    torch.testing.assert_close(radii, s.abs() / W.norm(), rtol=1e-5, atol=1e-7)


def test_pgd_inside_the_lipschitz_radius_never_flips() -> None:
    torch.manual_seed(26)
    model = MLP(in_features=6, hidden=(16,), num_classes=3).eval()
    x = torch.rand(6, 6, generator=_gen(27))
    labels, radii = lipschitz_certificate(model, x, bound=lipschitz_upper_bound(model, (6,)))
    for i in range(x.shape[0]):
        x_adv = pgd(model, x[i:i + 1], labels[i:i + 1], eps=0.999 * float(radii[i]), norm="l2",
                    steps=30, bounds=(-10.0, 10.0), generator=_gen(28))
        assert int(model(x_adv).argmax(1)) == int(labels[i])


def test_lipschitz_refuses_what_it_cannot_bound() -> None:
    with pytest.raises(ValueError, match="LayerNorm"):
        lipschitz_upper_bound(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), (4,))
    with pytest.raises(ValueError, match="not the chain"):
        lipschitz_upper_bound(BasicBlock(2, 2), (2, 4, 4))

    class Reused(nn.Module):  # one ReLU module applied twice
        def __init__(self) -> None:
            super().__init__()
            self.a, self.act, self.b = nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.b(self.act(self.a(self.act(x))))

    with pytest.raises(ValueError, match="not the chain"):
        lipschitz_upper_bound(Reused(), (3,))
    with pytest.raises(ValueError, match="running statistics"):
        lipschitz_upper_bound(nn.BatchNorm1d(3, track_running_stats=False), (3,))
    with pytest.raises(ValueError, match="input_shape"):
        lipschitz_upper_bound(nn.Linear(4, 2), (5,))
    with pytest.raises(ValueError, match="iterations"):
        lipschitz_upper_bound(nn.Linear(4, 2), (4,), iterations=0)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="bound"):
            lipschitz_certificate(nn.Linear(4, 2), torch.rand(2, 4), bound=bad)


# ------------------------------------------------------ bad input, state, seeds and devices
class _Counting(nn.Module):
    """A tiny CNN with BatchNorm and Dropout that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                 nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 5 * 5, 3))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        out: Tensor = self.net(x)
        return out


BAD: list[tuple[str, dict[str, object], type[Exception], str]] = [
    ("sigma-zero", {"sigma": 0.0}, ValueError, "sigma"),
    ("sigma-negative", {"sigma": -0.5}, ValueError, "sigma"),
    ("sigma-nan", {"sigma": math.nan}, ValueError, "sigma"),
    ("sigma-inf", {"sigma": math.inf}, ValueError, "sigma"),
    ("n-zero", {"n": 0}, ValueError, "n must"),
    ("n-float", {"n": 10.0}, TypeError, "n must"),
    ("alpha-zero", {"alpha": 0.0}, ValueError, "alpha"),
    ("alpha-one", {"alpha": 1.0}, ValueError, "alpha"),
    ("alpha-nan", {"alpha": math.nan}, ValueError, "alpha"),
    ("batch-zero", {"batch_size": 0}, ValueError, "batch_size"),
    ("x-above", {"x": "above"}, ValueError, "bounds"),
    ("x-nan", {"x": "nan"}, ValueError, "NaN"),
    ("x-int", {"x": "int"}, TypeError, "floating"),
    ("bounds", {"bounds": (1.0, 0.0)}, ValueError, "low < high"),
    ("generator", {"generator": 0}, TypeError, "generator"),
]


@pytest.mark.parametrize("fn", ["certify", "smoothed_predict"])
@pytest.mark.parametrize(("case", "change", "error", "match"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_before_any_forward_pass(
    fn: str, case: str, change: dict[str, object], error: type[Exception], match: str
) -> None:
    model = _Counting()
    x = torch.rand(3, 1, 5, 5)
    kwargs: dict[str, object] = {"sigma": 0.25, "n": 10}
    if fn == "certify":
        kwargs.update(n0=5, progress=False)
    kwargs.update(change)
    if "x" in change:
        x = {"above": x + 1.0, "nan": x.masked_fill(x > 0.5, math.nan),
             "int": (x * 10).long()}[str(change["x"])]
        del kwargs["x"]
    call: Callable[..., object] = certify if fn == "certify" else smoothed_predict
    with pytest.raises(error, match=match):
        call(model, x, **kwargs)
    assert model.calls == 0


def test_certify_rejects_n0_zero_and_bad_logits() -> None:
    model = _Counting()
    with pytest.raises(ValueError, match="n0"):
        certify(model, torch.rand(2, 1, 5, 5), sigma=0.1, n0=0, n=5, progress=False)
    assert model.calls == 0
    with pytest.raises(ValueError, match="logits"):
        certify(nn.Flatten(0), torch.rand(2, 4), sigma=0.1, n0=2, n=2, progress=False)


def test_model_and_x_are_left_unchanged() -> None:
    model = _Counting()
    model.train()
    model.net[1].eval()  # a layer frozen in eval mode stays so
    x = torch.rand(4, 1, 5, 5)
    model(x).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x_before = x.clone()
    certify(model, x, sigma=0.2, n0=5, n=20, generator=_gen(30), progress=False)
    smoothed_predict(model, x, sigma=0.2, n=20, generator=_gen(31))
    lipschitz_upper_bound(model.net, (1, 5, 5), iterations=5)
    lipschitz_certificate(model, x, bound=10.0)
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=0)
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)


def test_seeded_runs_repeat_and_seeds_differ() -> None:
    model = _linear()
    x = _point_with_pa(0.9).repeat(5, 1)
    runs = [certify(model, x, sigma=SIGMA, n0=20, n=500, generator=_gen(seed), progress=False)
            for seed in (40, 40, 41)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0][1], runs[2][1])
    torch.manual_seed(42)
    a = smoothed_predict(model, x, sigma=SIGMA, n=50, alpha=0.3)
    torch.manual_seed(42)
    torch.testing.assert_close(a, smoothed_predict(model, x, sigma=SIGMA, n=50, alpha=0.3))
    empty = certify(model, x[:0], sigma=SIGMA, progress=False)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


def test_certify_is_the_same_on_every_device(device: torch.device) -> None:
    model = _Counting().eval()
    x = torch.rand(6, 1, 5, 5, generator=_gen(50))
    ref = certify(model, x, sigma=0.25, n0=20, n=300, alpha=0.01, batch_size=256,
                  generator=_gen(51), progress=False)
    labels, radii = certify(model.to(device), x.to(device), sigma=0.25, n0=20, n=300,
                            alpha=0.01, batch_size=256, generator=_gen(51), progress=False)
    assert labels.device.type == device.type and radii.dtype == x.dtype
    torch.testing.assert_close(labels.cpu(), ref[0], rtol=0, atol=0)
    torch.testing.assert_close(radii.cpu(), ref[1], rtol=1e-5, atol=1e-6)
    pred = smoothed_predict(model, x.to(device), sigma=0.25, n=100, generator=_gen(52))
    torch.testing.assert_close(pred.cpu(), smoothed_predict(model.cpu(), x, sigma=0.25, n=100,
                                                            generator=_gen(52)))
