"""benchmarks/report.py: targets are judged on the CPU rows only; GPU tables carry caveats."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks import report


def _rows(device: str, ours_time: float, strength: float = 0.5) -> list[dict]:
    base = {"attack": "PGD-10 Linf", "device": device, "strength_metric": "robust acc",
            "success": 1 - strength, "batch": 512, "fwd_bwd_s": 0.01}
    return [
        {**base, "implementation": "ours", "vs_torchattacks": ours_time, "vs_foolbox": 0.9,
         "strength": strength, "floor_ratio": 1.05},
        {**base, "implementation": "torchattacks", "vs_torchattacks": float("nan"),
         "vs_foolbox": float("nan"), "strength": strength, "floor_ratio": 1.0},
    ]


def test_targets_judge_the_cpu_rows_only() -> None:
    attacks = pd.DataFrame(_rows("cpu", 0.8) + _rows("cuda", 1.4))
    checked = report.targets(attacks, pd.DataFrame())
    assert set(checked.device) == {"cpu"}
    speed = checked[checked.target.str.contains("time vs torchattacks")]
    assert speed.met.all() and speed.measured.tolist() == [0.8]


def test_a_weaker_attack_does_not_meet_a_speed_target() -> None:
    rows = _rows("cpu", 0.8)
    rows[0]["strength"] = 0.6  # ours leaves 10 points more robust accuracy than torchattacks
    checked = report.targets(pd.DataFrame(rows), pd.DataFrame())
    speed = checked[checked.target.str.contains("time vs torchattacks")].iloc[0]
    assert speed["strength condition"] == "not met" and not speed.met


def test_gpu_notes_say_when_nothing_was_fooled_and_what_was_not_run() -> None:
    unfooled = pd.DataFrame(_rows("cuda", 1.4, strength=1.0))
    notes = report.gpu_notes(unfooled)
    assert any("time only" in n for n in notes)
    assert any("DeepFool L2" in n and "C&W L2" in n for n in notes)
    assert not any("time only" in n for n in report.gpu_notes(pd.DataFrame(_rows("cuda", 1.4))))


def test_autoattack_target_needs_both_speed_and_strength(tmp_path: Path) -> None:
    def write(ours_s: float, ours_acc: float) -> str:
        base = {"n": 1000, "eps": 0.2, "rounds": 1, "threads": 1, "machine": "cpu",
                "load_before": 1.0, "load_after": 1.0, "floor_passes_per_point": 190.0,
                "passes_per_point": 300.0}
        pd.DataFrame([
            {**base, "impl": "ours", "median_s": ours_s, "robust_accuracy": ours_acc,
             "vs_torchattacks": ours_s / 10},
            {**base, "impl": "torchattacks", "median_s": 10.0, "robust_accuracy": 0.30,
             "vs_torchattacks": 1.0},
        ]).to_csv(tmp_path / "autoattack-cpu.csv", index=False)
        return "\n".join(report.autoattack_section(tmp_path))

    assert "0.40×, met" in write(4.0, 0.30)
    assert "NOT met" in write(6.0, 0.30)  # too slow
    assert "NOT met" in write(4.0, 0.31)  # fast but weaker


def test_certify_target_is_judged_against_the_forward_floor(tmp_path: Path) -> None:
    def write(certify_s: float) -> str:
        base = {"model": "MLP", "samples": 200, "draws": 1100, "batch_size": 1000, "rounds": 3,
                "threads": 1, "machine": "cpu", "load_before": 1.0, "load_after": 1.0,
                "min_s": 1.0}
        pd.DataFrame([
            {**base, "impl": "certify", "median_s": certify_s, "vs_floor": certify_s / 2.0},
            {**base, "impl": "floor", "median_s": 2.0, "vs_floor": 1.0},
            {**base, "impl": "floor + noise", "median_s": 3.0, "vs_floor": 1.5},
        ]).to_csv(tmp_path / "certify-cpu.csv", index=False)
        return "\n".join(report.certify_section(tmp_path))

    assert "MLP 1.05× (met; 0.70× the floor with the noise drawn)" in write(2.1)
    assert "MLP 1.60× (NOT met; 1.07×" in write(3.2)
