"""VGG-16 with BatchNorm for 32x32 inputs (the CIFAR variant used by OpenLTH)."""

from __future__ import annotations

import torch
from torch import nn

_CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    """Conv3x3-BN-ReLU stacks with max-pooling, global average pooling and one linear layer."""

    def __init__(self, cfg: list, num_classes: int):
        super().__init__()
        layers, cin = [], 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def vgg16(num_classes: int = 10, width: int | None = None) -> VGG:
    scale = (width or 64) / 64
    cfg = [c if c == "M" else int(c * scale) for c in _CFG16]
    return VGG(cfg, num_classes)
