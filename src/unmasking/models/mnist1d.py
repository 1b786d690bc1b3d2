"""Small models for the 40-dimensional mnist1d signals."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """40-h-h-classes multilayer perceptron with ReLU (h = ``width``, default 100)."""

    def __init__(self, num_classes: int = 10, width: int | None = None, in_features: int = 40):
        super().__init__()
        h = width or 100
        self.fc1 = nn.Linear(in_features, h)
        self.fc2 = nn.Linear(h, h)
        self.fc3 = nn.Linear(h, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN1d(nn.Module):
    """Three Conv1d-BatchNorm-ReLU blocks (stride 1, 2, 2) and a linear classifier."""

    def __init__(self, num_classes: int = 10, width: int | None = None, length: int = 40):
        super().__init__()
        c = width or 32
        self.conv1 = nn.Conv1d(1, c, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(c)
        self.conv2 = nn.Conv1d(c, c, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c)
        self.conv3 = nn.Conv1d(c, c, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm1d(c)
        self.fc = nn.Linear(c * (length // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 1, -1)
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.flatten(1))


class BasicBlock1d(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus the shortcut, then ReLU; a 1x1 projection (conv + BN) where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet1d(nn.Module):
    """The 1-D counterpart of the CIFAR ResNets (:mod:`.cifar_resnet`): a stem Conv1d-BN-ReLU, stages of
    basic blocks (stride 2 at the first block of every stage after the first, 1x1 projection shortcuts
    where the shape changes), global average pooling over the length, a linear classifier.  All
    convolutions without bias; PyTorch's default initialization, as :class:`CNN1d`."""

    def __init__(
        self,
        blocks_per_stage: list[int],
        widths: list[int],
        num_classes: int = 10,
        stem_kernel: int = 5,
        stem_stride: int = 1,
    ):
        super().__init__()
        self.conv = nn.Conv1d(1, widths[0], stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False)
        self.bn = nn.BatchNorm1d(widths[0])
        layers, cin = [], widths[0]
        for stage, (n, w) in enumerate(zip(blocks_per_stage, widths)):
            for i in range(n):
                layers.append(BasicBlock1d(cin, w, stride=2 if (stage > 0 and i == 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 1, -1)
        x = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(2))


def resnet1d(num_classes: int = 10, width: int | None = None) -> ResNet1d:
    """The mnist1d ResNet ("ResNet-8": 7 convolutions on the main path, a linear head): a 5-tap stride-2
    stem and one basic block per stage, all ``width`` (default 16) channels; on the 40-sample signals
    the stages run at lengths 20, 10 and 5.  5,658 parameters at width 16, 10 prunable tensors (the
    stem, six block convolutions, the two 1x1 shortcuts of stages 2 and 3, the head).

    Sized to cost about what the embedded CNN (:class:`CNN1d`) costs per training step on one CPU
    core.  With this few channels a step is dominated by the fixed cost of each layer, not by its
    arithmetic, so depth is what it pays for: ResNet-20's three blocks per stage (19 convolutions)
    cost several CNNs, and even the minimum of one block per stage with the CIFAR nets' stride-1
    stem and doubling widths (16, 32, 64) costs about 3x the CNN.  The stride-2 stem halves every
    stage's length and the constant width keeps the later stages cheap; measured per step against
    the CNN, and the dense test errors of both: docs/performance.md.
    """
    w = width or 16
    return ResNet1d([1, 1, 1], [w, w, w], num_classes, stem_kernel=5, stem_stride=2)
