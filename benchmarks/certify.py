"""Benchmark: :func:`advbook.certify.certify` against its floor, the forward passes alone.

Issue 16's target: ``certify`` within 1.1× of the floor, ``n0 + n`` forward passes of every
sample through the model in batches of ``batch_size`` rows (inputs prepared beforehand, no noise
drawn, no votes counted). Timed for two base classifiers of the book, ``advbook.models.MLP``
(784-256-256-10, the certified-robustness chapter's) and ``advbook.models.SmallCNN``, on
MNIST-shaped inputs, both untrained (the cost does not depend on the weights):

* ``certify``: the library call, ``n0 = 100``, ``n = 1,000``, ``α = 0.001``, seeded;
* ``floor``: the same number of rows through the model, the same batch shape (one batch of
  noisy copies drawn beforehand, reused);
* ``floor + noise``: the floor plus one ``torch.randn`` of every batch, the Gaussian draws any
  implementation must make (drawn on the device, as ``certify`` does).

The three run interleaved, ``rounds`` times each after a warm-up, in one process; the median
is reported. ``python -m benchmarks.certify [--rounds 5] [--device cuda]``; writes
``benchmarks/results/certify-<device>.csv``. Not part of the test-suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import Tensor, nn

from advbook.certify import certify
from advbook.models import MLP, SmallCNN

from .attacks import RESULTS, _load, _machine

N0, N, ALPHA, BATCH = 100, 1_000, 0.001, 1_000
SIGMA = 0.5
SAMPLES = {"MLP": 200, "SmallCNN": 20}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _floor(model: nn.Module, x: Tensor, rows: int, noise: bool) -> Callable[[], None]:
    # one batch of distinct noisy rows, drawn once and not timed: a batch of identical rows runs
    # faster through a CNN (caches, branch prediction), which would flatter the floor
    batch = x[:1] + SIGMA * torch.randn((BATCH, *x.shape[1:]), device=x.device)

    def run() -> None:
        with torch.no_grad():
            for start in range(0, rows, BATCH):
                size = min(BATCH, rows - start)
                inputs = batch[:size]
                if noise:
                    inputs = torch.randn(inputs.shape, device=x.device).mul_(SIGMA).add_(inputs)
                model(inputs)
    return run


def run(rounds: int = 5, device: str = "cpu") -> pd.DataFrame:
    dev = torch.device(device)
    records = []
    for name, n_samples in SAMPLES.items():
        torch.manual_seed(0)
        model = (MLP(hidden=(256, 256)) if name == "MLP" else SmallCNN()).to(dev).eval()
        x = torch.rand(n_samples, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(dev)
        rows = n_samples * (N0 + N)
        fns: dict[str, Callable[[], object]] = {
            "certify": lambda model=model, x=x: certify(
                model, x, sigma=SIGMA, n0=N0, n=N, alpha=ALPHA, batch_size=BATCH,
                progress=False, generator=torch.Generator(dev).manual_seed(0)),
            "floor": _floor(model, x, rows, noise=False),
            "floor + noise": _floor(model, x, rows, noise=True),
        }
        times: dict[str, list[float]] = {k: [] for k in fns}
        load_before = _load()
        for round_ in range(rounds + 1):
            for impl, fn in fns.items():
                _sync(dev)
                start = time.perf_counter()
                fn()
                _sync(dev)
                if round_ > 0:  # round 0 warms up
                    times[impl].append(time.perf_counter() - start)
        floor = statistics.median(times["floor"])
        for impl, t in times.items():
            records.append({
                "model": name, "impl": impl, "median_s": statistics.median(t), "min_s": min(t),
                "max_s": max(t), "vs_floor": statistics.median(t) / floor, "samples": n_samples,
                "draws": N0 + N, "batch_size": BATCH, "rounds": rounds,
                "machine": _machine(dev), "load_before": load_before, "load_after": _load(),
                "threads": torch.get_num_threads(),
            })
    return pd.DataFrame(records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    df = run(args.rounds, args.device)
    kind = torch.device(args.device).type
    df.to_csv(RESULTS / f"certify-{kind}.csv", index=False, float_format="%.4f")
    print(df[["model", "impl", "median_s", "vs_floor"]].to_string(index=False))


if __name__ == "__main__":
    main()
