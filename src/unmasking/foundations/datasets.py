"""Where the data sets live on disk and whether they are there: torch-free, so that the workflow checks a
configuration's data before any job without importing torch (:mod:`unmasking.data` loads them).

``data.root`` of a recipe, else ``$UNMASKING_DATA``, else ``~/.cache/unmasking/data``, holds
``mnist1d/`` (generated offline), ``cifar-10-batches-py/`` and ``cifar-100-python/`` (the python-version
archives) and ``imagenet/{train,val}/`` (one folder per class, torchvision's ImageFolder layout).
"""

from __future__ import annotations

import os
from pathlib import Path

from .hparams import ConfigError, DataHparams

DATASETS = ("mnist1d", "cifar10", "cifar100", "imagenet")
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FABRICATED = "FABRICATED"  # marker file of a data folder made by workflow/scripts/fabricate_data.py


class DataMissingError(FileNotFoundError):
    """A data set is not where the configuration says; the message says how to get it."""


def data_root(hparams: DataHparams) -> Path:
    root = hparams.root or os.environ.get("UNMASKING_DATA")
    if not root:
        return Path.home() / ".cache" / "unmasking" / "data"
    return Path(root).expanduser()


def check_cifar(name: str, root: Path, download: bool = False) -> None:
    folder = root / CIFAR_FOLDERS[name]
    if not folder.is_dir() and not download:
        raise DataMissingError(
            f"{name} not found: looked for {folder}. Put the python-version archive from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html extracted there, point data.root (or the "
            f"UNMASKING_DATA environment variable) at the folder that holds {CIFAR_FOLDERS[name]}, "
            f"or set data.download=true to let torchvision download it."
        )


def check_imagenet(root: Path) -> None:
    for split in ("train", "val"):
        folder = root / "imagenet" / split
        if not folder.is_dir():
            raise DataMissingError(
                f"ImageNet not found: looked for {folder}. Download ILSVRC2012 from https://image-net.org, "
                f"arrange train/ and val/ as one sub-folder per class (torchvision ImageFolder layout) under "
                f"{root / 'imagenet'}, or point data.root / UNMASKING_DATA at the folder that holds imagenet/."
            )


def check_available(hparams: DataHparams) -> None:
    """Raise :class:`DataMissingError` now if the data set is not on disk (cheap; no loading)."""
    name, root = hparams.name, data_root(hparams)
    if name in CIFAR_FOLDERS:
        check_cifar(name, root, hparams.download)
    elif name == "imagenet":
        check_imagenet(root)
    elif name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")


def data_folder(hparams: DataHparams) -> Path | None:
    """The folder that holds the data set's files (None for mnist1d, generated where it is cached)."""
    root = data_root(hparams)
    if hparams.name in CIFAR_FOLDERS:
        return root / CIFAR_FOLDERS[hparams.name]
    return root / "imagenet" if hparams.name == "imagenet" else None


def is_fabricated(hparams: DataHparams) -> bool:
    """Whether the data set's folder holds fabricated test data (its ``FABRICATED`` marker)."""
    folder = data_folder(hparams)
    return folder is not None and (folder / FABRICATED).is_file()
