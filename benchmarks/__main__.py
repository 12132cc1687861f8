"""``python -m benchmarks``: every benchmark in one run, then ``RESULTS.md``.

Runs the attack benchmark (:mod:`benchmarks.attacks`: FGSM, PGD-10 L∞ and L2, DeepFool at K=10
and K=100, C&W, against torchattacks and foolbox) and the augmentation benchmark
(:mod:`benchmarks.augment`, against kornia) on one device, and on the CPU the AutoAttack
protocol against torchattacks' components (:mod:`benchmarks.autoattack`) and randomized
smoothing's ``certify`` against its floor (:mod:`benchmarks.certify`), writes
``benchmarks/results/{attacks,augment}-<device>.csv`` and regenerates ``benchmarks/RESULTS.md``
with the target checks (:mod:`benchmarks.report`). ``make bench`` runs it on the CPU with one
thread per process; ``python -m benchmarks --device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from . import attacks, augment, autoattack, certify, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (make bench uses 1: results on a shared 2-core "
                             "machine are steadier)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-attacks", action="store_true")
    parser.add_argument("--skip-augment", action="store_true")
    parser.add_argument("--skip-autoattack", action="store_true")
    parser.add_argument("--skip-certify", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if not args.skip_attacks:
        rows = attacks.run(repeats=args.repeats, device=args.device, threads=args.threads)
        print(attacks.to_markdown(rows))
        out = report.RESULTS / f"attacks-{args.device}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(out, index=False)
        print(f"wrote {out}\n")
    if not args.skip_augment:
        df = augment.run(device=args.device, repeats=max(args.repeats, 15), verbose=False)
        df["machine"] = attacks._machine(torch.device(args.device))
        df.to_csv(report.RESULTS / f"augment-{args.device}.csv", index=False,
                  float_format="%.4f")
        print(augment._markdown(df), "\n")
    if not args.skip_autoattack and args.device == "cpu":
        df = autoattack.run()
        df.to_csv(report.RESULTS / "autoattack-cpu.csv", index=False, float_format="%.4f")
        print(df.to_string(index=False), "\n")
    if not args.skip_certify:
        df = certify.run(rounds=args.repeats, device=args.device)
        df.to_csv(report.RESULTS / f"certify-{args.device}.csv", index=False,
                  float_format="%.4f")
        print(df[["model", "impl", "median_s", "vs_floor"]].to_string(index=False), "\n")
    print(report.write_results_md())
    print(f"\nbenchmarks took {time.perf_counter() - start:.0f} s; "
          f"wrote {report.HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
