"""One plotting style for the whole book, and the figure helpers the chapters share.

Call :func:`use_style` once at the top of a chapter. Figures are drawn at a fixed size and dpi so
that the PNGs stored in the notebooks can be compared pixel by pixel when CI re-runs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

__all__ = [
    "DPI",
    "FIGSIZE",
    "PALETTE",
    "image_grid",
    "plot_history",
    "use_style",
]

DPI = 100
FIGSIZE = (6.4, 3.6)
PALETTE = "colorblind"

_RC: dict[RcKeyType, Any] = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": FIGSIZE,
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "image.cmap": "gray",
    "svg.hashsalt": "advbook",
    "path.simplify": True,
}


def use_style() -> None:
    """Apply the book's seaborn/matplotlib style (fixed dpi, figure size, fonts and palette)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, rc=_RC)
    mpl.rcParams.update(_RC)


def _to_numpy_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else images
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3:  # N×H×W
        return arr
    if arr.ndim == 4 and arr.shape[1] in (1, 3):  # N×C×H×W
        arr = arr.transpose(0, 2, 3, 1)
        return arr[..., 0] if arr.shape[-1] == 1 else arr
    raise ValueError(f"images must be N×H×W or N×C×H×W with C in (1, 3), got shape {arr.shape}")


def image_grid(
    images: torch.Tensor | np.ndarray,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    cmap: str = "gray",
    cell_size: float = 0.9,
    suptitle: str | None = None,
) -> Figure:
    """Show a batch of images in a grid, one optional title per image.

    ``images`` is N×H×W or N×C×H×W (C = 1 or 3, values in ``[vmin, vmax]``). Pass ``vmin=None``
    and ``vmax=None`` to scale each image on its own (useful for magnified perturbations, with
    ``cmap="RdBu_r"``).
    """
    arr = _to_numpy_images(images)
    n = len(arr)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    if ncols <= 0:
        raise ValueError(f"ncols must be positive, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    title_pad = 0.25 if titles is not None else 0.0
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(cell_size * ncols, (cell_size + title_pad) * nrows + (0.3 if suptitle else 0.0)),
        squeeze=False,
    )
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        img = arr[i]
        if img.ndim == 3:
            ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
        else:
            ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8, pad=2)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout(pad=0.2)
    return fig


def _figure_of(ax: Axes) -> Figure:
    """The (root) figure ``ax`` is drawn in."""
    fig = ax.get_figure(root=True)
    if fig is None:
        raise ValueError("the axes passed belong to no figure")
    return fig


def plot_history(
    history: pd.DataFrame,
    *,
    label: str | None = None,
    axes: Sequence[Axes] | None = None,
) -> Figure:
    """Learning curves from :func:`advbook.train.fit`: loss (left) and accuracy (right) per epoch.

    Training curves are solid, validation curves dashed. Pass ``axes`` from an earlier call to
    overlay several runs, each with its own ``label``.
    """
    missing = {"epoch", "train_loss"} - set(history.columns)
    if missing:
        raise ValueError(
            f"history lacks the columns {sorted(missing)}; got {list(history.columns)}"
        )
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=FIGSIZE)
    else:
        fig = _figure_of(axes[0])
    prefix = f"{label}: " if label else ""
    line = axes[0].plot(history["epoch"], history["train_loss"], label=f"{prefix}train")[0]
    colour = line.get_color()
    if "val_loss" in history:
        axes[0].plot(history["epoch"], history["val_loss"], "--", color=colour,
                     label=f"{prefix}test")
    if "train_acc" in history:
        axes[1].plot(history["epoch"], 100 * history["train_acc"], color=colour,
                     label=f"{prefix}train")
    if "val_acc" in history:
        axes[1].plot(history["epoch"], 100 * history["val_acc"], "--", color=colour,
                     label=f"{prefix}test")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return fig
