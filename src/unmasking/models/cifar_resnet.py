"""CIFAR ResNets: ResNet-20 (He et al. 2016, width 16) and ResNet-18 with a CIFAR stem.

Shortcuts that change shape are 1x1 projection convolutions with BatchNorm, as in OpenLTH.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of basic blocks, global average pooling, linear classifier."""

    def __init__(self, blocks_per_stage: list[int], widths: list[int], num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for stage, (n, w) in enumerate(zip(blocks_per_stage, widths)):
            for i in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (stage > 0 and i == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet20(num_classes: int = 10, width: int | None = None) -> CifarResNet:
    w = width or 16
    return CifarResNet([3, 3, 3], [w, 2 * w, 4 * w], num_classes)


def resnet18(num_classes: int = 100, width: int | None = None) -> CifarResNet:
    w = width or 64
    return CifarResNet([2, 2, 2, 2], [w, 2 * w, 4 * w, 8 * w], num_classes)
