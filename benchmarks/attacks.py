"""Benchmark: advbook's attacks against torchattacks 3.5.1 and foolbox 3.3.4.

All implementations attack the same trained :class:`~advbook.models.SmallCNN` on the same batch
of MNIST test images, in one process. Each timing is the median of ``repeats`` runs (three times
as many for the cheap FGSM and PGD benchmarks) after a warm-up run, and the implementations are
interleaved repeat by repeat so that a change in the machine's load hits all of them alike.
Reported per row:

* ``median_s`` — median wall time;
* ``vs_torchattacks``, ``vs_foolbox`` — time ratio ours / peer (for our rows);
* ``strength`` — robust accuracy on the batch (FGSM, PGD) or the median L2 distance over the
  correctly classified images, failures counted as ``inf`` (DeepFool, C&W), with ``success``;
* ``fb_equiv`` — time / (one forward+backward w.r.t. the input on the batch, timed as the
  mean over a loop of 10 such passes in the same rounds as the attacks), and ``floor_ratio`` —
  time / (nominal gradient steps × that forward+backward).

C&W runs on the first ``cw_batch`` images of the batch (all three implementations alike), PGD
on the first ``pgd_batch`` (512) test images, so that robust accuracies resolve 0.2 percentage
points and the 0.5-point equality condition of the targets is meaningful.

``DeepFool L2 (K=100)`` attacks a second model with 100 classes — the SmallCNN trained on
"two-digit numbers" (two MNIST digits, each squeezed to half width, side by side; label
``10·left + right``) — on ``k100_batch`` test images: ours with the top-10 candidate classes and
with all 100, torchattacks (which always differentiates all classes, one image at a time) and
foolbox (top-10 candidates).

On CUDA (``--device cuda``) the model is the CIFAR-size :func:`~advbook.models.small_resnet`
(random weights, 3×32×32 uniform inputs labelled by the model's own predictions, so every input
starts correctly classified) at batch 512. On both devices PGD-10 L∞ is also timed with a copy of
the model in ``channels_last`` memory format and under ``torch.compile`` (``--variants``); these
rows change the model, not the attack, and would speed up any library alike.

Each row records the 1-minute load average before and after its benchmark, so that a
reader can see how busy the machine was. Run ``python -m benchmarks.attacks [--device cpu]
[--batch 128] [--repeats 5] [--threads N] [--out CSV]``, or everything with
``python -m benchmarks``.
Not part of the test-suite.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advbook._core.balls import batch_norms
from advbook.attacks import carlini_wagner, deepfool, fgsm, pgd
from advbook.data import load_mnist
from advbook.models import SmallCNN, small_resnet
from advbook.train import fit

RESULTS = Path(__file__).resolve().parent / "results"

# Settings shared by all implementations.
EPS_LINF, EPS_L2, PGD_STEPS = 0.1, 1.5, 10
CW = {"binary_search_steps": 5, "steps": 500, "lr": 0.01, "c": 0.01}

AttackFn = Callable[[], Tensor]


def _train_model(epochs: int, seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    ds = load_mnist()
    torch.manual_seed(seed)
    model = SmallCNN()
    fit(model, ds.x_train, ds.y_train, epochs=epochs, seed=seed, progress=False)
    return model.eval(), ds.x_test, ds.y_test


def two_digit_numbers(x: Tensor, y: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` images of two-digit numbers built from digits ``x`` (N, 1, 28, 28) with labels ``y``.

    Each image puts two random digits side by side, each average-pooled to half its width, so the
    result is again 1×28×28; its label is ``10·left + right`` (100 classes).
    """
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(len(x), (2, n), generator=g)
    half = F.avg_pool2d(x, kernel_size=(1, 2))  # (N, 1, 28, 14)
    return torch.cat([half[i], half[j]], dim=3), 10 * y[i] + y[j]


def _train_k100_model(epochs: int, seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    """A SmallCNN with 100 classes trained on two-digit numbers (for DeepFool at K=100)."""
    ds = load_mnist()
    x_tr, y_tr = two_digit_numbers(ds.x_train, ds.y_train, 20_000, seed)
    x_te, y_te = two_digit_numbers(ds.x_test, ds.y_test, 2_000, seed + 1)
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=100)
    fit(model, x_tr, y_tr, epochs=epochs, seed=seed, progress=False)
    return model.eval(), x_te, y_te


def _cuda_model(batch: int, seed: int, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """Random-weight CIFAR-size ResNet, uniform inputs labelled by its own predictions."""
    torch.manual_seed(seed)
    model = small_resnet(num_classes=10).to(device).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


FLOOR_LOOP = 10


def _forward_backward(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    """``FLOOR_LOOP`` consecutive forward+backward passes w.r.t. the input (the attack floor).

    Each pass starts from the previous input moved along its gradient's sign, as in an attack,
    so the loop measures what ``steps`` gradient evaluations cost without the attack's logic.
    """

    def run() -> Tensor:
        xr = x
        for _ in range(FLOOR_LOOP):
            xr = xr.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xr), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xr)
            xr = xr + 1e-3 * grad.sign()
        return xr

    return run


def _strength(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, kind: str) -> dict:
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        fooled = model(x_adv).argmax(1) != y
    if kind == "accuracy":
        return {"strength": float((~fooled).float().mean()), "strength_metric": "robust acc",
                "success": float(fooled[correct].float().mean())}
    fooled &= x_adv.flatten(1).abs().sum(1) > 0  # foolbox C&W returns zeros on failure
    d = torch.where(fooled, batch_norms(x_adv - x, "l2"), torch.full_like(fooled, math.inf,
                                                                          dtype=x.dtype))
    d = d[correct]
    return {"strength": float(d.median()), "strength_metric": "median L2",
            "success": float(torch.isfinite(d).float().mean())}


def _peers(
    model: nn.Module, x: Tensor, y: Tensor, x_cw: Tensor, y_cw: Tensor, x_pgd: Tensor,
    y_pgd: Tensor,
) -> dict[str, dict[str, tuple[AttackFn, str]]]:
    """For each benchmark, the implementations: name → (zero-argument callable, strength kind).

    C&W runs on its own (smaller) batch ``x_cw`` because of its cost, PGD on a larger one
    ``x_pgd`` so that robust accuracies can be compared to a fraction of a percentage point.
    """
    import foolbox as fb  # optional, benchmark-only dependencies
    import torchattacks as ta

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    a_linf, a_l2 = 2.5 * EPS_LINF / PGD_STEPS, 2.5 * EPS_L2 / PGD_STEPS

    def gen() -> torch.Generator:  # the same random start for every call
        return torch.Generator().manual_seed(0)

    def seeded(attack: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        """torchattacks draws its random start from the global generator: seed it as ours, so
        both start from the same random draws and their strengths can be compared exactly."""

        def call(xb: Tensor, yb: Tensor) -> Tensor:
            torch.manual_seed(0)
            return attack(xb, yb)

        return call

    cw_total = CW["binary_search_steps"] * CW["steps"]

    def fbx(attack: object, eps: float | None, xb: Tensor = x, yb: Tensor = y) -> AttackFn:
        return lambda: attack(fmodel, xb, yb, epsilons=eps)[1 if eps is not None else 0]

    return {
        "FGSM Linf": {
            "ours": (lambda: fgsm(model, x, y, eps=EPS_LINF), "accuracy"),
            "torchattacks": (lambda: ta.FGSM(model, eps=EPS_LINF)(x, y), "accuracy"),
            "foolbox": (fbx(fb.attacks.LinfFastGradientAttack(random_start=False), EPS_LINF),
                        "accuracy"),
        },
        "PGD-10 Linf": {
            "ours": (lambda: pgd(model, x_pgd, y_pgd, eps=EPS_LINF, steps=PGD_STEPS,
                                 generator=gen()), "accuracy"),
            "ours (early_stop)": (
                lambda: pgd(model, x_pgd, y_pgd, eps=EPS_LINF, steps=PGD_STEPS, generator=gen(),
                            early_stop=True), "accuracy"),
            "torchattacks": (lambda: seeded(ta.PGD(model, eps=EPS_LINF, alpha=a_linf,
                                                   steps=PGD_STEPS))(x_pgd, y_pgd), "accuracy"),
            "foolbox": (fbx(fb.attacks.LinfPGD(abs_stepsize=a_linf, steps=PGD_STEPS), EPS_LINF,
                            x_pgd, y_pgd), "accuracy"),
        },
        "PGD-10 L2": {
            "ours": (lambda: pgd(model, x_pgd, y_pgd, eps=EPS_L2, steps=PGD_STEPS, norm="l2",
                                 generator=gen()), "accuracy"),
            "ours (early_stop)": (
                lambda: pgd(model, x_pgd, y_pgd, eps=EPS_L2, steps=PGD_STEPS, norm="l2",
                            generator=gen(), early_stop=True), "accuracy"),
            "torchattacks": (lambda: seeded(ta.PGDL2(model, eps=EPS_L2, alpha=a_l2,
                                                     steps=PGD_STEPS))(x_pgd, y_pgd), "accuracy"),
            "foolbox": (fbx(fb.attacks.L2PGD(abs_stepsize=a_l2, steps=PGD_STEPS), EPS_L2,
                            x_pgd, y_pgd), "accuracy"),
        },
        "DeepFool L2": {
            "ours": (lambda: deepfool(model, x, y, steps=50, overshoot=0.02, candidates=10),
                     "distance"),
            "torchattacks": (lambda: ta.DeepFool(model, steps=50, overshoot=0.02)(x, y),
                             "distance"),
            "foolbox": (fbx(fb.attacks.L2DeepFoolAttack(steps=50, candidates=10,
                                                         overshoot=0.02), None), "distance"),
        },
        "C&W L2": {
            "ours": (lambda: carlini_wagner(model, x_cw, y_cw, **CW), "distance"),
            # torchattacks' CW has no binary search: one constant, the same number of steps
            "torchattacks": (
                lambda: ta.CW(model, c=1.0, steps=cw_total, lr=CW["lr"])(x_cw, y_cw),
                "distance"),
            "foolbox": (fbx(fb.attacks.L2CarliniWagnerAttack(
                binary_search_steps=CW["binary_search_steps"], steps=CW["steps"],
                stepsize=CW["lr"], initial_const=CW["c"]), None, x_cw, y_cw), "distance"),
        },
    }


def _k100_peers(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, tuple[AttackFn, str]]:
    """DeepFool on the 100-class model: top-10 and all-100 candidates against the peers."""
    import foolbox as fb
    import torchattacks as ta

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    fb_df = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    return {
        "ours": (lambda: deepfool(model, x, y, steps=50, overshoot=0.02, candidates=10),
                 "distance"),
        "ours (all 100 classes)": (
            lambda: deepfool(model, x, y, steps=50, overshoot=0.02, candidates=100), "distance"),
        "torchattacks": (lambda: ta.DeepFool(model, steps=50, overshoot=0.02)(x, y), "distance"),
        "foolbox": (lambda: fb_df(fmodel, x, y, epsilons=None)[0], "distance"),
    }


def _variant_peers(
    model: nn.Module, x: Tensor, y: Tensor, variants: tuple[str, ...]
) -> dict[str, tuple[AttackFn, str]]:
    """PGD-10 L∞ with the model in channels_last format and/or compiled with torch.compile."""
    out: dict[str, tuple[AttackFn, str]] = {}

    def gen() -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(0)

    for v in variants:
        m = model
        xv = x
        if v == "channels_last":
            import copy

            m = copy.deepcopy(model).to(memory_format=torch.channels_last)
            xv = x.contiguous(memory_format=torch.channels_last)
        elif v == "compile":
            m = torch.compile(model)
        else:
            raise ValueError(f"unknown variant {v!r}; expected 'channels_last' or 'compile'")
        out[f"ours ({v})"] = (
            lambda m=m, xv=xv: pgd(m, xv, y, eps=EPS_LINF, steps=PGD_STEPS, generator=gen()),
            "accuracy",
        )
    return out


NOMINAL_STEPS = {
    "FGSM Linf": 1,
    "PGD-10 Linf": PGD_STEPS,
    "PGD-10 L2": PGD_STEPS,
    "DeepFool L2": math.nan,
    "DeepFool L2 (K=100)": math.nan,
    "C&W L2": CW["binary_search_steps"] * CW["steps"],
}


#: benchmarks timed with three times as many rounds (each round takes about a second)
CHEAP = ("FGSM Linf", "PGD-10 Linf", "PGD-10 L2")


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(
    fns: dict[str, AttackFn], repeats: int, device: torch.device | None = None
) -> tuple[dict, dict]:
    """Median time of each function; one call of each per round, after a warm-up round."""
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up, and the attacked batch
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, outputs


def _machine(device: torch.device) -> str:
    """A short name of the machine: the GPU's name, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


def run(
    *,
    batch: int | None = None,
    cw_batch: int = 32,
    pgd_batch: int | None = None,
    k100_batch: int = 32,
    repeats: int = 5,
    epochs: int = 2,
    seed: int = 0,
    threads: int | None = None,
    only: tuple[str, ...] | None = None,
    device: str = "cpu",
    variants: tuple[str, ...] | None = None,
) -> list[dict]:
    """Run the benchmark and return one row (a dict) per benchmark × implementation.

    ``batch`` defaults to 128 on the CPU and 512 on CUDA, ``pgd_batch`` to 512; ``variants``
    (PGD with the model in ``channels_last`` format and/or ``compile``-d) default to both.
    """
    if repeats < 5:
        raise ValueError(f"repeats must be >= 5 for a meaningful median, got {repeats}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch.cuda.is_available() is False")
    if threads is not None:
        torch.set_num_threads(threads)
    if batch is None:
        batch = 512 if dev.type == "cuda" else 128
    if pgd_batch is None:
        pgd_batch = 512
    if variants is None:
        variants = ("channels_last", "compile")
    warnings.filterwarnings("ignore")
    if dev.type == "cuda":
        model, x_all, y_all = _cuda_model(max(batch, pgd_batch), seed, dev)
        model_name = "small_resnet (random weights) on 3x32x32"
    else:
        model, x_all, y_all = _train_model(epochs, seed)
        model_name = "SmallCNN trained on MNIST-5k"
    x, y = x_all[:batch], y_all[:batch]
    x_pgd, y_pgd = x_all[:pgd_batch], y_all[:pgd_batch]
    x_cw, y_cw = x[:cw_batch], y[:cw_batch]
    batches = {"C&W L2": (x_cw, y_cw), "PGD-10 Linf": (x_pgd, y_pgd), "PGD-10 L2": (x_pgd, y_pgd)}
    groups: dict[str, tuple[dict[str, tuple[AttackFn, str]], nn.Module, Tensor, Tensor, str]] = {
        k: (v, model, *batches.get(k, (x, y)), model_name)
        for k, v in _peers(model, x, y, x_cw, y_cw, x_pgd, y_pgd).items()
    }
    if variants:
        groups["PGD-10 Linf"][0].update(_variant_peers(model, x_pgd, y_pgd, tuple(variants)))
    if dev.type == "cpu" and (not only or "DeepFool L2 (K=100)" in only):
        m100, x100, y100 = _train_k100_model(epochs + 1, seed)
        x100, y100 = x100[:k100_batch], y100[:k100_batch]
        groups["DeepFool L2 (K=100)"] = (_k100_peers(m100, x100, y100), m100, x100, y100,
                                         "SmallCNN, 100 classes (two-digit numbers)")
    machine = _machine(dev)
    rows: list[dict] = []
    for bench, (impls, mdl, xb, yb, mname) in groups.items():
        if only and bench not in only:
            continue
        load_before = _load()
        # the forward+backward floor is timed in the same rounds as the attacks
        fns = {k: v[0] for k, v in impls.items()} | {"fwd+bwd": _forward_backward(mdl, xb, yb)}
        # the cheap benchmarks get more rounds: their medians are the ones the targets are on
        rounds = 3 * repeats if bench in CHEAP else repeats
        medians, outputs = _time_interleaved(fns, rounds, dev)
        load_after = _load()
        t_fb = medians["fwd+bwd"] / FLOOR_LOOP
        for impl, (_, kind) in impls.items():
            row = {
                "attack": bench,
                "implementation": impl,
                "median_s": medians[impl],
                "vs_torchattacks": math.nan,
                "vs_foolbox": math.nan,
                **_strength(mdl, xb, yb, outputs[impl].detach(), kind),
                "fb_equiv": medians[impl] / t_fb,
                "floor_ratio": medians[impl] / (NOMINAL_STEPS[bench] * t_fb),
                "batch": len(xb),
                "threads": torch.get_num_threads(),
                "fwd_bwd_s": t_fb,
                "repeats": rounds,
                "device": dev.type,
                "machine": machine,
                "model": mname,
                "torch": torch.__version__,
                "load_before": load_before,
                "load_after": load_after,
            }
            if impl.startswith("ours"):
                row["vs_torchattacks"] = medians[impl] / medians["torchattacks"]
                row["vs_foolbox"] = medians[impl] / medians["foolbox"]
            rows.append(row)
        summary = ", ".join(f"{r['implementation']} {r['median_s']:.3g} s"
                            for r in rows if r["attack"] == bench)
        print(f"{bench}: {summary}", flush=True)  # progress, for long runs
    return rows


def to_markdown(rows: list[dict]) -> str:
    frame = pd.DataFrame(rows)
    cols = ["attack", "implementation", "median_s", "vs_torchattacks", "vs_foolbox",
            "strength_metric", "strength", "success", "floor_ratio"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("" if math.isnan(v) else f"{v:.3f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="default 128 (CPU), 512 (CUDA)")
    parser.add_argument("--cw-batch", type=int, default=32)
    parser.add_argument("--pgd-batch", type=int, default=None, help="default 512")
    parser.add_argument("--k100-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="*", default=None,
                        help="PGD variants: channels_last compile (default: both)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV path (default benchmarks/results/attacks-<device>.csv)")
    args = parser.parse_args(argv)
    rows = run(batch=args.batch, cw_batch=args.cw_batch, pgd_batch=args.pgd_batch,
               k100_batch=args.k100_batch,
               repeats=args.repeats, epochs=args.epochs, threads=args.threads,
               only=tuple(args.only) if args.only else None, device=args.device,
               variants=tuple(args.variants) if args.variants is not None else None)
    print(to_markdown(rows))
    out = args.out or RESULTS / f"attacks-{args.device}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
