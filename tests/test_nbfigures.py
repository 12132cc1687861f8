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


def _curves_png(
    tmp_path: Path, name: str, shift: float, dpi: int = 100, curves: int = 3
) -> str:
    """Accuracy-like curves on a 640x360 canvas; ``shift`` moves the second one up."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=dpi)
    eps = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    data = {"FGSM": [97, 91, 73, 44, 15, 6, 2],
            "PGD": [97 + shift, 88 + shift, 55 + shift, 15 + shift, 1, 0, 0],
            "FGM": [97, 94, 84, 68, 51, 35, 23]}
    for label, acc in list(data.items())[:curves]:
        ax.plot(eps, acc, marker="o", ms=3, label=label)
    ax.set(xlabel="eps", ylabel="robust accuracy (%)", ylim=(-5, 105))
    ax.legend()
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return base64.b64encode(path.read_bytes()).decode()


def test_block_comparison_forgives_drift_but_not_a_changed_figure(tmp_path: Path) -> None:
    """At the chapters' setting (16x16 blocks, tolerance 5) a curve that moved by the drift
    measured across CPUs (about a point of accuracy) passes, though pixel-wise it fails; a figure
    that lost a curve fails. (How far a curve moved is judged by the numbers behind it, which the
    cells print: block averages of thin lines grow only slowly with the displacement.)"""
    ref = _outputs(_curves_png(tmp_path, "ref", 0.0))
    drift = _outputs(_curves_png(tmp_path, "drift", 1.0))
    missing = _outputs(_curves_png(tmp_path, "missing", 0.0, curves=2))
    with pytest.raises(nbfigures.FigureMismatch, match="RMS"):
        nbfigures.check_cell_figures(ref, drift, tol=2.0, folder=tmp_path, where="px")
    nbfigures.check_cell_figures(ref, drift, tol=5.0, folder=tmp_path, where="b", block=16)
    with pytest.raises(nbfigures.FigureMismatch, match=r"over 16x16 blocks"):
        nbfigures.check_cell_figures(ref, missing, tol=5.0, folder=tmp_path, where="b", block=16)


def test_size_only_comparison_checks_count_and_size(tmp_path: Path) -> None:
    a, b = _curves_png(tmp_path, "a", 0.0), _curves_png(tmp_path, "b", 30.0)
    small = _curves_png(tmp_path, "small", 0.0, dpi=50)
    nbfigures.check_cell_figures(_outputs(a), _outputs(b), tol=2.0, folder=tmp_path, where="s",
                                 size_only=True)
    assert nbfigures.png_size(a) == (640, 360)
    with pytest.raises(nbfigures.FigureMismatch, match=r"size \(320, 180\) instead of"):
        nbfigures.check_cell_figures(_outputs(a), _outputs(small), tol=2.0, folder=tmp_path,
                                     where="s", size_only=True)
    with pytest.raises(nbfigures.FigureMismatch, match="1 figure"):
        nbfigures.check_cell_figures(_outputs(a), [], tol=2.0, folder=tmp_path, where="s",
                                     size_only=True)


def test_size_only_figures_need_their_numbers_printed() -> None:
    """A figure's own repr is not data: a ``figure: size`` cell must print numbers beside it."""
    figure = {"output_type": "display_data",
              "data": {"image/png": "", "text/plain": "<Figure size 640x360 with 1 Axes>"}}
    printed = {"output_type": "stream", "name": "stdout", "text": "median L2 1.619\n"}
    assert not nbfigures._prints_numbers({"outputs": [figure]})
    assert nbfigures._prints_numbers({"outputs": [figure, printed]})
