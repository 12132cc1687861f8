"""The notebook figure check must pass on an identical figure and fail on a changed one."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import pytest
from nbclient import NotebookClient

from tools import nbfigures

ROOT = Path(__file__).resolve().parent.parent

DRAW = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
ax.plot([0, 1, 2], [0, 1, 0], color="{colour}")
plt.show()"""


def _png(tmp_path: Path, y: float) -> str:
    fig, ax = plt.subplots(figsize=(3, 2), dpi=80)
    ax.plot([0, 1, 2], [0, y, 0])
    path = tmp_path / f"line{y}.png"
    fig.savefig(path)
    plt.close(fig)
    return base64.b64encode(path.read_bytes()).decode()


def _outputs(b64: str) -> list[dict]:
    return [{"output_type": "display_data", "data": {"image/png": b64}, "metadata": {}}]


def test_compare_identical_passes_and_changed_fails(tmp_path: Path) -> None:
    a, b = _png(tmp_path, 1.0), _png(tmp_path, 2.0)
    nbfigures.check_cell_figures(_outputs(a), _outputs(a), tol=2.0, folder=tmp_path, where="x")
    with pytest.raises(nbfigures.FigureMismatch, match=r"x, figure 0: RMS \d+\.\d+ > tolerance 2"):
        nbfigures.check_cell_figures(_outputs(a), _outputs(b), tol=2.0, folder=tmp_path,
                                     where="x")
    written = sorted(p.name for p in tmp_path.glob("x-fig0-*"))
    assert written == ["x-fig0-actual-failed-diff.png", "x-fig0-actual.png", "x-fig0-expected.png"]
    with pytest.raises(nbfigures.FigureMismatch, match="1 figure"):
        nbfigures.check_cell_figures(_outputs(a), [], tol=2.0, folder=tmp_path, where="y")


def _executed_notebook(colour: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(DRAW.format(colour=colour))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def test_nbval_run_fails_on_a_changed_figure(tmp_path: Path) -> None:
    """End to end: nbval + the plugin over three notebooks in one pytest run."""
    original = _executed_notebook("tab:blue")
    changed = _executed_notebook("tab:red")
    nbformat.write(original, tmp_path / "same.ipynb")
    # Same code, but the stored figure is a different one: the re-run must not match it.
    tampered = nbformat.from_dict(original)
    tampered.cells[0].outputs = changed.cells[0].outputs
    nbformat.write(tampered, tmp_path / "changed.ipynb")
    # A cell may raise its own tolerance in its metadata (RMS is at most 255).
    tolerant = nbformat.from_dict(tampered)
    tolerant.cells[0].metadata["advbook"] = {"figure_tolerance": 255}
    nbformat.write(tolerant, tmp_path / "tolerant.ipynb")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "tools.nbfigures",
         "--nbval", "--nbval-current-env", "--nbfigure-results", str(tmp_path / "results"),
         "same.ipynb", "changed.ipynb", "tolerant.ipynb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "FAILED changed.ipynb::Cell 0" in out, out
    assert re.search(r"changed.ipynb cell 0, figure 0: RMS \d+\.\d+ > tolerance 2.0", out), out
    assert (tmp_path / "results" / "changed.ipynb_cell_0-fig0-actual-failed-diff.png").exists()
    assert "timing summary" in out
