"""The README's quick-start example runs as printed (with one epoch instead of eight)."""

from __future__ import annotations

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


@pytest.mark.usefixtures("one_thread")
def test_quick_start_runs_and_prints_robust_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    code = _quick_start()
    assert "epochs=8" in code
    exec(compile(code.replace("epochs=8", "epochs=1"), str(README), "exec"), {})
    out = capsys.readouterr().out
    for name in ("clean", "FGSM", "PGD-20", "worst"):
        assert name in out, f"README quick start output lacks {name!r}:\n{out}"
