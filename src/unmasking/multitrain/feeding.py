"""The batches of K models at step ``s``, stacked, each exactly the one its own seeds give.

:class:`BatchFeeder` gathers model ``k``'s batch with ``seeds_list[k].order`` and augments it with
``seeds_list[k].augment``, the draws of :func:`~unmasking.training.train` for that model alone.
For the CIFAR crop + flip, :func:`crop_flip_draws` makes each model's draws (same calls, same
order as :func:`~unmasking.data.cifar.random_crop_flip`) and :func:`crop_flip` applies all K·N of
them in one indexing operation, on the device that holds the data.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F

from ..data import Data, TensorData
from ..data.cifar import random_crop_flip
from ..foundations.seeds import generator
from ..training import Seeds


def crop_flip_draws(n: int, g: torch.Generator, padding: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The offsets and flips that :func:`~unmasking.data.cifar.random_crop_flip` draws from ``g``.

    Same calls in the same order (row offsets, column offsets, flip coins), so the draws for
    one model's batch are exactly those of ``random_crop_flip(x, g)``.
    """
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return dy, dx, flip


def crop_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """Crop sample ``i`` of ``x`` (N, C, H, W), zero-padded by ``padding``, at rows ``dy[i]…`` and
    columns ``dx[i]…``, then mirror it horizontally where ``flip[i]``.

    ``dy``/``dx`` are the top/left corners in the padded image, as ``torchvision``'s
    ``RandomCrop(H, padding)`` picks them; the flip follows the crop, as in
    ``RandomCrop`` then ``RandomHorizontalFlip``.  Pure indexing, so it runs on any device.
    """
    n, _, h, w = x.shape
    dev = x.device
    dy, dx, flip = dy.to(dev), dx.to(dev), flip.to(dev)
    xp = F.pad(x, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=dev)
    cols = dx[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class BatchFeeder:
    """Step ``s``'s batches of K models, stacked: ``x`` (K, N, …) and ``y`` (K, N).

    Model ``k`` gets exactly the batch that ``data.train_batches(s, s+1, batch_size,
    seeds_list[k].order, seeds_list[k].augment, device)`` yields.  For :class:`TensorData` the K
    batches are gathered, augmented (the CIFAR crop + flip in one indexing operation) and
    normalized together, on the device where the data lives; any other :class:`Data` is read
    through K ``train_batches`` iterators.
    """

    def __init__(self, data: Data, seeds_list: Sequence[Seeds], batch_size: int, device: torch.device):
        self.data, self.seeds_list, self.batch_size, self.device = data, list(seeds_list), batch_size, device
        self._caches: list[dict] = [{} for _ in self.seeds_list]

    def batches(self, start: int, end: int):
        """Yield ``(step, x, y)`` for steps ``start … end-1``."""
        if isinstance(self.data, TensorData):
            for step in range(start, end):
                yield (step, *self._tensor_batch(step))
            return
        its = [
            self.data.train_batches(start, end, self.batch_size, s.order, s.augment, self.device)
            for s in self.seeds_list
        ]
        for items in zip(*its):
            yield items[0][0], torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items])

    def _tensor_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        data, k = self.data, len(self.seeds_list)
        idx = torch.stack(
            [data.batch_indices(step, self.batch_size, s.order, c) for s, c in zip(self.seeds_list, self._caches)]
        )
        flat = idx.reshape(-1).to(data.x_train.device)
        x = data.x_train[flat]
        if data.augment is random_crop_flip:
            draws = [crop_flip_draws(self.batch_size, generator(s.augment, "augment", step)) for s in self.seeds_list]
            x = crop_flip(x, *(torch.cat(d) for d in zip(*draws)))
        elif data.augment is not None:
            x = torch.cat(
                [data.augment(xk, generator(s.augment, "augment", step)) for xk, s in zip(x.chunk(k), self.seeds_list)]
            )
        x = data._prepare(x, self.device)
        y = data.y_train[flat.to(data.y_train.device)].to(self.device)
        return x.reshape(k, self.batch_size, *x.shape[1:]), y.reshape(k, self.batch_size)
