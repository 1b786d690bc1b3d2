"""Data set registry: ``load_data(hparams)`` returns a :class:`~unmasking.data.base.Data`.

``mnist1d`` is generated offline; CIFAR-10/100 and ImageNet are read through torchvision
from ``data.root`` (or ``$UNMASKING_DATA``), with downloads only when asked.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..foundations.hparams import ConfigError, DataHparams
from .base import Data, DataMissingError, TensorData


def data_root(hparams: DataHparams) -> Path:
    root = hparams.root or os.environ.get("UNMASKING_DATA")
    if not root:
        return Path.home() / ".cache" / "unmasking" / "data"
    return Path(root).expanduser()


def load_data(hparams: DataHparams) -> Data:
    """Load the data set named in ``hparams``; a missing data set raises :class:`DataMissingError`."""
    name = hparams.name
    if name == "mnist1d":
        from .mnist1d import load_mnist1d

        return load_mnist1d(hparams, data_root(hparams))
    if name in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        return load_cifar(name, hparams, data_root(hparams))
    if name == "imagenet":
        from .imagenet import load_imagenet

        return load_imagenet(hparams, data_root(hparams))
    raise ConfigError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")


def check_available(hparams: DataHparams) -> None:
    """Raise :class:`DataMissingError` now if the data set is not on disk (cheap; no loading)."""
    name, root = hparams.name, data_root(hparams)
    if name in ("cifar10", "cifar100"):
        from .cifar import check_cifar

        check_cifar(name, root, hparams.download)
    elif name == "imagenet":
        from .imagenet import check_imagenet

        check_imagenet(root)
    elif name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")


DATASETS = ("mnist1d", "cifar10", "cifar100", "imagenet")

__all__ = ["DATASETS", "Data", "DataMissingError", "TensorData", "check_available", "data_root", "load_data"]
