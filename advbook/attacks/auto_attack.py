"""AutoAttack (Croce & Hein 2020): the reference ensemble, each attack on the robust points."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch
from torch import Tensor, nn

from .._core.checks import (
    NORMS,
    check_choice,
    check_generator,
    check_nonneg_float,
    check_positive_int,
)
from .._core.guard import model_guard
from .._core.progress import progress_enabled, tqdm
from ._checks import check_inputs, check_logits
from .apgd import apgd
from .fab import fab
from .square import square

__all__ = ["AutoAttackReport", "AutoAttackWarning", "auto_attack", "auto_attack_report"]

VERSIONS = ("standard", "plus", "rand")

#: A stage: ``run(model, x, y, generator) -> x_adv``.
StageFn = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], Tensor]

# Square lowering the robust accuracy left by the gradient attacks by more than this fraction
# of the points is the reference's sign of gradient masking (its check_square_sr uses 0.2 pp)
_SQUARE_FLAG = 0.002


class AutoAttackWarning(UserWarning):
    """One of AutoAttack's flags: the evaluation may be unreliable (see the message)."""


@dataclass(frozen=True)
class AutoAttackReport:
    """What :func:`auto_attack_report` found.

    Attributes:
        x_adv: the returned points (``x`` where no attack succeeded).
        stages: the attacks run, in order.
        clean_accuracy: fraction classified correctly without attack.
        robust_accuracy: ``{stage: robust accuracy after it}``, non-increasing in the order.
        broken_by: ``(N,)`` int64 on the CPU: ``-1`` still robust, ``0`` misclassified clean,
            ``i ≥ 1`` broken by ``stages[i − 1]``.
        passes: ``{stage: (forward, backward)}`` sample-passes through the model, the clean
            evaluation under ``"clean"``.
        flags: the warnings raised (randomness, probabilities, skipped stages, Square).
    """

    x_adv: Tensor
    stages: tuple[str, ...]
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    broken_by: Tensor
    passes: dict[str, tuple[int, int]]
    flags: tuple[str, ...] = field(default=())

    @property
    def final(self) -> float:
        """Robust accuracy after the last stage (the AutoAttack number)."""
        return self.robust_accuracy[self.stages[-1]] if self.stages else self.clean_accuracy

    def passes_per_point(self) -> float:
        """Forward plus backward sample-passes, over all stages, per evaluated point."""
        n = max(self.broken_by.numel(), 1)
        return sum(f + b for f, b in self.passes.values()) / n

    def to_frame(self) -> pd.DataFrame:
        """One row per stage (and ``clean``): accuracy, points broken, forward/backward passes."""
        rows = [("clean", self.clean_accuracy, int((self.broken_by == 0).sum()),
                 *self.passes.get("clean", (0, 0)))]
        for i, stage in enumerate(self.stages, start=1):
            rows.append((stage, self.robust_accuracy[stage], int((self.broken_by == i).sum()),
                         *self.passes.get(stage, (0, 0))))
        return pd.DataFrame(rows, columns=["stage", "accuracy", "broken", "forward", "backward"])


def _stages(version: str, eps: float, norm: str, n_classes: int) -> dict[str, StageFn]:
    """The reference attacks of ``version`` with their reference settings (100 steps, 9
    targets, 5,000 queries). APGD stops per sample at its first success: only success matters
    here, and the robust accuracy is the same."""
    targets = min(9, n_classes - 1)

    def apgd_stage(loss: str, *, targeted: bool = False, restarts: int = 1,
                   eot: int = 1) -> StageFn:
        def run(model: nn.Module, x: Tensor, y: Tensor, g: torch.Generator | None) -> Tensor:
            return apgd(model, x, y, eps=eps, norm=norm, steps=100, loss=loss,
                        targeted=targeted, n_targets=targets, restarts=restarts,
                        eot_samples=eot, early_stop=True, generator=g)
        return run

    def fab_stage(*, targeted: bool, restarts: int = 1) -> StageFn:
        def run(model: nn.Module, x: Tensor, y: Tensor, g: torch.Generator | None) -> Tensor:
            return fab(model, x, y, eps=eps, norm=norm, steps=100, targeted=targeted,
                       n_targets=targets, restarts=restarts, generator=g)
        return run

    def square_stage(model: nn.Module, x: Tensor, y: Tensor, g: torch.Generator | None) -> Tensor:
        return square(model, x, y, eps=eps, norm=norm, queries=5000, p_init=0.8, generator=g)

    if version == "rand":
        return {"apgd-ce": apgd_stage("ce", eot=20), "apgd-dlr": apgd_stage("dlr", eot=20)}
    if version == "plus":
        return {
            "apgd-ce": apgd_stage("ce", restarts=5), "apgd-dlr": apgd_stage("dlr", restarts=5),
            "fab": fab_stage(targeted=False, restarts=5), "square": square_stage,
            "apgd-t": apgd_stage("dlr", targeted=True), "fab-t": fab_stage(targeted=True),
        }
    return {
        "apgd-ce": apgd_stage("ce"), "apgd-t": apgd_stage("dlr", targeted=True),
        "fab-t": fab_stage(targeted=True), "square": square_stage,
    }


def _needs_classes(stage: str) -> int:
    """The fewest classes a stage can run with (DLR: 3; targeted DLR: 4)."""
    if stage == "apgd-t":
        return 4
    if stage == "apgd-dlr":
        return 3
    return 2


# long: signature and docstring (the protocol's reference) alone are 45 lines
def auto_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> Tensor:
    """AutoAttack: the ensemble of Croce & Hein (2020), each attack on the points still robust.

    ``version="standard"`` runs, with the reference settings, ::

        APGD-CE (100 steps) → APGD-T (targeted DLR, 9 targets, 100 steps)
            → FAB-T (9 targets, 100 steps) → Square (5,000 queries, p_init = 0.8)

    where every attack only sees the points that all earlier ones failed on, and a point
    counts as broken by the first attack that finds an adversarial example within ``ε``. The
    result is the per-example worst case over the ensemble. ``"plus"`` adds APGD-DLR and
    untargeted FAB with 5 restarts each; ``"rand"`` (for randomised defences) runs APGD-CE and
    APGD-DLR with gradients averaged over 20 draws (Expectation over Transformation).

    Flags (:class:`AutoAttackWarning`) as in the reference: outputs that change between two
    calls on the same input (a randomised model: use ``"rand"``), rows that are probabilities
    (pass logits, not softmax outputs), and Square lowering the accuracy left by the gradient
    attacks (a sign of gradient masking). Vanished gradients are reported by the gradient
    attacks themselves (:class:`GradientMaskingWarning`).

    Derived in the book, section :ref:`sec-autoattack` of chapter *Evaluating robustness*.

    Args:
        model: returns logits ``(N, K)``; left unchanged.
        x, y: inputs inside ``bounds`` and true labels.
        eps: radius of the threat model (``≥ 0``).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"``, ``"plus"`` or ``"rand"``.
        bounds: valid input range.
        batch_size: points per attack call (default: all at once).
        generator: source of every random draw (starts, restarts, Square's squares).
        progress: show a ``tqdm`` bar over the stages (``None``: see ``progress_enabled``).

    Returns:
        ``x_adv``; :func:`auto_attack_report` returns it with the per-stage report.
    """
    return auto_attack_report(
        model, x, y, eps=eps, norm=norm, version=version, bounds=bounds, batch_size=batch_size,
        generator=generator, progress=progress,
    ).x_adv


# long: the keyword arguments of auto_attack, forwarded (documented there)
def auto_attack_report(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> AutoAttackReport:
    """:func:`auto_attack` with its report: robust accuracy after each stage, which stage broke
    each point, forward and backward passes spent, and the flags raised."""
    name = "auto_attack"
    lo, hi, y_max = check_inputs(model, x, y, bounds, name=name)
    eps_ = check_nonneg_float(eps, "eps")
    norm = check_choice(norm, "norm", NORMS)
    version = check_choice(version, "version", VERSIONS)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    generator = check_generator(generator, name)
    with torch.inference_mode(False):  # inference tensors cannot be attacked in place
        run = _Run(model, x.detach().clone(), y.detach().clone().long(), (lo, hi),
                   batch_size or x.shape[0])
    if x.shape[0] == 0:
        return run.report((), {}, ())
    with torch.inference_mode(False), _counting(model) as counter:
        flags = list(run.clean(y_max, version, counter))
        stages = _stages(version, eps_, norm, run.n_classes)
        runnable = {k: f for k, f in stages.items() if run.n_classes >= _needs_classes(k)}
        for skipped in stages.keys() - runnable.keys():
            flags.append(_flag(f"stage {skipped} needs more than {run.n_classes} classes and "
                               f"was skipped"))
        accuracy = run.attack_stages(runnable, generator, counter, progress)
    flags += _square_flag(runnable, accuracy)
    return run.report(tuple(runnable), accuracy, tuple(flags))


def _flag(message: str) -> str:
    """Warn with ``message`` and return it for the report."""
    warnings.warn(f"auto_attack: {message}", AutoAttackWarning, stacklevel=4)
    return message


def _square_flag(stages: dict[str, StageFn], accuracy: dict[str, float]) -> list[str]:
    """Square, a gradient-free attack, should not beat the gradient attacks run before it."""
    names = list(stages)
    if "square" not in names or names.index("square") == 0:
        return []
    before = accuracy[names[names.index("square") - 1]]
    drop = before - accuracy["square"]
    if drop <= _SQUARE_FLAG:
        return []
    return [_flag(f"Square lowered the robust accuracy left by the gradient attacks by "
                  f"{100 * drop:.2f} points: their gradients may be masked, so the evaluation "
                  f"may overestimate robustness (see the book, section sec-autoattack)")]


class _Counter:
    """Sample-passes through the model: forward, and backward (through the output's grad)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def take(self) -> tuple[int, int]:
        """The counts since the last call."""
        counts = (self.forward, self.backward)
        self.forward = self.backward = 0
        return counts


@contextmanager
def _counting(model: nn.Module) -> Iterator[_Counter]:
    """Count the model's sample-passes with a forward hook, removed on exit."""
    counter = _Counter()

    def hook(_module: nn.Module, args: tuple[object, ...], output: object) -> None:
        n = args[0].shape[0] if args and isinstance(args[0], Tensor) else 0
        counter.forward += n
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(partial(_count_backward, counter, n))  # type: ignore[no-untyped-call]

    handle = model.register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def _count_backward(counter: _Counter, n: int, grad: Tensor) -> None:
    counter.backward += n


class _Run:
    """The state of one AutoAttack run: which points are still robust and their ``x_adv``."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, bounds: tuple[float, float],
                 batch_size: int) -> None:
        self.model, self.x, self.y, self.bounds = model, x, y, bounds
        self.batch_size = batch_size
        self.x_adv = x.clone()
        self.robust = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.broken_by = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        self.passes: dict[str, tuple[int, int]] = {}
        self.n_classes = 0
        self.clean_accuracy = 0.0

    def _logits(self, x: Tensor) -> Tensor:
        with model_guard(self.model), torch.no_grad():
            chunks = [self.model(x[i : i + self.batch_size])
                      for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(chunks)

    def clean(self, y_max: int, version: str, counter: _Counter) -> Iterator[str]:
        """Classify the clean points; yield the flags about the model's outputs."""
        logits = self._logits(self.x)
        check_logits(logits, self.x.shape[0], y_max, name="auto_attack")
        self.n_classes = logits.shape[1]
        self.robust = logits.argmax(1) == self.y
        self.broken_by[~self.robust] = 0
        self.clean_accuracy = float(self.robust.float().mean())
        probe = self.x[: min(self.batch_size, 64)]
        if version != "rand" and not torch.equal(self._logits(probe), logits[: probe.shape[0]]):
            yield _flag("the model's outputs change between two calls on the same input (a "
                        "randomised defence?): use version='rand' (Expectation over "
                        "Transformation)")
        sums = logits.sum(dim=1)
        if bool((logits >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums),
                                                              atol=1e-5)):
            yield _flag("the model's outputs are probabilities (rows sum to one): attacks need "
                        "logits; remove the final softmax")
        self.passes["clean"] = counter.take()

    def attack_stages(self, stages: dict[str, StageFn], generator: torch.Generator | None,
                      counter: _Counter, progress: bool | None) -> dict[str, float]:
        """Run the stages in order on the points still robust; the accuracy after each."""
        accuracy: dict[str, float] = {}
        bar = _bar(list(stages), progress)
        for i, (stage, run) in enumerate(stages.items(), start=1):
            rows = self.robust.nonzero().squeeze(1)
            for start in range(0, rows.numel(), self.batch_size):
                self._attack_rows(run, rows[start : start + self.batch_size], i, generator)
            accuracy[stage] = float(self.robust.float().mean())
            self.passes[stage] = counter.take()
            bar.set_postfix_str(f"{stage}: {100 * accuracy[stage]:.1f} %")
            bar.update(1)
        bar.close()
        return accuracy

    def _attack_rows(self, run: StageFn, rows: Tensor, stage: int,
                     generator: torch.Generator | None) -> None:
        x_adv = run(self.model, self.x[rows], self.y[rows], generator)
        fooled = self._logits(x_adv).argmax(1) != self.y[rows]
        broken = rows[fooled]
        self.x_adv[broken] = x_adv[fooled]
        self.robust[broken] = False
        self.broken_by[broken] = stage

    def report(self, stages: tuple[str, ...], accuracy: dict[str, float],
               flags: tuple[str, ...]) -> AutoAttackReport:
        return AutoAttackReport(
            x_adv=self.x_adv, stages=stages, clean_accuracy=self.clean_accuracy,
            robust_accuracy=accuracy, broken_by=self.broken_by.cpu(), passes=self.passes,
            flags=flags,
        )


def _bar(stages: list[str], progress: bool | None) -> tqdm[None]:
    """A ``tqdm.auto`` bar over the stages (disabled unless progress is enabled)."""
    return tqdm(total=len(stages), desc="AutoAttack", leave=False,
                disable=not progress_enabled(progress))
