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
file is written to a temporary name and renamed, so a run killed while saving (or a full disk)
leaves the previous checkpoint intact.

Loading is all or nothing: :func:`read_checkpoint` reads and checks the file without touching
any object, and :func:`restore_checkpoint` first checks the saved state against the model
(every key and shape) and the optimizer, then applies it, and puts everything back (model,
optimizer, scheduler, components, generator and global RNGs) if any step fails.
:func:`load_checkpoint` does both. Every failure is a :class:`CheckpointError` naming the file
and the cause (truncated, not a checkpoint, another architecture, missing state).
"""

from __future__ import annotations

import copy
import numbers
import os
import pickle
import random
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "advbook-checkpoint-v1"

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or does not fit the objects it should restore."""


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` read: epoch, history, extra state, the raw dict, the file."""

    epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    components: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    path: Path | None = None


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
    _write(path, payload)
    return path


def _write(path: Path, payload: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file renamed over ``path``; errors keep the old file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        previous = ("the previous checkpoint there is intact" if path.is_file()
                    else "no checkpoint was written")
        cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise OSError(f"could not write the checkpoint {path} ({type(exc).__name__}: {cause}; "
                      f"is the disk full?); {previous}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _truncated(path: Path) -> bool:
    """Whether ``path`` starts like a zip file (what ``torch.save`` writes) but is cut short."""
    with path.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return False
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is not None
    except (zipfile.BadZipFile, OSError, EOFError):
        return True


def _torch_load(path: Path, map_location: str | torch.device) -> object:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not an advbook checkpoint: it holds objects that weights_only loading "
            f"refuses ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # torch.load raises anything at all on a bad file
        if _truncated(path):
            raise CheckpointError(f"{path} is truncated or corrupt (cut short while it was "
                                  "written?); it cannot be read") from exc
        raise CheckpointError(f"{path} is not a checkpoint file (torch.load fails with "
                              f"{type(exc).__name__}: {exc})") from exc


def read_checkpoint(path: PathLike, *,
                    map_location: str | torch.device | None = None) -> Checkpoint:
    """Read and check a checkpoint file without restoring anything.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated, or not an advbook checkpoint.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = _torch_load(path, map_location if map_location is not None else "cpu")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        what = (f"a torch file of another kind (keys {sorted(map(str, raw))[:5]})"
                if isinstance(raw, dict) else f"a torch file holding a {type(raw).__name__}")
        raise CheckpointError(
            f"{path} is not an advbook checkpoint (expected format {FORMAT!r}, found {what}); "
            f"write it with advbook.checkpoint.save_checkpoint")
    epoch = raw.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not isinstance(
            raw.get("model"), Mapping):
        raise CheckpointError(f"{path} is damaged: it lacks the epoch or the model state")
    return Checkpoint(epoch=epoch, history=[dict(r) for r in raw.get("history", [])],
                      components=dict(raw.get("components", {})),
                      meta=dict(raw.get("meta", {})), raw=raw, path=path)


def _check_model(path: object, saved: Mapping[str, Any], model: nn.Module) -> None:
    """Raise unless ``saved`` has exactly the keys of ``model.state_dict()``, with its shapes."""
    now = model.state_dict()
    missing = [k for k in now if k not in saved]
    unexpected = [k for k in saved if k not in now]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"the model has {len(missing)} key(s) the checkpoint lacks "
                         f"(first {missing[0]!r})")
        if unexpected:
            parts.append(f"the checkpoint has {len(unexpected)} key(s) the model lacks "
                         f"(first {unexpected[0]!r})")
        raise CheckpointError(f"{path} holds another architecture: {'; '.join(parts)}")
    for key, value in now.items():
        old = saved[key]
        if isinstance(value, torch.Tensor) and (
                not isinstance(old, torch.Tensor) or old.shape != value.shape):
            shape = tuple(old.shape) if isinstance(old, torch.Tensor) else type(old).__name__
            raise CheckpointError(
                f"{path} holds another architecture: size mismatch for {key!r}: the checkpoint "
                f"has {shape}, the model {tuple(value.shape)}")


def _check_optimizer(path: object, saved: object, optimizer: torch.optim.Optimizer) -> None:
    """Raise unless ``saved`` is the state of an optimizer like ``optimizer`` (groups, shapes)."""
    if saved is None:
        raise CheckpointError(f"{path} holds no optimizer state")
    groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
    state = saved.get("state") if isinstance(saved, Mapping) else None
    if not isinstance(groups, list) or not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: the optimizer state is damaged")
    sizes = [len(g.get("params", [])) for g in groups]
    now_sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != now_sizes:
        raise CheckpointError(f"{path}: the optimizer state is for parameter groups of sizes "
                              f"{sizes}, the optimizer has {now_sizes}")
    for i, (old, new) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        foreign = sorted(set(old) - set(new) - {"params", "initial_lr"})
        if foreign:
            raise CheckpointError(f"{path}: the optimizer state is of another kind of optimizer "
                                  f"than {type(optimizer).__name__} (group {i} has {foreign})")
        for pid, param in zip(old["params"], new["params"], strict=True):
            for name, value in state.get(pid, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and not _fits(value, param):
                    raise CheckpointError(
                        f"{path}: the optimizer's {name!r} of parameter {pid} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(param.shape)}")


def _fits(value: torch.Tensor, param: torch.Tensor) -> bool:
    """Whether ``value`` broadcasts to ``param``'s shape (elementwise or factored state)."""
    if value.ndim > param.ndim:
        return False
    return all(a in (1, b) for a, b in zip(value.shape[::-1], param.shape[::-1], strict=False))


def _snapshot(model: nn.Module | None, optimizer: torch.optim.Optimizer | None, scheduler: Any,
              generator: torch.Generator | None,
              components: Mapping[str, Any]) -> Callable[[], None]:
    """Copies of everything a restore changes; the returned function puts them back."""
    model_state = ({k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor)
                    else copy.deepcopy(v) for k, v in model.state_dict().items()}
                   if model is not None else None)
    opt_state = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    sched_state = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None
    comp_states = {k: copy.deepcopy(_state_of(v)) for k, v in components.items()}
    rng = get_rng_state(generator)

    def undo() -> None:
        if model is not None and model_state is not None:
            model.load_state_dict(model_state)
        if optimizer is not None and opt_state is not None:
            optimizer.load_state_dict(opt_state)
        if scheduler is not None:
            scheduler.load_state_dict(sched_state)
        for name, obj in components.items():
            try:
                obj.load_state_dict(comp_states[name])
            except Exception:  # the one that failed to load may fail again
                pass
        set_rng_state(rng, generator)

    return undo


def restore_checkpoint(
    ck: Checkpoint,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    components: Mapping[str, Any] | None = None,
    restore_rng: bool = True,
) -> None:
    """Restore what :func:`read_checkpoint` read into the objects passed: all or nothing.

    The saved state is checked first (model keys and shapes, optimizer groups and state shapes,
    presence of the optimizer/scheduler state); if applying it still fails, the model,
    optimizer, scheduler, components, ``generator`` and global RNGs are put back as they were.
    """
    from .distributed import unwrap

    raw, path = ck.raw, ck.path or "the checkpoint"
    model = unwrap(model) if model is not None else None
    if model is not None:
        _check_model(path, raw["model"], model)
    if optimizer is not None:
        _check_optimizer(path, raw.get("optimizer"), optimizer)
    if scheduler is not None and raw.get("scheduler") is None:
        raise CheckpointError(f"{path} holds no scheduler state")
    loaders = {k: v for k, v in (components or {}).items()
               if callable(getattr(v, "load_state_dict", None)) and k in ck.components}
    undo = _snapshot(model, optimizer, scheduler, generator, loaders)
    try:
        if model is not None:
            model.load_state_dict(raw["model"])
        if optimizer is not None:
            optimizer.load_state_dict(raw["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(raw["scheduler"])
        for name, obj in loaders.items():
            obj.load_state_dict(ck.components[name])
        if restore_rng:
            set_rng_state(raw.get("rng", {}), generator)
    except Exception as exc:
        undo()
        raise CheckpointError(f"{path} could not be restored ({type(exc).__name__}: {exc}); "
                              "nothing was changed") from exc


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
    ``load_state_dict`` gets its saved state. Nothing is changed unless all of it succeeds
    (:func:`read_checkpoint`, then :func:`restore_checkpoint`).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: (a ``ValueError``) the file is empty, truncated or not an advbook
            checkpoint, holds another architecture (the first differing key and its shapes),
            or lacks the optimizer or scheduler state asked for.
    """
    if map_location is None and model is not None:
        map_location = next((p.device for p in model.parameters()), torch.device("cpu"))
    ck = read_checkpoint(path, map_location=map_location)
    restore_checkpoint(ck, model=model, optimizer=optimizer, scheduler=scheduler,
                       generator=generator, components=components, restore_rng=restore_rng)
    return ck
