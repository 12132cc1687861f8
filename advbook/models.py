"""Small models used throughout the book.

* :class:`MLP` — a fully connected network (default 784-256-10) for MNIST and toy data.
* :class:`SmallCNN` — two conv layers and two linear layers, about 106k parameters on MNIST.
* :func:`small_resnet` — a ResNet-style network with BatchNorm for CIFAR-size inputs (GPU readers).

All models return logits of shape ``(N, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "BasicBlock", "SmallCNN", "count_parameters", "small_resnet"]


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs: ``Flatten → [Linear → act]* → Linear``."""

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (256,),
        num_classes: int = 10,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0 or any(h <= 0 for h in hidden):
            raise ValueError(
                f"layer sizes must be positive, got in_features={in_features}, "
                f"hidden={tuple(hidden)}, num_classes={num_classes}"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class SmallCNN(nn.Module):
    """``conv3×3(16) → pool → conv3×3(32) → pool → Linear(64) → Linear(num_classes)``, ReLU.

    On 1×28×28 inputs it has 105,866 parameters; ``image_size`` must be divisible by 4.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 16
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 2 * width * (image_size // 4) ** 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN-ReLU layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def small_resnet(
    num_classes: int = 10, in_channels: int = 3, width: int = 16, blocks: Sequence[int] = (2, 2, 2)
) -> nn.Sequential:
    """A CIFAR-style ResNet: stem, three stages of :class:`BasicBlock` (widths w, 2w, 4w), pooling.

    The default (``width=16``, two blocks per stage) is ResNet-14-like with about 0.17M parameters.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    in_planes = width
    for stage, n_blocks in enumerate(blocks):
        planes = width * 2**stage
        for b in range(n_blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            layers.append(BasicBlock(in_planes, planes, stride))
            in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, num_classes)]
    return nn.Sequential(*layers)
