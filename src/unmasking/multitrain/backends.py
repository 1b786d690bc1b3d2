"""The two backends that compute K models' gradients in one call, and their compiled form.

``stacked`` (``auto`` picks it where the architecture has one, :mod:`.forwards`)
    The architecture's hand-written stacked forward over the stacked parameters, then plain
    autograd on the sum of the K mean losses.
``vmap``
    Any architecture: ``torch.func.vmap(grad(functional_call(...)))`` over the stacked
    parameters and buffers (BatchNorm updates the stacked running statistics in place, one
    slice per model).  Slower than ``stacked`` on CPU.

:func:`compiled_loss` wraps the loss in ``torch.compile``, once per architecture, K and options.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .forwards import stacked_forward
from .kernels import StackedOps

BACKENDS = ("auto", "stacked", "vmap")


def loss_function(model: nn.Module, backend: str, k: int, channels_last: bool) -> Callable:
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


def compiled_loss(model: nn.Module, backend: str, k: int, channels_last: bool) -> Callable:
    """``torch.compile`` of :func:`loss_function`, shared by all trainers of one architecture and K.

    A fresh closure per trainer would make dynamo recompile for each one (and fall back to eager
    after its cache limit); one compiled function per (architecture, K, options) is reused.
    """
    key = (
        type(model),
        repr(model),
        tuple((n, tuple(t.shape), t.dtype) for n, t in model.state_dict().items()),
        backend,
        k,
        channels_last,
    )
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(loss_function(model, backend, k, channels_last))
    return _COMPILED[key]
