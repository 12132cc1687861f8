"""pytest plugin: compare the figures of re-run notebooks with the stored ones, and time notebooks.

nbval re-executes every notebook cell and compares text outputs, but it skips ``image/png``. This
plugin closes that gap: after nbval has run a cell, each freshly rendered PNG is compared with the
PNG stored in the notebook using :func:`matplotlib.testing.compare.compare_images`. A cell fails
when the number of figures differs, when their sizes differ, or when the RMS difference (0–255
scale) exceeds the tolerance: ``--nbfigure-tol`` (default 2.0), overridden per cell by the cell
metadata ``{"advbook": {"figure_tolerance": <float>}}`` or the chapter's tolerance ledger
(see :mod:`tools.nbtolerance`). On failure the expected, actual and diff
images are written to ``--nbfigure-results`` (default ``nbfigure-results/``) and the message names
the notebook, the cell and the RMS.

A figure of measured data (an accuracy curve, a histogram) moves by a pixel or two on another
CPU or a GPU, and a pixel-wise RMS counts every moved anti-aliased edge. Such a cell declares
``{"advbook": {"figure_block": k}}``: both images are then averaged over k×k pixel blocks before
the RMS is taken, which forgives the small displacements of drift and still sees a curve, a bar
or a panel that is missing, added or drawn differently (``tests/test_nbfigures.py`` checks
both). How far a curve moved is judged by the numbers behind it, which the cells print and
:mod:`tools.nbtolerance` compares within their declared tolerances: block averages of thin lines
grow only slowly with the displacement.

Where even block averages move — a histogram of 100 measured distances whose bars trade counts,
a grid of adversarial perturbations whose pixels are the attack's own output — the cell declares
``{"advbook": {"figure": "size"}}`` instead: its figures must still be there, as many and of the
same pixel size (the same panels, the same layout), and the data behind them are compared as the
numbers the cell prints — or, with ``numbers_in: <cell id>``, another cell of the notebook. A
``figure: size`` figure whose numbers are printed nowhere is refused.

It also prints a timing summary: seconds per notebook and for the unit tests.
"""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

DEFAULT_TOLERANCE = 2.0


class FigureMismatch(AssertionError):
    """A re-rendered figure differs from the stored one."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nbfigures", "compare notebook figures with the stored PNGs")
    group.addoption(
        "--nbfigure-tol",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="RMS tolerance (0-255 scale) for figure comparison (default %(default)s)",
    )
    group.addoption(
        "--nbfigure-results",
        default="nbfigure-results",
        help="folder for expected/actual/diff images of failing figures",
    )
    group.addoption(
        "--no-nbfigures", action="store_true", help="do not compare notebook figures"
    )


def _pngs(outputs: Any) -> list[str]:
    """Base64 PNG payloads of a cell's outputs, in order."""
    found = []
    for out in outputs or []:
        data = out.get("data", {}) if hasattr(out, "get") else {}
        if "image/png" in data:
            payload = data["image/png"]
            found.append("".join(payload) if isinstance(payload, list) else payload)
    return found


def block_rms(expected: Path, actual: Path, block: int) -> float:
    """RMS difference (0–255) of two PNGs after averaging each over ``block``×``block`` pixels.

    Images of different sizes count as an infinite RMS. The blocks tile the image from its top
    left corner; a last partial row or column of blocks is dropped.
    """
    import matplotlib.image as mpimg
    import numpy as np

    a = mpimg.imread(expected)[..., :3].astype(np.float64) * 255.0
    b = mpimg.imread(actual)[..., :3].astype(np.float64) * 255.0
    if a.shape != b.shape:
        return float("inf")
    h, w = (a.shape[0] // block) * block, (a.shape[1] // block) * block
    if h == 0 or w == 0:
        raise ValueError(f"figure_block {block} is larger than the image {a.shape[:2]}")

    def pooled(img: np.ndarray) -> np.ndarray:
        return img[:h, :w].reshape(h // block, block, w // block, block, 3).mean(axis=(1, 3))

    return float(np.sqrt(np.mean((pooled(a) - pooled(b)) ** 2)))


def compare_png(
    expected_b64: str, actual_b64: str, *, tol: float, folder: Path, stem: str, block: int = 1
) -> float | None:
    """Compare two base64 PNGs. Return ``None`` when they match within ``tol``, else the RMS.

    With ``block > 1`` the RMS is that of the ``block``×``block`` averages (:func:`block_rms`).
    Files are written under ``folder`` as ``<stem>-expected.png`` / ``-actual.png`` (plus the
    ``-failed-diff.png`` that matplotlib writes for a pixel-wise comparison); they are removed
    again when the images match. Images of different sizes count as an infinite RMS.
    """
    from matplotlib.testing.compare import compare_images
    from matplotlib.testing.exceptions import ImageComparisonFailure

    folder.mkdir(parents=True, exist_ok=True)
    expected = folder / f"{stem}-expected.png"
    actual = folder / f"{stem}-actual.png"
    expected.write_bytes(base64.b64decode(expected_b64))
    actual.write_bytes(base64.b64decode(actual_b64))
    if block > 1:
        rms = block_rms(expected, actual, block)
        if rms <= tol:
            expected.unlink(missing_ok=True)
            actual.unlink(missing_ok=True)
            return None
        return rms
    try:
        result = compare_images(str(expected), str(actual), tol, in_decorator=True)
    except ImageComparisonFailure:
        return float("inf")
    if result is None:
        expected.unlink(missing_ok=True)
        actual.unlink(missing_ok=True)
        return None
    return float(result["rms"])


def png_size(b64: str) -> tuple[int, int]:
    """(width, height) of a base64 PNG, read from its header."""
    head = base64.b64decode(b64[:64])
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def check_cell_figures(
    stored: Any,
    fresh: Any,
    *,
    tol: float,
    folder: Path,
    where: str,
    block: int = 1,
    size_only: bool = False,
) -> None:
    """Raise :class:`FigureMismatch` if the fresh outputs' PNGs differ from the stored ones.

    ``size_only``: only the number of figures and their pixel sizes must agree.
    """
    ref, new = _pngs(stored), _pngs(fresh)
    if len(ref) != len(new):
        raise FigureMismatch(
            f"{where}: the stored outputs hold {len(ref)} figure(s), the re-run produced {len(new)}"
        )
    if size_only:
        for k, (a, b) in enumerate(zip(ref, new, strict=True)):
            if png_size(a) != png_size(b):
                raise FigureMismatch(
                    f"{where}, figure {k}: size {png_size(b)} instead of {png_size(a)}"
                )
        return
    stem = where.replace("/", "_").replace("::", "-").replace(" ", "_")
    for k, (a, b) in enumerate(zip(ref, new, strict=True)):
        rms = compare_png(a, b, tol=tol, folder=folder, stem=f"{stem}-fig{k}", block=block)
        if rms is not None:
            detail = "image sizes differ" if rms == float("inf") else f"RMS {rms:.3f}"
            if block > 1 and rms != float("inf"):
                detail += f" over {block}x{block} blocks"
            raise FigureMismatch(
                f"{where}, figure {k}: {detail} > tolerance {tol} "
                f"(expected/actual/diff images in {folder}/{stem}-fig{k}-*.png)"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield
    cell = getattr(item, "cell", None)
    fresh = getattr(item, "test_outputs", None)
    if cell is None or fresh is None or item.config.getoption("--no-nbfigures"):
        return result
    from tools.nbtolerance import meta_of_item

    meta = meta_of_item(item)
    tol = float(meta.get("figure_tolerance", item.config.getoption("--nbfigure-tol")))
    block = int(meta.get("figure_block", 1))
    size_only = meta.get("figure") == "size"
    folder = Path(item.config.getoption("--nbfigure-results"))
    where = f"{Path(str(item.fspath)).name} cell {getattr(item, 'cell_num', '?')}"
    if size_only and not _prints_numbers(_numbers_cell(item, meta)):
        raise FigureMismatch(
            f"{where}: figure: size needs the numbers behind the figure printed in the cell "
            "or in the cell named by numbers_in"
        )
    check_cell_figures(
        cell.get("outputs", []), fresh, tol=tol, folder=folder, where=where, block=block,
        size_only=size_only,
    )
    return result


def _numbers_cell(item: pytest.Item, meta: dict[str, Any]) -> Any:
    """The cell printing the numbers behind a ``figure: size`` figure: ``numbers_in`` or itself."""
    name = meta.get("numbers_in")
    if name is None:
        return item.cell  # type: ignore[attr-defined]
    for cell in item.parent.nb.cells:  # type: ignore[attr-defined]
        if cell.get("id") == name:
            return cell
    raise FigureMismatch(f"numbers_in names no cell {name!r}")


def _prints_numbers(cell: Any) -> bool:
    import re

    from tools.nbtolerance import text_fields

    # a figure's own text/plain ("<Figure size 640x360 with 1 Axes>") does not count
    outputs = [o for o in cell.get("outputs", []) if "image/png" not in o.get("data", {})]
    text = "".join(v for o in outputs for _, v in text_fields(o))
    return re.search(r"\d", text) is not None


_durations: dict[str, float] = defaultdict(float)
_session_start = [0.0]


def pytest_sessionstart(session: pytest.Session) -> None:
    _session_start[0] = time.perf_counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    key = path if path.endswith(".ipynb") else "unit tests"
    _durations[key] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _durations:
        return
    tr = terminalreporter
    tr.section("timing summary")
    for key, seconds in sorted(_durations.items()):
        tr.write_line(f"{seconds:8.1f} s  {key}")
    wall = time.perf_counter() - _session_start[0]
    tr.write_line(f"{wall:8.1f} s  wall time of this pytest run")
