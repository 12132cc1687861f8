from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from advbook import plot


def test_style_fixes_dpi_and_size() -> None:
    plot.use_style()
    assert matplotlib.rcParams["figure.dpi"] == plot.DPI
    assert tuple(matplotlib.rcParams["figure.figsize"]) == plot.FIGSIZE


def test_image_grid_layout_and_validation() -> None:
    fig = plot.image_grid(torch.rand(12, 1, 8, 8), titles=[str(i) for i in range(12)], ncols=5)
    assert len([ax for ax in fig.axes if ax.images]) == 12 and len(fig.axes) == 15
    plt.close(fig)
    fig = plot.image_grid(torch.rand(2, 3, 8, 8))
    assert fig.axes[0].images[0].get_array().shape == (8, 8, 3)
    plt.close(fig)
    with pytest.raises(ValueError, match="titles"):
        plot.image_grid(torch.rand(2, 8, 8), titles=["a"])
    with pytest.raises(ValueError, match="shape"):
        plot.image_grid(torch.rand(2, 5, 8, 8))


def test_plot_history_draws_train_and_test_curves() -> None:
    hist = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [0.5, 0.8],
                         "val_loss": [1.1, 0.7], "val_acc": [0.4, 0.7]})
    fig = plot.plot_history(hist, label="run")
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    plt.close(fig)
    with pytest.raises(ValueError, match="train_loss"):
        plot.plot_history(pd.DataFrame({"epoch": [1]}))
