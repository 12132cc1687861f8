"""Structural checks of the book: clean stored runs, labelled figures, Colab install cells."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_chapters() -> None:
    assert NOTEBOOKS, "book/ holds no notebooks"


def _toc_files(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["file"]] if "file" in node else []
        found += [node["root"]] if "root" in node else []
        return found + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_the_toc(path: Path) -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert f"book/{path.stem}" in _toc_files(toc)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_one_clean_run(path: Path) -> None:
    counts = [c.execution_count for c in _code_cells(path)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts {counts}"
    for cell in _code_cells(path):
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name}: a stored output is an error"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_advbook_only_in_colab(path: Path) -> None:
    first = _code_cells(path)[0].source
    repo = CONFIG["repository"]["url"].rstrip("/")
    branch = CONFIG["repository"]["branch"]
    assert 'if "google.colab" in sys.modules:' in first
    assert f'%pip install -q "advbook[data] @ git+{repo}@{branch}"' in first, first


def test_every_figure_is_numbered_captioned_and_uniquely_labelled() -> None:
    labels: list[str] = []
    for path in NOTEBOOKS:
        for cell in _code_cells(path):
            has_png = any("image/png" in out.get("data", {}) for out in cell.outputs)
            figure = cell.metadata.get("mystnb", {}).get("figure")
            if not has_png:
                continue
            assert figure, f"{path.name}: a cell draws a figure without mystnb.figure metadata"
            assert figure.get("caption", "").strip(), f"{path.name}: figure without caption"
            name = figure.get("name", "")
            assert re.fullmatch(r"fig-[a-z0-9-]+", name), f"{path.name}: bad label {name!r}"
            labels.append(name)
    assert len(labels) == len(set(labels)), f"duplicate figure labels: {labels}"
