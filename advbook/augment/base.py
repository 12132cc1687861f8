"""The shared transform protocol of :mod:`advbook.augment`, and composition.

Every transform is an object called as ``t(x, *, generator=None, params=None,
return_params=False)`` on a batch ``x`` of shape ``N×C×H×W`` whose values lie in ``bounds``
(default ``(0, 1)``). Calling it

1. draws one set of parameters **per sample** from a :class:`torch.Generator` — the one passed
   in, else the one the transform owns (seeded at construction) — unless ``params`` is given;
2. applies the transform to the whole batch at once (no per-sample Python loop), on ``x``'s
   device and in ``x``'s dtype (half precision is computed in float32 and cast back);
3. clamps the result into ``bounds`` and returns it, with the parameters when
   ``return_params=True``.

Parameters are a flat ``dict[str, torch.Tensor]`` whose first dimension is the batch. Passing
them back replays the transform bit for bit. Every transform has a per-sample probability ``p``
(the boolean parameter ``"apply"``); samples with ``apply = False`` *or* with identity
parameters (angle 0, noise level 0, …) are returned exactly unchanged:

    out_i = x_i                 if not apply_i or θ_i = identity
    out_i = clip(T(x_i; θ_i))   otherwise.

Derived in the book, section :ref:`sec-augment-protocol` of chapter *Neural data augmentation*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, overload

import torch

from .._core.checks import check_bounds as check_bounds_arg
from .._core.checks import (  # check_bounds: a keyword argument
    check_fraction,
    check_generator,
    check_in_bounds,
    check_nonneg_int,
    check_positive_int,
    check_tensor,
)
from .._core.random import fresh_seed, generator_from_seed, rand_on
from .._core.types import Bounds

__all__ = ["Bounds", "Compose", "Identity", "Params", "RepeatChannels", "Transform"]

Params = dict[str, torch.Tensor]
Shape4 = tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------------
# validation and sampling helpers shared by the transform modules (the generic argument checks
# live in advbook._core.checks, the seeded draws in advbook._core.random)
# ----------------------------------------------------------------------------------------------
#: The largest magnitude :func:`check_range` accepts: far beyond any sensible parameter, far
#: below where float32 draws ``a + (b − a)·u`` overflow.
_MAX_RANGE = 1e6


def check_range(
    value: float | Sequence[float],
    name: str,
    *,
    symmetric: bool = False,
    low: float = -math.inf,
    high: float = math.inf,
) -> tuple[float, float]:
    """Turn ``value`` into a range ``(a, b)`` with ``low <= a <= b <= high``.

    A single number ``d`` means ``(-|d|, |d|)`` when ``symmetric`` and ``(d, d)`` otherwise.
    Both ends must be finite and at most ``1e6`` in magnitude.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a (min, max) pair, got {value!r}")
    if isinstance(value, (int, float)):
        d = float(value)
        a, b = (-abs(d), abs(d)) if symmetric else (d, d)
    else:
        try:
            a, b = (float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be a number or a (min, max) pair, got {value!r}"
            ) from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if max(abs(a), abs(b)) > _MAX_RANGE:
        raise ValueError(
            f"{name} must lie in [-{_MAX_RANGE:g}, {_MAX_RANGE:g}] (draws are made in float32), "
            f"got {value!r}"
        )
    if a > b:
        raise ValueError(f"{name} must be a (min, max) pair with min <= max, got {value!r}")
    if a < low or b > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return a, b


def uniform(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Map uniform draws ``u ∈ [0, 1)`` to ``[a, b)``: ``a + (b - a)·u``."""
    a, b = bounds
    return a + (b - a) * u


def sample_uniform(generator: torch.Generator, n: int, bounds: tuple[float, float]) -> torch.Tensor:
    """One draw from ``U[a, b)`` per sample of a batch of ``n``, on the generator's device."""
    return uniform(rand_on(generator, n), bounds)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_shape(shape: Sequence[int]) -> Shape4:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a sequence of 4 ints (N, C, H, W), got {shape!r}") from None
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise ValueError(f"expected a non-empty batch shaped N×C×H×W, got shape {tuple(shape)}")
    return dims[0], dims[1], dims[2], dims[3]


def resolve_seed(seed: int | None) -> int:
    """The seed to use: ``seed`` itself (checked to be an int ``>= 0``), or for ``None`` a fresh
    one drawn from PyTorch's global generator (see :func:`advbook._core.random.fresh_seed`)."""
    if seed is None:
        return fresh_seed()
    return check_nonneg_int(seed, "seed")


def _to_device(
    params: Mapping[str, torch.Tensor],
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Params:
    """Move ``params`` to ``device``; floating tensors are also cast to ``dtype``."""
    out: Params = {}
    for key, t in params.items():
        if t.is_floating_point() and dtype is not None:
            out[key] = t.to(device=device, dtype=dtype)
        else:
            out[key] = t.to(device=device)
    return out


def _check_finite_params(params: Mapping[str, torch.Tensor], where: str) -> None:
    """Replayed floating parameters (all on one device) must be finite: one host sync."""
    keys = [k for k, t in params.items() if t.is_floating_point() and t.numel()]
    if not keys:
        return
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(params[k].detach()).all() for k in keys]).tolist()
    bad = [k for k, ok in zip(keys, flags, strict=True) if not ok]
    if bad:
        raise ValueError(
            f"{where}: params[{bad[0]!r}] contains NaN or infinite values (keys with non-finite "
            f"values: {bad}); replayed parameters must be finite"
        )


# ----------------------------------------------------------------------------------------------
# the protocol
# ----------------------------------------------------------------------------------------------
class Transform:
    """Base class of every per-sample random transform (see the module docstring).

    Args:
        p: probability that a sample is transformed (drawn independently per sample).
        bounds: the value range ``(low, high)`` of inputs and outputs.
        seed: seed of the generator the transform owns, used when no ``generator`` is passed;
            ``None`` (the default) draws a fresh seed from PyTorch's global generator, so
            ``torch.manual_seed`` (or :func:`advbook.utils.seed_everything`) before construction
            makes runs repeat while two transforms draw independent streams. ``self.seed`` holds
            the seed actually used.
        check_bounds: verify that inputs lie in ``bounds`` (one host synchronisation per call;
            switch off in tight GPU loops once the pipeline is trusted).

    Subclasses implement ``_sample(shape, generator)`` (draws on ``generator.device``),
    ``_identity_params(shape)``, ``_is_identity(params) -> bool (N,)`` and
    ``_transform(x, params)``; channel-changing transforms also override ``out_channels_for``.
    """

    def __init__(
        self,
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        self.p = check_fraction(p, "p (a probability)")
        self.bounds = check_bounds_arg(bounds)
        self.seed = resolve_seed(seed)
        self.check_bounds = bool(check_bounds)
        self.generator = generator_from_seed(self.seed)

    # -- hooks for subclasses ------------------------------------------------------------------
    def out_channels_for(self, channels: int) -> int:
        """Number of output channels for an input with ``channels`` channels."""
        return channels

    def _validate_shape(self, shape: Shape4) -> None:
        """Raise ``ValueError`` if the transform cannot handle inputs of ``shape``."""

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        raise NotImplementedError

    def _identity_params(self, shape: Shape4) -> Params:
        raise NotImplementedError

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # -- machinery -----------------------------------------------------------------------------
    def _draw(self, shape: Shape4, generator: torch.Generator) -> Params:
        apply = rand_on(generator, shape[0]) < self.p
        return {"apply": apply, **self._sample(shape, generator)}

    def _identity_all(self, shape: Shape4) -> Params:
        return {"apply": torch.ones(shape[0], dtype=torch.bool), **self._identity_params(shape)}

    def _apply(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Apply with validated ``params`` (on ``x.device``, floats in the compute dtype)."""
        xc = x.to(compute_dtype(x.dtype))
        out = self._transform(xc, params)
        keep = params["apply"] & ~self._is_identity(params)
        # an explicit expand (channel-changing transforms) is much faster than broadcasting
        out = torch.where(keep.view(-1, 1, 1, 1), out, xc.expand_as(out))
        return out.clamp_(*self.bounds).to(x.dtype)

    def _check_input(self, x: torch.Tensor) -> Shape4:
        check_tensor(x, "x", floating=True)
        if x.ndim != 4:
            raise ValueError(f"x must be a batch shaped N×C×H×W, got shape {tuple(x.shape)}")
        shape = _check_shape(x.shape)
        self._validate_shape(shape)
        if self.check_bounds:
            check_in_bounds(x, self.bounds, type(self).__name__)
        return shape

    def _check_params(
        self, params: Mapping[str, torch.Tensor], x: torch.Tensor, shape: Shape4
    ) -> Params:
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of tensors, got {type(params).__name__}")
        expected = self._identity_all(shape)
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        if missing or extra:
            raise ValueError(
                f"{type(self).__name__}: params keys do not match: missing {missing}, "
                f"unexpected {extra} (expected {sorted(expected)})"
            )
        for key, ref in expected.items():
            t = params[key]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"params[{key!r}] must be a tensor, got {type(t).__name__}")
            if t.shape != ref.shape:
                raise ValueError(
                    f"params[{key!r}] has shape {tuple(t.shape)}, expected {tuple(ref.shape)} "
                    f"for inputs of shape {shape}"
                )
            if ref.dtype == torch.bool and t.dtype != torch.bool:
                raise TypeError(f"params[{key!r}] must be a bool tensor, got {t.dtype}")
            if ref.is_floating_point() != t.is_floating_point():
                kind = "a floating-point" if ref.is_floating_point() else "an integer"
                raise TypeError(f"params[{key!r}] must have {kind} dtype, got {t.dtype}")
        moved = _to_device({k: params[k] for k in expected}, x.device, compute_dtype(x.dtype))
        _check_finite_params(moved, type(self).__name__)
        return moved

    # -- public API ----------------------------------------------------------------------------
    def sample_params(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Params:
        """Draw per-sample parameters for a batch of ``shape`` (``N×C×H×W``).

        Random numbers come from ``generator`` (else the owned one) on that generator's device;
        the result is moved to ``device`` and floating tensors are cast to ``dtype``.
        """
        check_generator(generator)
        dims = _check_shape(shape)
        self._validate_shape(dims)
        params = self._draw(dims, generator if generator is not None else self.generator)
        return _to_device(params, torch.device(device) if device is not None else None, dtype)

    def identity_params(
        self, shape: Sequence[int], *, device: torch.device | str | None = None
    ) -> Params:
        """Parameters under which every sample of a batch of ``shape`` is left unchanged."""
        dims = _check_shape(shape)
        self._validate_shape(dims)
        return _to_device(self._identity_all(dims), device, None)

    @overload
    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = ...,
        params: Mapping[str, torch.Tensor] | None = ...,
        return_params: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = ...,
        params: Mapping[str, torch.Tensor] | None = ...,
        return_params: Literal[True],
    ) -> tuple[torch.Tensor, Params]: ...

    def __call__(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
        return_params: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, Params]:
        """Transform the batch ``x``; see the module docstring for the contract."""
        check_generator(generator)
        shape = self._check_input(x)
        if params is None:
            g = generator if generator is not None else self.generator
            checked = _to_device(self._draw(shape, g), x.device, compute_dtype(x.dtype))
        else:
            checked = self._check_params(params, x, shape)
        out = self._apply(x, checked)
        return (out, checked) if return_params else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, bounds={self.bounds})"


class Identity(Transform):
    """The identity ``T(x) = x`` (an option of RandAugment-style policies)."""

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        return {}

    def _identity_params(self, shape: Shape4) -> Params:
        return {}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.ones_like(params["apply"])

    def _transform(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return x


class RepeatChannels(Transform):
    """Replicate a grayscale image into ``out_channels`` identical channels (``C = 1 → k``).

    Deterministic; it lets 1-channel domains feed a model built for 3-channel inputs.
    """

    def __init__(
        self,
        out_channels: int = 3,
        *,
        p: float = 1.0,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=p, bounds=bounds, seed=seed, check_bounds=check_bounds)
        self.out_channels = check_positive_int(out_channels, "out_channels")

    def out_channels_for(self, channels: int) -> int:
        return self.out_channels

    def _validate_shape(self, shape: Shape4) -> None:
        if shape[1] not in (1, self.out_channels):
            raise ValueError(
                f"RepeatChannels({self.out_channels}) needs 1-channel (or already "
                f"{self.out_channels}-channel) inputs, got {shape[1]} channels"
            )

    def _sample(self, shape: Shape4, generator: torch.Generator) -> Params:
        return {}

    def _identity_params(self, shape: Shape4) -> Params:
        return {}

    def _is_identity(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros_like(params["apply"])

    def _apply(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return x.expand(-1, self.out_channels, -1, -1).clone()


class Compose(Transform):
    """Apply ``transforms`` in order: ``T = T_k ∘ … ∘ T_1``, each with its own probability ``p``.

    The parameters are the children's, flattened with the child's position as prefix
    (``"0.apply"``, ``"0.angle"``, ``"1.apply"``, …). All children draw from the one generator
    of the call (or the Compose's own), so a Compose with a fixed seed is reproducible.
    Inputs are validated once, against the Compose's ``bounds``; each child clamps into its own.

    Derived in the book, section :ref:`sec-augment-protocol` of chapter *Neural data augmentation*.
    """

    def __init__(
        self,
        transforms: Sequence[Transform],
        *,
        bounds: Sequence[float] = (0.0, 1.0),
        seed: int | None = None,
        check_bounds: bool = True,
    ) -> None:
        super().__init__(p=1.0, bounds=bounds, seed=seed, check_bounds=check_bounds)
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Compose expects Transform objects, got {type(t).__name__} at position {i}"
                )
        self.transforms = transforms

    def out_channels_for(self, channels: int) -> int:
        for t in self.transforms:
            channels = t.out_channels_for(channels)
        return channels

    def _shapes(self, shape: Shape4) -> list[Shape4]:
        shapes = []
        for t in self.transforms:
            t._validate_shape(shape)
            shapes.append(shape)
            shape = (shape[0], t.out_channels_for(shape[1]), shape[2], shape[3])
        return shapes

    def _validate_shape(self, shape: Shape4) -> None:
        self._shapes(shape)

    def _draw(self, shape: Shape4, generator: torch.Generator) -> Params:
        params: Params = {}
        for i, (t, s) in enumerate(zip(self.transforms, self._shapes(shape), strict=True)):
            params.update({f"{i}.{k}": v for k, v in t._draw(s, generator).items()})
        return params

    def _identity_all(self, shape: Shape4) -> Params:
        params: Params = {}
        for i, (t, s) in enumerate(zip(self.transforms, self._shapes(shape), strict=True)):
            params.update({f"{i}.{k}": v for k, v in t._identity_all(s).items()})
        return params

    def _apply(self, x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        for i, t in enumerate(self.transforms):
            prefix = f"{i}."
            x = t._apply(x, {k[len(prefix):]: v for k, v in params.items()
                             if k.startswith(prefix)})
        if not self.transforms:
            x = x.clone()
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"
