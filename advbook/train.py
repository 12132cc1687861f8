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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist_mod
from ._core.checks import check_positive_int
from ._core.devices import model_device
from ._core.guard import eval_mode
from ._core.progress import progress_enabled, tqdm
from ._core.types import LossFn
from .checkpoint import Checkpoint, read_checkpoint, restore_checkpoint, save_checkpoint

__all__ = [
    "BatchHook", "EpochCallback", "NonFiniteLossError", "Objective", "evaluate", "fit", "predict",
]

BatchHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"
]
EpochCallback = Callable[[nn.Module, int], "Mapping[str, float] | None"]


class NonFiniteLossError(FloatingPointError):
    """:func:`fit` met a NaN or infinite loss or gradient (or weights), and stopped."""


def _check_xy(x: object, y: object, what: str) -> None:
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

    ``x`` must have at least one row (``ValueError`` otherwise). Every sub-module's train/eval
    flag is restored afterwards (a layer the caller froze in eval mode stays in eval mode). The
    result lies on the model's device.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x has no rows (shape {tuple(x.shape)}); predict needs at least one "
                         "sample (the number of outputs is only known from a forward pass)")
    device = model_device(model)
    with eval_mode(model), torch.no_grad():
        outs = [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1000,
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on ``(x, y)``: ``{"loss": ..., "accuracy": ...}``."""
    _check_xy(x, y, "evaluate")
    logits = predict(model, x, batch_size=batch_size)
    y = y.to(logits.device)
    loss = loss_fn(logits, y)
    acc = (logits.argmax(dim=1) == y).float().mean()
    return {"loss": float(loss), "accuracy": float(acc)}


# ------------------------------------------------------------------------------ fit, in steps
@dataclass(frozen=True)
class _Ranks:
    """Who trains: ``world`` processes data-parallel (``enabled``), this one being ``rank``."""

    enabled: bool
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class _Run:
    """Everything one epoch of :func:`fit` needs, built once by :func:`_prepare`."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    optimizer: torch.optim.Optimizer
    objective: Objective
    batch_hook: BatchHook | None
    generator: torch.Generator
    device: torch.device
    ranks: _Ranks
    components: dict[str, object] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    nonfinite: str = "raise"
    overrides: dict[str, list[object]] = field(default_factory=dict)


@dataclass
class _EpochSums:
    """Sums over one epoch's batches on this rank: loss·size, correct predictions, sizes."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    counted: int = 0
    skipped: int = 0


def _check_fit_args(
    x: torch.Tensor, y: torch.Tensor, val: object,
    epochs: int, batch_size: int, checkpoint: object, resume: object,
) -> None:
    _check_xy(x, y, "fit")
    if val is not None:
        pair = tuple(val) if isinstance(val, tuple | list) else None
        if pair is None or len(pair) != 2:
            what = f"{len(pair)} items" if pair is not None else type(val).__name__
            raise ValueError(f"val must be a pair (x_val, y_val), got {what}")
        _check_xy(pair[0], pair[1], "fit(val=...)")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike), got "
                        f"{type(checkpoint).__name__}")
    if not isinstance(resume, bool) and resume != "override":
        raise TypeError(f"resume must be a bool or 'override', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path> to resume from")


def _check_run_options(seed: object, nonfinite: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")


def _ranks(distributed: object) -> _Ranks:
    """Whether to train data-parallel: ``distributed`` if given, else whether a group exists."""
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be a bool or None, got {type(distributed).__name__}")
    if distributed and not dist_mod.is_distributed():
        raise ValueError(
            "distributed=True needs an initialised process group with more than one rank; "
            "launch with 'torchrun --nproc_per_node=N' and call advbook.distributed."
            "init_from_env() first"
        )
    if not (dist_mod.is_distributed() if distributed is None else distributed):
        return _Ranks(enabled=False)
    return _Ranks(enabled=True, rank=dist_mod.get_rank(), world=dist_mod.get_world_size())


_RUN_KEYS = ("optimizer", "scheduler", "objective", "batch_hook")


def _plain_setting(value: object, key: str) -> object:
    """``value`` as a plain value a checkpoint stores (tuples become lists, paths strings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain_setting(v, key) for v in value]
    raise TypeError(f"settings[{key!r}] must be a plain value (str, int, float, bool, None or a "
                    f"list of them), got {type(value).__name__}")


def _own_repr(obj: object) -> str | None:
    """``repr(obj)`` when it describes the object's settings (no memory address in it)."""
    text = repr(obj) if obj is not None else None
    return None if text is None or " at 0x" in text or " object at " in text else text


def _settings(optimizer: torch.optim.Optimizer, scheduler: object, objective: object,
              batch_hook: object, settings: Mapping[str, object] | None) -> dict[str, object]:
    """What makes the run's numbers: optimizer hyper-parameters, components, user settings."""
    out: dict[str, object] = {"optimizer": type(optimizer).__name__,
                              "scheduler": type(scheduler).__name__ if scheduler else None,
                              "objective": _own_repr(objective),
                              "batch_hook": _own_repr(batch_hook)}
    for i, group in enumerate(optimizer.param_groups):
        for k, v in group.items():
            if k != "params":
                out[f"param_groups[{i}].{k}"] = _plain_setting(v, k) if _is_plain(v) else repr(v)
    for k, v in (settings or {}).items():
        if not isinstance(k, str) or k in _RUN_KEYS or k.startswith("param_groups["):
            raise ValueError(f"settings key {k!r} is not a str or is one fit records itself")
        out[k] = _plain_setting(v, k)
    return out


def _is_plain(value: object) -> bool:
    try:
        _plain_setting(value, "")
    except TypeError:
        return False
    return True


def _setting_changes(stored: object, now: Mapping[str, object]) -> dict[str, list[object]]:
    """``{key: [stored, now]}`` for every setting that differs (none for an older file)."""
    if not isinstance(stored, Mapping):
        return {}
    keys = list(stored) + [k for k in now if k not in stored]
    absent = "<absent>"
    return {k: [stored.get(k, absent), now.get(k, absent)] for k in keys
            if stored.get(k, absent) != now.get(k, absent)}


def _check_resume(run: _Run, ck: Checkpoint, epochs: int, override: bool) -> list[str]:
    """Refuse a checkpoint beyond ``epochs`` or with other settings; the warnings to give."""
    if ck.epoch > epochs:
        raise ValueError(f"the checkpoint {ck.path} was written after epoch {ck.epoch}, "
                         f"beyond epochs={epochs}; pass epochs >= {ck.epoch}")
    changes = _setting_changes(ck.meta.get("settings"), run.meta["settings"])  # type: ignore[arg-type]
    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
    if changes and not override:
        raise ValueError(f"resuming from {ck.path} with different settings ({listed}); restore "
                         "them, or pass resume='override' to continue with the new ones")
    messages = [f"resuming from {ck.path} with overridden settings ({listed})"] if changes else []
    setup = {k: (ck.meta.get(k), v) for k, v in run.meta.items()
             if k != "settings" and ck.meta.get(k) != v}
    if setup:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in setup.items())
        messages.append(f"resuming from {ck.path} with a different setup ({what}); the run "
                        "will not repeat an uninterrupted one")
    run.overrides = changes
    return messages


def _resume(run: _Run, checkpoint: str | os.PathLike[str], epochs: int,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None,
            override: bool) -> Checkpoint:
    """Check, then restore the state saved in ``checkpoint`` (nothing changes on a failure)."""
    ck = read_checkpoint(checkpoint, map_location=run.device)
    messages = _check_resume(run, ck, epochs, override)
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in run.optimizer.param_groups]
    restore_checkpoint(ck, model=run.model, optimizer=run.optimizer, scheduler=scheduler,
                       generator=run.generator, components=run.components)
    for i, (group, new) in enumerate(zip(run.optimizer.param_groups, fresh, strict=True)):
        for k, v in new.items():
            if f"param_groups[{i}].{k}" in run.overrides:
                group[k] = v  # the new hyper-parameter wins; a scheduler continues from it
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [g.get("initial_lr", g["lr"]) for g in run.optimizer.param_groups]
    for message in messages:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return ck


def _all_finite(loss: torch.Tensor, model: nn.Module, ranks: _Ranks) -> bool:
    """Whether the loss and every gradient are finite, on every rank: one host sync.

    The max-norm of each gradient (NaN if any entry is NaN, never an overflow of finite values)
    is read, not changed.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    device = loss.device
    norms = torch._foreach_norm(grads, float("inf")) if grads else []
    values = torch.cat([loss.detach().float().reshape(-1),
                        *(n.detach().to(device, torch.float32).reshape(1) for n in norms)])
    bad = (~torch.isfinite(values)).any().to(torch.float32)
    if ranks.enabled:
        bad = dist_mod.all_reduce_sum(bad)
    return not bool(bad)


def _train_step(run: _Run, xb: torch.Tensor, yb: torch.Tensor, sums: _EpochSums,
                where: tuple[int, int, int]) -> None:
    """One optimizer step on a batch; adds the batch's loss and accuracy to ``sums``.

    A non-finite loss or gradient raises :class:`NonFiniteLossError` before the step (or, with
    ``nonfinite="skip"``, drops the batch: no step, not counted in the epoch's metrics).
    """
    if run.batch_hook is not None:
        xb, yb = run.batch_hook(run.model, xb, yb)
        run.model.train()
    out = run.objective(run.model, xb, yb)
    loss, logits = out if isinstance(out, tuple) else (out, None)
    run.optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    if not _all_finite(loss, run.model, run.ranks):
        run.optimizer.zero_grad(set_to_none=True)
        if run.nonfinite == "skip":
            sums.skipped += 1
            return
        epoch, batch, batches = where
        raise NonFiniteLossError(
            f"non-finite loss or gradient at epoch {epoch}, batch {batch} of {batches} (loss "
            f"{loss.detach().float().reshape(-1)[:1].item()}); the step was not taken. Check "
            "the data for NaN/inf and the learning rate, or pass nonfinite='skip'")
    if run.ranks.enabled:
        dist_mod.average_gradients(run.model)
    run.optimizer.step()
    sums.loss += loss.detach() * len(xb)
    sums.seen += len(xb)
    if logits is not None and logits.ndim == 2 and yb.ndim == 1:
        sums.correct += (logits.detach().argmax(1) == yb).sum()
        sums.counted += len(xb)


def _train_epoch(run: _Run, epoch: int) -> _EpochSums:
    """One pass over this rank's share of a fresh permutation, in mini-batches."""
    run.model.train()
    perm = torch.randperm(run.x.shape[0], generator=run.generator)
    if run.ranks.enabled:
        perm = dist_mod.shard_indices(perm, run.ranks.rank, run.ranks.world)
    sums = _EpochSums(loss=torch.zeros((), device=run.device),
                      correct=torch.zeros((), device=run.device))
    batches = -(-perm.shape[0] // run.batch_size)
    for i in range(0, perm.shape[0], run.batch_size):
        idx = perm[i : i + run.batch_size]
        xb = run.x[idx.to(run.x.device)].to(run.device, non_blocking=True)
        yb = run.y[idx.to(run.y.device)].to(run.device, non_blocking=True)
        _train_step(run, xb, yb, sums, (epoch, i // run.batch_size + 1, batches))
    if sums.skipped and run.ranks.is_main:
        warnings.warn(f"epoch {epoch}: skipped {sums.skipped} of {batches} batches with a "
                      "non-finite loss or gradient (nonfinite='skip')", RuntimeWarning,
                      stacklevel=3)
    return sums


def _train_metrics(run: _Run, sums: _EpochSums) -> tuple[float, float]:
    """``(train_loss, train_acc)`` of an epoch, averaged over every rank's samples."""
    if not run.ranks.enabled:  # seen is n unless batches were skipped
        loss = float(sums.loss) / sums.seen if sums.seen else float("nan")
        return loss, float(sums.correct) / sums.counted if sums.counted else float("nan")
    dist_mod.broadcast_buffers(run.model)
    device = run.device
    loss_sum, correct, seen, counted = dist_mod.all_reduce_sum(torch.stack([
        sums.loss.double(), sums.correct.double(),
        torch.tensor(float(sums.seen), dtype=torch.float64, device=device),
        torch.tensor(float(sums.counted), dtype=torch.float64, device=device),
    ])).tolist()
    loss = loss_sum / seen if seen else float("nan")
    return loss, correct / counted if counted else float("nan")


def _epoch_row(run: _Run, epoch: int, seconds_since: float,
               val: tuple[torch.Tensor, torch.Tensor] | None,
               epoch_callbacks: Sequence[EpochCallback], sums: _EpochSums) -> dict[str, float]:
    """The history row of ``epoch``: training metrics, validation, time, callback columns."""
    train_loss, train_acc = _train_metrics(run, sums)
    row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
    if sums.skipped:
        row["skipped_batches"] = sums.skipped
    if val is not None:
        metrics = evaluate(run.model, val[0], val[1])
        row["val_loss"], row["val_acc"] = metrics["loss"], metrics["accuracy"]
    row["seconds"] = time.perf_counter() - seconds_since
    for callback in epoch_callbacks:
        extra = callback(run.model, epoch)
        if extra:
            row.update(extra)
    return row


def _save(run: _Run, checkpoint: str | os.PathLike[str], epoch: int, rows: list[dict[str, float]],
          scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """Rank 0 writes the checkpoint of ``epoch``; the other ranks wait for it.

    Non-finite weights or buffers raise :class:`NonFiniteLossError` instead (on every rank;
    they are equal), so the last good checkpoint is never replaced by a broken one.
    """
    state = [t.detach() for t in run.model.state_dict().values()
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    norms = torch._foreach_norm(state, float("inf")) if state else []
    if norms and not bool(torch.isfinite(torch.stack(
            [n.to(run.device, torch.float32) for n in norms])).all()):
        raise NonFiniteLossError(f"the weights are not finite after epoch {epoch}; the "
                                 f"checkpoint {checkpoint} was not overwritten")
    if run.ranks.is_main:
        save_checkpoint(checkpoint, model=run.model, epoch=epoch, optimizer=run.optimizer,
                        scheduler=scheduler, generator=run.generator, history=rows,
                        components=run.components, meta=run.meta)
    if run.ranks.enabled:
        dist_mod.barrier()


def _prepare(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
    optimizer: torch.optim.Optimizer | None, lr: float, weight_decay: float,
    objective: Objective | None, batch_hook: BatchHook | None,
    epoch_callbacks: Sequence[EpochCallback], seed: int, ranks: _Ranks,
    scheduler: object, settings: Mapping[str, object] | None, nonfinite: str,
) -> _Run:
    """The run's state: the bare model, optimizer, objective, batch-order generator, device."""
    if ranks.enabled:
        model = dist_mod.unwrap(model)
        dist_mod.broadcast_parameters(model)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    components: dict[str, object] = {"objective": objective, "batch_hook": batch_hook}
    components |= {f"epoch_callbacks[{i}]": cb for i, cb in enumerate(epoch_callbacks)}
    return _Run(
        model=model, x=x, y=y, batch_size=batch_size, optimizer=optimizer,
        objective=objective or _default_objective, batch_hook=batch_hook,
        generator=torch.Generator().manual_seed(seed), device=model_device(model), ranks=ranks,
        components=components, nonfinite=nonfinite,
        meta={"n": x.shape[0], "batch_size": batch_size, "seed": seed, "world_size": ranks.world,
              "settings": _settings(optimizer, scheduler, objective, batch_hook, settings)},
    )


# long: the signature and docstring document 20 public parameters; the body is 20 lines
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
    resume: bool | Literal["override"] = False,
    distributed: bool | None = None,
    settings: Mapping[str, object] | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
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
            Without ``resume`` an existing checkpoint file is overwritten. The file and the
            run are checked before anything is restored; a failure (a damaged file, another
            architecture, a checkpoint beyond ``epochs``, a missing scheduler or optimizer
            state) raises and leaves the model, optimizer, scheduler, components and the
            global RNGs as they were. The checkpoint also records the run's *settings*: the
            optimizer's class and every hyper-parameter of each parameter group
            (``param_groups[i].lr``, ...), the scheduler's class, the ``repr`` of the objective
            and batch hook when it shows their settings (no memory address), and ``settings``.
            Resuming with any of them changed raises ``ValueError`` listing ``key: stored ->
            now``; ``resume="override"`` continues with the new values instead (new
            hyper-parameters replace the restored ones; a scheduler goes on from them), warns
            with ``RuntimeWarning`` and puts ``{key: [stored, now]}`` in
            ``history.attrs["overrides"]``. A different ``n``, ``batch_size``, ``seed`` or world
            size only warns (``RuntimeWarning``): the run stays correct, it just does not
            repeat an uninterrupted one.
        distributed: train data-parallel over the ranks of the initialised process group
            (see :mod:`advbook.distributed`; launch with ``torchrun``). ``None`` (default):
            whenever a process group with more than one rank exists. Each rank then trains on
            its shard of every epoch's permutation (``batch_size`` is per rank), rank 0's
            parameters and buffers are copied to every rank before the first step, gradients
            are averaged over the ranks after every backward pass (what
            ``DistributedDataParallel`` does; objectives, batch hooks and callbacks all receive
            the bare model and never see a wrapper), ``train_loss``/``train_acc`` are averaged
            over all ranks,
            buffers (BatchNorm statistics) are synchronised from rank 0 after every epoch, and
            only rank 0 shows progress and writes the checkpoint.
        settings: plain values (str, int, float, bool, None, lists of them; paths become
            strings) that determine the run, e.g. a script's ``method``, ``eps``; stored in the
            checkpoint and compared on resume (see ``resume``).
        nonfinite: what a NaN or infinite loss or gradient does. ``"raise"`` (default): stop
            with :class:`NonFiniteLossError` naming the epoch and batch, before that step.
            ``"skip"``: drop the batch (no optimizer step; it does not count in
            ``train_loss``/``train_acc``), warn at the end of the epoch with the number
            skipped, and add a ``skipped_batches`` column. Side effects of the forward pass
            (BatchNorm statistics) cannot be undone. Either way non-finite weights are never
            written to ``checkpoint`` (``NonFiniteLossError`` instead). The check costs one
            host synchronisation per batch and changes no number.

    Returns:
        A DataFrame with columns ``epoch, train_loss, train_acc, [val_loss, val_acc], seconds``,
        ``skipped_batches`` if any batch was skipped, and whatever the callbacks return.

    Raises:
        NonFiniteLossError: (a ``FloatingPointError``) see ``nonfinite``.
    """
    _check_fit_args(x, y, val, epochs, batch_size, checkpoint, resume)
    _check_run_options(seed, nonfinite)
    ranks = _ranks(distributed)
    run = _prepare(model, x, y, batch_size=batch_size, optimizer=optimizer, lr=lr,
                   weight_decay=weight_decay, objective=objective, batch_hook=batch_hook,
                   epoch_callbacks=epoch_callbacks, seed=seed, ranks=ranks, scheduler=scheduler,
                   settings=settings, nonfinite=nonfinite)
    first, rows = 1, []
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        saved = _resume(run, checkpoint, epochs, scheduler, override=resume == "override")
        first, rows = saved.epoch + 1, saved.history
    bar = tqdm(range(first, epochs + 1), desc="epochs", leave=False, initial=first - 1,
               total=epochs, disable=not (progress_enabled(progress) and ranks.is_main))
    for epoch in bar:
        start = time.perf_counter()
        sums = _train_epoch(run, epoch)
        if scheduler is not None:
            scheduler.step()
        rows.append(_epoch_row(run, epoch, start, val, epoch_callbacks, sums))
        if checkpoint is not None:
            _save(run, checkpoint, epoch, rows, scheduler)
        bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}")
    run.model.train()
    return _history(run, rows, val is not None)


def _history(run: _Run, rows: list[dict[str, float]], has_val: bool) -> pd.DataFrame:
    """The DataFrame of ``rows``; ``attrs["overrides"]`` lists settings a resume overrode."""
    history = pd.DataFrame(rows, columns=_columns(rows, has_val))
    if "skipped_batches" in history:
        history["skipped_batches"] = history["skipped_batches"].fillna(0).astype(int)
    if run.overrides:
        history.attrs["overrides"] = dict(run.overrides)
    return history


def _columns(rows: Iterable[Mapping[str, float]], has_val: bool) -> list[str]:
    cols = ["epoch", "train_loss", "train_acc"] + (["val_loss", "val_acc"] if has_val else [])
    cols.append("seconds")
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols
