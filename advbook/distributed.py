"""Data-parallel training helpers: the same entry point runs alone or under ``torchrun``.

Launched as ``torchrun --nproc_per_node=N script.py`` (or ``python -m torch.distributed.run``),
every process finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment. :func:`init_from_env` turns them into a process group
(``nccl`` when the process owns a GPU, ``gloo`` on the CPU) and :func:`advbook.train.fit` then
detects the group and

* copies rank 0's parameters and buffers to every rank (:func:`broadcast_parameters`) and
  averages the gradients over the ranks after every backward pass (:func:`average_gradients`),
  which is what :class:`~torch.nn.parallel.DistributedDataParallel` does, without a wrapper:
  objectives and recipes always receive the bare model,
* gives each rank its own shard of every epoch's permutation (:func:`shard_indices`, the tensor
  equivalent of :class:`torch.utils.data.DistributedSampler`),
* lets only rank 0 print and write files (:func:`is_main_process`).

With ``N`` ranks and a per-rank batch of ``B`` one optimizer step sees ``N·B`` samples, and every
rank takes ``⌈⌈n/N⌉/B⌉`` steps per epoch. Run as a plain ``python`` process, nothing here does
anything and the helpers report rank 0 of a world of size 1.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "broadcast_buffers",
    "broadcast_parameters",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "shard_indices",
    "unwrap",
    "wrap",
]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device`` and ``backend``.

    ``initialized_here`` is ``True`` when :func:`init_from_env` created the process group (so
    :func:`cleanup` should destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    initialized_here: bool

    @property
    def is_main(self) -> bool:
        """``True`` on rank 0, the one process that prints and writes files."""
        return self.rank == 0


def is_distributed() -> bool:
    """``True`` inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (``0`` outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of ranks (``1`` outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """``True`` on rank 0 and in a plain single process."""
    return get_rank() == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def init_from_env(
    backend: str | None = None,
    *,
    device: str | torch.device | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Initialise the default process group from the ``torchrun`` environment, if there is one.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is a no-op that describes a single
    process. Otherwise ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` must be set too. The
    backend defaults to ``nccl`` when CUDA is available (each rank then uses the GPU
    ``cuda:LOCAL_RANK``) and ``gloo`` on the CPU. A group that already exists is reused.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (choose as above).
        device: force the device (e.g. ``"cpu"`` to test ``gloo`` on a GPU machine).
        timeout_s: timeout of collective operations.
    """
    if backend is not None and backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or None, got {backend!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number, got {timeout_s!r}")
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    else:
        dev = torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                        str(dist.get_backend()), False)
    if world_size <= 1:
        return DistInfo(0, 1, local_rank, dev, None, False)
    missing = [k for k in _ENV if not os.environ.get(k)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with "
            f"'torchrun --nproc_per_node=N ...' or set the variables of env:// initialisation"
        )
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError(f"backend 'nccl' needs a CUDA device, got device {dev}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend, True)


def cleanup(info: DistInfo | None = None) -> None:
    """Destroy the process group if ``info`` says :func:`init_from_env` created it.

    Without ``info``, destroys any initialised default group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if info is None or info.initialized_here:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard_indices(
    indices: torch.Tensor, rank: int, world_size: int, *, drop_last: bool = False
) -> torch.Tensor:
    """This rank's share of ``indices``, exactly as :class:`DistributedSampler` splits them.

    With ``n`` indices and ``W`` ranks, ``drop_last=False`` pads the list by repeating its head
    to ``W·⌈n/W⌉`` entries, and ``drop_last=True`` truncates it to ``W·⌊n/W⌋``; rank ``r`` then
    takes every ``W``-th entry starting at ``r``, ``indices[r], indices[r+W], …``. The shards
    have equal length (so every rank takes the same number of optimizer steps), are disjoint
    up to the padding and cover the list.
    """
    if not isinstance(indices, torch.Tensor) or indices.ndim != 1:
        raise TypeError("indices must be a 1-D tensor")
    for name, v in (("rank", rank), ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    n = indices.shape[0]
    if drop_last:
        total = (n // world_size) * world_size
        padded = indices[:total]
    else:
        total = -(-n // world_size) * world_size
        if total > n:
            if n == 0:
                raise ValueError("cannot shard an empty index list")
            reps = -(-(total - n) // n)
            padded = torch.cat([indices, indices.repeat(reps)[: total - n]])
        else:
            padded = indices
    return padded[rank:total:world_size]


def wrap(model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Wrap ``model`` in :class:`DistributedDataParallel` inside a process group.

    Returns ``model`` unchanged outside a process group, or when it is already wrapped. The
    wrapper broadcasts rank 0's parameters and buffers, so every rank starts identical. For
    loops of your own: :func:`advbook.train.fit` does not wrap (it synchronises with
    :func:`broadcast_parameters` and :func:`average_gradients`, so that objectives see the bare
    model).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not is_distributed() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``model``).

    :func:`advbook.train.fit` unwraps a wrapped model it is given, so objectives, recipes and
    callbacks never receive a wrapper; use this in loops of your own that wrap.
    """
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over every rank (a copy; ``t`` itself is not modified)."""
    out = t.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place.

    ``DistributedDataParallel`` broadcasts buffers at the start of each forward pass, so after
    the last step of an epoch each rank still holds the statistics of its own last batch; this
    makes them equal before evaluation or checkpointing.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for b in unwrap(model).buffers():
            dist.broadcast(b, src=src)


def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, in place (so all start equal)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            dist.broadcast(t, src=src)


def average_gradients(model: nn.Module) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks, in place.

    This is the gradient synchronisation of ``DistributedDataParallel`` (each rank's gradient
    divided by the world size, then summed), done once per step in one flat buffer. Every rank
    must have gradients for the same parameters; a parameter without a gradient on every rank
    keeps ``None``. Raises ``RuntimeError`` when the ranks disagree about which parameters
    have gradients (their models or objectives differ).
    """
    if not is_distributed():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32,
                            device=params[0].device)
    counts = all_reduce_sum(has_grad)
    world = get_world_size()
    if bool(((counts != 0) & (counts != world)).any()):
        raise RuntimeError("average_gradients: the ranks computed gradients for different "
                           "parameters; every rank must run the same model and objective")
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads]).div_(world)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
