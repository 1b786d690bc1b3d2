"""CIFAR-10/100 from the python-version archives' pickles, held in memory as uint8 and augmented per batch.

Every file is checked against the published MD5 sum (a folder of fabricated test data, marked by
:func:`~unmasking.data.base.fabricated`, is read unchecked, with a warning); torchvision is needed only
for ``data.download``.

The recipe's augmentation is a random 32x32 crop of the image zero-padded by 4 pixels
(padding in pixel space, before normalization, like ``RandomCrop(32, padding=4)``) and a
horizontal flip with probability 1/2, drawn independently per sample.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..foundations.datasets import CIFAR_FOLDERS, DataMissingError, check_cifar
from ..foundations.hparams import DataHparams
from .base import TensorData, fabricated

STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# The published archives' files and MD5 sums (those torchvision checks; tests/test_data.py compares).
_FILES = {
    "cifar10": {
        "train": [
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ],
        "test": [("test_batch", "40351d587109b95175f43aff81a1287e")],
        "meta": ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", "label_names"),
        "labels": "labels",
    },
    "cifar100": {
        "train": [("train", "16019d7e3df5f24257cddd939b257f8d")],
        "test": [("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")],
        "meta": ("meta", "7973b15100ade9c7d40fb424638fde48", "fine_label_names"),
        "labels": "fine_labels",
    },
}


def _download(name: str, root: Path) -> None:
    import torchvision  # only to download: reading needs no torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    cls(str(root), train=True, download=True)


def _read(folder: Path, file: str, md5: str, checked: bool) -> dict:
    """One pickle of the python-version archive; its MD5 checked against the published sum unless
    the folder holds fabricated test data (:func:`~unmasking.data.base.fabricated`)."""
    path = folder / file
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataMissingError(
            f"{path} cannot be read ({e.strerror}); re-extract the archive into {folder} (or delete that folder "
            f"and set data.download=true)."
        ) from None
    if checked and hashlib.md5(blob).hexdigest() != md5:
        raise DataMissingError(
            f"{path} does not match the published archive (MD5 differs): the file is incomplete or "
            f"corrupted; re-extract the archive into {folder} (or delete that folder and set data.download=true)."
        )
    try:
        return pickle.loads(blob, encoding="latin1")
    except Exception as e:  # noqa: BLE001  (any unpickling error is a broken file)
        raise DataMissingError(f"{path} is not a CIFAR python-version pickle ({e}); re-extract the archive.") from None


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
    """CIFAR-10/100 from the python-version archive's pickles, as uint8 (N, 3, 32, 32) and labels."""
    check_cifar(name, root, hparams.download)
    folder, files = root / CIFAR_FOLDERS[name], _FILES[name]
    if hparams.download and not folder.is_dir():
        _download(name, root)
    checked = not fabricated(folder)

    def split(which):
        xs, ys = [], []
        for file, md5 in files[which]:
            batch = _read(folder, file, md5, checked)
            try:
                x, y = np.asarray(batch["data"], dtype=np.uint8), list(batch[files["labels"]])
                x = x.reshape(len(x), 3, 32, 32)
                if len(x) != len(y):
                    raise ValueError(f"{len(x)} images, {len(y)} labels")
            except (KeyError, TypeError, ValueError) as e:
                raise DataMissingError(
                    f"{folder / file} is not a CIFAR batch (expected 'data' of N x 3072 bytes and N "
                    f"'{files['labels']}': {type(e).__name__}: {e}); re-extract the archive into {folder}."
                ) from None
            xs.append(x)
            ys += y
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))), torch.tensor(ys, dtype=torch.long)

    x_train, y_train = split("train")
    x_test, y_test = split("test")
    meta_file, meta_md5, key = files["meta"]
    classes = _read(folder, meta_file, meta_md5, checked)[key]
    return TensorData(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes),
        augment=random_crop_flip if hparams.augment else None,
        normalize=normalizer(name),
        train_eval_size=hparams.train_eval_size,
    )
