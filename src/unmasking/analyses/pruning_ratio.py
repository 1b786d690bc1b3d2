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
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .. import masks as M
from ..foundations.hparams import ConfigError
from ..foundations.netcdf import write_dataset
from ..foundations.seeds import derive_seed
from .interpolation import (DEFAULT_BN_BATCHES, BN_MODES, PathEvaluator, _check_levels, add_level_args, barrier,
                            eval_settings, gamma_grid, run_provenance)
from .retraining import TrainJob, add_retraining_args, scratch_folder, scratch_for, train_jobs

METHODS = ("magnitude", "random", "random_layerwise")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 10) for i in range(1, 10))
DEFAULT_EPS_MATCH = 0.01
DEFAULT_EPS_BARRIER = 0.02

__all__ = ["DEFAULT_FRACTIONS", "METHODS", "empirical_p_star", "pruned_mask", "pruning_ratio"]


def pruned_mask(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], fraction: float,
                method: str, seed: int | None = None) -> M.Mask:
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


def pruning_ratio(run, levels: Sequence[int], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  methods: Sequence[str] = METHODS, random_masks: int = 1, eps_match: float = DEFAULT_EPS_MATCH,
                  eps_barrier: float = DEFAULT_EPS_BARRIER, gammas: int | Sequence[float] = 11,
                  bn_mode: str = "interpolate", batch_size: int | None = None, bn_batches: int = DEFAULT_BN_BATCHES,
                  bn_batch_size: int | None = None, scratch: str | Path | None = None, models_at_once: int = 1,
                  compile: bool = False, progress: bool = True) -> xr.Dataset:
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
    splits = ev.splits
    shape = (len(levels), len(methods), len(fractions), nrep)

    def nan(*extra: int) -> np.ndarray:
        return np.full(shape + extra, np.nan)

    pruned, curves = nan(2, len(splits)), nan(len(g), 2, len(splits))
    density, proj, rdist = nan(), nan(), nan()
    mask_seed = np.full(shape, -1, dtype=np.int64)
    reused, diverged = np.zeros(shape, dtype=np.int8), np.zeros(shape, dtype=np.int8)
    level_vals = np.empty((len(levels), 2, len(splits)))

    rewind = run.rewind_model()
    rewind_w = dict(rewind.named_parameters())
    slots, jobs, results = [], [], {}
    for i, level in enumerate(tqdm(levels, desc="pruning-ratio: prune", disable=not progress)):
        wl, ml = run.solution(level).eval(), run.mask(level)
        weights = dict(wl.named_parameters())
        level_vals[i] = ev.endpoint(wl, bn_mode, ml, key=level)
        nxt = run.mask(level + 1) if run.mask_path(level + 1).exists() and run.final_path(level + 1).exists() else None
        for a, method in enumerate(methods):
            for b, p in enumerate(fractions):
                for r in range(nrep if method != "magnitude" else 1):
                    idx = (i, a, b, r)
                    seed = derive_seed(run.seed, "pruning-ratio", method, level, f"{p:g}", r)
                    mask = pruned_mask(weights, ml, float(p), method, seed)
                    if method != "magnitude":
                        mask_seed[idx] = seed
                    removed = M.difference(ml, mask)
                    density[idx] = M.density(mask)
                    proj[idx] = M.masked_norm(weights, removed)
                    rdist[idx] = M.masked_norm(rewind_w, removed)
                    at_once = copy.deepcopy(wl)
                    M.apply_mask(at_once, mask)
                    pruned[idx] = ev.endpoint(at_once, bn_mode, mask)
                    if method == "magnitude" and nxt is not None and _same_mask(mask, nxt):
                        results[idx] = run.solution(level + 1)
                        reused[idx] = 1
                        continue
                    start = copy.deepcopy(rewind)
                    M.apply_mask(start, mask)
                    slots.append(idx)
                    jobs.append(TrainJob(f"L{level:02d}_{method}_p{p:g}_r{r}", start, mask, run.seeds))

    with scratch_folder(scratch) as folder:
        trained = train_jobs(jobs, run.data, run.recipe.train, run.recipe.prune.rewind_step, folder,
                             models_at_once, compile, progress, desc="pruning-ratio: retrain")
    results.update(zip(slots, trained))

    ran = np.zeros(shape, dtype=bool)
    current: tuple | None = None
    for idx, model in tqdm(sorted(results.items()), desc="pruning-ratio: evaluate", disable=not progress):
        ran[idx] = True
        if model is None:
            diverged[idx] = 1
            continue
        level = levels[idx[0]]
        if current is None or current[0] != level:
            current = (level, run.solution(level).eval(), run.mask(level))
        curves[idx] = ev.curve(current[1], model.eval(), g, (bn_mode,), current[2], key_a=level)[0]
    dense_test = ev.endpoint(run.solution(0).eval(), bn_mode, run.mask(0), key=0)[0, splits.index("test")]

    t = splits.index("test")
    after = curves[..., -1, :, :]
    b_err = barrier(curves[..., 0, :], g, axis=-2)
    b_loss = barrier(curves[..., 1, :], g, axis=-2)
    tie = 1e-9  # errors are multiples of 1/n: a value on the threshold counts as within it despite rounding
    with np.errstate(invalid="ignore"):  # a diverged retraining (NaN) is neither matching nor connected
        is_matching = after[..., 0, t] <= dense_test + eps_match + tie
        is_connected = b_err[..., t] <= eps_barrier + tie
    matching = np.where(ran, is_matching, np.nan)
    connected = np.where(ran, is_connected, np.nan)
    success = np.where(ran, is_matching & is_connected, np.nan)
    p_star = empirical_p_star(fractions, success, axis=2)

    dims = ("seed", "level", "prune_method", "fraction", "replicate")
    sd, cd = dims + ("split",), dims + ("gamma", "split")
    frac_attrs = {"units": "fraction"}
    ds = xr.Dataset(
        {
            "pruned_error": (sd, pruned[None, ..., 0, :],
                             {"description": "error of m' * w_L right after pruning (no retraining)", **frac_attrs}),
            "pruned_loss": (sd, pruned[None, ..., 1, :],
                            {"description": "loss of m' * w_L right after pruning (no retraining)", "units": "nats"}),
            "error": (sd, after[None, ..., 0, :],
                      {"description": "error after rewinding to m' * w_t and retraining", **frac_attrs}),
            "loss": (sd, after[None, ..., 1, :],
                     {"description": "loss after rewinding to m' * w_t and retraining", "units": "nats"}),
            "barrier_error": (sd, b_err[None], {"description": "B(w_L, retrained) of the error curve", **frac_attrs}),
            "barrier_loss": (sd, b_loss[None], {"description": "B(w_L, retrained) of the loss curve", "units": "nats"}),
            "error_curve": (cd, curves[None, ..., 0, :],
                            {"description": "error along (1-γ) w_L + γ retrained", **frac_attrs}),
            "loss_curve": (cd, curves[None, ..., 1, :],
                           {"description": "loss along (1-γ) w_L + γ retrained", "units": "nats"}),
            "matching": (dims, matching[None], {"description": f"1 if test error <= dense + eps_match ({eps_match})"}),
            "connected": (dims, connected[None],
                          {"description": f"1 if test-error barrier <= eps_barrier ({eps_barrier})"}),
            "success": (dims, success[None], {"description": "matching and connected (1/0; NaN: not run)"}),
            "p_star": (("seed", "level", "prune_method", "replicate"), p_star[None],
                       {"description": "largest fraction p on the grid that succeeded (0: none)", **frac_attrs}),
            "density": (dims, density[None], {"description": "density of the pruned mask m'", **frac_attrs}),
            "projection_length": (dims, proj[None], {"description": "R(p) = |(m_L - m') * w_L|",
                                                     "units": "weight-space L2"}),
            "rewind_distance": (dims, rdist[None], {"description": "|(m_L - m') * w_t|", "units": "weight-space L2"}),
            "mask_seed": (dims, mask_seed[None], {"description": "seed of the random mask (-1: magnitude)"}),
            "reused_imp_level": (dims, reused[None],
                                 {"description": "1: m' equals the run's m_L+1, so the run's w_L+1 is the result"}),
            "diverged": (dims, diverged[None], {"description": "1 where retraining diverged (values NaN)"}),
            "level_error": (("seed", "level", "split"), level_vals[None, :, 0],
                            {"description": "error of the IMP solution w_L", **frac_attrs}),
            "dense_test_error": (("seed",), [dense_test],
                                 {"description": "test error of the run's dense level-0 solution", **frac_attrs}),
        },
        coords={"seed": [run.seed], "level": levels, "prune_method": list(methods), "fraction": fractions,
                "replicate": np.arange(nrep), "gamma": g, "split": list(splits)})
    ds["fraction"].attrs["description"] = "p: fraction of the surviving weights of w_L pruned at once"
    ds["prune_method"].attrs["description"] = ("pruning rule (not named 'method': that name is a keyword of "
                                               "xarray's .sel)")
    ds["replicate"].attrs["description"] = "random mask index (magnitude pruning: replicate 0 only)"
    ds.attrs.update(run_provenance(run, "E6_pruning_ratio", fractions=fractions.tolist(), methods=list(methods),
                                   random_masks=nrep, eps_match=eps_match, eps_barrier=eps_barrier, gammas=list(g),
                                   bn_mode=bn_mode, batch_size=batch_size, bn_batches=bn_batches,
                                   bn_batch_size=bn_batch_size, trainings=len(jobs)))
    return ds


def _cmd_pruning_ratio(args) -> None:
    from ..cli import open_run

    run = open_run(args)
    scratch = scratch_for(args.out)
    ds = pruning_ratio(run, args.levels, args.fractions, args.methods, args.random_masks, args.eps_match,
                       args.eps_barrier, args.gammas, args.bn_mode, args.batch_size, args.bn_batches,
                       args.bn_batch_size, scratch=scratch, models_at_once=args.models_at_once,
                       compile=args.compile, progress=not args.quiet)
    out = write_dataset(ds, Path(args.out))
    shutil.rmtree(scratch, ignore_errors=True)
    ps = ds.p_star.isel(seed=0).mean("replicate")
    for level in ds.level.values:
        row = "  ".join(f"{m}: {float(ps.sel(level=level, prune_method=m)):.2f}" for m in ds.prune_method.values)
        print(f"level {level:2d}  p*  {row}")
    print(f"wrote {out}")


def register(subparsers) -> None:
    p = subparsers.add_parser("pruning-ratio", help="E6: prune w_L by a fraction p at once, retrain, and find the "
                              "largest p that stays matching and connected", description=__doc__.splitlines()[0])
    add_level_args(p, "prune")
    p.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS),
                   help="fractions of the surviving weights to prune")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="pruning methods")
    p.add_argument("--random-masks", type=int, default=1, help="random masks per (method, fraction)")
    p.add_argument("--eps-match", type=float, default=DEFAULT_EPS_MATCH,
                   help="matching tolerance on test error (absolute) over the dense level-0 solution")
    p.add_argument("--eps-barrier", type=float, default=DEFAULT_EPS_BARRIER, help="zero-barrier threshold")
    p.add_argument("--gammas", type=int, default=11, help="points on the γ grid, ends included")
    p.add_argument("--bn-mode", choices=BN_MODES, default="interpolate", help="BatchNorm handling along the path")
    p.add_argument("--bn-batches", type=int, default=DEFAULT_BN_BATCHES,
                   help="training batches for the 'reset' mode's statistics")
    p.add_argument("--bn-batch-size", type=int, default=None,
                   help="batch size of the 'reset' pass (default: the recipe's train.batch_size)")
    add_retraining_args(p)
    p.set_defaults(func=_cmd_pruning_ratio)
