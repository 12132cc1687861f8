"""Progress bars: whether to show them, and ``tqdm.auto`` imported without its notebook warning."""

from __future__ import annotations

import os
import warnings

from tqdm import TqdmExperimentalWarning, TqdmWarning

with warnings.catch_warnings():
    # Without ipywidgets, tqdm.auto warns once and falls back to the text bar; that is fine.
    warnings.simplefilter("ignore", TqdmWarning)
    warnings.simplefilter("ignore", TqdmExperimentalWarning)
    from tqdm.auto import tqdm

__all__ = ["progress_enabled", "tqdm"]


def progress_enabled(progress: bool | None = None) -> bool:
    """Decide whether to show ``tqdm`` progress bars.

    An explicit ``True``/``False`` wins. Otherwise bars are on, except when the environment
    variable ``ADVBOOK_PROGRESS`` is ``0`` or when ``CI`` is set, so that logs and the stored
    notebook outputs stay free of timing noise.
    """
    if progress is not None:
        return bool(progress)
    if os.environ.get("ADVBOOK_PROGRESS", "").strip() == "0":
        return False
    return not os.environ.get("CI")
