"""Benchmark: ``auto_attack`` (standard, ℓ∞) against the same protocol built from torchattacks.

A PGD-trained MLP (MNIST-5k, ε = 0.2, 10-step PGD-AT) is evaluated on ``n`` test points at
ε = 0.2 by

* ``ours``: :func:`advbook.attacks.auto_attack_report`, version ``"standard"``;
* ``torchattacks``: APGD-CE, APGD-T, FAB-T and Square of torchattacks 3.5.1 with the
  reference settings (100 iterations, 1 restart, 9 target classes, 5,000 queries), each run on
  the points the earlier ones failed on (what ``torchattacks.MultiAttack`` does, and what the
  reference ``AutoAttack`` does).

The two run alternately, ``rounds`` times each, in one process; the median time of each is
reported with the spread, the robust accuracies, and the forward + backward passes per point
(counted by a forward hook) against the floor: 100 steps of one forward and one backward on
every clean-correct point, the cost of APGD-CE alone. Target (issue 15): time ≤ 0.5× theirs at
robust accuracy ≤ theirs + 0.2 pp. ``python -m benchmarks.autoattack [--n 1000] [--rounds 1]``;
writes ``benchmarks/results/autoattack-<device>.csv``. Not part of the test-suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from advbook.attacks import auto_attack_report
from advbook.data import load_mnist
from advbook.defenses import pgd_at_objective
from advbook.models import MLP
from advbook.train import fit

from .attacks import RESULTS, _load, _machine

EPS = 0.2


def _robust_model(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    ds = load_mnist()
    torch.manual_seed(seed)
    model = MLP(hidden=(256, 256))
    objective = pgd_at_objective(EPS, steps=10, generator=torch.Generator().manual_seed(seed))
    fit(model, ds.x_train, ds.y_train, epochs=8, batch_size=128, lr=1e-3, objective=objective,
        seed=seed, progress=False)
    return model.eval(), ds.x_test, ds.y_test


class _Passes:
    """Sample-passes through the model: forward, and backward through its output."""

    def __init__(self, model: nn.Module) -> None:
        self.forward = self.backward = 0
        model.register_forward_hook(self._hook)

    def _hook(self, _m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        n = args[0].shape[0]
        self.forward += n
        if out.requires_grad:
            out.register_hook(lambda g: self._count(n))

    def _count(self, n: int) -> None:
        self.backward += n


def _theirs(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The standard protocol from torchattacks' components, on the points still robust."""
    import torchattacks as ta

    stages = [
        ta.APGD(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, loss="ce", seed=0),
        ta.APGDT(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, n_classes=10, seed=0),
        ta.FAB(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, multi_targeted=True,
               n_classes=10, seed=0),
        ta.Square(model, norm="Linf", eps=EPS, n_queries=5000, n_restarts=1, p_init=0.8, seed=0),
    ]
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    x_adv = x.clone()
    for attack in stages:
        rows = robust.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        adv = attack(x[rows], y[rows])
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y[rows]
        x_adv[rows[fooled]] = adv[fooled]
        robust[rows[fooled]] = False
    return robust


def run(n: int = 1000, rounds: int = 1) -> pd.DataFrame:
    model, x_test, y_test = _robust_model()
    x, y = x_test[:n], y_test[:n]
    with torch.no_grad():
        n_correct = int((model(x).argmax(1) == y).sum())
    passes = _Passes(model)
    fns: dict[str, Callable[[], float]] = {
        "ours": lambda: auto_attack_report(model, x, y, eps=EPS, progress=False,
                                           generator=torch.Generator().manual_seed(0)).final,
        "torchattacks": lambda: float(_theirs(model, x, y).float().mean()),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    accuracy: dict[str, float] = {}
    per_point: dict[str, float] = {}
    load_before = _load()
    for _ in range(rounds):
        for name, fn in fns.items():
            passes.forward = passes.backward = 0
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                accuracy[name] = fn()
            times[name].append(time.perf_counter() - start)
            per_point[name] = (passes.forward + passes.backward) / n
    floor = 2 * 100 * n_correct / n
    rows = [{
        "impl": name, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
        "robust_accuracy": accuracy[name], "passes_per_point": per_point[name],
        "floor_passes_per_point": floor, "n": n, "eps": EPS, "rounds": rounds,
        "machine": _machine(torch.device("cpu")), "load_before": load_before,
        "load_after": _load(), "threads": torch.get_num_threads(),
    } for name, t in times.items()]
    df = pd.DataFrame(rows)
    df["vs_torchattacks"] = df["median_s"] / float(df.loc[df.impl == "torchattacks",
                                                           "median_s"].iloc[0])
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    df = run(args.n, args.rounds)
    print(df.to_string(index=False))
    out = RESULTS / "autoattack-cpu.csv"
    df.to_csv(out, index=False, float_format="%.4f")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
