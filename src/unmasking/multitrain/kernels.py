"""The layers of K models evaluated at once from stacked parameters: what a stacked forward is built of.

Two activation layouts.  2-D nets run on ``(N, K·C, H, W)``: a convolution is one grouped
convolution with ``groups = K`` and its BatchNorm one BatchNorm over ``K·C`` channels whose running
statistics are views of the stacked buffers.  1-D nets run on ``(K, N, L, C)`` with the autograd
kernels :class:`_RowConv1d` (im2col + ``bmm``) and :class:`_RowBatchNorm` (sums), as fast as
grouped convolutions in eager mode on CPU and about twice as fast once compiled.  A ``Linear`` is
one ``baddbmm`` over ``(K, out, in)`` weights in both.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F


def to_groups(x: torch.Tensor) -> torch.Tensor:
    """(K, N, C, *S) → (N, K·C, *S): the layout of a grouped convolution with ``groups = K``."""
    k, n = x.shape[:2]
    return x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])


def from_groups(x: torch.Tensor, k: int) -> torch.Tensor:
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
                dxp[:, :, j : j + stride * (lo - 1) + 1 : stride].add_(dcols[:, :, :, j])
            dx = dxp[:, :, pad : pad + length]
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

    def __init__(
        self,
        params: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        k: int,
        channels_last: bool = False,
    ):
        self.p, self.b, self.k, self.channels_last = params, buffers, k, channels_last

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs (K, N, C, *S) → grouped layout."""
        x = to_groups(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def conv(self, name: str, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if mod.padding_mode != "zeros":
            raise ValueError(f"stacked backend: {name} uses padding_mode={mod.padding_mode!r}; use backend='vmap'")
        w = self.p[f"{name}.weight"]
        w = w.reshape(self.k * w.shape[1], *w.shape[2:])
        if self.channels_last and w.dim() == 4:
            w = w.contiguous(memory_format=torch.channels_last)
        b = self.p.get(f"{name}.bias")
        return self._CONV[w.dim() - 2](
            x, w, None if b is None else b.reshape(-1), mod.stride, mod.padding, mod.dilation, mod.groups * self.k
        )

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
        return F.batch_norm(
            x,
            rm,
            rv,
            None if w is None else w.reshape(-1),
            None if b is None else b.reshape(-1),
            True,
            mod.momentum or 0.0,
            mod.eps,
        )

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
        y, mean, var = _RowBatchNorm.apply(
            x.reshape(k, n * length, c), self.p[f"{name}.weight"], self.p[f"{name}.bias"], mod.eps
        )
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
