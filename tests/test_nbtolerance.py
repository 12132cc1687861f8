"""The notebook number check: exact where nothing is declared, within declared bands elsewhere."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools import nbtolerance as nt

ROOT = Path(__file__).resolve().parent.parent


def _rules(*specs: dict) -> list[nt.Rule]:
    return [nt.Rule.from_dict(s) for s in specs]


def test_undeclared_numbers_must_be_printed_identically() -> None:
    assert nt.compare_text("acc 97.2 %", "acc 97.2 %", []) == []
    (m,) = nt.compare_text("acc 97.2 %", "acc 97.1 %", [])
    assert "97.2 became 97.1 (no tolerance)" in m.message


def test_text_between_numbers_must_agree_up_to_white_space() -> None:
    rules = _rules({"abs": 1.0})
    assert nt.compare_text("a   9.5  b", "a  10.5   b", rules) == []
    (m,) = nt.compare_text("within 0.5 points", "larger than 0.5 points", rules)
    assert "'within' became 'larger than'" in m.message
    (m,) = nt.compare_text("1 2", "1 2 3", rules)
    assert "2 numbers stored, 3 printed" in m.message


def test_digits_in_identifiers_are_text() -> None:
    assert [m.group() for m in nt.NUMBER.finditer("fig1 x2 PGD-20 −0.5 1,000 3e-05 97.2%")] == [
        "20", "−0.5", "1,000", "3e-05", "97.2"
    ]


def test_binomial_band_in_each_unit() -> None:
    (rule,) = _rules({"binomial": 1000, "unit": "percent"})
    p = (1000 * 0.972 + 2) / 1004
    assert rule.band(97.2) == pytest.approx(300 * math.sqrt(p * (1 - p) / 1000))
    assert 1.4 < rule.band(97.2) < 1.7
    (frac,) = _rules({"binomial": 1000, "sigmas": 2})
    assert frac.band(0.972) == pytest.approx(rule.band(97.2) / 150)
    (count,) = _rules({"binomial": 1000, "unit": "count"})
    assert count.band(28) == pytest.approx(rule.band(2.8) * 10)
    # a stored 100 % still allows some movement
    assert rule.band(100.0) > 0.2


def test_a_three_point_change_of_a_headline_accuracy_fails() -> None:
    rules = _rules({"pattern": r"accuracy[^\n]*", "binomial": 1000, "unit": "percent"})
    assert nt.compare_text("test accuracy 97.2 %", "test accuracy 96.4 %", rules) == []
    (m,) = nt.compare_text("test accuracy 97.2 %", "test accuracy 94.2 %", rules)
    assert "outside 3 binomial s.e." in m.message and m.old == 97.2 and m.new == 94.2


def test_rel_and_abs_bands_and_rounding_slack() -> None:
    rules = _rules({"rel": 0.05})
    assert nt.compare_text("d 1.689", "d 1.619", rules) == []
    assert nt.compare_text("d 1.689", "d 1.589", rules) != []
    # one unit of the last digit on each side: 0.10 -> 0.12 passes an abs of 0
    assert nt.compare_text("x 0.10", "x 0.12", _rules({"abs": 0})) == []
    assert nt.compare_text("x 0.10", "x 0.13", _rules({"abs": 0})) != []


def test_below_bounds_a_residue_whatever_was_stored() -> None:
    rules = _rules({"pattern": r"max diff \S+", "below": 1e-6})
    assert nt.compare_text("max diff 6.0e-08", "max diff 1.2e-07", rules) == []
    assert nt.compare_text("max diff 6.0e-08", "max diff 3.0e-03", rules) != []


def test_patterns_confine_a_rule_to_its_matches() -> None:
    rules = _rules({"pattern": r"acc \S+", "abs": 5})
    # the accuracy may move; the count of images on the same line may not
    assert nt.compare_text("n 500, acc 50.0", "n 500, acc 52.0", rules) == []
    (m,) = nt.compare_text("n 500, acc 50.0", "n 499, acc 50.0", rules)
    assert "500 became 499 (no tolerance)" in m.message


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, "exactly one of"),
        ({"abs": 1, "rel": 1}, "exactly one of"),
        ({"abs": -1}, "finite number >= 0"),
        ({"rel": float("nan")}, "finite number >= 0"),
        ({"binomial": 0}, "n >= 1"),
        ({"abs": 1, "unit": "parsec"}, "unit must be"),
        ({"abs": 1, "pattern": "("}, "bad pattern"),
        ({"abs": 1, "tolerance": 3}, "unknown keys"),
        ("abs", "must be a dict"),
    ],
)
def test_malformed_rules_are_refused(spec: object, message: str) -> None:
    with pytest.raises(nt.ToleranceSpecError, match=message):
        nt.Rule.from_dict(spec)


def test_reconcile_replaces_only_fields_within_tolerance() -> None:
    stored = [
        {"output_type": "stream", "name": "stdout", "text": "acc 90.0\n"},
        {"output_type": "execute_result", "data": {"text/plain": "loss 1.00"}, "metadata": {}},
    ]
    fresh = [
        {"output_type": "stream", "name": "stdout", "text": "acc 91.0\n"},
        {"output_type": "execute_result", "data": {"text/plain": "loss 2.00"}, "metadata": {}},
    ]
    rules = _rules({"pattern": r"acc \S+", "abs": 2}, {"pattern": r"loss \S+", "rel": 0.1})
    out, found = nt.reconcile(stored, fresh, rules)
    assert out[0]["text"] == "acc 90.0\n"
    assert out[1]["data"]["text/plain"] == "loss 2.00"
    assert len(found) == 1 and "1.00 became 2.00" in found[0].message
    assert fresh[0]["text"] == "acc 91.0\n"  # the caller's outputs are not modified


def _notebook(tmp_path: Path, name: str, code: str, stored: str, tolerance: list) -> None:
    cell = nbformat.v4.new_code_cell(code, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stored)]
    if tolerance:
        cell.metadata["advbook"] = {"tolerance": tolerance}
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / name)


def test_nbval_run_applies_the_declared_tolerances(tmp_path: Path) -> None:
    """End to end: nbval with the plugin passes a drift inside its band and fails one outside."""
    code = 'print("accuracy 96.5 %")'
    band = [{"pattern": "accuracy[^\\n]*", "binomial": 1000, "unit": "percent"}]
    _notebook(tmp_path, "inside.ipynb", code, "accuracy 97.2 %\n", band)
    _notebook(tmp_path, "outside.ipynb", code, "accuracy 99.9 %\n", band)
    _notebook(tmp_path, "exact.ipynb", code, "accuracy 97.2 %\n", [])
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "tools.nbtolerance",
         "--nbval", "--nbval-current-env", "inside.ipynb", "outside.ipynb", "exact.ipynb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert "2 failed, 1 passed" in out, out
    assert re.search(r"inside\S*Cell 0 PASSED", out), out
    assert "99.9 became 96.5, outside 3 binomial s.e." in out, out
    assert "FAILED exact.ipynb::Cell 0" in out, out


def test_command_line_reports_differences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _notebook(tmp_path / "a", "n.ipynb", "", "acc 90.0\n", [{"abs": 2}])
    _notebook(tmp_path / "b", "n.ipynb", "", "acc 91.0\n", [])
    assert nt.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "no differences" in capsys.readouterr().out
    assert nt.main([str(tmp_path / "a"), str(tmp_path / "b"), "--exact"]) == 1
    assert re.search(r"n.ipynb cell 0 \(.*\): 'acc 90.0': 90.0 became 91.0",
                     capsys.readouterr().out)


def test_ledger_declares_rules_by_cell_id(tmp_path: Path) -> None:
    (tmp_path / "tolerances").mkdir()
    ledger = tmp_path / "tolerances" / "ch.yml"
    ledger.write_text("c1:\n  why: accuracy on 1000 images\n"
                      "  tolerance:\n    - {binomial: 1000, unit: percent}\n")
    entries = nt.load_ledger(tmp_path / "ch.ipynb")
    cell = {"id": "c1", "metadata": {}}
    (rule,) = nt.rules_of(cell, entries)
    assert rule.kind == "binomial" and rule.unit == "percent"
    assert nt.rules_of({"id": "c2", "metadata": {}}, entries) == []
    clash = {"id": "c1", "metadata": {"advbook": {"tolerance": [{"abs": 1}]}}}
    with pytest.raises(nt.ToleranceSpecError, match="both in its metadata and in"):
        nt.rules_of(clash, entries)
    ledger.write_text("c1:\n  tolerance: []\n")
    with pytest.raises(nt.ToleranceSpecError, match="does not say why"):
        nt.load_ledger(tmp_path / "ch.ipynb")
    ledger.write_text("c1:\n  why: x\n  tolerence: []\n")
    with pytest.raises(nt.ToleranceSpecError, match="must be a mapping with keys"):
        nt.load_ledger(tmp_path / "ch.ipynb")


@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_ledger_entry_names_a_cell_and_parses(notebook: Path) -> None:
    """A stale ledger entry (a cell id that no longer exists) would silently declare nothing."""
    ledger = nt.load_ledger(notebook)
    cells = {c.get("id"): c for c in nbformat.read(notebook, as_version=4).cells}
    for cell_id, entry in ledger.items():
        assert cell_id in cells, f"{nt.ledger_path(notebook).name}: no cell {cell_id!r}"
        assert cells[cell_id].cell_type == "code", f"{cell_id} is not a code cell"
        for spec in entry.get("tolerance", []):
            nt.Rule.from_dict(spec)
        # every pattern must match something in the stored outputs, or it declares nothing
        text = "".join(v for o in cells[cell_id].get("outputs", []) for _, v in nt.text_fields(o))
        for spec in entry.get("tolerance", []):
            if "pattern" in spec:
                assert re.search(spec["pattern"], text), (cell_id, spec["pattern"])
        if "numbers_in" in entry:
            assert entry.get("figure") == "size", f"{cell_id}: numbers_in without figure: size"
            source = cells.get(entry["numbers_in"])
            assert source is not None, f"{cell_id}: numbers_in names no cell"
            assert any(re.search(r"\d", v) for o in source.get("outputs", [])
                       for _, v in nt.text_fields(o)), f"{cell_id}: its numbers_in prints none"
