"""Data-parallel training: sharding, helpers, and a real 2-rank ``torchrun`` run on gloo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from advbook import distributed, train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    from advbook import defenses, distributed, train, train_robust

    torch.set_num_threads(1)
    out = sys.argv[1]
    info = distributed.init_from_env()
    rank = info.rank
    steps = {"n": 0}

    def count(*_):
        steps["n"] += 1

    # A: plain cross-entropy, SGD with momentum, 51 samples (the shards need one pad sample)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(51, 6, generator=g)
    y = torch.randint(0, 3, (51,), generator=g)
    torch.manual_seed(rank)  # different initial weights: fit must broadcast rank 0's
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt.register_step_post_hook(count)
    hist = train.fit(net, x, y, epochs=2, batch_size=8, optimizer=opt, seed=3,
                     progress=False, checkpoint=f"{out}/ck.pt")
    torch.save({"state": net.state_dict(), "steps": steps["n"],
                "train_loss": hist["train_loss"].tolist(), "world": info.world_size,
                "backend": info.backend}, f"{out}/a{rank}.pt")

    # D: what objectives, batch hooks and callbacks receive: always the bare model
    seen = set()

    def spy_objective(model, xb, yb):
        seen.add(("objective", type(model).__name__))
        logits = model(xb)
        return torch.nn.functional.cross_entropy(logits, yb), logits

    def spy_hook(model, xb, yb):
        seen.add(("batch_hook", type(model).__name__))
        return xb, yb

    def spy_callback(model, epoch):
        seen.add(("callback", type(model).__name__))

    torch.manual_seed(0)
    spy_net = nn.Sequential(nn.Linear(6, 3))
    train.fit(spy_net, x, y, epochs=1, batch_size=8, objective=spy_objective,
              batch_hook=spy_hook, epoch_callbacks=[spy_callback], progress=False)
    with open(f"{out}/d{rank}.json", "w") as fh:
        json.dump(sorted(seen), fh)

    # E: average_gradients is the mean over the ranks; disagreeing ranks are refused
    lin = nn.Linear(2, 1)
    lin.weight.grad = torch.full_like(lin.weight, float(rank + 1))
    lin.bias.grad = torch.full_like(lin.bias, 10.0 * (rank + 1))
    distributed.average_gradients(lin)
    lin2 = nn.Linear(2, 1)
    lin2.weight.grad = torch.ones_like(lin2.weight) if rank == 0 else None
    try:
        distributed.average_gradients(lin2)
        refused = False
    except RuntimeError:
        refused = True
    torch.save({"weight": lin.weight.grad, "bias": lin.bias.grad, "refused": refused},
               f"{out}/e{rank}.pt")

    # B: TRADES (two forward passes per step) on a BatchNorm model
    torch.manual_seed(10 + rank)
    net = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    obj = defenses.trades_objective(0.05, 1.0, steps=2,
                                    generator=torch.Generator().manual_seed(1))
    train.fit(net, x, y, epochs=1, batch_size=8, objective=obj, progress=False)
    torch.save({"state": net.state_dict()}, f"{out}/b{rank}.pt")

    # C: the command line, inside the same process group
    res = train_robust.main(["--method", "fgsm", "--eps", "0.1", "--epochs", "1",
                             "--model", "mlp", "--subset", "64", "--eval-subset", "32",
                             "--batch-size", "16", "--eval-steps", "2", "--no-progress",
                             "--out", f"{out}/results.json"])
    with open(f"{out}/c{rank}.json", "w") as fh:
        json.dump({"returned": res is not None}, fh)
    distributed.cleanup(info)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Launch the worker once with ``torchrun --nproc_per_node=2`` (gloo, CPU)."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVBOOK_PROGRESS": "0",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(out)]
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # timed out: take down the launcher and both ranks
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, log[-4000:]
    return {"out": out, "log": log}


def _reference_run() -> tuple[nn.Module, list[float]]:
    """What 2 ranks with per-rank batch 8 compute, written as one process: each step averages
    the two ranks' mean losses over their shards of DistributedSampler-style padding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(51, 6, generator=g)
    y = torch.randint(0, 3, (51,), generator=g)
    torch.manual_seed(0)  # rank 0's initial weights
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    order = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(2):
        perm = torch.randperm(51, generator=order).tolist()
        padded = perm + perm[:1]  # 52 = 2 · ⌈51/2⌉
        shards = [padded[0::2], padded[1::2]]
        total, seen = 0.0, 0
        for i in range(0, 26, 8):
            parts = [(x[s[i : i + 8]], y[s[i : i + 8]]) for s in shards]
            per_rank = [F.cross_entropy(net(xb), yb) for xb, yb in parts]
            loss = 0.5 * (per_rank[0] + per_rank[1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            for r, (_, yb) in zip(per_rank, parts, strict=True):
                total += float(r.detach()) * len(yb)
            seen += sum(len(p[1]) for p in parts)
        losses.append(total / seen)
    return net, losses


def test_two_gloo_ranks_end_identical_after_the_right_number_of_steps(
    two_ranks: dict[str, Any],
) -> None:
    out = two_ranks["out"]
    a0 = torch.load(out / "a0.pt", weights_only=True)
    a1 = torch.load(out / "a1.pt", weights_only=True)
    assert a0["world"] == a1["world"] == 2 and a0["backend"] == "gloo"
    for k, v in a0["state"].items():
        assert torch.equal(v, a1["state"][k]), k
    # 2 epochs · ⌈⌈51/2⌉/8⌉ = 2 · 4 optimizer steps on every rank
    assert a0["steps"] == a1["steps"] == 8
    assert a0["train_loss"] == a1["train_loss"]


def test_two_ranks_compute_what_one_process_with_the_union_batch_computes(
    two_ranks: dict[str, Any],
) -> None:
    a0 = torch.load(two_ranks["out"] / "a0.pt", weights_only=True)
    ref, losses = _reference_run()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(a0["state"][k], v, rtol=1e-5, atol=1e-6)
    assert a0["train_loss"] == pytest.approx(losses, rel=1e-5)


def test_two_ranks_with_batchnorm_and_two_forward_passes_stay_identical(
    two_ranks: dict[str, Any],
) -> None:
    out = two_ranks["out"]
    b0 = torch.load(out / "b0.pt", weights_only=True)["state"]
    b1 = torch.load(out / "b1.pt", weights_only=True)["state"]
    assert int(b0["0.num_batches_tracked"]) > 0
    for k, v in b0.items():  # parameters and the synchronised running statistics
        assert torch.equal(v, b1[k]), k


def test_objectives_hooks_and_callbacks_never_see_a_wrapper(two_ranks: dict[str, Any]) -> None:
    for rank in (0, 1):
        seen = json.loads((two_ranks["out"] / f"d{rank}.json").read_text())
        assert seen == [["batch_hook", "Sequential"], ["callback", "Sequential"],
                        ["objective", "Sequential"]]


def test_average_gradients_is_the_mean_over_ranks(two_ranks: dict[str, Any]) -> None:
    for rank in (0, 1):
        e = torch.load(two_ranks["out"] / f"e{rank}.pt", weights_only=True)
        assert torch.equal(e["weight"], torch.full((1, 2), 1.5))  # (1 + 2) / 2
        assert torch.equal(e["bias"], torch.full((1,), 15.0))
        assert e["refused"]


def test_only_rank_0_writes_and_prints(two_ranks: dict[str, Any]) -> None:
    out = two_ranks["out"]
    ck = torch.load(out / "ck.pt", weights_only=True)
    a0 = torch.load(out / "a0.pt", weights_only=True)
    assert ck["epoch"] == 2 and ck["meta"]["world_size"] == 2
    for k, v in a0["state"].items():
        assert torch.equal(ck["model"][k], v)
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["optimizer_steps"] == 2  # ⌈⌈64/2⌉/16⌉ steps in one epoch
    assert json.loads((out / "c0.json").read_text()) == {"returned": True}
    assert json.loads((out / "c1.json").read_text()) == {"returned": False}
    assert two_ranks["log"].count("fgsm eps=0.1: clean") == 1
    assert not list(out.glob(".*tmp*"))


@pytest.mark.parametrize("n", [1, 7, 10, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shard_indices_match_distributed_sampler(n: int, world: int, drop_last: bool) -> None:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    if drop_last and n < world:
        return
    shards = []
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False,
                                     drop_last=drop_last)
        expected = perm[list(sampler)]
        got = distributed.shard_indices(perm, rank, world, drop_last=drop_last)
        assert torch.equal(got, expected)
        shards.append(got)
    assert len({len(s) for s in shards}) == 1
    union = torch.cat(shards).unique()
    if drop_last:
        assert len(torch.cat(shards)) == len(union)  # disjoint
    else:
        assert torch.equal(union, perm.sort().values)  # covers everything


def test_helpers_in_a_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init_from_env()
    assert (info.rank, info.world_size, info.backend, info.initialized_here) == (0, 1, None, False)
    assert info.is_main and distributed.is_main_process() and not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    net = nn.Linear(2, 2)
    assert distributed.wrap(net) is net
    assert distributed.unwrap(nn.DataParallel(net)) is net
    t = torch.arange(3.0)
    s = distributed.all_reduce_sum(t)
    assert torch.equal(s, t) and s is not t
    distributed.barrier()
    distributed.cleanup(info)


def test_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set"):
        distributed.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        distributed.init_from_env()
    with pytest.raises(ValueError, match="backend"):
        distributed.init_from_env("mpi")
    with pytest.raises(ValueError, match="rank < world_size"):
        distributed.shard_indices(torch.arange(4), 2, 2)
    with pytest.raises(TypeError, match="1-D"):
        distributed.shard_indices(torch.zeros(2, 2), 0, 1)
    with pytest.raises(ValueError, match="distributed=True needs an initialised process group"):
        train.fit(nn.Linear(2, 2), torch.rand(4, 2), torch.zeros(4, dtype=torch.long),
                  distributed=True, progress=False)
