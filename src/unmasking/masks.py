"""Masks: a dict from prunable parameter name to a boolean tensor, and the pruning rules.

Global magnitude pruning follows SPEC §2: among the *surviving* weights, ranked globally
across layers by ``|w|``, the ``ceil(fraction × remaining)`` smallest are pruned.  Ties are
broken by position (parameter order, then flattened index), so the result is deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .foundations.checkpoints import CorruptCheckpointError, atomic_torch_save, load_checkpoint  # noqa: F401 (re-exported)

Mask = dict[str, torch.Tensor]


def dense_mask(model: nn.Module, names: list[str]) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}


def count(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def size(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in mask.values()))


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of prunable weights that survive."""
    return count(mask) / size(mask)


def layer_densities(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {n: float(m.float().mean()) for n, m in mask.items()}


def num_to_prune(mask: Mapping[str, torch.Tensor], fraction: float) -> int:
    return math.ceil(fraction * count(mask))


def _surviving_flat(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]):
    names = list(mask)
    flat_w = torch.cat([weights[n].detach().reshape(-1).float().cpu() for n in names])
    flat_m = torch.cat([mask[n].reshape(-1).cpu() for n in names])
    return names, flat_w, flat_m


def _unflatten(names: list[str], flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Mask:
    out, i = {}, 0
    for n in names:
        k = like[n].numel()
        out[n] = flat[i : i + k].view_as(like[n]).to(like[n].device)
        i += k
    return out


def prune_indices(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], n: int) -> torch.Tensor:
    """Flat indices (into the concatenation of ``mask``'s tensors) of the ``n`` smallest surviving |w|."""
    _, flat_w, flat_m = _surviving_flat(weights, mask)
    alive = torch.nonzero(flat_m).squeeze(1)
    order = torch.sort(flat_w[alive].abs(), stable=True).indices
    return alive[order[:n]]


def magnitude_prune(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], fraction: float) -> Mask:
    """Next mask: remove ``ceil(fraction × surviving)`` smallest-magnitude surviving weights globally."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1), got {fraction}")
    return prune_count(weights, mask, num_to_prune(mask, fraction))


def prune_count(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], n: int) -> Mask:
    """Next mask with exactly ``n`` more weights removed by global magnitude."""
    names, _, flat_m = _surviving_flat(weights, mask)
    flat_m = flat_m.clone()
    flat_m[prune_indices(weights, mask, n)] = False
    return _unflatten(names, flat_m, mask)


def random_prune(
    mask: Mapping[str, torch.Tensor],
    fraction: float,
    generator: torch.Generator,
    like: Mapping[str, torch.Tensor] | None = None,
) -> Mask:
    """Remove surviving weights uniformly at random.

    Without ``like``: ``ceil(fraction × surviving)`` weights, chosen globally.  With ``like``
    (a reference next mask, e.g. the magnitude-pruned one): layer-wise-preserving — each
    layer loses as many weights as it does in ``like``, chosen at random within the layer.
    """
    out = {}
    if like is None:
        names, _, flat_m = _surviving_flat(mask, mask)
        alive = torch.nonzero(flat_m).squeeze(1)
        chosen = alive[torch.randperm(len(alive), generator=generator)[: num_to_prune(mask, fraction)]]
        flat_m = flat_m.clone()
        flat_m[chosen] = False
        return _unflatten(names, flat_m, mask)
    for n, m in mask.items():
        flat = m.reshape(-1).cpu().clone()
        alive = torch.nonzero(flat).squeeze(1)
        k = int(flat.sum()) - int(like[n].sum())
        flat[alive[torch.randperm(len(alive), generator=generator)[:k]]] = False
        out[n] = flat.view_as(m).to(m.device)
    return out


def is_nested(inner: Mapping[str, torch.Tensor], outer: Mapping[str, torch.Tensor]) -> bool:
    """True when every weight alive in ``inner`` is alive in ``outer``."""
    return all(bool((inner[n] & ~outer[n]).sum() == 0) for n in outer)


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        params[n].mul_(m.to(params[n].device, params[n].dtype))


def masked_norm(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> float:
    """``‖mask ⊙ w‖₂`` over the mask's parameters, accumulated in float64."""
    total = sum(float((weights[n].detach().double() * m.to(weights[n].device)).pow(2).sum()) for n, m in mask.items())
    return math.sqrt(total)


def difference(outer: Mapping[str, torch.Tensor], inner: Mapping[str, torch.Tensor]) -> Mask:
    """Weights alive in ``outer`` but not in ``inner`` (``m_L − m_{L+1}`` for nested masks)."""
    return {n: outer[n] & ~inner[n] for n in outer}


def save_mask(mask: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Atomically save a mask (boolean tensors on CPU)."""
    atomic_torch_save({n: m.cpu().bool() for n, m in mask.items()}, path)


def load_mask(path: str | Path) -> Mask:
    return {n: m.bool() for n, m in load_checkpoint(path).items()}
