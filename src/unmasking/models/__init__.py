"""Model registry: build an architecture by name with a class count.

Which weights are prunable follows SPEC §2: every ``Conv*d`` and ``Linear`` weight
(first layer, 1x1 shortcuts and output layer included) unless a recipe ignores it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..foundations import registry
from ..foundations.hparams import ConfigError
from .cifar_resnet import resnet18, resnet20
from .mnist1d import MLP, CNN1d, resnet1d
from .vgg import vgg16

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn1d": CNN1d,
    "resnet1d": resnet1d,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "vgg16": vgg16,
}


def _resnet50(num_classes: int, width: int | None = None) -> nn.Module:
    import torchvision

    if width not in (None, 64):
        raise ConfigError("resnet50 has a fixed width of 64; unset model.width")
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


MODELS["resnet50"] = _resnet50
if tuple(MODELS) != registry.MODELS:  # the registry names them for the torch-free workflow checks
    raise ImportError(f"unmasking.models builds {tuple(MODELS)}, the registry names {registry.MODELS}")

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def build_model(name: str, num_classes: int, width: int | None = None, seed: int | None = None) -> nn.Module:
    """Construct model ``name``; with ``seed``, the initialization is a function of the seed alone."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if seed is None:
        return MODELS[name](num_classes=num_classes, width=width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](num_classes=num_classes, width=width)


def prunable_names(model: nn.Module, ignore: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names of the prunable weight tensors, in ``named_parameters`` order."""
    names = [
        f"{mod_name}.weight" if mod_name else "weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, PRUNABLE_TYPES)
    ]
    params = dict(model.named_parameters())
    unknown = [n for n in ignore if n not in params]
    if unknown:
        raise ConfigError(f"prune.ignore names unknown parameters {unknown}; prunable ones are {names}")
    return [n for n in names if n not in set(ignore)]


__all__ = ["MODELS", "build_model", "prunable_names"]
