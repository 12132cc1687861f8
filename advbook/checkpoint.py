"""Checkpoints of a training run: model, optimizer, epoch, random-number states and history.

A checkpoint is one file written with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, which only unpickles tensors and plain containers (no code
runs on load). It holds

* ``model`` and ``optimizer`` (and ``scheduler``) state dicts,
* ``epoch``, the number of finished epochs,
* ``rng``: the state of the loop's own ``torch.Generator`` (the batch order), of the global
  PyTorch RNG on the CPU and every initialised GPU (dropout, attacks without a generator), of
  Python's :mod:`random` and of NumPy's legacy global RNG,
* ``components``: the ``state_dict()`` of the objective, batch hook and epoch callbacks that
  have one (e.g. the generator of an adversarial-training recipe),
* ``history``: the per-epoch rows so far, and ``meta``: anything else (plain values only).

Restoring all of this before epoch ``k+1`` makes a resumed run repeat the uninterrupted one bit
for bit on the CPU (:func:`advbook.train.fit` with ``checkpoint=`` and ``resume=True``). The
file is written to a temporary name and renamed, so a run killed while saving leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import numbers
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "Checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "advbook-checkpoint-v1"

PathLike = str | os.PathLike[str]


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read: the epoch, history, extra state and the raw dict."""

    epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _plain(value: object) -> object:
    """A value ``torch.load(weights_only=True)`` can read back: numbers, strings, ``None``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return repr(value)


def get_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The states of ``generator`` and of the global RNGs (torch CPU and CUDA, Python, NumPy)."""
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 - the global RNG is what we restore
    if not isinstance(np_state, tuple):  # a dict only if the global RNG is not MT19937
        raise TypeError("numpy's global RNG is not an MT19937 RandomState; cannot save its state")
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    # torch.cuda.is_initialized has no annotations in PyTorch's sources
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` returned (entries that are missing are skipped).

    The state tensors may live on any device (``torch.load`` with a CUDA ``map_location`` puts
    them on the GPU); they are read from host copies, as the generators require.
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state(  # noqa: NPY002
            (s["name"], s["keys"].cpu().numpy().astype(np.uint32), s["pos"], s["has_gauss"],
             s["cached_gaussian"])
        )
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def _state_of(component: object) -> Any:
    fn = getattr(component, "state_dict", None)
    return fn() if callable(fn) else None


def save_checkpoint(
    path: PathLike,
    *,
    model: nn.Module,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    components: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of a run after ``epoch`` finished epochs; return its path.

    Args:
        path: the file (its folder is created). Written atomically (temporary file + rename).
        model: saved through ``state_dict()``; a ``DistributedDataParallel`` wrapper is
            unwrapped so the file loads into the bare model.
        epoch: finished epochs (``≥ 0``).
        optimizer, scheduler: saved through their ``state_dict()`` when given.
        generator: the loop's generator; its state goes with the global RNG states.
        history: per-epoch rows (values converted to plain numbers/strings).
        components: name → object; the ``state_dict()`` of each object that has one is saved
            (e.g. ``{"objective": objective}``). Objects without one are skipped.
        meta: extra plain values (configuration, versions).
    """
    from .distributed import unwrap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    comp_states = {}
    for name, obj in (components or {}).items():
        st = _state_of(obj)
        if st is not None:
            comp_states[str(name)] = st
    payload: dict[str, Any] = {
        "format": FORMAT,
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": get_rng_state(generator),
        "components": comp_states,
        "history": [_plain(dict(row)) for row in history],
        "meta": _plain(dict(meta or {})),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(
    path: PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    components: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device | None = None,
) -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and restore what is passed.

    The model is loaded strictly (the architectures must match) and onto its own device;
    optimizer state follows the parameters' devices. With ``restore_rng`` the global RNG states
    and ``generator`` are set to the saved ones, and every object in ``components`` with a
    ``load_state_dict`` gets its saved state.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an advbook checkpoint.
    """
    from .distributed import unwrap

    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if map_location is None and model is not None:
        map_location = next((p.device for p in model.parameters()), torch.device("cpu"))
    raw = torch.load(path, map_location=map_location if map_location is not None else "cpu",
                     weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an advbook checkpoint (expected format {FORMAT!r}); write it with "
            f"advbook.checkpoint.save_checkpoint"
        )
    if model is not None:
        unwrap(model).load_state_dict(raw["model"])
    if optimizer is not None:
        if raw.get("optimizer") is None:
            raise ValueError(f"{path} holds no optimizer state")
        optimizer.load_state_dict(raw["optimizer"])
    if scheduler is not None:
        if raw.get("scheduler") is None:
            raise ValueError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(raw["scheduler"])
    if restore_rng:
        set_rng_state(raw.get("rng", {}), generator)
    saved = raw.get("components", {})
    for name, obj in (components or {}).items():
        loader = getattr(obj, "load_state_dict", None)
        if callable(loader) and name in saved:
            loader(saved[name])
    history = [dict(r) for r in raw.get("history", [])]
    return Checkpoint(epoch=int(raw["epoch"]), history=history, components=dict(saved),
                      meta=dict(raw.get("meta", {})), raw=raw)
