"""The command line ``python -m advbook.train_robust``: results JSON, checkpoint, progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from advbook import attacks, data, defenses, models, train_robust

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(args: list[str], *, progress: bool, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ADVBOOK_PROGRESS")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    if not progress:
        env["ADVBOOK_PROGRESS"] = "0"
    return subprocess.run([sys.executable, "-m", "advbook.train_robust", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One epoch of PGD-AT on 96 images, then a resumed second epoch with the progress bar."""
    out = tmp_path_factory.mktemp("cli")
    common = ["--method", "pgd", "--eps", "0.2", "--model", "mlp", "--subset", "96",
              "--batch-size", "32", "--steps", "2", "--eval-steps", "3", "--seed", "1",
              "--checkpoint", str(out / "ck.pt")]
    first = _cli([*common, "--epochs", "1", "--out", str(out / "r1.json")], progress=False,
                 cwd=out)
    assert first.returncode == 0, first.stderr[-3000:]
    first_ck = torch.load(out / "ck.pt", weights_only=True)
    second = _cli([*common, "--epochs", "2", "--resume", "--out", str(out / "r2.json")],
                  progress=True, cwd=out)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"out": out, "first": first, "second": second, "first_ck": first_ck,
            "r1": json.loads((out / "r1.json").read_text()),
            "r2": json.loads((out / "r2.json").read_text())}


def test_results_json_reports_the_run(runs: dict[str, Any]) -> None:
    r1 = runs["r1"]
    assert r1["method"] == "pgd" and r1["eps"] == 0.2 and r1["model"] == "mlp"
    assert r1["n_train"] == 96 and r1["n_eval"] == 1000 and r1["world_size"] == 1
    assert r1["optimizer_steps"] == 3  # ⌈96/32⌉ steps
    assert len(r1["history"]) == 1 and r1["history"][0]["epoch"] == 1
    assert set(r1["robust_accuracy"]) == {"FGSM", "PGD-3"}
    acc = r1["robust_accuracy"]
    assert 0 <= r1["worst_case_accuracy"] <= min(acc.values()) <= r1["clean_accuracy"] <= 1
    assert "PGDATObjective(eps=0.2, steps=2" in r1["objective"]
    assert "pgd eps=0.2: clean" in runs["first"].stdout
    assert r1["overrides"] == {} and runs["r2"]["overrides"] == {}
    assert not [p.name for p in runs["out"].iterdir() if p.name.startswith(".")]  # no temp files


def test_reported_accuracies_are_those_of_the_saved_model(runs: dict[str, Any]) -> None:
    """Recompute from the checkpoint: the clean accuracy exactly, FGSM (deterministic) too."""
    net = models.MLP(784, (256,), 10)
    net.load_state_dict(runs["first_ck"]["model"])
    mnist = data.load_mnist()
    res = attacks.robust_accuracy(
        net, mnist.x_test, mnist.y_test,
        {"FGSM": lambda m, x, y: attacks.fgsm(m, x, y, eps=0.2)},
    )
    assert runs["r1"]["clean_accuracy"] == pytest.approx(res.clean_accuracy)
    assert runs["r1"]["robust_accuracy"]["FGSM"] == pytest.approx(res.accuracy["FGSM"])


def test_resume_continues_the_checkpoint_and_shows_a_progress_bar(runs: dict[str, Any]) -> None:
    r1, r2 = runs["r1"], runs["r2"]
    assert [h["epoch"] for h in r2["history"]] == [1, 2]
    assert r2["history"][0]["train_loss"] == r1["history"][0]["train_loss"]
    assert r2["optimizer_steps"] == 6
    assert torch.load(runs["out"] / "ck.pt", weights_only=True)["epoch"] == 2
    assert "epochs:" in runs["second"].stderr and "1/2" in runs["second"].stderr  # tqdm
    assert "epochs:" not in runs["first"].stderr  # ADVBOOK_PROGRESS=0


def test_bad_command_lines_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["--method", "free"], "invalid choice"),
        (["--eps", "-1"], "finite number >= 0"),
        (["--resume"], "--resume needs --checkpoint"),
        (["--method", "pgd", "--eps", "0"], "needs --eps > 0"),
        (["--mix", "2"], "--mix must lie in [0, 1]"),
        (["--method", "pgd", "--no-random-start"], "only applies to --method fgsm"),
        (["--subset", "0"], "integer >= 1"),
        (["--lr", "0"], "finite number > 0"),
        (["--seed", "-1"], "integer >= 0"),
        (["--override-settings"], "--override-settings only applies with --resume"),
    ]:
        with pytest.raises(SystemExit) as exc:
            train_robust.parse_args(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_build_objective_maps_methods_to_recipes() -> None:
    g = torch.Generator()
    assert train_robust.build_objective("standard", 0.3) is None
    kinds = {
        "fgsm": defenses.FGSMATObjective, "pgd": defenses.PGDATObjective,
        "trades": defenses.TRADESObjective, "mixed": defenses.MixedObjective,
    }
    for method, cls in kinds.items():
        obj = train_robust.build_objective(method, 0.3, steps=3, generator=g)
        assert isinstance(obj, cls) and obj.eps == 0.3 and obj.generator is g
    assert train_robust.build_objective("trades", 0.3, beta=2.5).beta == 2.5  # type: ignore[union-attr]
    assert not train_robust.build_objective(  # type: ignore[union-attr]
        "fgsm", 0.3, random_start=False).random_start
    with pytest.raises(ValueError, match="method must be one of"):
        train_robust.build_objective("free", 0.3)
    assert isinstance(train_robust.build_model("cnn"), models.SmallCNN)
