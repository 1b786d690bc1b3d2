"""The data interface the trainer and analyses use, and the in-memory implementation.

Batches are a pure function of ``(step, seeds)``: the data order of epoch ``e`` is a
permutation drawn from ``(order_seed, e)`` and the augmentation of step ``s`` from
``(augment_seed, s)``.  So a run resumed at any step sees exactly the batches an
uninterrupted run would, with no data-loader state to save.
"""

from __future__ import annotations

import abc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..foundations.datasets import FABRICATED, DataMissingError  # noqa: F401  (raised by the loaders)
from ..foundations.seeds import generator


def fabricated(folder: Path) -> bool:
    """Whether a data set folder holds fabricated test data (a ``FABRICATED`` file in it): read
    without the published checksums, with a warning on stderr, because its numbers mean nothing."""
    if not (folder / FABRICATED).is_file():
        return False
    print(f"warning: {folder} holds fabricated test data ({FABRICATED}): results on it mean nothing", file=sys.stderr)
    return True


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Data(abc.ABC):
    """A classification data set: training batches by step, evaluation batches, fixed subsets."""

    name: str
    num_classes: int
    num_train: int

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.num_train // batch_size  # the last partial batch is dropped

    @abc.abstractmethod
    def train_batches(
        self,
        start: int,
        end: int,
        batch_size: int,
        order_seed: int,
        augment_seed: int,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield ``(step, x, y)`` for steps ``start … end-1``."""

    @abc.abstractmethod
    def eval_batches(
        self, split: str, batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield un-augmented ``(x, y)`` batches of ``split`` ('train' or 'test') in a fixed order."""

    @abc.abstractmethod
    def subset(self, split: str, size: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, un-augmented subset of ``split`` as tensors (``size=None``: all)."""


def epoch_permutation(n: int, order_seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=generator(order_seed, "order", epoch))


@dataclass
class TensorData(Data):
    """A data set held as tensors (on CPU or GPU); augmentation acts on whole batches."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: Augment | None = None
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    train_eval_size: int | None = None

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    def to(self, device) -> "TensorData":
        return TensorData(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
            self.augment,
            self.normalize,
            self.train_eval_size,
        )

    def _prepare(self, x: torch.Tensor, device) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return self.normalize(x) if self.normalize is not None else x

    def batch_indices(self, step: int, batch_size: int, order_seed: int, _cache: dict | None = None) -> torch.Tensor:
        spe = self.steps_per_epoch(batch_size)
        if spe == 0:
            raise ValueError(f"batch size {batch_size} exceeds the {self.num_train} training examples")
        epoch, i = divmod(step, spe)
        if _cache is not None and _cache.get("epoch") == epoch:
            perm = _cache["perm"]
        else:
            perm = epoch_permutation(self.num_train, order_seed, epoch)
            if _cache is not None:
                _cache.update(epoch=epoch, perm=perm)
        return perm[i * batch_size : (i + 1) * batch_size]

    def train_batches(self, start, end, batch_size, order_seed, augment_seed, device="cpu"):
        cache: dict = {}
        for step in range(start, end):
            idx = self.batch_indices(step, batch_size, order_seed, cache)
            x = self.x_train[idx.to(self.x_train.device)]
            if self.augment is not None:
                x = self.augment(x, generator(augment_seed, "augment", step))
            yield step, self._prepare(x, device), self.y_train[idx.to(self.y_train.device)].to(device)

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "test":
            return self.x_test, self.y_test
        if split == "train":
            if self.train_eval_size is not None and self.train_eval_size < self.num_train:
                idx = epoch_permutation(self.num_train, 0, "train-eval")[: self.train_eval_size]
                return self.x_train[idx], self.y_train[idx]
            return self.x_train, self.y_train
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")

    def eval_batches(self, split, batch_size, device="cpu"):
        x, y = self._split(split)
        for i in range(0, len(y), batch_size):
            yield self._prepare(x[i : i + batch_size], device), y[i : i + batch_size].to(device)

    def subset(self, split, size, seed=0):
        x, y = self._split(split)
        if size is not None and size < len(y):
            idx = torch.randperm(len(y), generator=generator(seed, "subset", split))[:size]
            x, y = x[idx], y[idx]
        return self._prepare(x, x.device), y
