"""The README's quick-start example runs as printed and prints the numbers the README states."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start with the library", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README: no python block under 'Quick start with the library'"
    return blocks[0]


def test_quick_start_is_at_most_ten_lines_of_code() -> None:
    code = [ln for ln in _quick_start().splitlines() if ln.strip()]
    assert len(code) <= 12, f"the quick start grew to {len(code)} lines"


def _stated_numbers() -> dict[str, float]:
    """The accuracies the README says the quick start prints, by row name."""
    text = README.read_text(encoding="utf-8").split("## Quick start with the library", 1)[1]
    match = re.search(r"which prints clean ([\d.]+), FGSM ([\d.]+), PGD-20 ([\d.]+), worst "
                      r"case ([\d.]+)", text)
    assert match, "README: the sentence 'which prints clean ..., worst case ...' is missing"
    return dict(zip(["clean", "FGSM", "PGD-20", "worst case"], map(float, match.groups()),
                    strict=True))


@pytest.mark.usefixtures("one_thread")
def test_quick_start_prints_the_numbers_the_readme_states(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the block exactly as printed (eight epochs, about 25 s on one thread); the tolerance is
    # three binomial standard errors of the 1,000 test digits plus one point, for the drift of a
    # trained model between CPUs (other kernels round differently)
    code = _quick_start()
    assert "epochs=8" in code and "seed_everything" in code
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    measured = {name: float(value) for name, value in
                re.findall(r"^\s*\d+\s+(clean|FGSM|PGD-20|worst case)\s+([\d.]+)\s*$", out,
                           flags=re.M)}
    for name, stated in _stated_numbers().items():
        assert name in measured, f"README quick start output lacks {name!r}:\n{out}"
        band = 3 * math.sqrt(stated * (1 - stated) / 1000) + 0.01
        assert abs(measured[name] - stated) <= band, (
            f"README states {name} {stated}, the quick start printed {measured[name]} "
            f"(allowed ±{band:.3f}); update the README from this run")
