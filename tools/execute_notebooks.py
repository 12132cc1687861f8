"""Re-execute book notebooks in place, top to bottom, so their stored outputs are a clean run.

Usage: ``python -m tools.execute_notebooks [book/chapter.ipynb ...]`` (default: every notebook
in ``book/``). Progress bars are switched off (``ADVBOOK_PROGRESS=0``) so that the stored
outputs hold no timing noise; nbval later compares a fresh run against exactly these outputs.
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


def execute(path: Path, *, timeout: int = 1800) -> float:
    """Execute ``path`` in a fresh kernel (working directory: its folder) and save it in place."""
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
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "book").glob("*.ipynb"))
    for path in paths:
        seconds = execute(path)
        print(f"{seconds:7.1f} s  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
