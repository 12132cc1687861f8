"""The notebook check still catches a broken library, inside its tolerances.

Each test breaks one function of the library on purpose — only inside the notebook's kernel, by
an IPython startup file — re-runs a chapter with nbval exactly as ``make notebooks-check`` does
(stopping at the first failing cell) and asserts that the check fails at the cell that shows the
mistake — so every cell before it passed — by a number outside its band, a figure or the cell's
own assertion. Without the sabotage the
same chapters pass (that is ``make notebooks-check`` itself).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SABOTAGE = {
    # FGSM takes a step of eps/2 instead of eps.
    "fgsm_half_step": (
        "adversarial_examples.ipynb",
        2,  # the closed form on a linear model
        """
import functools
import advbook.attacks as _a
_fgsm = _a.fgsm
@functools.wraps(_fgsm)
def fgsm(model, x, y, *, eps, **kw):
    return _fgsm(model, x, y, eps=eps / 2, **kw)
_a.fgsm = fgsm
""",
    ),
    # PGD never projects back onto the eps-ball (only the box clip remains).
    "pgd_without_projection": (
        "adversarial_examples.ipynb",
        3,  # the first PGD examples: the largest pixel change exceeds eps
        """
import sys
import advbook.attacks
from advbook._core.balls import steepest_ascent_direction
_p = sys.modules["advbook.attacks.pgd"]  # the package attribute "pgd" is the function
# PGD's update without the projection onto the ball (only the box clip remains)
_p.projected_step = lambda x, x_t, grad, step, eps, norm, bounds: (
    x_t + step * steepest_ascent_direction(grad, norm)).clamp_(*bounds)
""",
    ),
    # Label smoothing with PyTorch's eps/k off-targets instead of the book's eps/(k - 1).
    "smoothing_eps_over_k": (
        "label_smoothing.ipynb",
        2,  # the smoothed loss against a Monte Carlo of label flips
        """
import torch
import advbook.label_smoothing as _ls
_targets = _ls.smooth_targets
def smooth_targets(y, k, eps, *, dtype=None):
    q = _targets(y, k, 0.0, dtype=dtype)
    return q * (1.0 - eps) + eps / k
def smoothed_cross_entropy(logits, y, eps, *, reduction="mean"):
    q = smooth_targets(y, logits.shape[1], eps, dtype=logits.dtype)
    return _ls.soft_cross_entropy(logits, q, reduction=reduction)
_ls.smooth_targets = smooth_targets
_ls.smoothed_cross_entropy = smoothed_cross_entropy
""",
    ),
}


def run_sabotaged(tmp_path: Path, notebook: str, code: str) -> str:
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-sabotage.py").write_text(code)
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"), ADVBOOK_PROGRESS="0")
    env.pop("MPLBACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-current-env", "--nbval-sanitize-with", "book/sanitize.cfg",
         "--nbfigure-results", str(tmp_path / "figures"), f"book/{notebook}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    return out


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(SABOTAGE))
def test_a_broken_library_fails_the_notebook_check(tmp_path: Path, name: str) -> None:
    notebook, cell, code = SABOTAGE[name]
    out = run_sabotaged(tmp_path, notebook, code)
    # -x stops at the first failure: every cell before the expected one passed
    assert "1 failed" in out and f"FAILED book/{notebook}::Cell {cell}" in out, out
    caught = (
        "Cell outputs differ" in out
        or "AssertionError" in out
        or "FigureMismatch" in out
    )
    assert caught, out
    # the sabotage itself must not have crashed the kernel or the library
    assert "Kernel died" not in out and "TypeError" not in out, out


NUMERIC_PROBE = """
import torch
torch.manual_seed(0)
x, w = torch.randn(64, 3, 28, 28), torch.randn(8, 3, 3, 3)
a, b = torch.randn(257, 513), torch.randn(513, 129)
values = [torch.nn.functional.conv2d(x, w).sum(), (a @ b).sum(), torch.randn(100003).exp().sum()]
print(" ".join(float(v).hex() for v in values))
"""


def test_the_emulated_cpu_is_a_different_numeric_path() -> None:
    """The second pass of the notebook check is worth running only if its numbers differ."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("only the x86-64 settings (oneDNN capped at SSE4.1) are known to change "
                    f"the numerics; on {platform.machine()} the second pass may equal the first")
    flags = subprocess.run(["make", "-s", "print-emulated-cpu"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert flags and all("=" in f for f in flags), flags
    emulated = dict(os.environ, **dict(f.split("=", 1) for f in flags))

    def probe(env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", NUMERIC_PROBE], env=env, capture_output=True,
                              text=True, check=True, timeout=120).stdout

    native = dict(os.environ)
    for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
        native.pop(name, None)
    assert probe(native) != probe(emulated), "the emulated CPU computes bit-identical results"
