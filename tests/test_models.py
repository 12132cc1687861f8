from __future__ import annotations

import pytest
import torch

from advbook import models


def test_mlp_shapes_and_parameter_count() -> None:
    net = models.MLP(784, (256,), 10)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert models.count_parameters(net) == 784 * 256 + 256 + 256 * 10 + 10


def test_small_cnn_about_100k_parameters() -> None:
    net = models.SmallCNN()
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert 90_000 <= models.count_parameters(net) <= 120_000
    with pytest.raises(ValueError, match="divisible by 4"):
        models.SmallCNN(image_size=30)


def test_small_resnet_cifar_shapes() -> None:
    net = models.small_resnet()
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_mlp_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        models.MLP(0)


def test_count_parameters_trainable_only() -> None:
    net = models.MLP(4, (3,), 2)
    for p in net.net[1].parameters():
        p.requires_grad_(False)
    assert models.count_parameters(net) == 3 * 2 + 2
    assert models.count_parameters(net, trainable_only=False) == 4 * 3 + 3 + 3 * 2 + 2
