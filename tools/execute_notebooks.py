"""Re-execute book notebooks top to bottom, so their stored outputs are a clean run.

Usage: ``python -m tools.execute_notebooks [--out DIR] [book/chapter.ipynb ...]`` (default: every
notebook in ``book/``). Progress bars are switched off (``ADVBOOK_PROGRESS=0``) so that the stored
outputs hold no timing noise; nbval later compares a fresh run against exactly these outputs.
Without ``--out`` each notebook is saved in place; with it, the executed copy is written to
``DIR/<name>.ipynb`` and the stored notebook is left alone (``python -m tools.nbtolerance`` then
compares the copy with the stored outputs under the declared tolerances).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path, *, out: Path | None = None, timeout: int = 1800) -> float:
    """Execute ``path`` in a fresh kernel (working directory: its folder); save it to ``out``.

    ``out`` defaults to ``path`` itself (the stored outputs are replaced).
    """
    nb = nbformat.read(path, as_version=4)
    os.environ["ADVBOOK_PROGRESS"] = "0"
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nbformat.write(nb, out or path)
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
