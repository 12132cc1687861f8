"""Compare notebook outputs number by number, within tolerances declared in cell metadata.

nbval compares a re-run cell's text with the stored text character for character. That holds on
the machine that stored the outputs, and nowhere else: another CPU (or a GPU) rounds differently,
a trained model drifts a little, and a printed accuracy moves by a few tenths of a point. This
module keeps nbval's comparison and adds one thing: a cell may declare *which* printed numbers
may move, and by how much, in its metadata::

    "advbook": {"tolerance": [
        {"pattern": "accuracy[^\\n]*", "binomial": 1000, "unit": "percent"},
        {"pattern": "median distance \\\\S+", "rel": 0.08},
        {"pattern": "max \\\\|diff\\\\| \\\\S+", "below": 1e-6}
    ]}

Each rule covers the numbers inside the matches of its regular expression ``pattern`` in the
*stored* text (no pattern: every number of the cell) and says how far a re-run may move them:

* ``abs``: ``|new − old| ≤ abs``;
* ``rel``: ``|new − old| ≤ rel · |old|``;
* ``binomial: n`` (an accuracy or a count of successes on ``n`` test points; ``unit`` is
  ``"fraction"``, ``"percent"`` or ``"count"``, ``sigmas`` defaults to 3):
  ``|new − old| ≤ sigmas · sqrt(p̃(1 − p̃)/n)`` in that unit, with ``p̃ = (n·p + 2)/(n + 4)``
  so that a stored 100 % still allows a little movement;
* ``below: b``: ``|new| ≤ b`` whatever was stored — the rounding residue of an exact identity.

Every tolerance also admits one unit of the last printed digit, since both numbers were rounded
for printing. Everything else stays exact: numbers no rule covers must be printed identically, and
the text between the numbers must be the same (up to runs of white space, which tables widen when
a number gains a digit). A cell without rules is compared by nbval exactly as before.

The same keys may instead stand in the chapter's ledger ``book/tolerances/<chapter>.yml``, under
the cell's id, with a ``why`` that justifies each band::

    cell-012:
      why: PGD and FGSM accuracies of a retrained CNN on 500 test images
      tolerance:
        - {pattern: "\\d+\\.\\d%", binomial: 500, unit: percent}
      figure_block: 16

A key may be declared in one place only (the cell's metadata or the ledger), so that a
maintainer never has to reconcile two values.

As a pytest plugin (loaded by the root ``conftest.py``) it wraps nbval's
``IPyNbCell.compare_outputs``: outputs whose numbers agree within the rules are replaced by the
stored ones before nbval compares, and a failure names each number outside its band. As a
command, ``python -m tools.nbtolerance STORED.ipynb RUN.ipynb [...]`` reports every differing
number of a separately executed copy (``python -m tools.execute_notebooks --out DIR``), with and
without the declared rules.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: A printed number: optional sign (ASCII or Unicode minus), digits with optional thousands
#: commas, optional decimals and exponent. Digits inside identifiers ("fig1", "x2") are text.
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_SPACE = re.compile(r"\s+")
KINDS = ("abs", "rel", "binomial", "below")
UNITS = {"fraction": 1.0, "percent": 100.0, "count": None}
#: The MIME types and stream fields compared as text.
TEXT_KEYS = ("text/plain", "text/html", "text/markdown", "text/latex")


class ToleranceSpecError(ValueError):
    """A cell's ``advbook.tolerance`` metadata is malformed."""


@dataclass(frozen=True)
class Rule:
    """One declared tolerance: a region of the stored text and how far its numbers may move."""

    pattern: re.Pattern[str] | None
    kind: str
    value: float
    unit: str = "fraction"
    sigmas: float = 3.0

    @classmethod
    def from_dict(cls, spec: Any) -> Rule:
        if not isinstance(spec, dict):
            raise ToleranceSpecError(f"a tolerance rule must be a dict, got {spec!r}")
        kinds = [k for k in KINDS if k in spec]
        if len(kinds) != 1:
            raise ToleranceSpecError(
                f"a tolerance rule needs exactly one of {KINDS}, got {sorted(spec)}"
            )
        unknown = set(spec) - set(KINDS) - {"pattern", "unit", "sigmas", "why"}
        if unknown:
            raise ToleranceSpecError(f"unknown keys {sorted(unknown)} in tolerance rule {spec}")
        kind = kinds[0]
        value = float(spec[kind])
        if not math.isfinite(value) or value < 0:
            raise ToleranceSpecError(f"{kind} must be a finite number >= 0, got {spec[kind]!r}")
        unit = spec.get("unit", "fraction")
        if unit not in UNITS:
            raise ToleranceSpecError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
        if kind == "binomial" and value < 1:
            raise ToleranceSpecError(f"binomial needs the number of trials n >= 1, got {value}")
        pattern = spec.get("pattern")
        try:
            compiled = re.compile(pattern) if pattern is not None else None
        except re.error as err:
            raise ToleranceSpecError(f"bad pattern {pattern!r}: {err}") from err
        return cls(compiled, kind, value, unit, float(spec.get("sigmas", 3.0)))

    def band(self, old: float) -> float:
        """The allowed ``|new − old|`` for a stored value ``old`` (``below``: the bound itself)."""
        if self.kind in ("abs", "below"):
            return self.value
        if self.kind == "rel":
            return self.value * abs(old)
        n = self.value
        scale = UNITS[self.unit]
        p = old / n if scale is None else old / scale
        p = (n * min(max(p, 0.0), 1.0) + 2.0) / (n + 4.0)
        sd = math.sqrt(p * (1.0 - p) / n)
        return self.sigmas * sd * (n if scale is None else scale)

    def describe(self) -> str:
        if self.kind == "binomial":
            return f"{self.sigmas:g} binomial s.e. on n={self.value:g} ({self.unit})"
        return f"{self.kind} {self.value:g}"


LEDGER_KEYS = {"tolerance", "figure_block", "figure_tolerance", "figure", "numbers_in", "why"}


def ledger_path(notebook: Path) -> Path:
    """Where the tolerance ledger of ``notebook`` lives: ``tolerances/<stem>.yml`` beside it."""
    return notebook.parent / "tolerances" / f"{notebook.stem}.yml"


def load_ledger(notebook: Path) -> dict[str, dict[str, Any]]:
    """The ledger of ``notebook`` (cell id → its ``advbook`` keys); empty when there is none."""
    import yaml

    path = ledger_path(notebook)
    if not path.exists():
        return {}
    ledger = yaml.safe_load(path.read_text()) or {}
    if not isinstance(ledger, dict):
        raise ToleranceSpecError(f"{path}: expected a mapping of cell ids, got {type(ledger)}")
    for cell_id, entry in ledger.items():
        if not isinstance(entry, dict) or set(entry) - LEDGER_KEYS:
            raise ToleranceSpecError(
                f"{path}: entry {cell_id!r} must be a mapping with keys from "
                f"{sorted(LEDGER_KEYS)}, got {entry!r}"
            )
        if "why" not in entry:
            raise ToleranceSpecError(f"{path}: entry {cell_id!r} does not say why (key 'why')")
    return ledger


def advbook_meta(cell: Any, ledger: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cell's ``advbook`` settings: its metadata merged with its ledger entry, if any."""
    meta = dict(cell.get("metadata", {}).get("advbook", {}))
    entry = ledger.get(cell.get("id", ""), {})
    clash = (set(meta) & set(entry)) - {"why"}
    if clash:
        raise ToleranceSpecError(
            f"cell {cell.get('id')!r} declares {sorted(clash)} both in its metadata and in "
            "the chapter's ledger; keep one"
        )
    meta.update(entry)
    return meta


_ledgers: dict[Path, dict[str, dict[str, Any]]] = {}


def meta_of_item(item: Any) -> dict[str, Any]:
    """``advbook_meta`` for an nbval test item (its notebook's ledger is read once)."""
    path = Path(str(item.fspath)).resolve()
    if path not in _ledgers:
        _ledgers[path] = load_ledger(path)
    return advbook_meta(item.cell, _ledgers[path])


def rules_of(cell: Any, ledger: dict[str, dict[str, Any]] | None = None) -> list[Rule]:
    """The tolerance rules declared for a cell, in its metadata or its ledger (maybe none)."""
    return rules_from_meta(advbook_meta(cell, ledger or {}))


def rules_from_meta(meta: dict[str, Any]) -> list[Rule]:
    """The rules of a cell's merged ``advbook`` settings (:func:`advbook_meta`)."""
    spec = meta.get("tolerance", [])
    if isinstance(spec, dict):
        spec = [spec]
    if not isinstance(spec, list):
        raise ToleranceSpecError(f"advbook.tolerance must be a list of rules, got {spec!r}")
    return [Rule.from_dict(s) for s in spec]


def _value(token: str) -> float:
    return float(token.replace(",", "").replace("−", "-"))


def _resolution(token: str) -> float:
    """One unit of the last printed digit of ``token`` (``1.25e-03`` → 1e-05)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


@dataclass(frozen=True)
class Mismatch:
    """One difference between a stored and a re-run text."""

    message: str
    old: float | None = None
    new: float | None = None


def _rule_for(start: int, end: int, spans: list[tuple[int, int, Rule]]) -> Rule | None:
    for lo, hi, rule in spans:
        if lo <= start and end <= hi:
            return rule
    return None


def compare_text(old: str, new: str, rules: Sequence[Rule]) -> list[Mismatch]:
    """Every difference between ``old`` (stored) and ``new`` (re-run) that ``rules`` do not allow.

    The texts must split into the same sequence of numbers and in-between text; in-between text
    must agree up to runs of white space; each number must be printed identically unless a rule
    covers it, in which case it must lie within that rule's band.
    """
    if old == new:
        return []
    spans = []
    for rule in rules:
        if rule.pattern is None:
            spans.append((0, len(old), rule))
        else:
            spans.extend((m.start(), m.end(), rule) for m in rule.pattern.finditer(old))
    old_tokens, new_tokens = list(NUMBER.finditer(old)), list(NUMBER.finditer(new))
    old_text, new_text = NUMBER.split(old), NUMBER.split(new)
    if len(old_tokens) != len(new_tokens) or len(old_text) != len(new_text):
        return [Mismatch(f"{len(old_tokens)} numbers stored, {len(new_tokens)} printed")]
    found = []
    for a, b in zip(old_text, new_text, strict=True):
        if _SPACE.sub(" ", a) != _SPACE.sub(" ", b):
            found.append(Mismatch(f"text {a.strip()!r} became {b.strip()!r}"))
    for a, b in zip(old_tokens, new_tokens, strict=True):
        if a.group() == b.group():
            continue
        rule = _rule_for(a.start(), a.end(), spans)
        where = _context(old, a)
        if rule is None:
            found.append(Mismatch(f"{where}: {a.group()} became {b.group()} (no tolerance)"))
            continue
        x, y = _value(a.group()), _value(b.group())
        slack = _resolution(a.group()) + _resolution(b.group())
        if rule.kind == "below":
            ok = abs(y) <= rule.value + slack
        else:
            ok = abs(y - x) <= rule.band(x) + slack
        if not ok:
            found.append(
                Mismatch(
                    f"{where}: {a.group()} became {b.group()}, outside {rule.describe()} "
                    f"(band ±{rule.band(x):.4g})",
                    x,
                    y,
                )
            )
    return found


def _context(text: str, match: re.Match[str]) -> str:
    line_start = text.rfind("\n", 0, match.start()) + 1
    line_end = text.find("\n", match.end())
    line = text[line_start : None if line_end < 0 else line_end].strip()
    return repr(line[:90])


def text_fields(output: Any) -> Iterable[tuple[str | None, str]]:
    """(data key or None for a stream's text, value) for each text field of an output."""
    if output.get("output_type") == "stream":
        fields: Iterable[tuple[str | None, Any]] = [(None, output.get("text", ""))]
    else:
        data = output.get("data", {})
        fields = [(key, data[key]) for key in TEXT_KEYS if key in data]
    for key, value in fields:
        if isinstance(value, list):
            value = "".join(value)
        if isinstance(value, str):
            yield key, value


def _same_kind(a: Any, b: Any) -> bool:
    if a.get("output_type") != b.get("output_type"):
        return False
    if a.get("output_type") == "stream":
        return a.get("name") == b.get("name")
    return set(a.get("data", {})) == set(b.get("data", {}))


def _kind(output: Any) -> str:
    if output.get("output_type") == "stream":
        return f"{output.get('name')} stream"
    return f"{output.get('output_type')} ({', '.join(sorted(output.get('data', {})))})"


def reconcile(
    stored: Sequence[Any], fresh: Sequence[Any], rules: Sequence[Rule], sanitize: Any = None
) -> tuple[list[Any], list[Mismatch]]:
    """Fresh outputs with each text field that agrees within ``rules`` replaced by the stored one.

    Returns the (copied) fresh outputs and the mismatches found; fields that disagree are left
    as they are, so that nbval's own comparison reports them.
    """
    clean = sanitize or (lambda s: s)
    fresh = [copy.deepcopy(o) for o in fresh]
    found: list[Mismatch] = []
    if len(stored) != len(fresh):
        found.append(Mismatch(f"{len(stored)} outputs stored, {len(fresh)} produced"))
        return fresh, found
    for ref, out in zip(stored, fresh, strict=True):
        if not _same_kind(ref, out):
            found.append(Mismatch(f"a {_kind(ref)} output became a {_kind(out)} output"))
            continue
        new_fields = dict(text_fields(out))
        for key, old in text_fields(ref):
            if key not in new_fields:
                continue
            problems = compare_text(clean(old), clean(new_fields[key]), rules)
            if problems:
                found.extend(problems)
            elif key is None:
                out["text"] = old
            else:
                out["data"][key] = old
    return fresh, found


# --- pytest plugin ------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval absent: nothing to wrap
        return
    if getattr(IPyNbCell.compare_outputs, "_advbook_tolerant", False):
        return
    original = IPyNbCell.compare_outputs

    def compare_outputs(self: Any, test: Any, ref: Any, skip_compare: Any = None) -> bool:
        rules = rules_from_meta(meta_of_item(self))
        found: list[Mismatch] = []
        if rules:
            test, found = reconcile(ref, test, rules, sanitize=self.sanitize)
        ok = original(self, test, ref, skip_compare)
        if not ok and found:
            self.comparison_traceback.append("numbers outside their declared tolerances:")
            self.comparison_traceback.extend(f"  {m.message}" for m in found)
        return ok

    compare_outputs._advbook_tolerant = True  # type: ignore[attr-defined]
    IPyNbCell.compare_outputs = compare_outputs


# --- command line ---------------------------------------------------------------------------


def diff_notebooks(stored: Path, run: Path, *, use_rules: bool = True) -> list[str]:
    """Lines describing every cell of ``run`` whose text outputs differ from ``stored``."""
    import nbformat
    from nbval.plugin import coalesce_streams

    a, b = nbformat.read(stored, as_version=4), nbformat.read(run, as_version=4)
    ledger = load_ledger(stored)
    sanitize = _sanitizer(stored.parent / "sanitize.cfg")
    lines = []
    cells = zip(a["cells"], b["cells"], strict=True)
    for index, (ref, out) in enumerate(cells):
        if ref["cell_type"] != "code":
            continue
        rules = rules_of(ref, ledger) if use_rules else []
        _, found = reconcile(
            coalesce_streams(ref.get("outputs", [])), coalesce_streams(out.get("outputs", [])),
            rules, sanitize,
        )
        name = f"{stored.name} cell {index} ({ref.get('id', '?')})"
        lines.extend(f"{name}: {m.message}" for m in found)
    return lines


def _sanitizer(cfg: Path) -> Any:
    """The substitutions of an nbval sanitize file (``--nbval-sanitize-with``), as a function."""
    from nbval.plugin import get_sanitize_patterns

    pairs = get_sanitize_patterns(cfg.read_text()) if cfg.exists() else []

    def clean(s: str) -> str:
        for regex, replace in pairs:
            s = re.sub(regex, replace, s)
        return s

    return clean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare executed notebooks with stored ones")
    parser.add_argument("stored", type=Path, help="the stored notebook, or a folder of them")
    parser.add_argument("run", type=Path, help="the executed copy, or a folder of them")
    parser.add_argument("--exact", action="store_true", help="ignore the declared tolerances")
    args = parser.parse_args(argv)
    if args.stored.is_dir():
        pairs = [(p, args.run / p.name) for p in sorted(args.stored.glob("*.ipynb"))]
    else:
        pairs = [(args.stored, args.run)]
    lines = []
    for stored, run in pairs:
        if run.exists():
            lines.extend(diff_notebooks(stored, run, use_rules=not args.exact))
    print("\n".join(lines) if lines else "no differences outside the declared tolerances")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
