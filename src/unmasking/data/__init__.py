"""Data set registry: ``load_data(hparams)`` returns a :class:`~unmasking.data.base.Data`.

Where the data sets live and the cheap check that they are there are torch-free, in
:mod:`unmasking.foundations.datasets` (re-exported here).

``mnist1d`` is generated offline; CIFAR-10/100 are read from their python-version pickles, ImageNet
through torchvision's ImageFolder,
from ``data.root`` (or ``$UNMASKING_DATA``), with downloads only when asked.
"""

from __future__ import annotations

from ..foundations.datasets import DATASETS, DataMissingError, check_available, data_root
from ..foundations.hparams import ConfigError, DataHparams
from .base import Data, TensorData


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


__all__ = ["DATASETS", "Data", "DataMissingError", "TensorData", "check_available", "data_root", "load_data"]
