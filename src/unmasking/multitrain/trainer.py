"""Train K models of one architecture at once, each exactly as :func:`unmasking.training.train` would.

Many experiments (E1 over seeds, E3's strengths × replicates, E6's fractions × methods) train
many copies of one architecture on one data set.  Small models leave the hardware idle, and
every step pays Python and kernel-launch overhead once per model; stacking the K models into one
set of tensors pays it once per step.  Each model keeps everything that
:func:`~unmasking.training.train` gives a single model:

* its own mask (gradients masked before the update, weights re-masked after it, so pruned
  weights stay exactly zero and momentum and weight decay never touch them);
* its own data order and augmentation (``seeds_list[k]``): the batch of step ``s`` is the one
  ``data.train_batches`` yields for that model alone;
* its own BatchNorm running statistics and its own SGD momentum buffers;
* the schedule :func:`~unmasking.training.lr_at` continued from ``start_step``, a fresh
  optimizer state, divergence detection, atomic checkpoints (one file for the K models) and
  exact resume.

Two backends compute the K gradients:

``stacked`` (``auto`` picks it where it exists)
    Hand-written forward passes over stacked parameters for the package's own architectures
    (MLP, CNN1d, the CIFAR ResNets, VGG): a ``Linear`` is one ``baddbmm`` over ``(K, out, in)``
    weights; a 2-D convolution is one grouped convolution with ``groups = K`` on activations
    laid out as ``(N, K·C, H, W)`` and its BatchNorm one BatchNorm over ``K·C`` channels whose
    running statistics are views of the stacked buffers; the 1-D CNN runs on ``(K, N, L, C)``
    with im2col + ``bmm`` convolutions and a sum-based BatchNorm (as fast as grouped
    convolutions in eager mode on CPU, and about twice as fast once compiled).  Plain autograd.
``vmap``
    Any architecture: ``torch.func.vmap(grad(functional_call(...)))`` over the stacked
    parameters and buffers (BatchNorm updates the stacked running statistics in place, one
    slice per model).  Slower than ``stacked`` on CPU.

Both agree with K separate :func:`~unmasking.training.train` runs to float rounding
(``tests/test_multitrain.py``; to 1e-9 in float64).  ``compile=True`` wraps the loss in
``torch.compile`` (CPU or CUDA; one compiled function per architecture and K, reused by later
calls; on failure it warns and trains eagerly).  CUDA only: ``bf16=True`` runs the forward and
backward passes under bf16 autocast (weights, optimizer state and BatchNorm statistics stay
fp32; stacked backend only) and ``channels_last=True`` uses the channels-last layout for 2-D
convolutions.  Keep the data on the GPU (``TensorData.to('cuda')``): batches are then gathered,
cropped, flipped and normalized there.  Measurements: ``docs/performance.md``.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .foundations.checkpoints import atomic_torch_save, load_checkpoint
from .foundations.hparams import TrainHparams
from .data import Data, TensorData
from .data.cifar import random_crop_flip
from .foundations.seeds import generator
from .training import Seeds, TrainingDiverged, evaluate_all, lr_at

BACKENDS = ("auto", "stacked", "vmap")


# --------------------------------------------------------------------------------------------
# Augmentation: the CIFAR crop + flip for K·N samples at once, with each model's own draws.

def crop_flip_draws(n: int, g: torch.Generator, padding: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The offsets and flips that :func:`~unmasking.data.cifar.random_crop_flip` draws from ``g``.

    Same calls in the same order (row offsets, column offsets, flip coins), so the draws for
    one model's batch are exactly those of ``random_crop_flip(x, g)``.
    """
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    return dy, dx, flip


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
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
        its = [self.data.train_batches(start, end, self.batch_size, s.order, s.augment, self.device)
               for s in self.seeds_list]
        for items in zip(*its):
            yield items[0][0], torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items])

    def _tensor_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        data, k = self.data, len(self.seeds_list)
        idx = torch.stack([data.batch_indices(step, self.batch_size, s.order, c)
                           for s, c in zip(self.seeds_list, self._caches)])
        flat = idx.reshape(-1).to(data.x_train.device)
        x = data.x_train[flat]
        if data.augment is random_crop_flip:
            draws = [crop_flip_draws(self.batch_size, generator(s.augment, "augment", step)) for s in self.seeds_list]
            x = crop_flip(x, *(torch.cat(d) for d in zip(*draws)))
        elif data.augment is not None:
            x = torch.cat([data.augment(xk, generator(s.augment, "augment", step))
                           for xk, s in zip(x.chunk(k), self.seeds_list)])
        x = data._prepare(x, self.device)
        y = data.y_train[flat.to(data.y_train.device)].to(self.device)
        return x.reshape(k, self.batch_size, *x.shape[1:]), y.reshape(k, self.batch_size)


# --------------------------------------------------------------------------------------------
# The stacked forward passes: K models in one set of kernels.

def _to_groups(x: torch.Tensor) -> torch.Tensor:
    """(K, N, C, *S) → (N, K·C, *S): the layout of a grouped convolution with ``groups = K``."""
    k, n = x.shape[:2]
    return x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])


def _from_groups(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K·C, *S) → (K, N, C, *S)."""
    n = x.shape[0]
    return x.reshape(n, k, x.shape[1] // k, *x.shape[2:]).transpose(0, 1)


class _RowConv1d(torch.autograd.Function):
    """1-D convolution of K models on activations (K, N, L, C): im2col + one ``bmm`` per direction.

    On CPU this is as fast as the grouped convolution in eager mode and compiles to much faster
    code (``torch.compile`` fuses the surrounding BatchNorm and ReLU); the backward pass scatters
    the column gradients back with ``ks`` strided additions instead of a generic ``unfold``
    backward.
    """

    @staticmethod
    def forward(ctx, x, w, stride: int, pad: int):
        k, n, length, c = x.shape
        cout, ks = w.shape[1], w.shape[3]
        xp = F.pad(x, (0, 0, pad, pad)) if pad else x
        lo = (length + 2 * pad - ks) // stride + 1
        cols = xp.unfold(2, ks, stride).transpose(3, 4).reshape(k, n * lo, ks * c)
        wm = w.permute(0, 1, 3, 2).reshape(k, cout, ks * c)
        out = torch.bmm(cols, wm.transpose(1, 2))  # under autocast: in the autocast dtype
        ctx.save_for_backward(cols.to(out.dtype), wm.to(out.dtype))
        ctx.geometry = (n, length, c, ks, stride, pad, lo)
        return out.view(k, n, lo, cout)

    @staticmethod
    def backward(ctx, dout):
        cols, wm = ctx.saved_tensors
        n, length, c, ks, stride, pad, lo = ctx.geometry
        k, cout = wm.shape[:2]
        d = dout.reshape(k, n * lo, cout).to(wm.dtype)  # autograd casts the results back to x's and w's dtypes
        dw = torch.bmm(d.transpose(1, 2), cols).view(k, cout, ks, c).permute(0, 1, 3, 2)
        dx = None
        if ctx.needs_input_grad[0]:
            dcols = torch.bmm(d, wm).view(k, n, lo, ks, c)
            dxp = dout.new_zeros(k, n, length + 2 * pad, c)
            for j in range(ks):
                dxp[:, :, j:j + stride * (lo - 1) + 1:stride].add_(dcols[:, :, :, j])
            dx = dxp[:, :, pad:pad + length]
        return dx, dw, None, None


class _RowBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of K models on activations (K, M, C), statistics over M.

    Returns the output and the batch mean and biased variance (K, C) for the running
    statistics.  Sums instead of ``var_mean`` (whose middle-dimension reduction is slow on CPU);
    statistics in at least fp32 (bf16 activations from autocast are upcast, as cuDNN does).
    """

    @staticmethod
    def forward(ctx, x, w, b, eps: float):
        x = x.to(torch.promote_types(x.dtype, w.dtype))
        m = x.shape[1]
        mean = x.sum(1, keepdim=True) / m
        xc = x - mean
        var = (xc * xc).sum(1, keepdim=True) / m
        invstd = torch.rsqrt(var + eps)
        scale = w.unsqueeze(1) * invstd
        ctx.save_for_backward(xc, invstd, scale)
        return torch.addcmul(b.unsqueeze(1), xc, scale), mean.squeeze(1), var.squeeze(1)

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        xc, invstd, scale = ctx.saved_tensors
        m = xc.shape[1]
        db = dy.sum(1, keepdim=True)
        dxc = (dy * xc).sum(1, keepdim=True)
        dx = (dy - db / m - xc * (dxc * invstd * invstd / m)) * scale
        return dx, (dxc * invstd).squeeze(1), db.squeeze(1), None


class StackedOps:
    """Training-mode layers evaluated for K models at once from stacked parameters and buffers.

    Two activation layouts: ``(N, K·C, *S)`` for grouped convolutions (:meth:`enter`,
    :meth:`conv`, :meth:`bn`) and ``(K, N, L, C)`` for the ``bmm`` convolutions of 1-D nets
    (:meth:`conv_rows`, :meth:`bn_rows`).
    """

    _CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

    def __init__(self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], k: int,
                 channels_last: bool = False):
        self.p, self.b, self.k, self.channels_last = params, buffers, k, channels_last

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs (K, N, C, *S) → grouped layout."""
        x = _to_groups(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def conv(self, name: str, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if mod.padding_mode != "zeros":
            raise ValueError(f"stacked backend: {name} uses padding_mode={mod.padding_mode!r}; use backend='vmap'")
        w = self.p[f"{name}.weight"]
        w = w.reshape(self.k * w.shape[1], *w.shape[2:])
        if self.channels_last and w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        b = self.p.get(f"{name}.bias")
        return self._CONV[w.dim() - 2](x, w, None if b is None else b.reshape(-1), mod.stride, mod.padding,
                                       mod.dilation, mod.groups * self.k)

    def _running_stats(self, name: str, mod: nn.Module) -> bool:
        """Count the batch and check the module; True when it tracks running statistics."""
        if not (mod.track_running_stats and f"{name}.running_mean" in self.b):
            return False
        if mod.momentum is None:
            raise ValueError(f"stacked backend: {name} has momentum=None (cumulative average); use backend='vmap'")
        self.b[f"{name}.num_batches_tracked"].add_(1)
        return True

    def bn(self, name: str, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm over the K·C channels of the grouped layout (running statistics: views of the stacked buffers)."""
        tracked = self._running_stats(name, mod)
        rm = self.b[f"{name}.running_mean"].view(-1) if tracked else None
        rv = self.b[f"{name}.running_var"].view(-1) if tracked else None
        w, b = self.p.get(f"{name}.weight"), self.p.get(f"{name}.bias")
        return F.batch_norm(x, rm, rv, None if w is None else w.reshape(-1), None if b is None else b.reshape(-1),
                            True, mod.momentum or 0.0, mod.eps)

    def conv_rows(self, name: str, mod: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """``Conv1d`` on (K, N, L, C) → (K, N, L', C')."""
        if mod.padding_mode != "zeros" or mod.groups != 1 or mod.dilation != (1,) or isinstance(mod.padding, str):
            raise ValueError(f"stacked backend: {name} needs zero padding, groups=1, dilation=1; use backend='vmap'")
        out = _RowConv1d.apply(x, self.p[f"{name}.weight"], mod.stride[0], mod.padding[0])
        b = self.p.get(f"{name}.bias")
        return out if b is None else out + b[:, None, None, :]

    def bn_rows(self, name: str, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm on (K, N, L, C), statistics over N·L per model and channel."""
        if not mod.affine:
            raise ValueError(f"stacked backend: {name} has affine=False; use backend='vmap'")
        k, n, length, c = x.shape
        y, mean, var = _RowBatchNorm.apply(x.reshape(k, n * length, c), self.p[f"{name}.weight"],
                                           self.p[f"{name}.bias"], mod.eps)
        if self._running_stats(name, mod):
            m, mom = n * length, mod.momentum
            with torch.no_grad():
                self.b[f"{name}.running_mean"].mul_(1 - mom).add_(mean, alpha=mom)
                self.b[f"{name}.running_var"].mul_(1 - mom).add_(var * (m / max(m - 1, 1)), alpha=mom)
        return y.view(k, n, length, c)

    def linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` (K, N, in) → (K, N, out)."""
        w, b = self.p[f"{name}.weight"].transpose(1, 2), self.p.get(f"{name}.bias")
        return torch.bmm(x, w) if b is None else torch.baddbmm(b.unsqueeze(1), x, w)


def _mlp_forward(model, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(ops.linear("fc1", x.flatten(2)))
    return ops.linear("fc3", torch.relu(ops.linear("fc2", h)))


def _cnn1d_forward(model, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    h = x.reshape(x.shape[0], x.shape[1], -1, 1)  # (K, N, L, C=1)
    for i in (1, 2, 3):
        h = ops.conv_rows(f"conv{i}", getattr(model, f"conv{i}"), h)
        h = torch.relu(ops.bn_rows(f"bn{i}", getattr(model, f"bn{i}"), h))
    return ops.linear("fc", h.transpose(2, 3).flatten(2))  # the model flattens (C, L)


def _resnet_forward(model, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(ops.bn("bn", model.bn, ops.conv("conv", model.conv, ops.enter(x))))
    for i, block in enumerate(model.blocks):
        pre = f"blocks.{i}"
        out = torch.relu(ops.bn(f"{pre}.bn1", block.bn1, ops.conv(f"{pre}.conv1", block.conv1, h)))
        out = ops.bn(f"{pre}.bn2", block.bn2, ops.conv(f"{pre}.conv2", block.conv2, out))
        if len(block.shortcut):
            h = ops.bn(f"{pre}.shortcut.1", block.shortcut[1], ops.conv(f"{pre}.shortcut.0", block.shortcut[0], h))
        h = torch.relu(out + h)
    h = F.adaptive_avg_pool2d(h, 1)
    return ops.linear("fc", _from_groups(h, ops.k).flatten(2))


def _vgg_forward(model, ops: StackedOps, x: torch.Tensor) -> torch.Tensor:
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
    return ops.linear("fc", _from_groups(h, ops.k).flatten(2))


def _stacked_forwards() -> dict[type, Callable]:
    from .models.cifar_resnet import CifarResNet
    from .models.mnist1d import CNN1d, MLP
    from .models.vgg import VGG

    return {MLP: _mlp_forward, CNN1d: _cnn1d_forward, CifarResNet: _resnet_forward, VGG: _vgg_forward}


def stacked_forward(model: nn.Module) -> Callable | None:
    """The stacked forward pass for ``model``'s class, or None when only ``vmap`` supports it."""
    return _stacked_forwards().get(type(model))


def _loss_function(model: nn.Module, backend: str, k: int, channels_last: bool) -> Callable:
    """``(params, buffers, x, y) → (gradients or summed loss, per-model losses)`` for ``backend``.

    ``stacked``: returns the sum of the K mean losses (each model's gradient is the gradient of
    its own loss) for autograd; ``vmap``: returns the K gradient dicts.  BatchNorm running
    statistics in ``buffers`` are updated in place.
    """
    template = copy.deepcopy(model).to("meta").train()
    if backend == "stacked":
        forward = stacked_forward(model)

        def loss_fn(params, buffers, x, y):
            out = forward(template, StackedOps(params, buffers, k, channels_last), x)
            per = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
            losses = per.view(k, -1).mean(1)
            return losses.sum(), losses.detach()

        return loss_fn

    def one(params, buffers, x, y):
        loss = F.cross_entropy(torch.func.functional_call(template, (params, buffers), (x,)), y)
        return loss, loss.detach()

    return torch.func.vmap(torch.func.grad(one, has_aux=True), in_dims=(0, 0, 0, 0))


_COMPILED: dict[tuple, Callable] = {}


def _compiled_loss(model: nn.Module, backend: str, k: int, channels_last: bool) -> Callable:
    """``torch.compile`` of :func:`_loss_function`, shared by all trainers of one architecture and K.

    A fresh closure per trainer would make dynamo recompile for each one (and fall back to eager
    after its cache limit); one compiled function per (architecture, K, options) is reused.
    """
    key = (type(model), repr(model), tuple((n, tuple(t.shape), t.dtype) for n, t in model.state_dict().items()),
           backend, k, channels_last)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(_loss_function(model, backend, k, channels_last))
    return _COMPILED[key]


# --------------------------------------------------------------------------------------------
# The trainer: stacked state, the K-model step, SGD on stacked tensors.

class MultiTrainer:
    """The stacked training state of K models and one optimizer step for all of them.

    ``models`` are not modified until :meth:`write_back`.  :func:`train_many` drives this; the
    benchmark uses it directly.
    """

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Mapping[str, torch.Tensor] | None],
                 hp: TrainHparams, backend: str = "auto", bf16: bool = False, channels_last: bool = False,
                 compile: bool = False):
        self.models, self.hp, self.k = list(models), hp, len(models)
        if self.k == 0:
            raise ValueError("train_many needs at least one model")
        if len(masks) != self.k:
            raise ValueError(f"got {len(masks)} masks for {self.k} models; pass one mask (or None) per model")
        self.device = _check_same_architecture(self.models)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if (bf16 or channels_last) and self.device.type != "cuda":
            raise ValueError(f"bf16 and channels_last are CUDA options; the models are on {self.device}")
        if backend == "stacked" and stacked_forward(self.models[0]) is None:
            raise ValueError(f"no stacked forward for {type(self.models[0]).__name__}; use backend='vmap' or 'auto'")
        self.backend = "vmap" if backend == "vmap" or stacked_forward(self.models[0]) is None else "stacked"
        if bf16 and self.backend == "vmap":
            raise ValueError("bf16 autocast needs the stacked backend (BatchNorm under vmap(grad) rejects bf16 "
                             f"activations with fp32 statistics); {type(self.models[0]).__name__} has none: train "
                             "it in fp32 or with training.train")
        self.bf16, self.channels_last = bf16, channels_last

        with torch.no_grad():
            self.params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in self.models]).clone()
                           for n, _ in self.models[0].named_parameters()}
            self.buffers = {n: torch.stack([dict(m.named_buffers())[n].detach() for m in self.models]).clone()
                            for n, _ in self.models[0].named_buffers()}
        self.masks = _stack_masks(masks, self.params)
        with torch.no_grad():
            for n, m in self.masks.items():
                self.params[n].mul_(m)
        self.momentum: dict[str, torch.Tensor] | None = None

        if self.backend == "stacked":
            for p in self.params.values():
                p.requires_grad_(True)
        self._loss_fn = _loss_function(self.models[0], self.backend, self.k, channels_last)
        self._compiled = _compiled_loss(self.models[0], self.backend, self.k, channels_last) if compile else None

    # -- one step -------------------------------------------------------------------------
    def _grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        names = list(self.params)
        fn = self._compiled or self._loss_fn
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            try:
                result = fn(self.params, self.buffers, x, y)
            except Exception as e:  # torch.compile failures surface at the first call
                if fn is self._loss_fn:
                    raise
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly")
                self._compiled = None
                result = self._loss_fn(self.params, self.buffers, x, y)
        if self.backend == "stacked":
            total, losses = result
            grads = torch.autograd.grad(total, [self.params[n] for n in names], allow_unused=True)
        else:
            g, losses = result
            grads = [g[n] for n in names]
        return list(grads), losses

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of the K models on batches ``x`` (K, N, …), ``y`` (K, N); returns the K losses."""
        grads, losses = self._grads(x, y)
        self._sgd(grads, lr_at(step, self.hp))
        return losses

    @torch.no_grad()
    def _sgd(self, grads: list[torch.Tensor | None], lr: float) -> None:
        """``torch.optim.SGD``'s update on the stacked tensors, with the masks of :func:`training.train`."""
        hp = self.hp
        names = [n for n, g in zip(self.params, grads) if g is not None]
        gs = [g for g in grads if g is not None]
        ps = [self.params[n] for n in names]
        masked = [i for i, n in enumerate(names) if n in self.masks]
        if masked:
            torch._foreach_mul_([gs[i] for i in masked], [self.masks[names[i]] for i in masked])
        if hp.weight_decay:
            gs = torch._foreach_add(gs, ps, alpha=hp.weight_decay)
        if hp.momentum:
            if self.momentum is None:
                self.momentum = {n: g.detach().clone() for n, g in zip(names, gs)}
                bufs = [self.momentum[n] for n in names]
            else:
                bufs = [self.momentum[n] for n in names]
                torch._foreach_mul_(bufs, hp.momentum)
                torch._foreach_add_(bufs, gs)
            gs = torch._foreach_add(gs, bufs, alpha=hp.momentum) if hp.nesterov else bufs
        torch._foreach_add_(ps, gs, alpha=-lr)
        if masked:
            torch._foreach_mul_([ps[i] for i in masked], [self.masks[names[i]] for i in masked])

    # -- models and checkpoints -----------------------------------------------------------
    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked parameters and buffers into the K models."""
        for k, model in enumerate(self.models):
            for n, p in model.named_parameters():
                p.copy_(self.params[n][k])
            for n, b in model.named_buffers():
                b.copy_(self.buffers[n][k])

    def state_dict(self) -> dict:
        return {"params": {n: p.detach() for n, p in self.params.items()}, "buffers": self.buffers,
                "momentum": self.momentum}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        for n, p in self.params.items():
            p.copy_(state["params"][n])
        for n, b in self.buffers.items():
            b.copy_(state["buffers"][n])
        mom = state["momentum"]
        self.momentum = None if mom is None else {n: t.to(self.device).clone() for n, t in mom.items()}


def _check_same_architecture(models: list[nn.Module]) -> torch.device:
    first = models[0]
    shapes = {n: (t.shape, t.dtype) for n, t in first.state_dict().items()}
    device = next(first.parameters()).device
    for k, m in enumerate(models[1:], 1):
        if type(m) is not type(first) or {n: (t.shape, t.dtype) for n, t in m.state_dict().items()} != shapes:
            raise ValueError(f"model {k} is not the same architecture as model 0 ({type(first).__name__}); "
                             f"train_many stacks models of one architecture")
        if next(m.parameters()).device != device:
            raise ValueError(f"model {k} is on {next(m.parameters()).device}, model 0 on {device}; "
                             f"move all models to one device")
    return device


def _stack_masks(masks: Sequence[Mapping[str, torch.Tensor] | None], params: Mapping[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """Masks as 0/1 tensors (K, …) in the parameter dtype; a model without a mask for a name gets ones."""
    names = sorted({n for m in masks if m for n in m}, key=list(params).index) if any(masks) else []
    for n in names:
        if n not in params:
            raise ValueError(f"mask names {n!r}, which is not a parameter of the model")
    out = {}
    for n in names:
        p = params[n]
        rows = []
        for k, m in enumerate(masks):
            if m and n in m:
                if tuple(m[n].shape) != tuple(p.shape[1:]):
                    raise ValueError(f"mask {k} for {n!r} has shape {tuple(m[n].shape)}, "
                                     f"the weight {tuple(p.shape[1:])}")
                rows.append(m[n].to(p.device, p.dtype))
            else:
                rows.append(torch.ones(p.shape[1:], device=p.device, dtype=p.dtype))
        out[n] = torch.stack(rows)
    return out


# --------------------------------------------------------------------------------------------

def train_many(
    models: Sequence[nn.Module],
    masks: Sequence[Mapping[str, torch.Tensor] | None],
    data: Data,
    hp: TrainHparams,
    seeds_list: Sequence[Seeds],
    start_step: int = 0,
    end_step: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | str = True,
    backend: str = "auto",
    bf16: bool = False,
    channels_last: bool = False,
    compile: bool = False,
) -> list[list[dict[str, float]]]:
    """Train K models of one architecture in place, each as ``training.train`` would train it alone.

    ``masks[k]`` (or None) and ``seeds_list[k]`` belong to ``models[k]``.  With ``checkpoint``,
    the K models' state is saved there every ``hp.checkpoint_every`` steps and, if the file
    exists, training resumes from it.  Returns one evaluation history per model (every
    ``hp.eval_every`` steps).  Raises :class:`~unmasking.training.TrainingDiverged`, naming the
    models whose loss became non-finite (all models are left at their state of that step).
    ``backend``, ``bf16``, ``channels_last`` and ``compile``: see the module docstring
    (``auto``: ``stacked`` where the architecture has one, else ``vmap``).
    """
    end_step = hp.steps if end_step is None else end_step
    if len(seeds_list) != len(models):
        raise ValueError(f"got {len(seeds_list)} seeds for {len(models)} models; pass one Seeds per model")
    trainer = MultiTrainer(models, masks, hp, backend=backend, bf16=bf16, channels_last=channels_last,
                           compile=compile)
    for model in trainer.models:
        model.train()
    device, k = trainer.device, trainer.k
    histories: list[list[dict[str, float]]] = [[] for _ in range(k)]
    step = start_step
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    seed_key = [[s.init, s.order, s.augment] for s in seeds_list]
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        if (state.get("start_step"), state.get("end_step"), state.get("seeds")) != (start_step, end_step, seed_key):
            raise RuntimeError(f"checkpoint {checkpoint} belongs to another training (steps "
                               f"{state.get('start_step')}–{state.get('end_step')} of {len(state.get('seeds') or [])} "
                               f"models, or other seeds) than this one (steps {start_step}–{end_step} of {k} models); "
                               f"delete it to start over")
        trainer.load_state_dict(state["trainer"])
        step, histories = state["step"], state["histories"]

    def save(at: int) -> None:
        atomic_torch_save({"trainer": trainer.state_dict(), "step": at, "start_step": start_step,
                           "end_step": end_step, "seeds": seed_key, "histories": histories}, checkpoint)

    desc = progress if isinstance(progress, str) else f"train x{k}"
    bar = tqdm(total=end_step - start_step, initial=step - start_step, desc=desc, disable=not progress,
               mininterval=1.0, leave=False, dynamic_ncols=True)
    nonfinite = torch.zeros(k, dtype=torch.bool, device=device)
    check_every = 1 if device.type == "cpu" else 50
    feeder = BatchFeeder(data, seeds_list, hp.batch_size, device)
    try:
        for step, x, y in feeder.batches(step, end_step):
            losses = trainer.step(step, x, y)
            nonfinite |= ~torch.isfinite(losses)
            if ((step + 1) % check_every == 0 or step + 1 == end_step) and bool(nonfinite.any()):
                bad = nonfinite.nonzero().flatten().tolist()
                raise TrainingDiverged(
                    f"model(s) {bad} of {k} (order seeds {[seeds_list[i].order for i in bad]}): training loss "
                    f"became non-finite by step {step} (lr {lr_at(step, hp):g}); lower train.lr, add "
                    f"train.warmup_steps, or check the data")
            done = step + 1
            bar.update(1)
            if hp.eval_every and done % hp.eval_every == 0 and done < end_step:
                trainer.write_back()
                for hist, model in zip(histories, trainer.models):
                    hist.append({"step": done, **evaluate_all(model, data, hp.eval_batch_size)})
                bar.set_postfix(test_error=f"{min(h[-1]['test_error'] for h in histories):.4f}")
            if checkpoint is not None and hp.checkpoint_every and done % hp.checkpoint_every == 0 and done < end_step:
                save(done)
    finally:
        bar.close()
        trainer.write_back()
    return histories

