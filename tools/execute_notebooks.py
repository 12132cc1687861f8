"""Re-execute book notebooks top to bottom, so their stored outputs are a clean run.

Usage: ``python -m tools.execute_notebooks [--out DIR] [book/chapter.ipynb ...]`` (default: every
notebook in ``book/``). Each notebook is run by nbclient's ``jupyter execute`` (a fresh
``python3`` kernel of this interpreter, working directory: the notebook's folder, 1800 s per
cell), which saves it with ``nbformat.write``. Progress bars are switched off
(``ADVBOOK_PROGRESS=0``) so that the stored outputs hold no timing noise; nbval later compares a
fresh run against exactly these outputs. Without ``--out`` each notebook is saved in place; with
it, the executed copy is written to ``DIR/<name>.ipynb`` and the stored notebook is left alone
(``python -m tools.nbtolerance`` then compares the copy with the stored outputs under the
declared tolerances).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from nbclient.cli import NbClientApp

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, *, out: Path | None = None, timeout: int = 1800) -> float:
    """``jupyter execute`` ``path``, saving it to ``out`` (default: ``path`` itself)."""
    os.environ["ADVBOOK_PROGRESS"] = "0"  # inherited by the kernel
    # --output is a format string ({notebook_name}), so braces in the path are escaped
    base = str(out.resolve().with_suffix("")).replace("{", "{{").replace("}", "}}") if out else ""
    target = f"--output={base}" if out else "--inplace"
    start = time.perf_counter()
    app = NbClientApp(log_level="WARN")  # not its "Executing ..." lines: we print the time
    app.initialize([f"--timeout={timeout}", "--kernel_name=python3", target, str(path)])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="write executed copies here instead of in place")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        seconds = execute(path, out=args.out / path.name if args.out else None)
        print(f"{seconds:7.1f} s  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
