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
