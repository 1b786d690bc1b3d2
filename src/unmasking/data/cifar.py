"""CIFAR-10/100 through torchvision, held in memory as uint8 and augmented per batch.

The recipe's augmentation is a random 32x32 crop of the image zero-padded by 4 pixels
(padding in pixel space, before normalization, like ``RandomCrop(32, padding=4)``) and a
horizontal flip with probability 1/2, drawn independently per sample.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..foundations.hparams import DataHparams
from .base import DataMissingError, TensorData

STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _dataset_class(name: str):
    import torchvision

    return torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100


def check_cifar(name: str, root: Path, download: bool = False) -> None:
    folder = root / _FOLDERS[name]
    if not folder.is_dir() and not download:
        raise DataMissingError(
            f"{name} not found: looked for {folder}. Put the python-version archive from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html extracted there, point data.root (or the "
            f"UNMASKING_DATA environment variable) at the folder that holds {_FOLDERS[name]}, "
            f"or set data.download=true to let torchvision download it."
        )


def random_crop_flip(x: torch.Tensor, g: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch (N, C, H, W) and random horizontal flip."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def normalizer(name: str):
    """``x ↦ (x - mean) / std`` with the channel statistics of data set ``name`` (on ``x``'s device)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in STATS[name])

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x - mean.to(x.device)) / std.to(x.device)

    return normalize


def load_cifar(name: str, hparams: DataHparams, root: Path) -> TensorData:
    check_cifar(name, root, hparams.download)
    cls = _dataset_class(name)
    try:
        train = cls(str(root), train=True, download=hparams.download)
        test = cls(str(root), train=False, download=hparams.download)
    except RuntimeError as e:
        raise DataMissingError(
            f"{name} at {root / _FOLDERS[name]} is incomplete or corrupted ({e}); "
            f"re-extract the archive there or set data.download=true."
        ) from e

    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # uint8 N,3,32,32
        return x, torch.tensor(ds.targets, dtype=torch.long)

    x_train, y_train = tensors(train)
    x_test, y_test = tensors(test)
    return TensorData(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(train.classes),
        augment=random_crop_flip if hparams.augment else None,
        normalize=normalizer(name),
        train_eval_size=hparams.train_eval_size,
    )
