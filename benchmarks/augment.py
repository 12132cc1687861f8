"""Benchmark: ``advbook.augment.RandomAffine`` vs kornia's ``RandomAffine`` on MNIST batches.

Both draw fresh per-sample parameters from the same ranges — rotation ±30°, translation ±10 %
of each side, zoom 0.8–1.2, x-shear ±15° — and warp a batch of MNIST digits (default 1,024)
with bilinear interpolation and zero padding, in the same process. The two are timed
alternately (A, B, A, B, …) after a warm-up so that load on a shared machine hits both alike;
the reported time is the median over the repeats. Target: advbook ≤ 1.0× kornia's time.

Run ``python -m benchmarks.augment [--device cuda] [--batch-size 1024] [--repeats 15]``; it prints a
markdown table and writes ``benchmarks/results/augment-<device>.csv``. kornia is a
benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from advbook.augment import RandomAffine
from advbook.data import load_mnist

DEGREES = 30.0
TRANSLATE = (0.1, 0.1)
SCALE = (0.8, 1.2)
SHEAR = 15.0
RESULTS = Path(__file__).resolve().parent / "results"


def _timer(fn: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], float]:
    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return timed


def run(
    *,
    batch_size: int = 1024,
    repeats: int = 15,
    warmup: int = 3,
    device: str | torch.device = "cpu",
    csv_path: str | Path | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """Time both implementations and return (and save) one row per implementation.

    Args:
        batch_size: number of MNIST images per call (taken from the 4,000 training digits,
            repeated if more are asked for).
        repeats: timed calls per implementation (≥ 5), interleaved; the median is reported.
        warmup: untimed calls per implementation before timing.
        device: where the batch lives and the warps run.
        csv_path: output CSV; default ``benchmarks/results/augment-<device type>.csv``.
        verbose: print the markdown table.
    """
    try:
        import kornia
        import kornia.augmentation as K
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the augmentation benchmark needs kornia (pip install kornia)") from err
    if repeats < 5:
        raise ValueError(f"repeats must be at least 5 for a meaningful median, got {repeats}")
    if batch_size < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1 and warmup >= 0, got {batch_size}, {warmup}")
    device = torch.device(device)
    x_all = load_mnist().x_train
    reps = -(-batch_size // len(x_all))
    x = x_all.repeat(reps, 1, 1, 1)[:batch_size].to(device)

    ours = RandomAffine(degrees=DEGREES, translate=TRANSLATE, scale=SCALE, shear=SHEAR, seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    theirs = K.RandomAffine(
        degrees=DEGREES, translate=TRANSLATE, scale=SCALE, shear=(-SHEAR, SHEAR), p=1.0
    ).to(device)
    impls: dict[str, Callable[[], float]] = {
        "advbook.augment.RandomAffine": _timer(lambda: ours(x, generator=gen), device),
        f"kornia {kornia.__version__} RandomAffine": _timer(lambda: theirs(x), device),
    }
    for fn in impls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            times[name].append(fn())

    kornia_median = statistics.median(next(t for n, t in times.items() if "kornia" in n))
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append({
            "implementation": name,
            "device": device.type,
            "batch_size": batch_size,
            "image_size": "x".join(str(s) for s in x.shape[1:]),
            "repeats": repeats,
            "median_ms": 1e3 * median,
            "min_ms": 1e3 * min(ts),
            "ratio_to_kornia": median / kornia_median,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        })
    df = pd.DataFrame(rows)
    path = Path(csv_path) if csv_path is not None else RESULTS / f"augment-{device.type}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.4f")
    if verbose:
        print(_markdown(df))
        print(f"\nwritten to {path}")
    return df


def _markdown(df: pd.DataFrame) -> str:
    lines = [
        "| implementation | device | batch | median (ms) | min (ms) | × kornia |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.implementation} | {r.device} | {r.batch_size} | {r.median_ms:.2f} | "
            f"{r.min_ms:.2f} | {r.ratio_to_kornia:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()
    run(batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup, device=args.device,
        csv_path=args.csv)


if __name__ == "__main__":
    main()
