"""E2 — linear interpolation between two networks and the error barrier (SPEC §2, §3).

The path ``w(γ) = (1−γ) w_a + γ w_b`` is evaluated on a γ grid (ends included) for test and
train error and loss.  The barrier is ``B = max_γ [E(γ) − ((1−γ) E(0) + γ E(1))]``.

Masks: the interpolated network lives on the *union* (the denser) of the two masks; weights
pruned only in the sparser network are interpolated toward zero, which happens by itself
because that endpoint holds exact zeros there.  Coordinates outside the union are set to
exact zeros at every γ.

BatchNorm: ``interpolate`` interpolates running statistics like every other floating-point
tensor (the default; the authors' prototype did this); ``reset`` recomputes them at every γ
(endpoints included, so the curve's own ends enter the barrier) with a no-grad pass over a
fixed number of un-augmented training batches, BatchNorm layers in train mode with
cumulative averaging (``momentum=None``).  Integer buffers (``num_batches_tracked``) are
taken from ``w_a``; they do not affect evaluation.

:func:`successive_levels` runs the experiment on an IMP run: ``B(w_L, w_{L+1})`` (pair
``successive``; γ=0 is ``w_L``) and ``B(w_0, w_L)`` (pair ``dense``; γ=0 is the dense level-0
solution), storing the whole curves.  Every endpoint is evaluated once and reused across
pairs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ..data import Data
from ..foundations.hparams import ConfigError, settings_kwargs
from ..training import evaluate, evaluate_batches

BN_MODES = ("interpolate", "reset")
SPLITS = ("test", "train")
PAIRS = ("successive", "dense")
DEFAULT_GAMMAS = 11
DEFAULT_BN_BATCHES = 40  # × the recipe's training batch size: the whole mnist1d training set

__all__ = [
    "BN_MODES",
    "InterpolationSettings",
    "PathEvaluator",
    "analyse",
    "barrier",
    "gamma_grid",
    "interpolate_state",
    "interpolation_curve",
    "successive_levels",
    "union_mask",
]


@dataclass(frozen=True)
class PathSettings:
    """How a linear path between two networks is evaluated: E2's curves and the barriers of E3 and E6."""

    gammas: int = field(default=DEFAULT_GAMMAS, metadata={"help": "points on the γ grid, ends included"})
    bn_batches: int = field(
        default=DEFAULT_BN_BATCHES, metadata={"help": "training batches for the 'reset' mode's statistics"}
    )
    bn_batch_size: int | None = field(
        default=None, metadata={"help": "batch size of the 'reset' pass (default: the recipe's train.batch_size)"}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "evaluation batch size (default: the recipe's train.eval_batch_size)"}
    )


@dataclass(frozen=True)
class InterpolationSettings(PathSettings):
    """Options of E2 (the ``interpolation`` command's flags)."""

    bn_modes: tuple[str, ...] = field(
        default=("interpolate",), metadata={"help": "BatchNorm handling along the path", "choices": BN_MODES}
    )


def gamma_grid(gammas: int | Sequence[float]) -> np.ndarray:
    """``gammas`` points evenly spaced on [0, 1], or an explicit increasing grid from 0 to 1."""
    if isinstance(gammas, (int, np.integer)):
        if gammas < 2:
            raise ConfigError(f"a γ grid needs at least 2 points (both ends), got {gammas}")
        return np.linspace(0.0, 1.0, int(gammas))
    g = np.asarray(gammas, dtype=float)
    if g.ndim != 1 or len(g) < 2 or g[0] != 0.0 or g[-1] != 1.0 or np.any(np.diff(g) <= 0):
        raise ConfigError(f"γ grid must increase strictly from 0 to 1 (ends included), got {list(g)}")
    return g


def barrier(values, gammas: int | Sequence[float], axis: int = -1):
    """``max_γ [v(γ) − ((1−γ) v(0) + γ v(1))]`` along ``axis`` (the curve's own ends are the endpoints).

    Returns a float for a 1-D curve, else an array over the other axes.  NaN in a curve gives NaN.
    """
    v = np.moveaxis(np.asarray(values, dtype=float), axis, -1)
    g = gamma_grid(gammas)
    if v.shape[-1] != len(g):
        raise ValueError(f"curve has {v.shape[-1]} points but the γ grid has {len(g)}")
    line = (1.0 - g) * v[..., :1] + g * v[..., -1:]
    b = np.max(v - line, axis=-1)
    return float(b) if np.ndim(b) == 0 else b


def union_mask(mask_a: Mapping[str, torch.Tensor], mask_b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The denser mask of a pair: a weight survives if it survives in either network."""
    if set(mask_a) != set(mask_b):
        raise ValueError(f"masks cover different parameters: {sorted(set(mask_a) ^ set(mask_b))}")
    return {n: mask_a[n].bool() | mask_b[n].bool().to(mask_a[n].device) for n in mask_a}


def interpolate_state(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    gamma: float,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``(1−γ) a + γ b`` for every floating tensor (running statistics included), ``a`` for integer
    buffers, then exact zeros outside ``mask`` (keyed by parameter name)."""
    if set(state_a) != set(state_b):
        raise ValueError(f"state dicts differ in keys: {sorted(set(state_a) ^ set(state_b))}")
    out = {}
    for k, a in state_a.items():
        b = state_b[k].to(a.device)
        if a.shape != b.shape:
            raise ValueError(f"{k}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        out[k] = (1.0 - gamma) * a + gamma * b if a.is_floating_point() else a.clone()
    for n, m in (mask or {}).items():
        if n not in out:
            raise ValueError(f"mask names {n!r}, which is not in the state dict")
        out[n] = out[n].masked_fill(~m.to(out[n].device).bool(), 0.0)
    return out


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reset_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Recompute BatchNorm running statistics as the cumulative average over ``batches`` (inputs only).

    Only the BatchNorm layers are put in train mode; the model is left in eval mode.
    """
    bns = _batchnorms(model)
    if not bns:
        return
    model.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for x in batches:
            model(x)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()


class PathEvaluator:
    """Evaluates networks and linear paths between them on fixed data, with an endpoint cache.

    ``evaluate`` returns an array ``[metric, split]`` (metric 0: error, 1: loss).  Endpoints given
    a ``key`` (any hashable, e.g. a level) are evaluated once per BatchNorm mode and reused;
    the caller guarantees that a key always names the same weights, zero outside any mask
    they are interpolated on.
    """

    def __init__(
        self,
        data: Data,
        batch_size: int = 1000,
        bn_batches: int = DEFAULT_BN_BATCHES,
        bn_batch_size: int = 100,
        device: torch.device | str | None = None,
        splits: Sequence[str] = SPLITS,
        extra: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        if batch_size < 1 or bn_batches < 1 or bn_batch_size < 1:
            raise ConfigError("batch_size, bn_batches and bn_batch_size must be positive")
        self.extra = dict(extra or {})  # further evaluation sets by name: (inputs, labels), e.g. E5's examples
        self.data, self.batch_size, self.splits = data, int(batch_size), tuple(splits) + tuple(self.extra)
        self.bn_batches, self.bn_batch_size = int(bn_batches), int(bn_batch_size)
        self.device = torch.device(device) if device is not None else None
        self._bn_inputs: list[torch.Tensor] | None = None
        self.cache: dict[tuple[Hashable, str], np.ndarray] = {}
        self.evaluations = 0

    def bn_inputs(self, device: torch.device) -> list[torch.Tensor]:
        """The first ``bn_batches`` un-augmented training batches (loaded once)."""
        if self._bn_inputs is None:
            it = self.data.eval_batches("train", self.bn_batch_size, device)
            self._bn_inputs = [x for _, (x, _y) in zip(range(self.bn_batches), it)]
        return self._bn_inputs

    def evaluate(self, model: nn.Module) -> np.ndarray:
        self.evaluations += 1
        out = np.empty((2, len(self.splits)))
        for j, split in enumerate(self.splits):
            if split in self.extra:
                x, y = self.extra[split]
                r = evaluate_batches(model, _chunks(x, y, self.batch_size), self.device)
            else:
                r = evaluate(model, self.data, split, self.batch_size, self.device)
            out[:, j] = r["error"], r["loss"]
        return out

    def point(self, work: nn.Module, state: Mapping[str, torch.Tensor], bn_mode: str) -> np.ndarray:
        """Load ``state`` into ``work`` (recomputing BatchNorm statistics in ``reset`` mode) and evaluate."""
        if bn_mode not in BN_MODES:
            raise ValueError(f"unknown BatchNorm mode {bn_mode!r}; choose from {BN_MODES}")
        work.load_state_dict(state)
        if bn_mode == "reset":
            reset_batchnorm(work, self.bn_inputs(next(work.parameters()).device))
        return self.evaluate(work)

    def endpoint(
        self,
        model: nn.Module,
        bn_mode: str,
        mask: Mapping[str, torch.Tensor] | None = None,
        key: Hashable | None = None,
    ) -> np.ndarray:
        """``model`` (zero outside ``mask``) evaluated as a path end, cached under ``(key, bn_mode)``."""
        if key is not None and (key, bn_mode) in self.cache:
            return self.cache[key, bn_mode]
        state = {k: v.detach() for k, v in model.state_dict().items()}
        out = self.point(copy.deepcopy(model), interpolate_state(state, state, 0.0, mask), bn_mode)
        if key is not None:
            self.cache[key, bn_mode] = out
        return out

    def curve(
        self,
        model_a: nn.Module,
        model_b: nn.Module,
        gammas: np.ndarray,
        bn_modes: Sequence[str],
        mask: Mapping[str, torch.Tensor] | None = None,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> np.ndarray:
        """Error and loss along the path: array ``[bn_mode, gamma, metric, split]``.

        With ``key_a``/``key_b`` the ends come from (and go to) the endpoint cache.
        """
        gammas = gamma_grid(gammas)
        if key_a is not None and key_a == key_b:  # a path from a network to itself is constant
            ends = [self.endpoint(model_a, mode, mask, key_a) for mode in bn_modes]
            return np.stack([np.broadcast_to(e, (len(gammas),) + e.shape) for e in ends])
        sa = {k: v.detach() for k, v in model_a.state_dict().items()}
        sb = {k: v.detach() for k, v in model_b.state_dict().items()}
        work = copy.deepcopy(model_a)
        out = np.empty((len(bn_modes), len(gammas), 2, len(self.splits)))
        last = len(gammas) - 1
        for i, mode in enumerate(bn_modes):
            for j, g in enumerate(gammas):
                key = key_a if j == 0 else key_b if j == last else None
                if key is not None and (key, mode) in self.cache:
                    out[i, j] = self.cache[key, mode]
                    continue
                out[i, j] = self.point(work, interpolate_state(sa, sb, float(g), mask), mode)
                if key is not None:
                    self.cache[key, mode] = out[i, j].copy()
        return out


def _chunks(x: torch.Tensor, y: torch.Tensor, size: int):
    for i in range(0, len(y), size):
        yield x[i : i + size], y[i : i + size]


def _modes(bn_mode: str | Sequence[str]) -> tuple[str, ...]:
    modes = (bn_mode,) if isinstance(bn_mode, str) else tuple(bn_mode)
    bad = [m for m in modes if m not in BN_MODES]
    if not modes or bad or len(set(modes)) != len(modes):
        raise ConfigError(f"BatchNorm modes must be distinct values from {BN_MODES}, got {list(modes)}")
    return modes


_CURVE_ATTRS = {
    "error": {"description": "0-1 classification error along the path w(γ) = (1-γ) w_a + γ w_b", "units": "fraction"},
    "loss": {"description": "mean cross-entropy along the path w(γ) = (1-γ) w_a + γ w_b", "units": "nats"},
    "barrier_error": {
        "description": "B = max_γ [E(γ) - ((1-γ) E(0) + γ E(1))] of the error curve",
        "units": "fraction",
    },
    "barrier_loss": {"description": "B = max_γ [ℓ(γ) - ((1-γ) ℓ(0) + γ ℓ(1))] of the loss curve", "units": "nats"},
}


def interpolation_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    gammas: int | Sequence[float] = 11,
    bn_mode: str | Sequence[str] = "interpolate",
    mask: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 1000,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int = 100,
    mask_b: Mapping[str, torch.Tensor] | None = None,
) -> xr.Dataset:
    """Error/loss curves and barriers along the straight path from ``model_a`` (γ=0) to ``model_b`` (γ=1).

    ``mask`` is the support of the path; give ``mask_b`` as well to interpolate on the union of
    two masks.  Result dims: ``bn_mode, gamma, split`` (curves) and ``bn_mode, split`` (barriers).
    """
    g = gamma_grid(gammas)
    modes = _modes(bn_mode)
    if mask_b is not None:
        if mask is None:
            raise ValueError("mask_b needs mask (the other endpoint's mask)")
        mask = union_mask(mask, mask_b)
    ev = PathEvaluator(data, batch_size, bn_batches, bn_batch_size)
    arr = ev.curve(model_a, model_b, g, modes, mask)
    dims = ("bn_mode", "gamma", "split")
    ds = xr.Dataset(
        {
            "error": (dims, arr[:, :, 0]),
            "loss": (dims, arr[:, :, 1]),
            "barrier_error": (("bn_mode", "split"), barrier(arr[:, :, 0], g, axis=1)),
            "barrier_loss": (("bn_mode", "split"), barrier(arr[:, :, 1], g, axis=1)),
        },
        coords={"bn_mode": list(modes), "gamma": g, "split": list(ev.splits)},
    )
    for name, attrs in _CURVE_ATTRS.items():
        ds[name].attrs.update(attrs)
    return ds


def eval_settings(run, batch_size: int | None, bn_batch_size: int | None) -> tuple[int, int]:
    """Evaluation batch size (default: the recipe's ``eval_batch_size``) and BatchNorm-reset batch size
    (default: the recipe's training batch size)."""
    return (batch_size or run.recipe.train.eval_batch_size, bn_batch_size or run.recipe.train.batch_size)


def successive_levels(
    run,
    levels: Sequence[int],
    gammas: int | Sequence[float] = DEFAULT_GAMMAS,
    bn_modes: str | Sequence[str] = ("interpolate",),
    batch_size: int | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """E2 on an :class:`~unmasking.imp.ImpRun`: ``B(w_L, w_{L+1})`` and ``B(w_0, w_L)`` for each level.

    Curves have dims ``seed, level, pair, bn_mode, gamma, split``.  Pair ``successive`` needs
    level ``L+1`` to be trained; where it is not, its values are NaN.
    """
    levels = _check_levels(run, levels)
    g = gamma_grid(gammas)
    modes = _modes(bn_modes)
    batch_size, bn_batch_size = eval_settings(run, batch_size, bn_batch_size)
    ev = PathEvaluator(run.data, batch_size, bn_batches, bn_batch_size, run.device)
    models: dict[int, nn.Module] = {}
    masks: dict[int, dict] = {}

    def load(level: int):
        if level not in models:
            models[level], masks[level] = run.solution(level).eval(), run.mask(level)
        return models[level], masks[level]

    shape = (len(levels), len(PAIRS), len(modes), len(g), 2, len(ev.splits))
    arr = np.full(shape, np.nan)
    partner = np.full((len(levels), len(PAIRS)), -1, dtype=np.int64)
    for i, level in enumerate(tqdm(levels, desc="interpolate", disable=not progress)):
        wl, ml = load(level)
        if run.final_path(level + 1).exists():
            wn, mn = load(level + 1)
            arr[i, 0] = ev.curve(wl, wn, g, modes, union_mask(ml, mn), key_a=level, key_b=level + 1)
            partner[i, 0] = level + 1
        w0, m0 = load(0)
        arr[i, 1] = ev.curve(w0, wl, g, modes, union_mask(m0, ml), key_a=0, key_b=level)
        partner[i, 1] = 0
        for old in [k for k in models if k not in (0, level + 1)]:
            del models[old], masks[old]

    dims = ("seed", "level", "pair", "bn_mode", "gamma", "split")
    ds = xr.Dataset(
        {
            "error": (dims, arr[None, ..., 0, :]),
            "loss": (dims, arr[None, ..., 1, :]),
            "barrier_error": (dims[:4] + ("split",), barrier(arr[None, ..., 0, :], g, axis=4)),
            "barrier_loss": (dims[:4] + ("split",), barrier(arr[None, ..., 1, :], g, axis=4)),
            "partner_level": (
                ("level", "pair"),
                partner,
                {
                    "description": "the other endpoint's level (successive: L+1 at γ=1; dense: 0 at γ=0); "
                    "-1 where it is not trained"
                },
            ),
            "density": (
                ("seed", "level"),
                [[_density(run, lv) for lv in levels]],
                {"description": "fraction of prunable weights remaining at level L", "units": "fraction"},
            ),
        },
        coords={
            "seed": [run.seed],
            "level": list(levels),
            "pair": list(PAIRS),
            "bn_mode": list(modes),
            "gamma": g,
            "split": list(ev.splits),
        },
    )
    for name, attrs in _CURVE_ATTRS.items():
        ds[name].attrs.update(attrs)
    ds["gamma"].attrs["description"] = "interpolation coefficient; successive: w_L→w_{L+1}, dense: w_0→w_L"
    ds.attrs.update(
        run.provenance(
            "E2_interpolation",
            gammas=list(g),
            bn_modes=list(modes),
            batch_size=batch_size,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            evaluations=ev.evaluations,
        )
    )
    return ds


def _density(run, level: int) -> float:
    from ..masks import density

    return density(run.mask(level))


def _check_levels(run, levels: Sequence[int]) -> list[int]:
    levels = [int(v) for v in levels]
    if not levels:
        raise ConfigError("no levels given")
    if len(set(levels)) != len(levels) or min(levels) < 0:
        raise ConfigError(f"levels must be distinct and non-negative, got {levels}")
    for level in levels:
        if not run.final_path(level).exists():
            raise FileNotFoundError(f"level {level} of {run.root} is not trained ({run.final_path(level)} is missing)")
    return levels


SETTINGS = InterpolationSettings


def analyse(run, levels: Sequence[int], settings: InterpolationSettings = InterpolationSettings()) -> xr.Dataset:
    """E2 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``interpolation`` command)."""
    return successive_levels(run, levels, **settings_kwargs(settings), progress=run.progress)
