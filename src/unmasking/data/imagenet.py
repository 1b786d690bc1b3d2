"""ImageNet through ``torchvision.datasets.ImageFolder`` (``<root>/imagenet/{train,val}``).

Images are decoded by DataLoader workers.  The data order follows the same
``(order_seed, epoch)`` permutations as the in-memory data sets, so resuming at a step
continues the same order; augmentation (RandomResizedCrop 224 + flip) is seeded per step. ``data.image_size``
sets another crop size (the paper smoke's 64; evaluation resizes to 256/224 of it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..foundations.datasets import check_imagenet
from ..foundations.hparams import DataHparams
from ..foundations.seeds import derive_seed
from .base import Data, epoch_permutation, fabricated

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _SeededTransform:
    """Applies a torchvision transform with torch's RNG seeded per (seed, step, index)."""

    def __init__(self, transform, seed: int):
        self.transform, self.seed = transform, seed

    def __call__(self, item):
        (path_img, step, i) = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "augment", step, i))
            return self.transform(path_img)


class _Items(torch.utils.data.Dataset):
    """``dataset.samples[indices[j]]`` decoded and transformed; train items carry their step."""

    def __init__(self, dataset, indices, transform, steps, batch_size):
        self.dataset, self.indices, self.transform = dataset, indices, transform
        self.steps, self.batch_size = steps, batch_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j):
        path, label = self.dataset.samples[self.indices[j]]
        img = self.dataset.loader(path)
        if self.steps is None:
            return self.transform(img), label
        return self.transform((img, self.steps[j], j % self.batch_size)), label


class ImageFolderData(Data):
    def __init__(self, root: Path, hparams: DataHparams):
        import torchvision
        from torchvision import transforms as T

        check_imagenet(root)
        fabricated(root / "imagenet")
        self.name, self.hparams = "imagenet", hparams
        self.train = torchvision.datasets.ImageFolder(str(root / "imagenet" / "train"))
        self.val = torchvision.datasets.ImageFolder(str(root / "imagenet" / "val"))
        self.num_classes = len(self.train.classes)
        norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
        crop = hparams.image_size or 224  # evaluation resizes to 256/224 of the crop, as at 224
        resize = round(crop * 256 / 224)
        aug = (
            [T.RandomResizedCrop(crop), T.RandomHorizontalFlip()]
            if hparams.augment
            else [T.Resize(resize), T.CenterCrop(crop)]
        )
        self.train_transform = T.Compose(aug + norm)
        self.eval_transform = T.Compose([T.Resize(resize), T.CenterCrop(crop)] + norm)

    @property
    def num_train(self) -> int:
        return len(self.train)

    def _loader(self, dataset, indices, batch_size, transform, steps=None):
        from torch.utils.data import DataLoader

        return DataLoader(
            _Items(dataset, indices, transform, steps, batch_size),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.hparams.workers,
            pin_memory=torch.cuda.is_available(),
        )

    def train_batches(self, start, end, batch_size, order_seed, augment_seed, device="cpu"):
        spe = self.steps_per_epoch(batch_size)
        transform = _SeededTransform(self.train_transform, augment_seed)
        step = start
        while step < end:
            epoch, first = divmod(step, spe)
            last = min(spe, first + (end - step))
            perm = epoch_permutation(self.num_train, order_seed, epoch)[first * batch_size : last * batch_size]
            steps = [epoch * spe + first + j // batch_size for j in range(len(perm))]
            for x, y in self._loader(self.train, perm.tolist(), batch_size, transform, steps):
                yield step, x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                step += 1

    def _indices(self, split: str) -> tuple:
        if split == "test":
            return self.val, list(range(len(self.val)))
        if split == "train":
            n = self.hparams.train_eval_size or self.num_train
            return self.train, epoch_permutation(self.num_train, 0, "train-eval")[:n].tolist()
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")

    def eval_batches(self, split, batch_size, device="cpu"):
        dataset, indices = self._indices(split)
        for x, y in self._loader(dataset, indices, batch_size, self.eval_transform):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def subset(self, split, size, seed=0):
        dataset, indices = self._indices(split)
        if size is not None and size < len(indices):
            g = torch.Generator().manual_seed(derive_seed(seed, "subset", split))
            indices = [indices[i] for i in torch.randperm(len(indices), generator=g)[:size].tolist()]
        xs, ys = zip(*self._loader(dataset, indices, 256, self.eval_transform))
        return torch.cat(xs), torch.cat(ys)


def load_imagenet(hparams: DataHparams, root: Path) -> ImageFolderData:
    return ImageFolderData(root, hparams)
