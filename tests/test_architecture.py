"""The rules of ARCHITECTURE.md, checked on the source: who may import what, one home for each
shared helper, functions that fit a screen, and chapter references that resolve."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "advbook"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(absolute module, imported names, line)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _subpackage(module: str) -> str:
    """``advbook.attacks.pgd`` -> ``advbook.attacks``; top-level modules are their own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_rules(path: Path) -> None:
    here = _module_name(path)
    problems = []
    for module, names, line in _imports(path):
        top = module.split(".")[0]
        if top in {"tools", "book", "tests", "benchmarks", "conftest"}:
            problems.append(f"line {line}: the library imports {module} (book/tooling)")
        if not module.startswith("advbook"):
            continue
        if here.startswith("advbook._core") and not module.startswith("advbook._core"):
            problems.append(f"line {line}: the internal layer imports {module}")
        same_unit = _subpackage(module) == _subpackage(here)
        if same_unit or module.startswith("advbook._core"):
            continue
        private = [p for p in module.split(".")[1:] if p.startswith("_")]
        if private:
            problems.append(f"line {line}: imports another subpackage's private module {module}")
        hidden = [n for n in names if n.startswith("_") and n != "__version__"]
        if hidden:
            problems.append(f"line {line}: imports private names {hidden} from {module}")
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_every_function_fits_a_screen() -> None:
    too_long = []
    for path in SOURCES:
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in _functions(path):
            start = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            marked = any(LONG_MARK in lines[i - 1] for i in (start - 1, fn.lineno) if i >= 1)
            if length > MAX_FUNCTION_LINES and not marked:
                too_long.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({length} lines)")
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or say why on the line above "
        f"with '{LONG_MARK} ...'):\n" + "\n".join(too_long)
    )


#: Helpers the internal layer owns: each may be defined once in the whole package.
SHARED = ["model_guard", "eval_mode", "model_device", "_model_device", "randn_like", "plain",
          "rademacher_like", "Attack", "LossFn", "ParamDict", "GaussianNoise", "check_in_bounds"]


def test_each_shared_helper_has_one_home() -> None:
    defined: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                if name in SHARED:
                    defined[name] += 1
                    where.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    twice = {name: where[name] for name, count in defined.items() if count > 1}
    assert not twice, f"defined more than once: {twice}"


def _book_labels() -> set[str]:
    labels: set[str] = set()
    for page in [*ROOT.glob("book/*.ipynb"), *ROOT.glob("book/*.md")]:
        labels |= set(re.findall(r"\(([A-Za-z0-9_-]+)\)=", page.read_text(encoding="utf-8")))
    return labels


def test_chapter_references_resolve() -> None:
    labels = _book_labels()
    assert len(labels) > 20, "the book's section labels were not found"
    missing, literal = [], []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        missing += [f"{path.relative_to(ROOT)}: {r}" for r in re.findall(r":ref:`([^`<]+)`", text)
                    if r not in labels]
        literal += [f"{path.relative_to(ROOT)}: {r}" for r in re.findall(r"``(sec-[\w-]+)``", text)]
    assert not missing, "references to labels the book does not define:\n" + "\n".join(missing)
    assert not literal, "chapter references written as literal text (use :ref:):\n" + "\n".join(
        literal
    )
