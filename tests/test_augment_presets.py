"""Tests of the presets: test-domain shifts, domain randomisation, mild augmentation, RandAugment,
and a smoke run of the benchmark script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from advbook.augment import (
    DOMAIN_SHIFTS,
    RandomAffine,
    apply_domain_shift,
    domain_randomization,
    domain_shift,
    evaluation_domains,
    mild_augmentation,
    rand_augment,
)
from advbook.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_mnist().x_test[::25][:40]  # 40 real digits of all classes


@pytest.mark.parametrize("out_channels", [1, 3])
@pytest.mark.parametrize("name", ["clean", *DOMAIN_SHIFTS])
def test_domain_shifts_are_deterministic_and_shaped(
    name: str, out_channels: int, digits: torch.Tensor
) -> None:
    out = apply_domain_shift(digits, name, out_channels=out_channels, seed=3)
    assert out.shape == (len(digits), out_channels, 28, 28)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, apply_domain_shift(digits, name, out_channels=out_channels, seed=3))
    if name == "clean":
        assert torch.equal(out, digits.expand(-1, out_channels, -1, -1))
    else:
        assert not torch.equal(
            out, apply_domain_shift(digits, name, out_channels=out_channels, seed=4)
        )
        assert (out - digits).abs().mean() > 0.02, "the shift must change the images visibly"


def test_domain_shift_parameter_ranges() -> None:
    shape = (2000, 1, 28, 28)
    p = domain_shift("rotated").sample_params(shape)
    angle = p["0.angle"].abs()
    assert (angle >= 30).all() and (angle <= 45).all() and (p["0.angle"] < 0).any()
    p = domain_shift("scaled").sample_params(shape)
    assert (p["0.scale"] >= 0.6).all() and (p["0.scale"] <= 0.7).all()
    p = domain_shift("sheared").sample_params(shape)
    shear = p["0.shear"][:, 0].abs()
    assert (shear >= 20).all() and (shear <= 30).all()
    p = domain_shift("noisy").sample_params(shape)
    assert (p["0.sigma"] >= 0.2).all() and (p["0.sigma"] <= 0.3).all()
    p = domain_shift("blurred").sample_params(shape)
    assert (p["0.sigma"] >= 1.0).all() and (p["0.sigma"] <= 1.5).all()
    p = domain_shift("held_out_combination").sample_params(shape)
    assert {"0.angle", "1.background", "2.sigma", "3.sigma"} <= set(p)
    assert all(p[k].all() for k in p if k.endswith("apply")), "test domains shift every sample"


def test_evaluation_domains_and_errors() -> None:
    domains = evaluation_domains(out_channels=3, seed=10)
    assert list(domains) == ["clean", *DOMAIN_SHIFTS]
    assert [t.seed for t in domains.values()] == list(range(10, 10 + len(domains)))
    assert all(t.out_channels_for(1) == 3 for t in domains.values())
    assert list(evaluation_domains(include_clean=False)) == list(DOMAIN_SHIFTS)
    with pytest.raises(ValueError, match="rotated"):
        domain_shift("upside_down")
    with pytest.raises(ValueError, match="out_channels"):
        domain_shift("rotated", out_channels=2)
    with pytest.raises(ValueError, match="strength"):
        domain_randomization(2.5)
    with pytest.raises(ValueError, match="n must"):
        rand_augment(20, 5.0)


@pytest.mark.parametrize("out_channels", [1, 3])
def test_domain_randomization_strength(out_channels: int, digits: torch.Tensor) -> None:
    zero = domain_randomization(0.0, out_channels=out_channels)
    assert torch.equal(zero(digits), digits.expand(-1, out_channels, -1, -1))
    change = []
    for s in (0.5, 1.0, 1.5):
        out = domain_randomization(s, out_channels=out_channels, seed=0)(digits)
        assert out.shape[1] == out_channels and out.min() >= 0 and out.max() <= 1
        change.append(float((out - digits).abs().mean()))
    assert change[0] < change[1] < change[2], f"stronger randomisation must change more: {change}"


def test_domain_randomization_covers_the_test_shifts() -> None:
    """The randomised ranges contain the geometric test shifts (what makes DR work)."""
    p = domain_randomization(1.0).sample_params((20000, 1, 28, 28))
    applied = p["0.apply"]
    angle, scale, shear = p["0.angle"][applied], p["0.scale"][applied], p["0.shear"][applied]
    assert angle.min() < -40 and angle.max() > 40
    assert scale.min() < 0.62 and scale.max() > 1.2
    assert shear[:, 0].abs().max() > 28
    assert abs(applied.float().mean().item() - 0.9) < 0.02


def test_mild_augmentation_ranges() -> None:
    t = mild_augmentation()
    assert isinstance(t.transforms[0], RandomAffine)
    p = t.sample_params((2000, 1, 28, 28))
    assert p["0.angle"].abs().max() <= 10 and p["0.angle"].abs().max() > 9
    assert ((p["0.scale"] >= 0.9) & (p["0.scale"] <= 1.1)).all()
    assert p["0.translate"].abs().max() <= 0.1


def test_rand_augment_magnitude_sweep(digits: torch.Tensor) -> None:
    change = []
    for m in (0.0, 3.0, 6.0, 9.0):
        out = rand_augment(2, m, seed=0)(digits)
        assert out.shape == digits.shape and out.min() >= 0 and out.max() <= 1
        change.append(float((out - digits).abs().mean()))
    assert change[0] == 0.0
    assert change[1] < change[2] < change[3], f"magnitude must increase the change: {change}"


def test_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("kornia")
    spec = importlib.util.spec_from_file_location("bench_augment", ROOT / "benchmarks/augment.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    csv = tmp_path / "augment.csv"
    df = module.run(batch_size=16, repeats=5, warmup=1, csv_path=csv, verbose=False)
    assert csv.exists() and len(df) == 2
    assert {"implementation", "median_ms", "ratio_to_kornia"} <= set(df.columns)
    kornia_row = df[df["implementation"].str.contains("kornia")]
    assert float(kornia_row["ratio_to_kornia"].iloc[0]) == 1.0
    assert (df["median_ms"] > 0).all()
    with pytest.raises(ValueError, match="repeats"):
        module.run(repeats=2, csv_path=csv, verbose=False)
