"""Tiny hand-built networks for the deconvnet, receptive-field and top-k tests.

torchvision is not available here, so ``VGGStyle`` re-creates the shape of its VGG and AlexNet:
``features`` / ``avgpool`` / ``classifier`` children and a ``forward`` that flattens functionally.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class VGGStyle(nn.Module):
    """torchvision-style classifier: features -> avgpool -> torch.flatten -> classifier.

    In-place ReLUs and dropout at the head of the classifier, as torchvision's AlexNet has them.
    ``batch_norm`` puts a BatchNorm2d after every conv (VGG-BN); ``pool`` is the (kernel, stride)
    of the max-pools.
    """

    def __init__(self, num_classes: int = 5, batch_norm: bool = False, pool: tuple[int, int] = (3, 2),
                 avgpool: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width, kernel, stride, padding in ((8, 5, 2, 2), (12, 3, 1, 1), (16, 3, 1, 1)):
            layers.append(nn.Conv2d(channels, width, kernel, stride=stride, padding=padding))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            if width != 12:
                layers.append(nn.MaxPool2d(pool[0], stride=pool[1]))
            channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((avgpool, avgpool))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(channels * avgpool * avgpool, 24), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(24, 24), nn.ReLU(inplace=True), nn.Linear(24, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def randomize_batch_norm_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm2d non-trivial running statistics and affine parameters (in place)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
    return model


def plain_sequential() -> nn.Sequential:
    """An ``nn.Sequential`` with odd geometry (dilation, groups, "same" padding, ceil-mode and padded pools).

    Takes 37x37 inputs: 37 -> 19 -> 9 -> (9, 4) maps.
    """
    return nn.Sequential(OrderedDict(
        c1=nn.Conv2d(3, 8, 3, stride=1, padding="same"),
        r1=nn.ReLU(),
        p1=nn.MaxPool2d(3, stride=2, padding=1),                  # overlapping, padded
        c2=nn.Conv2d(8, 12, 3, stride=1, padding=2, dilation=2, groups=4),
        r2=nn.ReLU(),
        p2=nn.MaxPool2d(3, stride=2, ceil_mode=True),             # overlapping, ceil rounding
        c3=nn.Conv2d(12, 16, (3, 2), stride=(1, 2), padding=(1, 0)),  # non-square kernel and stride
        r3=nn.ReLU(),
        idn=nn.Identity(),
        flat=nn.Flatten(),
        fc=nn.Linear(16 * 9 * 4, 10),                             # for 37x37 inputs
    ))


def hand_net() -> nn.Sequential:
    """One 2x2 filter (hand-set, no bias), ReLU, 2x2 max-pool with stride 1 (overlapping windows).

    Filter ``[[1, 0], [0, -1]]``: the output is ``x[i, j] - x[i+1, j+1]``.
    """
    conv = nn.Conv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]]]))
    return nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(), pool=nn.MaxPool2d(2, stride=1)))


def positive_conv_net() -> nn.Sequential:
    """All-positive weights and biases: with positive inputs every unit is active and nothing cancels.

    Odd geometry on purpose: a padded stride-2 conv, a ceil-mode pool, a dilated conv, a padded pool
    and a non-square kernel. Takes 2-channel inputs (33x33 in the tests).
    """
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 3, 5, stride=2, padding=1), relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
        conv2=nn.Conv2d(3, 4, 3, stride=1, padding=2, dilation=2), relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2, stride=2, padding=1),
        conv3=nn.Conv2d(4, 4, (3, 1), stride=1, padding=(1, 0)), relu3=nn.ReLU(),
    ))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.1, 1.0)
                m.bias.fill_(0.1)
    return net


class NotAChain(nn.Module):
    """A residual block: its children do not run in registration order only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) + x)


class Shuffled(nn.Module):
    """Children registered in an order other than the one ``forward`` uses."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))
