"""tools/execute_notebooks.py: a tiny notebook run by ``jupyter execute`` in a fresh kernel."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from tools.execute_notebooks import main

CODE = (
    "import os, sys\n"
    "print(os.environ.get('ADVBOOK_PROGRESS'), os.path.basename(os.getcwd()), sys.executable)"
)


def _notebook(folder: Path) -> Path:
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)])
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_out_dir_and_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADVBOOK_PROGRESS", raising=False)
    path = _notebook(tmp_path / "chapter")
    stored = path.read_bytes()
    assert main(["--out", str(tmp_path / "out {x}"), str(path)]) == 0
    assert path.read_bytes() == stored  # --out leaves the stored notebook alone
    copy = tmp_path / "out {x}" / "tiny.ipynb"
    nb = nbformat.read(copy, as_version=4)
    progress, cwd, executable = nb.cells[0].outputs[0]["text"].split()
    assert (progress, cwd) == ("0", "chapter")  # no progress bars; run in the notebook's folder
    assert Path(executable).resolve() == Path(sys.executable).resolve()  # this interpreter
    assert copy.read_text(encoding="utf-8") == nbformat.writes(nb) + "\n"  # nbformat's layout
    assert main([str(path)]) == 0
    assert nbformat.read(path, as_version=4).cells[0].outputs  # saved in place


def test_a_failing_cell_stops_with_an_error(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "bad")
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = "raise ValueError('boom')"
    nbformat.write(nb, path)
    stored = path.read_bytes()
    with pytest.raises(Exception, match="boom"):
        main([str(path)])
    assert path.read_bytes() == stored
