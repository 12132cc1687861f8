"""Command line: adversarially train a small model on MNIST-5k and write a results JSON.

Example::

    python -m advbook.train_robust --method pgd --eps 0.3 --epochs 10 --out pgd.json
    torchrun --nproc_per_node=2 -m advbook.train_robust --method trades --eps 0.3 --out t.json

Trains with :func:`advbook.train.fit` and a recipe of :mod:`advbook.defenses` (``standard``:
plain cross-entropy; ``fgsm``: FGSM-AT with random start; ``pgd``: PGD-AT; ``trades``: TRADES;
``mixed``: Goodfellow et al.'s clean/FGSM mix), then evaluates on the test split the clean
accuracy, the robust accuracy under FGSM and under PGD (``--eval-steps`` steps,
``--eval-restarts`` restarts) and the per-example worst case over both
(:func:`advbook.attacks.robust_accuracy`). A ``tqdm`` bar shows the epochs unless
``ADVBOOK_PROGRESS=0`` (or ``--no-progress``). With ``--checkpoint`` a checkpoint is written after
every epoch and ``--resume`` continues from it; ``--eps-warmup K`` grows the training ε linearly
over the first K epochs (:class:`~advbook.defenses.EpsilonRamp`). Under ``torchrun`` the ranks train
data-parallel (:mod:`advbook.distributed`) and rank 0 alone evaluates, prints and writes files.

Before anything is loaded or trained the command line is checked: the numbers, ``--device``
(``cpu``, ``cuda``, ``cuda:N``) and the files ``--out`` and ``--checkpoint`` (not a directory, a
folder that can be written); a bad one exits with ``error: ...``. Every argument that defines the
run (all but ``--epochs``, which may grow on resume, and the evaluation and output options) is
stored in the checkpoint; resuming with others stops, unless ``--override-settings`` is given, and
the results JSON lists the overridden ones under ``"overrides"``.
The recipes are derived in the book, chapter *Adversarial training* (sections :ref:`sec-fgsm-at`,
:ref:`sec-pgd-at`, :ref:`sec-trades`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from . import distributed as dist_mod
from ._core.random import generator_from_seed
from .attacks import RobustAccuracyResult, fgsm, pgd, robust_accuracy
from .data import load_mnist
from .defenses import (
    CatastrophicOverfittingDetector,
    EpsilonRamp,
    fgsm_at_objective,
    mixed_objective,
    pgd_at_objective,
    trades_objective,
)
from .models import MLP, SmallCNN
from .train import Objective, fit
from .utils import get_device, seed_everything

__all__ = ["METHODS", "MODELS", "build_model", "build_objective", "main", "parse_args"]

METHODS = ("standard", "fgsm", "pgd", "trades", "mixed")
MODELS = ("cnn", "mlp")
_MAX_SEED = 2**63 - 5  # seeds up to seed + 4 go to torch.Generator.manual_seed
_DEVICES = "cpu, cuda or cuda:N"


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected an integer <= {maximum}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m advbook.train_robust",
        description="Adversarially train a small model on MNIST-5k and write a results JSON.",
    )
    p.add_argument("--method", choices=METHODS, default="pgd", help="training recipe")
    p.add_argument("--eps", type=_nonneg_float, default=0.3, help="L-inf radius (train and test)")
    p.add_argument("--epochs", type=_int_at_least(0), default=5)
    p.add_argument("--model", choices=MODELS, default="cnn", help="SmallCNN or MLP 784-256-10")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results JSON path")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (every epoch)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if present")
    p.add_argument("--override-settings", action="store_true",
                   help="with --resume: continue even if the settings differ from the checkpoint's")
    p.add_argument("--subset", type=_int_at_least(1), default=None,
                   help="train on a random subset of N training images (default: all 4000)")
    p.add_argument("--eval-subset", type=_int_at_least(1), default=None,
                   help="evaluate on a random subset of N test images (default: all 1000)")
    p.add_argument("--seed", type=_int_at_least(0, _MAX_SEED), default=0)
    p.add_argument("--batch-size", type=_int_at_least(1), default=64, help="per rank")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--steps", type=_int_at_least(1), default=10,
                   help="inner PGD steps of pgd/trades")
    p.add_argument("--alpha", type=_nonneg_float, default=None,
                   help="inner step size (default: 2.5*eps/steps; fgsm: 1.25*eps)")
    p.add_argument("--beta", type=_nonneg_float, default=6.0, help="TRADES beta")
    p.add_argument("--mix", type=_nonneg_float, default=0.5,
                   help="weight of the clean loss of --method mixed, in [0, 1]")
    p.add_argument("--eps-warmup", type=_int_at_least(1), default=1, metavar="K",
                   help="grow the training eps linearly over the first K epochs (1: no ramp)")
    p.add_argument("--no-random-start", action="store_true",
                   help="fgsm: plain FGSM-AT without random start (prone to catastrophic "
                        "overfitting)")
    p.add_argument("--eval-steps", type=_int_at_least(1), default=20, help="PGD steps at test")
    p.add_argument("--eval-restarts", type=_int_at_least(1), default=1)
    p.add_argument("--detect-co", type=_int_at_least(0), default=0, metavar="N",
                   help="run the catastrophic-overfitting detector on N held-out test images "
                        "after each epoch (0: off)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the command line (errors exit with status 2 and a message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.mix > 1:
        parser.error(f"--mix must lie in [0, 1], got {args.mix}")
    if args.resume and args.checkpoint is None:
        parser.error("--resume needs --checkpoint PATH")
    if args.override_settings and not args.resume:
        parser.error("--override-settings only applies with --resume")
    if args.method != "standard" and args.eps == 0:
        parser.error(f"--method {args.method} needs --eps > 0")
    if args.alpha == 0:
        parser.error("--alpha must be > 0")
    if args.no_random_start and args.method != "fgsm":
        parser.error("--no-random-start only applies to --method fgsm")
    if args.detect_co and args.eps == 0:
        parser.error("--detect-co needs --eps > 0")
    return args


def build_model(name: str) -> nn.Module:
    """``cnn``: :class:`~advbook.models.SmallCNN`; ``mlp``: ``MLP(784, (256,), 10)``."""
    if name == "cnn":
        return SmallCNN()
    if name == "mlp":
        return MLP(784, (256,), 10)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def build_objective(
    method: str,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    beta: float = 6.0,
    mix: float = 0.5,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Objective | None:
    """The ``fit`` objective of ``method`` (``None`` for ``standard`` cross-entropy)."""
    if method == "standard":
        return None
    if method == "fgsm":
        return fgsm_at_objective(eps, alpha=alpha, random_start=random_start, generator=generator)
    if method == "pgd":
        return pgd_at_objective(eps, steps=steps, alpha=alpha, generator=generator)
    if method == "trades":
        return trades_objective(eps, beta, steps=steps, alpha=alpha, generator=generator)
    if method == "mixed":
        return mixed_objective(eps, mix, generator=generator)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _subset(n: int, k: int | None, seed: int, what: str) -> torch.Tensor:
    if k is None:
        return torch.arange(n)
    if k > n:
        raise SystemExit(f"error: --{what} {k} is larger than the {n} available images")
    return torch.randperm(n, generator=generator_from_seed(seed))[:k].sort().values


def _optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    for group in optimizer.param_groups:
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if step is not None:
                return int(step)
    return 0


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return _json_safe(value.item())
    return value


def _temp_name(path: Path, kind: str) -> Path:
    """A fresh hidden name next to ``path`` (same folder, so ``os.replace`` is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a temporary file next to ``path``, then ``os.replace``.

    The temporary file is removed when anything fails; ``path`` is then left as it was.
    """
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, "tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # "x": a new file, permissions as umask says
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _save_results(path: Path, results: dict[str, Any]) -> None:
    """Write the results JSON; if that fails after all, print it so the run is not lost."""
    try:
        _write_json(path, results)
    except OSError as exc:
        print(json.dumps(_json_safe(results), indent=2, allow_nan=False))
        raise SystemExit(f"error: --out {path}: cannot write the results ({exc.strerror or exc});"
                         " they were printed above") from None


def _check_target(flag: str, path: Path) -> None:
    """Exit with a message unless ``path`` can be written as a file.

    ``path`` must not be a directory (or another non-file) and its nearest existing folder must
    accept a new file: one is created there and removed again. Missing folders are created later.
    """
    try:
        if path.is_dir():
            raise SystemExit(f"error: {flag} {path}: is a directory; name a file (e.g. "
                             f"{path / ('results.json' if flag == '--out' else 'ck.pt')})")
        if path.exists() and not path.is_file():
            raise SystemExit(f"error: {flag} {path}: exists and is not a regular file")
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise SystemExit(f"error: {flag} {path}: {folder} is not a directory")
        probe = _temp_name(folder / path.name, "probe")
        probe.open("x").close()
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"error: {flag} {path}: cannot write there "
                         f"({exc.strerror or exc})") from None


def _check_device(text: str | None) -> None:
    """Exit with a message unless ``--device`` names a device this machine has."""
    if text is None:
        return
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SystemExit(f"error: --device {text}: unknown device; expected {_DEVICES}") from None
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise SystemExit(f"error: --device {text}: not supported; expected {_DEVICES}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise SystemExit(f"error: --device {text}: no GPU is available "
                         "(torch.cuda.is_available() is False); use --device cpu")
    if device.index is not None and device.index >= count:
        raise SystemExit(f"error: --device {text}: this machine has {count} GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")


def _preflight(args: argparse.Namespace) -> None:
    """Check the device and the files before anything is loaded or trained (see the module)."""
    _check_device(args.device)
    _check_target("--out", args.out)
    if args.checkpoint is None:
        return
    _check_target("--checkpoint", args.checkpoint)
    if args.out.resolve() == args.checkpoint.resolve():
        raise SystemExit(f"error: --out and --checkpoint name the same file {args.out}")
    if args.resume and args.checkpoint.exists():
        try:
            args.checkpoint.open("rb").close()
        except OSError as exc:
            raise SystemExit(f"error: --checkpoint {args.checkpoint}: cannot read it to resume "
                             f"({exc.strerror or exc})") from None


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run the command line; return the results (``None`` on ranks other than 0)."""
    args = parse_args(argv)
    _preflight(args)
    info = dist_mod.init_from_env(device=args.device)
    try:
        return _run(args, info)
    finally:
        dist_mod.cleanup(info)


@dataclass
class _Setup:
    """What one command-line run trains and evaluates, in the order the RNG is used."""

    device: torch.device
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: nn.Module
    objective: Any
    callbacks: list[Any]
    detector: CatastrophicOverfittingDetector | None


def _setup(args: argparse.Namespace, info: dist_mod.DistInfo) -> _Setup:
    """Seed, load the data subsets, build the model, the objective and the callbacks."""
    try:
        device = info.device if info.world_size > 1 else get_device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None
    seed_everything(args.seed)
    ds = load_mnist()
    tr = _subset(ds.x_train.shape[0], args.subset, args.seed, "subset")
    te = _subset(ds.x_test.shape[0], args.eval_subset, args.seed + 1, "eval-subset")
    x_test, y_test = ds.x_test[te].to(device), ds.y_test[te].to(device)
    model = build_model(args.model).to(device)
    objective = build_objective(
        args.method, args.eps, steps=args.steps, alpha=args.alpha, beta=args.beta, mix=args.mix,
        random_start=not args.no_random_start, generator=generator_from_seed(args.seed + 2),
    )
    callbacks: list[Any] = []
    if objective is not None and args.eps_warmup > 1:
        callbacks.append(EpsilonRamp(objective, args.eps, args.eps_warmup))
    detector = None
    if args.detect_co:
        k = min(args.detect_co, x_test.shape[0])
        detector = CatastrophicOverfittingDetector(x_test[:k], y_test[:k], args.eps,
                                                   seed=args.seed + 3)
        callbacks.append(detector)
    return _Setup(device, ds.x_train[tr], ds.y_train[tr], x_test, y_test, model, objective,
                  callbacks, detector)


def _evaluate(args: argparse.Namespace, run: _Setup) -> RobustAccuracyResult:
    """Clean accuracy and robust accuracy under FGSM and PGD at the training radius."""
    pgd_name = f"PGD-{args.eval_steps}" + (f"x{args.eval_restarts}" if args.eval_restarts > 1
                                           else "")
    attacks = {
        "FGSM": partial(fgsm, eps=args.eps),
        pgd_name: partial(pgd, eps=args.eps, steps=args.eval_steps,
                          restarts=args.eval_restarts,
                          generator=generator_from_seed(args.seed + 4)),
    }
    return robust_accuracy(run.model, run.x_test, run.y_test, attacks)


def _run_settings(args: argparse.Namespace) -> dict[str, object]:
    """The arguments that define a run, stored in its checkpoint (``fit(settings=...)``).

    ``--epochs`` is not one (a resumed run may train longer), nor are the evaluation, output,
    device and progress options.
    """
    return {"method": args.method, "eps": args.eps, "steps": args.steps, "alpha": args.alpha,
            "beta": args.beta, "mix": args.mix, "random_start": not args.no_random_start,
            "eps_warmup": args.eps_warmup, "model": args.model, "lr": args.lr,
            "batch_size": args.batch_size, "subset": args.subset,
            "eval_subset": args.eval_subset, "seed": args.seed}


def _train(args: argparse.Namespace, run: _Setup, optimizer: torch.optim.Optimizer) -> Any:
    """``fit`` as the arguments say; a checkpoint that cannot be resumed exits with a message."""
    options: dict[str, Any] = {"resume": "override" if args.override_settings else args.resume,
                               "settings": _run_settings(args)}
    resuming = args.resume and args.checkpoint.is_file()
    try:
        return fit(
            run.model, run.x_train, run.y_train, epochs=args.epochs, batch_size=args.batch_size,
            optimizer=optimizer, objective=run.objective, epoch_callbacks=run.callbacks,
            seed=args.seed, progress=args.progress, checkpoint=args.checkpoint, **options,
        )
    except ValueError as exc:
        if not resuming:
            raise
        message = f"error: cannot resume from --checkpoint {args.checkpoint}: {exc}"
        if " -> " in str(exc) and not args.override_settings:
            message += ("\npass --override-settings to continue it with the new settings, or "
                        "start a fresh run (another --checkpoint, or no --resume)")
        raise SystemExit(message) from None


def _run(args: argparse.Namespace, info: dist_mod.DistInfo) -> dict[str, Any] | None:
    """Train as the arguments say, evaluate on rank 0, write and print the results there."""
    run = _setup(args, info)
    optimizer = torch.optim.Adam(run.model.parameters(), lr=args.lr)
    start = time.perf_counter()
    history = _train(args, run, optimizer)
    train_seconds = time.perf_counter() - start
    steps = _optimizer_steps(optimizer)
    if not info.is_main:
        return None
    start = time.perf_counter()
    result = _evaluate(args, run)
    timing = {"optimizer_steps": steps,
              "seconds_per_epoch": float(history["seconds"].mean()) if len(history) else None,
              "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start}
    results = _results(args, info, run, result, history, timing)
    _save_results(args.out, results)
    rob = ", ".join(f"{k} {v:.1%}" for k, v in result.accuracy.items())
    print(f"{args.method} eps={args.eps:g}: clean {result.clean_accuracy:.1%}, {rob}, "
          f"worst case {result.worst_case:.1%} -> {args.out}")
    return results


def _results(args: argparse.Namespace, info: dist_mod.DistInfo, run: _Setup,
             result: RobustAccuracyResult, history: Any, timing: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a run: setup, accuracies, timings, history, versions."""
    return {
        "method": args.method,
        "objective": repr(run.objective) if run.objective is not None else "cross-entropy",
        "eps": args.eps,
        "model": args.model,
        "epochs": args.epochs,
        "seed": args.seed,
        "n_train": int(run.x_train.shape[0]),
        "n_eval": int(run.x_test.shape[0]),
        "batch_size_per_rank": args.batch_size,
        "world_size": info.world_size,
        "device": str(run.device),
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": dict(result.accuracy),
        "worst_case_accuracy": result.worst_case,
        **timing,
        "history": history.to_dict(orient="records"),
        "co_detected_epoch": run.detector.detected_epoch if run.detector is not None else None,
        "overrides": dict(history.attrs.get("overrides", {})),
        "args": vars(args),
        "versions": {"advbook": __version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }


if __name__ == "__main__":
    main()
