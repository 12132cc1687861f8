"""The one training loop of the book, and evaluation helpers.

Every chapter trains through :func:`fit`. Later chapters plug in without rewriting the loop:

* ``batch_hook(model, x, y) -> (x, y)`` transforms each training batch before the loss
  (augmentation, input noise, adversarial examples);
* ``objective(model, x, y) -> loss`` or ``(loss, logits)`` replaces the default cross-entropy
  (TRADES, weight noise, explicit penalties);
* ``epoch_callbacks``: ``callback(model, epoch) -> dict | None`` adds columns to the history
  (robust accuracy, sharpness, a catastrophic-overfitting detector).

The history comes back as a :class:`pandas.DataFrame`, one row per epoch. Long runs can write a
checkpoint after every epoch and resume from it (``checkpoint=``, ``resume=``;
:mod:`advbook.checkpoint`), and the same call trains data-parallel under ``torchrun``
(:mod:`advbook.distributed`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import TqdmExperimentalWarning, TqdmWarning

from .utils import progress_enabled

with warnings.catch_warnings():
    # Without ipywidgets, tqdm.auto warns once and falls back to the text bar; that is fine.
    warnings.simplefilter("ignore", TqdmWarning)
    warnings.simplefilter("ignore", TqdmExperimentalWarning)
    from tqdm.auto import tqdm

__all__ = ["BatchHook", "EpochCallback", "Objective", "evaluate", "fit", "predict"]

BatchHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"
]
EpochCallback = Callable[[nn.Module, int], "Mapping[str, float] | None"]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _check_xy(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{what}: x and y must be tensors, got {type(x).__name__}, "
                        f"{type(y).__name__}")
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{what}: x and y must have the same number of samples, got x {tuple(x.shape)} and "
            f"y {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{what}: empty dataset")


def _default_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, without gradients.

    The model's train/eval mode is restored afterwards. The result lies on the model's device.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``: ``{"loss": ..., "accuracy": ...}``."""
    _check_xy(x, y, "evaluate")
    logits = predict(model, x, batch_size=batch_size)
    y = y.to(logits.device)
    loss = loss_fn(logits, y)
    acc = (logits.argmax(dim=1) == y).float().mean()
    return {"loss": float(loss), "accuracy": float(acc)}


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    objective: Objective | None = None,
    batch_hook: BatchHook | None = None,
    epoch_callbacks: Sequence[EpochCallback] = (),
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    distributed: bool | None = None,
) -> pd.DataFrame:
    """Train ``model`` on ``(x, y)`` with mini-batch SGD and return the per-epoch history.

    Args:
        model: any module returning logits ``(N, K)`` (or predictions, with a custom
            ``objective``). It is trained in place on its own device; batches of ``x`` are moved
            there, so ``x`` may stay on the CPU.
        epochs, batch_size: the schedule; batches are a fresh permutation each epoch drawn from
            a ``torch.Generator`` seeded with ``seed`` (the last, smaller batch is kept).
            ``epochs`` counts from the start of the run, also when resuming.
        optimizer: defaults to ``Adam(lr=lr, weight_decay=weight_decay)``.
        objective: ``objective(model, xb, yb)`` returning the loss, or ``(loss, logits)`` so that
            training accuracy can be reported. Default: cross-entropy on ``model(xb)``.
        batch_hook: ``batch_hook(model, xb, yb) -> (xb, yb)`` applied to every training batch
            before the objective (called with the model in train mode).
        epoch_callbacks: called after each epoch as ``callback(model, epoch)``; a returned
            mapping is added to that epoch's row.
        val: optional ``(x_val, y_val)`` evaluated after every epoch (``val_loss``, ``val_acc``).
        scheduler: stepped once per epoch.
        progress: show a ``tqdm`` bar (default: see :func:`advbook.utils.progress_enabled`).
        checkpoint: a file to write after every epoch with
            :func:`advbook.checkpoint.save_checkpoint`: model, optimizer, scheduler, epoch, the
            batch-order generator and the global RNG states, the ``state_dict()`` of the
            objective, batch hook and epoch callbacks that have one, and the history so far.
        resume: continue from ``checkpoint`` if that file exists (otherwise start afresh):
            everything listed above is restored and training goes on with epoch ``k+1`` up to
            ``epochs``. On the CPU the result is bit-for-bit that of an uninterrupted run.
            Without ``resume`` an existing checkpoint file is overwritten.
        distributed: train data-parallel over the ranks of the initialised process group
            (see :mod:`advbook.distributed`; launch with ``torchrun``). ``None`` (default):
            whenever a process group with more than one rank exists. Each rank then trains on
            its shard of every epoch's permutation (``batch_size`` is per rank), the objective
            receives the ``DistributedDataParallel`` wrapper while batch hooks and callbacks
            receive the bare model, ``train_loss``/``train_acc`` are averaged over all ranks,
            buffers (BatchNorm statistics) are synchronised from rank 0 after every epoch, and
            only rank 0 shows progress and writes the checkpoint.

    Returns:
        A DataFrame with columns ``epoch, train_loss, train_acc, [val_loss, val_acc], seconds``
        and whatever the callbacks return.
    """
    from . import distributed as dist_mod
    from .checkpoint import load_checkpoint, save_checkpoint

    _check_xy(x, y, "fit")
    if val is not None:
        _check_xy(val[0], val[1], "fit(val=...)")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike), got "
                        f"{type(checkpoint).__name__}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path> to resume from")
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be a bool or None, got {type(distributed).__name__}")
    if distributed and not dist_mod.is_distributed():
        raise ValueError(
            "distributed=True needs an initialised process group with more than one rank; "
            "launch with 'torchrun --nproc_per_node=N' and call advbook.distributed."
            "init_from_env() first"
        )
    use_ddp = dist_mod.is_distributed() if distributed is None else distributed
    rank, world = (dist_mod.get_rank(), dist_mod.get_world_size()) if use_ddp else (0, 1)
    base = dist_mod.unwrap(model) if use_ddp else model
    device = _model_device(model)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    objective = objective or _default_objective
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    rows: list[dict[str, float]] = []
    components = {"objective": objective, "batch_hook": batch_hook}
    components |= {f"epoch_callbacks[{i}]": cb for i, cb in enumerate(epoch_callbacks)}
    meta = {"n": n, "batch_size": batch_size, "seed": seed, "world_size": world}
    first = 1
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        ck = load_checkpoint(checkpoint, model=base, optimizer=optimizer, scheduler=scheduler,
                             generator=generator, components=components)
        if ck.epoch > epochs:
            raise ValueError(f"the checkpoint {checkpoint} was written after epoch {ck.epoch}, "
                             f"beyond epochs={epochs}; pass epochs >= {ck.epoch}")
        changed = {k: (ck.meta.get(k), v) for k, v in meta.items() if ck.meta.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            warnings.warn(f"resuming from {checkpoint} with a different setup ({what}); the "
                          "run will not repeat an uninterrupted one", RuntimeWarning, stacklevel=2)
        first = ck.epoch + 1
        rows = ck.history
    net = dist_mod.wrap(base, device) if use_ddp else model
    main = dist_mod.is_main_process()  # rank 0 (also when not training data-parallel)
    show = progress_enabled(progress) and main
    bar = tqdm(range(first, epochs + 1), desc="epochs", disable=not show, leave=False,
               initial=first - 1, total=epochs)
    for epoch in bar:
        net.train()
        start = time.perf_counter()
        perm = torch.randperm(n, generator=generator)
        if use_ddp:
            perm = dist_mod.shard_indices(perm, rank, world)
        m = perm.shape[0]
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device)
        counted = 0
        for i in range(0, m, batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx.to(x.device)].to(device, non_blocking=True)
            yb = y[idx.to(y.device)].to(device, non_blocking=True)
            if batch_hook is not None:
                xb, yb = batch_hook(base, xb, yb)
                net.train()
            out = objective(net, xb, yb)
            loss, logits = out if isinstance(out, tuple) else (out, None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(xb)
            if logits is not None and logits.ndim == 2 and yb.ndim == 1:
                total_correct += (logits.detach().argmax(1) == yb).sum()
                counted += len(xb)
        if scheduler is not None:
            scheduler.step()
        if use_ddp:
            dist_mod.broadcast_buffers(base)
            sums = dist_mod.all_reduce_sum(torch.stack([
                total_loss.double(), total_correct.double(),
                torch.tensor(float(m), dtype=torch.float64, device=device),
                torch.tensor(float(counted), dtype=torch.float64, device=device),
            ])).tolist()
            loss_sum, correct, seen, counted_all = sums
            train_loss = loss_sum / seen
            train_acc = correct / counted_all if counted_all else float("nan")
        else:
            train_loss = float(total_loss) / n
            train_acc = float(total_correct) / counted if counted else float("nan")
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
        if val is not None:
            metrics = evaluate(base, val[0], val[1])
            row["val_loss"], row["val_acc"] = metrics["loss"], metrics["accuracy"]
        row["seconds"] = time.perf_counter() - start
        for callback in epoch_callbacks:
            extra = callback(base, epoch)
            if extra:
                row.update(extra)
        rows.append(row)
        if checkpoint is not None:
            if main:
                save_checkpoint(checkpoint, model=base, epoch=epoch, optimizer=optimizer,
                                scheduler=scheduler, generator=generator, history=rows,
                                components=components, meta=meta)
            if use_ddp:
                dist_mod.barrier()
        bar.set_postfix(loss=f"{row['train_loss']:.3f}")
    del net
    model.train()
    return pd.DataFrame(rows, columns=_columns(rows, val is not None))


def _columns(rows: Iterable[Mapping[str, float]], has_val: bool) -> list[str]:
    cols = ["epoch", "train_loss", "train_acc"] + (["val_loss", "val_acc"] if has_val else [])
    cols.append("seconds")
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols
