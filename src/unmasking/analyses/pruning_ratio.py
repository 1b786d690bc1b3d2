"""E6 — the maximal pruning ratio, measured (SPEC §3).

For level ``L`` and each fraction ``p`` on a grid: prune ``ceil(p × D_L)`` of the surviving
weights of ``w_L`` into a mask ``m'`` by

- ``magnitude``: the smallest ``|w_L|``, ranked globally (IMP's rule);
- ``random``: uniformly at random, globally;
- ``random_layerwise``: uniformly at random within each layer, each layer losing as many
  weights as magnitude pruning removes from it at the same ``p``;

record the error right after pruning (``m' ⊙ w_L``, no retraining), then rewind to
``m' ⊙ w_t``, retrain on the same schedule from ``t`` with the run's seeds, and record the
result's error and ``B(w_L, result)`` (the path lives on ``m_L``).  Success means the result is
matching (``E_test ≤ E_test(w_0) + ε_match``, ``w_0`` the run's dense level-0 solution) and
connected (test-error barrier ``≤ ε_barrier``); ``p*`` is the largest successful ``p`` (0 when
none is).  Raw errors are stored, so matching can be recomputed with another ``ε_match``
(e.g. the dense standard deviation over seeds).

Random masks: ``random_masks`` independent masks per (level, method, fraction), seed
``derive_seed(run_seed, "pruning-ratio", method, L, p, r)`` (recorded).  Magnitude pruning is
deterministic: it fills replicate 0 only (NaN elsewhere).  When a magnitude mask equals the
run's own ``m_{L+1}``, the run's ``w_{L+1}`` is that retraining (same start, mask, seeds and
schedule) and is reused instead of trained again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from .. import masks as M
from ..foundations.hparams import ConfigError, settings_kwargs
from ..foundations.seeds import derive_seed
from .interpolation import (
    BN_MODES,
    DEFAULT_BN_BATCHES,
    PathEvaluator,
    PathSettings,
    _check_levels,
    barrier,
    eval_settings,
    gamma_grid,
    run_provenance,
)
from .retraining import TrainJob, scratch_folder, train_jobs

METHODS = ("magnitude", "random", "random_layerwise")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 10) for i in range(1, 10))
DEFAULT_EPS_MATCH = 0.01
DEFAULT_EPS_BARRIER = 0.02

__all__ = [
    "DEFAULT_FRACTIONS",
    "METHODS",
    "PruningRatioSettings",
    "analyse",
    "empirical_p_star",
    "pruned_mask",
    "pruning_ratio",
]


@dataclass(frozen=True)
class PruningRatioSettings(PathSettings):
    """Options of E6 (the ``pruning_ratio`` command's flags)."""

    fractions: tuple[float, ...] = field(
        default=DEFAULT_FRACTIONS, metadata={"help": "fractions of the surviving weights to prune"}
    )
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "pruning methods", "choices": METHODS})
    random_masks: int = field(default=1, metadata={"help": "random masks per (method, fraction)"})
    eps_match: float = field(
        default=DEFAULT_EPS_MATCH,
        metadata={"help": "matching tolerance on test error (absolute) over the dense level-0 solution"},
    )
    eps_barrier: float = field(default=DEFAULT_EPS_BARRIER, metadata={"help": "zero-barrier threshold"})
    bn_mode: str = field(
        default="interpolate", metadata={"help": "BatchNorm handling along the path", "choices": BN_MODES}
    )


def pruned_mask(
    weights: Mapping[str, torch.Tensor],
    mask: Mapping[str, torch.Tensor],
    fraction: float,
    method: str,
    seed: int | None = None,
) -> M.Mask:
    """``mask`` with ``ceil(fraction × surviving)`` more weights removed by ``method`` (random ones need ``seed``)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"pruning fraction must be in (0, 1), got {fraction}")
    if method == "magnitude":
        return M.magnitude_prune(weights, mask, fraction)
    if method not in METHODS:
        raise ConfigError(f"unknown pruning method {method!r}; choose from {METHODS}")
    if seed is None:
        raise ValueError(f"{method} pruning needs a seed")
    gen = torch.Generator().manual_seed(int(seed))
    like = M.magnitude_prune(weights, mask, fraction) if method == "random_layerwise" else None
    return M.random_prune(mask, fraction, gen, like=like)


def empirical_p_star(fractions: Sequence[float], success, axis: int = -1):
    """Largest fraction whose ``success`` is 1 along ``axis`` (0 where none is; NaN where all are NaN)."""
    s = np.moveaxis(np.asarray(success, dtype=float), axis, -1)
    f = np.asarray(fractions, dtype=float)
    ok = np.where(s == 1.0, f, 0.0)
    out = np.where(np.all(np.isnan(s), axis=-1), np.nan, ok.max(axis=-1))
    return float(out) if np.ndim(out) == 0 else out


def _check(fractions, methods, random_masks) -> tuple[np.ndarray, tuple[str, ...], int]:
    f = np.asarray(sorted(float(p) for p in fractions))
    if len(f) == 0 or np.any(f <= 0) or np.any(f >= 1) or len(set(f.tolist())) != len(f):
        raise ConfigError(f"fractions must be distinct numbers in (0, 1), got {list(fractions)}")
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad or len(set(methods)) != len(methods):
        raise ConfigError(f"methods must be distinct values from {METHODS}, got {list(methods)}")
    if random_masks < 1:
        raise ConfigError(f"random_masks must be >= 1, got {random_masks}")
    return f, methods, int(random_masks)


def _same_mask(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[n].cpu(), b[n].cpu()) for n in a)


def pruning_ratio(
    run,
    levels: Sequence[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    methods: Sequence[str] = METHODS,
    random_masks: int = 1,
    eps_match: float = DEFAULT_EPS_MATCH,
    eps_barrier: float = DEFAULT_EPS_BARRIER,
    gammas: int | Sequence[float] = 11,
    bn_mode: str = "interpolate",
    batch_size: int | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int | None = None,
    scratch: str | Path | None = None,
    models_at_once: int = 1,
    compile: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """E6 on an :class:`~unmasking.imp.ImpRun`.

    Dims ``seed, level, prune_method, fraction, replicate`` (+ ``split``, ``gamma`` for curves).

    ``scratch`` keeps finished retrainings so a rerun resumes (default: a temporary folder);
    ``models_at_once`` and ``compile``: see :func:`~unmasking.analyses.retraining.train_jobs`.
    """
    levels = _check_levels(run, levels)
    fractions, methods, nrep = _check(fractions, methods, random_masks)
    g = gamma_grid(gammas)
    if bn_mode not in BN_MODES:
        raise ConfigError(f"unknown BatchNorm mode {bn_mode!r}; choose from {BN_MODES}")
    batch_size, bn_batch_size = eval_settings(run, batch_size, bn_batch_size)
    ev = PathEvaluator(run.data, batch_size, bn_batches, bn_batch_size, run.device)
    sweep = _Sweep(levels, methods, fractions, nrep, g, ev.splits)
    _plan_trainings(run, sweep, ev, bn_mode, progress)
    _retrain(run, sweep, scratch, models_at_once, compile, progress)
    dense_test = _evaluate(run, sweep, ev, bn_mode, progress)
    ds = _dataset(run, sweep, dense_test, eps_match, eps_barrier)
    ds.attrs.update(
        run_provenance(
            run,
            "E6_pruning_ratio",
            fractions=fractions.tolist(),
            methods=list(methods),
            random_masks=nrep,
            eps_match=eps_match,
            eps_barrier=eps_barrier,
            gammas=list(g),
            bn_mode=bn_mode,
            batch_size=batch_size,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            trainings=len(sweep.jobs),
        )
    )
    return ds


class _Sweep:
    """E6's cells (level, method, fraction, replicate) and what the steps learn about each of them."""

    def __init__(
        self,
        levels: list[int],
        methods: tuple[str, ...],
        fractions: np.ndarray,
        replicates: int,
        gammas: np.ndarray,
        splits: Sequence[str],
    ):
        self.levels, self.methods, self.fractions, self.replicates = levels, methods, fractions, replicates
        self.gammas, self.splits = gammas, tuple(splits)
        self.shape = (len(levels), len(methods), len(fractions), replicates)
        self.pruned = self.nan(2, len(self.splits))  # [metric, split] of m' ⊙ w_L (no retraining)
        self.curves = self.nan(len(gammas), 2, len(self.splits))  # w_L -> the retrained network
        self.density, self.projection, self.rewind_distance = self.nan(), self.nan(), self.nan()
        self.mask_seed = np.full(self.shape, -1, dtype=np.int64)
        self.reused, self.diverged = np.zeros(self.shape, dtype=np.int8), np.zeros(self.shape, dtype=np.int8)
        self.ran = np.zeros(self.shape, dtype=bool)
        self.level_values = np.empty((len(levels), 2, len(self.splits)))  # [metric, split] of w_L
        self.jobs: list[TrainJob] = []  # the retrainings to run ...
        self.slots: list[tuple[int, int, int, int]] = []  # ... and their cells
        self.results: dict[tuple[int, int, int, int], nn.Module | None] = {}  # retrained (None: diverged)

    def nan(self, *extra: int) -> np.ndarray:
        return np.full(self.shape + extra, np.nan)

    def cells(self, i: int):
        """``(cell, method, fraction, replicate)`` of level index ``i`` (magnitude pruning: replicate 0 only)."""
        for a, method in enumerate(self.methods):
            for b, p in enumerate(self.fractions):
                for r in range(self.replicates if method != "magnitude" else 1):
                    yield (i, a, b, r), method, p, r


def _plan_trainings(run, sweep: _Sweep, ev: PathEvaluator, bn_mode: str, progress: bool) -> None:
    """Prune every level's ``w_L`` into each cell's mask ``m'``, evaluate ``m' ⊙ w_L`` and queue the retraining
    from ``m' ⊙ w_t`` (or take the run's ``w_{L+1}`` where ``m'`` is the run's own ``m_{L+1}``)."""
    rewind = run.rewind_model()
    rewind_w = dict(rewind.named_parameters())
    for i, level in enumerate(tqdm(sweep.levels, desc="pruning-ratio: prune", disable=not progress)):
        wl, ml = run.solution(level).eval(), run.mask(level)
        weights = dict(wl.named_parameters())
        sweep.level_values[i] = ev.endpoint(wl, bn_mode, ml, key=level)
        nxt = run.mask(level + 1) if run.mask_path(level + 1).exists() and run.final_path(level + 1).exists() else None
        for idx, method, p, r in sweep.cells(i):
            seed = derive_seed(run.seed, "pruning-ratio", method, level, f"{p:g}", r)
            mask = pruned_mask(weights, ml, float(p), method, seed)
            if method != "magnitude":
                sweep.mask_seed[idx] = seed
            removed = M.difference(ml, mask)
            sweep.density[idx] = M.density(mask)
            sweep.projection[idx] = M.masked_norm(weights, removed)
            sweep.rewind_distance[idx] = M.masked_norm(rewind_w, removed)
            at_once = copy.deepcopy(wl)
            M.apply_mask(at_once, mask)
            sweep.pruned[idx] = ev.endpoint(at_once, bn_mode, mask)
            if method == "magnitude" and nxt is not None and _same_mask(mask, nxt):
                sweep.results[idx] = run.solution(level + 1)
                sweep.reused[idx] = 1
                continue
            start = copy.deepcopy(rewind)
            M.apply_mask(start, mask)
            sweep.slots.append(idx)
            sweep.jobs.append(TrainJob(f"L{level:02d}_{method}_p{p:g}_r{r}", start, mask, run.seeds))


def _retrain(
    run, sweep: _Sweep, scratch: str | Path | None, models_at_once: int, compile: bool, progress: bool
) -> None:
    """Run the queued retrainings (see :func:`~unmasking.analyses.retraining.train_jobs`)."""
    with scratch_folder(scratch) as folder:
        trained = train_jobs(
            sweep.jobs,
            run.data,
            run.recipe.train,
            run.recipe.prune.rewind_step,
            folder,
            models_at_once,
            compile,
            progress,
            desc="pruning-ratio: retrain",
        )
    sweep.results.update(zip(sweep.slots, trained))


def _evaluate(run, sweep: _Sweep, ev: PathEvaluator, bn_mode: str, progress: bool) -> float:
    """Error and loss along ``w_L → retrained`` for every cell; returns the dense level-0 solution's test error."""
    current: tuple | None = None
    for idx, model in tqdm(sorted(sweep.results.items()), desc="pruning-ratio: evaluate", disable=not progress):
        sweep.ran[idx] = True
        if model is None:
            sweep.diverged[idx] = 1
            continue
        level = sweep.levels[idx[0]]
        if current is None or current[0] != level:
            current = (level, run.solution(level).eval(), run.mask(level))
        sweep.curves[idx] = ev.curve(current[1], model.eval(), sweep.gammas, (bn_mode,), current[2], key_a=level)[0]
    return ev.endpoint(run.solution(0).eval(), bn_mode, run.mask(0), key=0)[0, sweep.splits.index("test")]


def _judge(sweep: _Sweep, dense_test: float, eps_match: float, eps_barrier: float) -> dict[str, np.ndarray]:
    """Barriers, matching, connectedness and success of every cell, and ``p*`` (NaN where a cell did not run)."""
    t = sweep.splits.index("test")
    after = sweep.curves[..., -1, :, :]
    b_err = barrier(sweep.curves[..., 0, :], sweep.gammas, axis=-2)
    b_loss = barrier(sweep.curves[..., 1, :], sweep.gammas, axis=-2)
    tie = 1e-9  # errors are multiples of 1/n: a value on the threshold counts as within it despite rounding
    with np.errstate(invalid="ignore"):  # a diverged retraining (NaN) is neither matching nor connected
        is_matching = after[..., 0, t] <= dense_test + eps_match + tie
        is_connected = b_err[..., t] <= eps_barrier + tie
    matching = np.where(sweep.ran, is_matching, np.nan)
    connected = np.where(sweep.ran, is_connected, np.nan)
    success = np.where(sweep.ran, is_matching & is_connected, np.nan)
    return {
        "after": after,
        "barrier_error": b_err,
        "barrier_loss": b_loss,
        "matching": matching,
        "connected": connected,
        "success": success,
        "p_star": empirical_p_star(sweep.fractions, success, axis=2),
    }


def _dataset(run, sweep: _Sweep, dense_test: float, eps_match: float, eps_barrier: float) -> xr.Dataset:
    """E6's result dataset (without provenance)."""
    judged = _judge(sweep, dense_test, eps_match, eps_barrier)
    after, b_err, b_loss, matching, connected, success, p_star = (
        judged[k] for k in ("after", "barrier_error", "barrier_loss", "matching", "connected", "success", "p_star")
    )
    curves = sweep.curves
    dims = ("seed", "level", "prune_method", "fraction", "replicate")
    sd, cd = dims + ("split",), dims + ("gamma", "split")
    frac_attrs = {"units": "fraction"}
    ds = xr.Dataset(
        {
            "pruned_error": (
                sd,
                sweep.pruned[None, ..., 0, :],
                {"description": "error of m' * w_L right after pruning (no retraining)", **frac_attrs},
            ),
            "pruned_loss": (
                sd,
                sweep.pruned[None, ..., 1, :],
                {"description": "loss of m' * w_L right after pruning (no retraining)", "units": "nats"},
            ),
            "error": (
                sd,
                after[None, ..., 0, :],
                {"description": "error after rewinding to m' * w_t and retraining", **frac_attrs},
            ),
            "loss": (
                sd,
                after[None, ..., 1, :],
                {"description": "loss after rewinding to m' * w_t and retraining", "units": "nats"},
            ),
            "barrier_error": (sd, b_err[None], {"description": "B(w_L, retrained) of the error curve", **frac_attrs}),
            "barrier_loss": (sd, b_loss[None], {"description": "B(w_L, retrained) of the loss curve", "units": "nats"}),
            "error_curve": (
                cd,
                curves[None, ..., 0, :],
                {"description": "error along (1-γ) w_L + γ retrained", **frac_attrs},
            ),
            "loss_curve": (
                cd,
                curves[None, ..., 1, :],
                {"description": "loss along (1-γ) w_L + γ retrained", "units": "nats"},
            ),
            "matching": (dims, matching[None], {"description": f"1 if test error <= dense + eps_match ({eps_match})"}),
            "connected": (
                dims,
                connected[None],
                {"description": f"1 if test-error barrier <= eps_barrier ({eps_barrier})"},
            ),
            "success": (dims, success[None], {"description": "matching and connected (1/0; NaN: not run)"}),
            "p_star": (
                ("seed", "level", "prune_method", "replicate"),
                p_star[None],
                {"description": "largest fraction p on the grid that succeeded (0: none)", **frac_attrs},
            ),
            "density": (dims, sweep.density[None], {"description": "density of the pruned mask m'", **frac_attrs}),
            "projection_length": (
                dims,
                sweep.projection[None],
                {"description": "R(p) = |(m_L - m') * w_L|", "units": "weight-space L2"},
            ),
            "rewind_distance": (
                dims,
                sweep.rewind_distance[None],
                {"description": "|(m_L - m') * w_t|", "units": "weight-space L2"},
            ),
            "mask_seed": (dims, sweep.mask_seed[None], {"description": "seed of the random mask (-1: magnitude)"}),
            "reused_imp_level": (
                dims,
                sweep.reused[None],
                {"description": "1: m' equals the run's m_L+1, so the run's w_L+1 is the result"},
            ),
            "diverged": (dims, sweep.diverged[None], {"description": "1 where retraining diverged (values NaN)"}),
            "level_error": (
                ("seed", "level", "split"),
                sweep.level_values[None, :, 0],
                {"description": "error of the IMP solution w_L", **frac_attrs},
            ),
            "dense_test_error": (
                ("seed",),
                [dense_test],
                {"description": "test error of the run's dense level-0 solution", **frac_attrs},
            ),
        },
        coords={
            "seed": [run.seed],
            "level": sweep.levels,
            "prune_method": list(sweep.methods),
            "fraction": sweep.fractions,
            "replicate": np.arange(sweep.replicates),
            "gamma": sweep.gammas,
            "split": list(sweep.splits),
        },
    )
    ds["fraction"].attrs["description"] = "p: fraction of the surviving weights of w_L pruned at once"
    ds["prune_method"].attrs["description"] = (
        "pruning rule (not named 'method': that name is a keyword of xarray's .sel)"
    )
    ds["replicate"].attrs["description"] = "random mask index (magnitude pruning: replicate 0 only)"
    return ds


SETTINGS = PruningRatioSettings


def analyse(
    run,
    levels: Sequence[int],
    settings: PruningRatioSettings = PruningRatioSettings(),
    scratch: str | Path | None = None,
    models_at_once: int = 1,
    compile: bool = False,
) -> xr.Dataset:
    """E6 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``pruning_ratio`` command).

    ``scratch``, ``models_at_once`` and ``compile``: see :func:`pruning_ratio`.
    """
    return pruning_ratio(
        run,
        levels,
        **settings_kwargs(settings),
        scratch=scratch,
        models_at_once=models_at_once,
        compile=compile,
        progress=run.progress,
    )
