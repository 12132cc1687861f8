"""Tests of the per-sample transforms of ``advbook.augment`` (protocol, geometry, photometry, …).

Generic invariants run for every transform (identity parameters, replay, per-sample
randomness, bounds, dtype/device, no mutation, CPU vs CUDA); each family is then checked
against closed forms or an independent implementation (``torch.rot90``, a NumPy affine
reference, torchvision's Gaussian blur, a per-sample loop for erasing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advbook.augment import (
    Compose,
    Cutout,
    GaussianBlur,
    Identity,
    RandomAffine,
    RandomBackground,
    RandomBrightness,
    RandomColorBackground,
    RandomContrast,
    RandomErasing,
    RandomGamma,
    RandomGaussianNoise,
    RandomRotation,
    RepeatChannels,
    Transform,
    affine_grid,
    domain_randomization,
    rand_augment,
)

Factory = Callable[[], Transform]

CASES: dict[str, Factory] = {
    "affine": lambda: RandomAffine(
        degrees=30, translate=0.1, scale=(0.8, 1.2, 0.7, 1.1), shear=(-10, 10, -5, 5)
    ),
    "rotation": lambda: RandomRotation(45, padding_mode="reflection"),
    "brightness": lambda: RandomBrightness(0.3),
    "contrast": lambda: RandomContrast((0.5, 1.5)),
    "gamma": lambda: RandomGamma((0.5, 2.0)),
    "background": lambda: RandomBackground((0.1, 0.6), (0.1, 0.3), ink=(0.7, 1.0)),
    "color_background_rgb": lambda: RandomColorBackground(out_channels=3),
    "color_background_luma": lambda: RandomColorBackground(out_channels=1),
    "noise": lambda: RandomGaussianNoise((0.05, 0.2)),
    "blur": lambda: GaussianBlur((0.5, 1.5)),
    "erasing": lambda: RandomErasing(value="random"),
    "cutout": lambda: Cutout(0.3, value="random"),
    "compose_domain_randomization": lambda: domain_randomization(),
    "compose_rgb": lambda: domain_randomization(out_channels=3),
    "rand_augment": lambda: rand_augment(2, 7.0),
}


def _images(n: int = 16, c: int = 1, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    """Digit-like test images: a bright random blob on black plus some pixels at 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    x = torch.where(x > 0.6, x, torch.zeros(()))
    x[:, :, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 1.0
    return x


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return _images()


def _expected_out(t: Transform, x: torch.Tensor) -> torch.Tensor:
    c = t.out_channels_for(x.shape[1])
    return x.expand(-1, c, -1, -1)


# ----------------------------------------------------------------------------------------------
# generic invariants
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_identity_params_return_input_exactly(name: str, x: torch.Tensor,
                                              device: torch.device) -> None:
    t = CASES[name]()
    xd = x.to(device)
    out = t(xd, params=t.identity_params(x.shape))
    assert out.device == xd.device
    assert torch.equal(out, _expected_out(t, xd))


@pytest.mark.parametrize("name", list(CASES))
def test_apply_false_returns_input_exactly(name: str, x: torch.Tensor) -> None:
    t = CASES[name]()
    params = t.sample_params(x.shape)
    params = {k: (torch.zeros_like(v) if k.endswith("apply") else v) for k, v in params.items()}
    assert torch.equal(t(x, params=params), _expected_out(t, x))


@pytest.mark.parametrize("name", list(CASES))
def test_replay_reproduces_bit_for_bit(name: str, x: torch.Tensor, device: torch.device) -> None:
    t = CASES[name]()
    xd = x.to(device)
    out, params = t(xd, return_params=True)
    assert not torch.equal(out, _expected_out(t, xd)), "the transform did nothing"
    assert torch.equal(t(xd, params=params), out)
    cpu_params = {k: v.cpu().clone() for k, v in params.items()}
    assert torch.equal(t(xd, params=cpu_params), out)


@pytest.mark.parametrize("name", list(CASES))
def test_seeded_generators_reproduce_and_advance(name: str, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    a = CASES[name]()
    torch.manual_seed(0)
    b = CASES[name]()
    first = a(x)
    assert torch.equal(first, b(x)), "two transforms with the same seed must agree"
    assert not torch.equal(a(x), first), "the owned generator must advance between calls"
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(a(x, generator=g1), b(x, generator=g2))
    assert not torch.equal(a(x, generator=torch.Generator().manual_seed(8)), b(x))


@pytest.mark.parametrize("name", list(CASES))
def test_per_sample_params_differ_across_batch(name: str) -> None:
    t = CASES[name]()
    x = _images(16)[:1].expand(16, -1, -1, -1)  # identical images
    out, params = t(x, return_params=True)
    vectors = torch.cat(
        [v.reshape(16, -1).double() for v in params.values() if v.dtype != torch.bool], dim=1
    )
    assert torch.unique(vectors, dim=0).shape[0] == 16, "every sample needs its own parameters"
    distinct_outputs = torch.unique(out.reshape(16, -1), dim=0).shape[0]
    assert distinct_outputs >= 8, f"only {distinct_outputs} distinct outputs of 16"


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_stay_inside_bounds(name: str) -> None:
    t = CASES[name]()
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(64, 1, 12, 12, generator=g) > 0.5).float()  # only 0 and 1: extreme inputs
    for _ in range(3):
        out = t(x, generator=g)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert torch.isfinite(out).all()


BOUNDED: dict[str, Callable[..., Transform]] = {
    "affine": lambda **kw: RandomAffine(degrees=30, scale=(0.8, 1.2), fill=-1.0, **kw),
    "brightness": lambda **kw: RandomBrightness(0.3, **kw),
    "contrast": lambda **kw: RandomContrast((0.2, 1.8), **kw),
    "gamma": lambda **kw: RandomGamma((0.5, 2.0), **kw),
    "background": lambda **kw: RandomBackground((0.2, 0.6), (0.1, 0.4), **kw),
    "color_background": lambda **kw: RandomColorBackground(**kw),
    "noise": lambda **kw: RandomGaussianNoise((0.1, 0.3), **kw),
    "blur": lambda **kw: GaussianBlur((0.5, 1.5), **kw),
    "erasing": lambda **kw: RandomErasing(value="random", **kw),
}


@pytest.mark.parametrize("name", list(BOUNDED))
def test_custom_bounds(name: str) -> None:
    t = BOUNDED[name](bounds=(-1.0, 1.0))  # e.g. images normalised to [-1, 1]
    x = 2 * _images(32) - 1
    out = t(x)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert not torch.equal(out, x.expand_as(out))
    assert torch.equal(t(x, params=t.identity_params(x.shape)), x.expand_as(out))
    with pytest.raises(ValueError, match="bounds"):
        BOUNDED[name]()(x)  # default bounds (0, 1) reject the negative values


@pytest.mark.parametrize("name", list(CASES))
def test_dtype_shape_and_no_mutation(name: str, x: torch.Tensor) -> None:
    t = CASES[name]()
    x64 = x.double()
    before = x64.clone()
    out = t(x64)
    assert torch.equal(x64, before), "the input must not be mutated"
    assert out.dtype == torch.float64
    assert out.shape == (x.shape[0], t.out_channels_for(x.shape[1]), *x.shape[2:])
    torch.manual_seed(0)
    out16 = CASES[name]()(x.half())
    assert out16.dtype == torch.float16
    torch.manual_seed(0)  # the same fresh seed: the same draws
    reference = CASES[name]()(x.half().float())
    torch.testing.assert_close(out16.float(), reference, atol=2e-3, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CASES))
def test_cpu_and_cuda_agree(name: str, x: torch.Tensor) -> None:
    t = CASES[name]()
    params = t.sample_params(x.shape)
    out_cpu = t(x, params=params)
    out_gpu = t(x.cuda(), params=params)
    assert out_gpu.is_cuda
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
    # the owned generator lives on the CPU, so the draws agree across devices too
    torch.testing.assert_close(CASES[name]()(x.cuda()).cpu(), CASES[name]()(x),
                               atol=1e-5, rtol=1e-5)
    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    out, params = t(x.cuda(), generator=cuda_gen, return_params=True)
    assert all(v.is_cuda for v in params.values())
    assert torch.equal(t(x.cuda(), params=params), out)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(x: torch.Tensor) -> None:
    t = RandomAffine(degrees=10)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        t(x.numpy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        t((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="N×C×H×W"):
        t(x[0])
    with pytest.raises(ValueError, match="bounds"):
        t(x + 2)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        t(nan)
    with pytest.raises(TypeError, match="generator"):
        t(x, generator=0)  # type: ignore[arg-type]
    params = t.sample_params(x.shape)
    with pytest.raises(ValueError, match="missing"):
        t(x, params={k: v for k, v in params.items() if k != "angle"})
    with pytest.raises(ValueError, match="shape"):
        t(x[:4], params=params)
    with pytest.raises(TypeError, match="bool"):
        t(x, params={**params, "apply": params["apply"].float()})
    with pytest.raises(ValueError, match="1 channel"):
        RandomColorBackground()(x.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="radius"):
        GaussianBlur((0.0, 4.0))(x)
    assert RandomAffine(degrees=10, check_bounds=False)(x + 2).max() <= 1.0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: RandomAffine(degrees=(10, -10)), "min <= max"),
        (lambda: RandomAffine(shear=90), "90"),
        (lambda: RandomAffine(scale=(0.0, 1.0)), "scale"),
        (lambda: RandomAffine(fill=2.0), "fill"),
        (lambda: RandomAffine(mode="bicubic"), "mode"),
        (lambda: RandomAffine(padding_mode="wrap"), "padding_mode"),
        (lambda: RandomBrightness(p=1.5), "probability"),
        (lambda: RandomBrightness(bounds=(1.0, 0.0)), "low < high"),
        (lambda: RandomBrightness(seed=-1), "seed"),
        (lambda: RandomGamma((0.0, 1.0)), "gamma"),
        (lambda: RandomErasing(value="mean"), "random"),
        (lambda: RandomErasing(value=3.0), "bounds"),
        (lambda: RandomColorBackground(out_channels=2), "out_channels"),
        (lambda: Cutout(1.5), "size"),
        (lambda: RandomGaussianNoise(-0.1), "sigma"),
        (lambda: Compose([RandomAffine(), "flip"]), "Transform"),  # type: ignore[list-item]
    ],
)
def test_bad_arguments_raise(factory: Factory, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        factory()


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def _affine_params(
    t: RandomAffine, shape: tuple[int, ...], **values: object
) -> dict[str, torch.Tensor]:
    params = t.identity_params(shape)
    n = shape[0]
    if "angle" in values:
        params["angle"] = torch.full((n,), values["angle"], dtype=torch.float64)
    if "scale" in values:
        params["scale"] = torch.tensor(values["scale"], dtype=torch.float64).expand(n, 2)
    if "shear" in values:
        params["shear"] = torch.tensor(values["shear"], dtype=torch.float64).expand(n, 2)
    if "translate" in values:
        params["translate"] = torch.tensor(values["translate"], dtype=torch.float64).expand(n, 2)
    return params


@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize(("angle", "k"), [(90.0, 1), (180.0, 2), (270.0, 3), (-90.0, -1)])
def test_quarter_turns_equal_rot90(size: int, angle: float, k: int, device: torch.device) -> None:
    x = torch.rand(4, 2, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    expected = torch.rot90(x, k, dims=(-2, -1))
    t = RandomAffine()
    out = t(x, params=_affine_params(t, x.shape, angle=angle))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    nearest = RandomAffine(mode="nearest")
    assert torch.equal(nearest(x, params=_affine_params(nearest, x.shape, angle=angle)), expected)


def test_half_turn_of_non_square_image_and_full_turn() -> None:
    x = torch.rand(3, 1, 8, 12, generator=torch.Generator().manual_seed(1))
    t = RandomAffine()
    out = t(x, params=_affine_params(t, x.shape, angle=180.0))
    torch.testing.assert_close(out, torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5, rtol=0)
    # 360° is not flagged as the identity, so this exercises the warp itself
    out = t(x, params=_affine_params(t, x.shape, angle=360.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_translation_by_one_pixel_and_fill() -> None:
    x = torch.rand(2, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    t = RandomAffine(fill=0.25)
    out = t(x, params=_affine_params(t, x.shape, translate=(1 / 10, 0.0)))
    torch.testing.assert_close(out[..., 1:], x[..., :-1], atol=1e-5, rtol=0)  # content moves right
    torch.testing.assert_close(out[..., 0], torch.full_like(out[..., 0], 0.25), atol=1e-6, rtol=0)
    border = RandomAffine(padding_mode="border")
    out = border(x, params=_affine_params(border, x.shape, translate=(0.0, 2 / 10)))
    torch.testing.assert_close(out[..., 2:, :], x[..., :-2, :], atol=1e-5, rtol=0)  # moves down
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :], atol=1e-5, rtol=0)


def _reference_source(h: int, w: int, angle: float, scale: tuple[float, float],
                      shear: tuple[float, float], translate: tuple[float, float]) -> np.ndarray:
    """Independent NumPy reference: source pixel (x, y) of every output pixel, H×W×2."""
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    sc = np.diag(scale)
    kx, ky = (math.tan(math.radians(s)) for s in shear)
    sh = np.array([[1.0, kx], [0.0, 1.0]]) @ np.array([[1.0, 0.0], [ky, 1.0]])
    m = rot @ sc @ sh
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    t = np.array([translate[0] * w, translate[1] * h])
    ys, xs = np.mgrid[0:h, 0:w]
    p_out = np.stack([xs, ys], -1).astype(np.float64)
    return centre + (p_out - centre - t) @ np.linalg.inv(m).T


def test_affine_geometry_matches_numpy_reference() -> None:
    """Bilinear interpolation reproduces affine functions, so warping the coordinate images
    (x, y) returns the source coordinates of each output pixel, away from the border."""
    h, w = 15, 21
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    coords = torch.stack([xs / (w - 1), ys / (h - 1)])[None]  # 1×2×H×W in [0, 1]
    cases = [
        dict(angle=25.0, scale=(1.1, 0.9), shear=(10.0, -5.0), translate=(0.05, -0.1)),
        dict(angle=-70.0, scale=(0.8, 0.8), shear=(0.0, 20.0), translate=(0.0, 0.0)),
        dict(angle=0.0, scale=(1.3, 1.0), shear=(-15.0, 0.0), translate=(-0.1, 0.05)),
    ]
    t = RandomAffine()
    for case in cases:
        out = t(coords, params=_affine_params(t, coords.shape, **case))[0]
        src = _reference_source(h, w, case["angle"], case["scale"], case["shear"],
                                case["translate"])
        inside = ((src[..., 0] > 0.01) & (src[..., 0] < w - 1.01)
                  & (src[..., 1] > 0.01) & (src[..., 1] < h - 1.01))
        assert inside.sum() > 100
        got = np.stack([out[0].numpy() * (w - 1), out[1].numpy() * (h - 1)], -1)
        np.testing.assert_allclose(got[inside], src[inside], atol=1e-6)


def test_affine_grid_matches_torch(device: torch.device) -> None:
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(3)).to(device)
    ours = affine_grid(theta, 7, 9)
    ref = F.affine_grid(theta, [5, 1, 7, 9], align_corners=False)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


def test_random_sign_excludes_small_magnitudes() -> None:
    t = RandomAffine(degrees=(30, 45), shear=(10, 20), translate=(0.1, 0.1), random_sign=True)
    p = t.sample_params((2000, 1, 8, 8))
    assert (p["angle"].abs() >= 30).all() and (p["angle"].abs() <= 45).all()
    assert (p["angle"] > 0).float().mean().sub(0.5).abs() < 0.05  # both signs, about equally
    assert (p["shear"][:, 0].abs() >= 10).all()
    assert (p["shear"][:, 0] < 0).any() and (p["translate"] < 0).any()


# ----------------------------------------------------------------------------------------------
# photometric, noise, blur, erasing: closed forms and independent implementations
# ----------------------------------------------------------------------------------------------
def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def test_brightness_contrast_gamma_closed_forms(x: torch.Tensor) -> None:
    t = RandomBrightness(0.3)
    out, p = t(x, return_params=True)
    torch.testing.assert_close(out, (x + _col(p["brightness"])).clamp(0, 1))

    mid = 0.3 + 0.4 * x  # in [0.3, 0.7]: contrast factors in [0.5, 1.5] never clip
    t = RandomContrast((0.5, 1.5))
    out, p = t(mid, return_params=True)
    mu = mid.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3), keepdim=True), mu)
    torch.testing.assert_close(out - mu, _col(p["contrast"]) * (mid - mu))

    t = RandomGamma((0.5, 2.0))
    out, p = t(x, return_params=True)
    torch.testing.assert_close(out, x ** _col(p["gamma"]))
    assert (p["gamma"] < 1).any() and (p["gamma"] > 1).any()
    t = RandomGamma((0.5, 2.0), bounds=(-1.0, 1.0))
    y = 2 * x - 1
    out, p = t(y, return_params=True)
    torch.testing.assert_close(out, -1 + 2 * ((y + 1) / 2) ** _col(p["gamma"]))


def test_background_compositing_closed_form(x: torch.Tensor) -> None:
    t = RandomBackground(intensity=(0.2, 0.5), texture=(0.0, 0.0), ink=(0.7, 1.0))
    out, p = t(x, return_params=True)
    expected = x * _col(p["ink"]) + (1 - x) * _col(p["intensity"])
    torch.testing.assert_close(out, expected)
    # a textured background on an empty image is smooth: bilinear upsampling of a g×g grid
    t = RandomBackground(intensity=(0.5, 0.5), texture=(0.3, 0.3), grid=4)
    bg = t(torch.zeros(8, 1, 28, 28))
    assert bg.min() >= 0.2 - 1e-6 and bg.max() <= 0.8 + 1e-6
    assert bg.std() > 0.02
    step_x = (bg[..., 1:] - bg[..., :-1]).abs().max()
    step_y = (bg[..., 1:, :] - bg[..., :-1, :]).abs().max()
    assert max(step_x, step_y) <= 2 * 0.3 * 4 / 28 + 1e-5


def test_color_background_rgb_and_luminance(x: torch.Tensor) -> None:
    rgb = RandomColorBackground(out_channels=3)
    out, p = rgb(x, return_params=True)
    expected = x * p["foreground"][:, :, None, None] + (1 - x) * p["background"][:, :, None, None]
    torch.testing.assert_close(out, expected)
    luma = RandomColorBackground(out_channels=1)
    gray = luma(x, params=p)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close(gray, (out * weights).sum(1, keepdim=True))
    assert gray.shape[1] == 1 and luma.out_channels_for(1) == 1 and rgb.out_channels_for(1) == 3


def test_noise_closed_form_and_statistics(x: torch.Tensor) -> None:
    t = RandomGaussianNoise((0.05, 0.2))
    out, p = t(x, return_params=True)
    torch.testing.assert_close(out, (x + _col(p["sigma"]) * p["noise"]).clamp(0, 1))
    flat = torch.full((64, 1, 16, 16), 0.5)
    out = RandomGaussianNoise((0.1, 0.1))(flat)  # 0.5 ± 4σ stays inside [0, 1]: no clipping
    residual = out - flat
    assert abs(float(residual.std()) - 0.1) < 0.005
    assert abs(float(residual.mean())) < 0.003


@pytest.mark.parametrize("shape", [(16, 1, 12, 12), (3, 2, 10, 14), (3, 2, 66, 70)])
def test_blur_matches_torchvision(shape: tuple[int, int, int, int]) -> None:
    """Small images take the band-matrix path, large ones (> 64 px) the grouped convolution."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    t = GaussianBlur((0.3, 1.5))
    out, p = t(x, return_params=True)
    k = 2 * t.radius + 1
    for i in range(x.shape[0]):  # independent per-sample reference
        s = float(p["sigma"][i])
        ref = tvf.gaussian_blur(x[i], kernel_size=[k, k], sigma=[s, s])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    const = torch.full(shape, 0.3)
    torch.testing.assert_close(t(const), const)


def test_erasing_matches_per_sample_loop(x: torch.Tensor) -> None:
    t = RandomErasing(scale=(0.05, 0.3), ratio=(0.5, 2.0), value="random")
    xs = x.expand(-1, 2, -1, -1)
    out, p = t(xs, return_params=True)
    expected = xs.clone()
    h, w = x.shape[-2:]
    for i, (top, left, bh, bw) in enumerate(p["box"].tolist()):
        assert 0 <= top and top + bh <= h and 0 <= left and left + bw <= w
        assert 0.05 * h * w * 0.5 <= bh * bw <= 0.3 * h * w * 1.6  # rounding of h and w
        expected[i, :, top : top + bh, left : left + bw] = p["value"][i]
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    square = Cutout(0.5)
    _, p = square(x, return_params=True)
    assert (p["box"][:, 2] == 6).all() and (p["box"][:, 3] == 6).all()


# ----------------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------------
def test_compose_equals_sequential_children(x: torch.Tensor) -> None:
    children = [RandomAffine(degrees=20), RandomColorBackground(out_channels=3),
                RandomGaussianNoise((0.0, 0.1))]
    c = Compose(children)
    out, p = c(x, return_params=True)
    y = x
    for i, child in enumerate(children):
        y = child(y, params={k.split(".", 1)[1]: v for k, v in p.items()
                             if k.startswith(f"{i}.")})
    assert torch.equal(out, y)
    assert out.shape[1] == 3 == c.out_channels_for(1)


def test_compose_per_transform_probabilities() -> None:
    c = Compose([RandomBrightness(0.1, p=0.2), RandomContrast(p=0.7), Identity(p=1.0)])
    p = c.sample_params((4000, 1, 4, 4))
    for key, prob in (("0.apply", 0.2), ("1.apply", 0.7), ("2.apply", 1.0)):
        rate = p[key].float().mean().item()
        assert abs(rate - prob) < 4 * math.sqrt(prob * (1 - prob) / 4000) + 1e-9
    # the two probabilities are drawn independently
    both = (p["0.apply"] & p["1.apply"]).float().mean().item()
    assert abs(both - 0.14) < 0.025


def test_rand_augment_picks_exactly_n_ops_and_m0_is_identity(x: torch.Tensor) -> None:
    t = rand_augment(3, 6.0)
    p = t.sample_params((500, 1, 12, 12))
    chosen = torch.stack([v for k, v in p.items() if k.endswith(".apply")], 1)
    assert (chosen.sum(1) == 3).all()
    freq = chosen.float().mean(0)  # each of the K ops is chosen with probability n/K
    k = chosen.shape[1]
    assert (freq - 3 / k).abs().max() < 0.08
    assert torch.equal(rand_augment(2, 0.0)(x), x)
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(2, 11.0)


def test_repeat_channels(x: torch.Tensor) -> None:
    t = RepeatChannels(3)
    out = t(x)
    assert out.shape[1] == 3 and torch.equal(out, x.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="channel"):
        t(x.expand(-1, 2, -1, -1))
