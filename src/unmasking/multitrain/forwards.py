"""The stacked forward pass of each architecture: K models' training-mode forward in one set of kernels.

A stacked forward ``f(model, ops, x)`` takes the architecture's module (a template on the ``meta``
device: read it for the layer settings, never for weights), a :class:`~.kernels.StackedOps` over the
K models' stacked parameters and buffers, and the inputs ``x`` (K, N, …); it returns the logits
(K, N, classes), naming every parameter as ``model.named_parameters()`` does.

To give an architecture the ``stacked`` backend, write its forward here and add one line to
:data:`STACKED_FORWARDS`.  The architectures of :data:`~unmasking.models.MODELS` without one are
listed in :data:`VMAP_ONLY`; they train through the ``vmap`` backend.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..models.cifar_resnet import CifarResNet
from ..models.mnist1d import MLP, CNN1d, ResNet1d
from ..models.vgg import VGG
from .kernels import StackedOps, from_groups

StackedForward = Callable[[nn.Module, StackedOps, torch.Tensor], torch.Tensor]


def mlp_forward(model: MLP, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(ops.linear("fc1", x.flatten(2)))
    return ops.linear("fc3", torch.relu(ops.linear("fc2", h)))


def cnn1d_forward(model: CNN1d, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    """On (K, N, L, C): ``bmm`` convolutions and sum-based BatchNorm (see :class:`~.kernels.StackedOps`)."""
    h = x.reshape(x.shape[0], x.shape[1], -1, 1)  # (K, N, L, C=1)
    for i in (1, 2, 3):
        h = ops.conv_rows(f"conv{i}", getattr(model, f"conv{i}"), h)
        h = torch.relu(ops.bn_rows(f"bn{i}", getattr(model, f"bn{i}"), h))
    return ops.linear("fc", h.transpose(2, 3).flatten(2))  # the model flattens (C, L)


def resnet1d_forward(model: ResNet1d, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    """The 1-D ResNet on (K, N, L, C), as :func:`cnn1d_forward`; global average pooling over L."""
    h = x.reshape(x.shape[0], x.shape[1], -1, 1)  # (K, N, L, C=1)
    h = torch.relu(ops.bn_rows("bn", model.bn, ops.conv_rows("conv", model.conv, h)))
    for i, block in enumerate(model.blocks):
        pre = f"blocks.{i}"
        out = torch.relu(ops.bn_rows(f"{pre}.bn1", block.bn1, ops.conv_rows(f"{pre}.conv1", block.conv1, h)))
        out = ops.bn_rows(f"{pre}.bn2", block.bn2, ops.conv_rows(f"{pre}.conv2", block.conv2, out))
        if len(block.shortcut):
            sc = ops.conv_rows(f"{pre}.shortcut.0", block.shortcut[0], h)
            h = ops.bn_rows(f"{pre}.shortcut.1", block.shortcut[1], sc)
        h = torch.relu(out + h)
    return ops.linear("fc", h.mean(2))


def resnet_forward(model: CifarResNet, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    """The CIFAR ResNets (ResNet-20, ResNet-18) on the grouped layout (N, K·C, H, W)."""
    h = torch.relu(ops.bn("bn", model.bn, ops.conv("conv", model.conv, ops.enter(x))))
    for i, block in enumerate(model.blocks):
        pre = f"blocks.{i}"
        out = torch.relu(ops.bn(f"{pre}.bn1", block.bn1, ops.conv(f"{pre}.conv1", block.conv1, h)))
        out = ops.bn(f"{pre}.bn2", block.bn2, ops.conv(f"{pre}.conv2", block.conv2, out))
        if len(block.shortcut):
            h = ops.bn(f"{pre}.shortcut.1", block.shortcut[1], ops.conv(f"{pre}.shortcut.0", block.shortcut[0], h))
        h = torch.relu(out + h)
    h = F.adaptive_avg_pool2d(h, 1)
    return ops.linear("fc", from_groups(h, ops.k).flatten(2))


def vgg_forward(model: VGG, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    """VGG on the grouped layout (N, K·C, H, W), layer by layer of ``model.features``."""
    h = ops.enter(x)
    for i, mod in enumerate(model.features):
        if isinstance(mod, nn.Conv2d):
            h = ops.conv(f"features.{i}", mod, h)
        elif isinstance(mod, nn.BatchNorm2d):
            h = ops.bn(f"features.{i}", mod, h)
        elif isinstance(mod, nn.ReLU):
            h = torch.relu(h)
        elif isinstance(mod, nn.MaxPool2d):
            h = F.max_pool2d(h, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode)
        else:
            raise ValueError(f"stacked backend: unsupported layer {type(mod).__name__} in VGG; use backend='vmap'")
    h = F.adaptive_avg_pool2d(h, 1)
    return ops.linear("fc", from_groups(h, ops.k).flatten(2))


STACKED_FORWARDS: dict[type[nn.Module], StackedForward] = {
    MLP: mlp_forward,
    CNN1d: cnn1d_forward,
    ResNet1d: resnet1d_forward,
    CifarResNet: resnet_forward,
    VGG: vgg_forward,
}

VMAP_ONLY = frozenset({"resnet50"})  # names in unmasking.models.MODELS: torchvision's ResNet, trained through vmap


def stacked_forward(model: nn.Module) -> StackedForward | None:
    """The stacked forward pass for ``model``'s class, or None when only ``vmap`` supports it."""
    return STACKED_FORWARDS.get(type(model))
