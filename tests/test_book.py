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


# Exercises and their hidden solution cells ----------------------------------------------------

EXERCISE_CHAPTERS = [
    "setup", "adversarial_examples", "adversarial_training", "noise", "label_smoothing",
    "flat_minima", "augmentation", "evaluating_robustness", "certified_robustness", "performance",
]
SOLUTION_PREFIX = "# Solution to exercise"


def _exercise_numbers(source: str) -> list[int]:
    """The numbers of the top-level numbered list items after the ``## Exercises`` heading."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Exercises")
    numbers = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):  # the next heading ends the list
            break
        match = re.match(r"(\d+)\.\s", line)
        if match:
            numbers.append(int(match.group(1)))
    return numbers


def _solution_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Everything wrong with the exercises and solution cells of one chapter (empty: all fine)."""
    exercise_cells = [
        i for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and any(
            line.strip() == "## Exercises" for line in c.source.splitlines())
    ]
    if len(exercise_cells) != 1:
        return [f"expected one markdown cell with '## Exercises', found {len(exercise_cells)}"]
    at = exercise_cells[0]
    numbers = _exercise_numbers(nb.cells[at].source)
    problems = []
    if not 3 <= len(numbers) <= 5 or numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"exercises must be numbered 1..n with 3 <= n <= 5, found {numbers}")
    solved = []
    for i, cell in enumerate(nb.cells):
        first = cell.source.lstrip().split("\n", 1)[0].rstrip()
        if not first.startswith(SOLUTION_PREFIX):
            continue
        match = re.fullmatch(r"# Solution to exercise (\d+)", first)
        if cell.cell_type != "code" or not match:
            problems.append(f"cell {i}: a solution must be a code cell whose first line is "
                            f"'# Solution to exercise N', found {cell.cell_type} {first!r}")
            continue
        n = int(match.group(1))
        solved.append(n)
        if i < at:
            problems.append(f"cell {i}: solution to exercise {n} before the exercises")
        if n not in numbers:
            problems.append(f"cell {i}: there is no exercise {n} (exercises: {numbers})")
        if "hide-cell" not in cell.metadata.get("tags", []):
            problems.append(f"cell {i}: solution to exercise {n} lacks the 'hide-cell' tag")
        prompts = cell.metadata.get("mystnb", {})
        for key, verb in (("code_prompt_show", "Show"), ("code_prompt_hide", "Hide")):
            expected = f"{verb} solution to exercise {n}"
            if prompts.get(key) != expected:
                problems.append(f"cell {i}: mystnb.{key} should be {expected!r}, "
                                f"found {prompts.get(key)!r}")
    if not solved:
        problems.append("no solution cell after the exercises")
    if solved != sorted(set(solved)):
        problems.append(f"solution numbers must be unique and increasing, found {solved}")
    return problems


@pytest.mark.parametrize("name", EXERCISE_CHAPTERS)
def test_exercises_have_hidden_solution_cells(name: str) -> None:
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    assert not _solution_problems(nb), f"{name}.ipynb: " + "; ".join(_solution_problems(nb))


def _solutions(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.source.startswith(SOLUTION_PREFIX)]


def _untag(nb: nbformat.NotebookNode) -> None:
    _solutions(nb)[0].metadata["tags"] = []


def _wrong_prompt(nb: nbformat.NotebookNode) -> None:
    _solutions(nb)[0].metadata["mystnb"]["code_prompt_show"] = "Show code"


def _no_such_exercise(nb: nbformat.NotebookNode) -> None:
    last = _solutions(nb)[-1]
    last.source = re.sub(r"exercise \d+", "exercise 9", last.source, count=1)


def _duplicate(nb: nbformat.NotebookNode) -> None:
    second = _solutions(nb)[1]
    second.source = re.sub(r"exercise \d+", "exercise 1", second.source, count=1)


def _unnumbered(nb: nbformat.NotebookNode) -> None:
    first = _solutions(nb)[0]
    first.source = re.sub(r"exercise \d+", "exercise one", first.source, count=1)


def _removed(nb: nbformat.NotebookNode) -> None:
    nb.cells = [c for c in nb.cells if not c.source.startswith(SOLUTION_PREFIX)]


def test_solution_check_catches_broken_notebooks() -> None:
    """The check must fail on copies of a chapter broken in each of the ways it looks for."""
    path = ROOT / "book" / "setup.ipynb"
    assert not _solution_problems(nbformat.read(path, as_version=4))
    for edit in (_untag, _wrong_prompt, _no_such_exercise, _duplicate, _unnumbered, _removed):
        nb = nbformat.read(path, as_version=4)  # a fresh copy in memory; the file is not touched
        edit(nb)
        assert _solution_problems(nb), f"{edit.__name__}: the broken notebook passed the check"
