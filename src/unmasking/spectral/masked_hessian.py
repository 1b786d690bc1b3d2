"""The Hessian of the mean training cross-entropy, restricted to the weights a mask keeps.

The operator is ``v ↦ P H Pᵀ v`` on the ``D_L`` surviving prunable weights (``P`` gathers the
coordinates alive in ``m_L``), where ``H`` is the Hessian of the mean training cross-entropy on
a fixed, un-augmented subset of the training data with respect to the prunable weights only
(biases and BatchNorm parameters held fixed, BatchNorm in eval mode).  Working in the
``D_L``-dimensional space of surviving weights keeps the pruned coordinates' exact zeros out
of the spectrum; it is the same operator as ``m ⊙ H (m ⊙ v)`` with those zeros removed.

Hessian-vector products are reverse-over-reverse through :func:`torch.func.functional_call`,
summed over chunks of the data so memory stays bounded (with one chunk, the gradient's graph is
built once and reused by every product).
"""

from __future__ import annotations

import copy
import types
from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call

from ..foundations.hparams import ConfigError

__all__ = ["MaskedHessian"]


def _bn_eval_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode BatchNorm as plain elementwise ops: same values, a cheaper double backward."""
    scale = torch.rsqrt(self.running_var + self.eps)
    shift = -self.running_mean * scale
    if self.weight is not None:
        scale = scale * self.weight
        shift = shift * self.weight + self.bias
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape) + shift.view(shape)


def _eval_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in eval mode and ``dtype`` whose BatchNorm layers use :func:`_bn_eval_forward`."""
    model = copy.deepcopy(model).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.forward = types.MethodType(_bn_eval_forward, module)
    return model


class MaskedHessian:
    """The Hessian of the mean cross-entropy over ``(x, y)``, restricted to the weights alive in ``mask``.

    Vectors live in the ``D_L``-dimensional space of surviving weights, ordered by the mask's
    parameter order and then by flat index.  ``matvec`` costs one Hessian-vector product: the
    gradient's graph (forward and first backward pass) is built once and kept when the data fit
    in one chunk (``retain=None``; ``True``/``False`` force it), so each product is a single
    backward pass through it; otherwise each product recomputes it chunk by chunk, so memory
    stays bounded by one chunk's graph.  The data stay where they are given (e.g. on the CPU) and
    move to the model's device chunk by chunk.
    """

    def __init__(
        self,
        model: nn.Module,
        mask: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        chunk_size: int = 4096,
        dtype: torch.dtype = torch.float32,
        retain: bool | None = None,
    ):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need matching, non-empty inputs and labels, got {len(x)} and {len(y)}")
        params = dict(model.named_parameters())
        unknown = [n for n in mask if n not in params]
        if unknown:
            raise ConfigError(f"mask names parameters the model does not have: {unknown}")
        self.model = _eval_copy(model, dtype)
        self.device = next(self.model.parameters()).device
        self.dtype = dtype
        self.names = list(mask)
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.fixed = {n: p for n, p in params.items() if n not in mask}
        self.weights = {n: params[n] for n in self.names}
        self.mask = {n: mask[n].to(self.device).bool() for n in self.names}
        self.index = {n: torch.nonzero(self.mask[n].reshape(-1)).squeeze(1) for n in self.names}
        self.sizes = [len(self.index[n]) for n in self.names]
        self.dim = int(sum(self.sizes))
        if self.dim == 0:
            raise ValueError("the mask keeps no weights: the restricted Hessian is empty")
        self.x, self.y = x, y  # kept where they are; chunks move to the model's device as needed
        self.chunk_size = int(chunk_size)
        self.retain = (self.num_examples <= self.chunk_size) if retain is None else bool(retain)
        self._graphs: list[tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]] | None = None
        self.matvecs = 0

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def _chunks(self):
        for i in range(0, self.num_examples, self.chunk_size):
            x = self.x[i : i + self.chunk_size]
            yield (
                x.to(self.device, self.dtype if x.is_floating_point() else x.dtype),
                self.y[i : i + self.chunk_size].to(self.device),
            )

    def _loss_sum(self, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, ({**self.fixed, **weights}, self.buffers), (x,))
        return nn.functional.cross_entropy(out, y, reduction="sum")

    def gather(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The surviving coordinates of per-parameter tensors, as one ``D_L`` vector."""
        return torch.cat([tensors[n].reshape(-1)[self.index[n]] for n in self.names])

    def scatter(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A ``D_L`` vector as per-parameter tensors (zeros at pruned coordinates)."""
        out = {}
        for n, part in zip(self.names, torch.split(vector, self.sizes)):
            full = torch.zeros(self.weights[n].numel(), device=self.device, dtype=self.dtype)
            full[self.index[n]] = part
            out[n] = full.view_as(self.weights[n])
        return out

    def flat_weights(self) -> torch.Tensor:
        """The surviving weights themselves (``P w``)."""
        return self.gather(self.weights)

    @torch.no_grad()
    def loss(self) -> float:
        """Mean cross-entropy at the solution."""
        return float(sum(self._loss_sum(self.weights, x, y) for x, y in self._chunks())) / self.num_examples

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``P H Pᵀ v`` for a ``D_L`` vector ``v``."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got shape {tuple(vector.shape)}")
        tangent = self.scatter(vector.to(self.device, self.dtype))
        outputs = [tangent[n] for n in self.names]
        total = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        for leaves, grads in self._gradient_graphs():
            with torch.enable_grad():
                hv = torch.autograd.grad(
                    grads, leaves, grad_outputs=outputs, retain_graph=self.retain, allow_unused=True
                )
            total += self.gather(
                {n: (h if h is not None else torch.zeros_like(leaf)) for n, h, leaf in zip(self.names, hv, leaves)}
            )
        self.matvecs += 1
        return total

    def _gradient_graphs(self):
        """Per chunk: the weight leaves and the gradient of the chunk's share of the mean loss (with its graph)."""
        if self._graphs is not None:
            yield from self._graphs
            return
        graphs = []
        for x, y in self._chunks():
            leaves = [self.weights[n].clone().requires_grad_(True) for n in self.names]
            with torch.enable_grad():
                loss = self._loss_sum(dict(zip(self.names, leaves)), x, y) / self.num_examples
                grads = torch.autograd.grad(loss, leaves, create_graph=True)
            if self.retain:
                graphs.append((leaves, grads))
            yield leaves, grads
        if self.retain:
            self._graphs = graphs

    def quadratic_form(self, vector: torch.Tensor) -> float:
        """``vᵀ H v`` for a ``D_L`` vector."""
        vector = vector.to(self.device, self.dtype)
        return float(torch.dot(vector, self.matvec(vector)))
