"""E6 — the maximal pruning ratio, measured on the theory's own terms (SPEC §3, E5/E6).

For level ``L``, a pruning method and a fraction ``p``, prune ``ceil(p × D_L)`` of the surviving
weights of ``w_L`` into a mask ``m'`` by

- ``magnitude``: the smallest ``|w_L|``, ranked globally (IMP's rule);
- ``random``: uniformly at random, globally;
- ``random_layerwise``: uniformly at random within each layer, each layer losing as many
  weights as magnitude pruning removes from it at the same ``p``;

rewind to ``m' ⊙ w_t`` and retrain on the same schedule from ``t`` with the run's seeds, giving
``w'``.  Three criteria judge each retraining; the path ``w_L → w'`` lives on ``m_L``:

- **headline** (``success``), the object of E5's theory as the protocol defines it: ``w'`` in the
  linearly connected training-loss sublevel set of ``w_L`` — ``L(w') ≤ L(w_L) + ε`` and the loss barrier
  of the path (its rise above the chord between the two ends) ``≤ ε``, with ``L`` the mean cross-entropy
  on E5's training examples (E4's subset: ``subset_size``/``subset_seed``) and ``ε`` E5's tolerance
  (``epsilon``, nats).  The barrier bounds the path by ``L(w_L) + 2ε``, not ``L(w_L) + ε``; the path's
  largest excess over ``L(w_L)`` is stored as ``sublevel_path_excess`` for the stricter reading.  E5 asks
  whether the pruned subspace meets the sublevel set; E6 whether retraining from the rewind point lands in
  it, connected;
- ``success_matching`` (the criterion used before): the test error of ``w'`` matches the dense
  level-0 solution's (``≤ E_test(w_0) + ε_match``) and the test-error barrier is ``≤ ε_barrier``;
- ``success_connected``: the test-error barrier ``≤ ε_barrier`` alone.

**The search.**  ``p`` is found by bisection per (level, method, random mask) on the dyadic grid
``k / 2^n`` (``n = bisection_steps``): start from the bracket ``[0, 1]`` (``p = 0`` is ``w_L``
itself, inside its own sublevel set; ``p = 1`` removes every weight), retrain at the midpoint,
keep the half whose ends disagree under the headline criterion.  After ``n`` retrainings the
headline ``p*`` is known to ``2^-n``; it is the largest successful evaluated ``p`` (0 when none
is).  Bisection assumes that success does not come back at a larger ``p`` once lost; every
evaluated ``p`` is stored with all three criteria, so a reader can see a non-monotone case.  The
secondary criteria's ``p*`` are the largest evaluated ``p`` that satisfy them: evaluated where the
headline bisection went, so only as fine as those points.  Each bisection round trains all
(level, method, mask) cells together (``models_at_once``).

The error and loss right after pruning (``m' ⊙ w_L``, no retraining) are stored at every grid
fraction, for every method.  Raw errors, losses and barriers are stored, so each criterion can be
recomputed with other tolerances (:mod:`unmasking.metrics.pruning`).

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
)
from .pruning_theory import DEFAULT_EPSILON
from .retraining import TrainJob, retraining_mode, scratch_folder, train_jobs

METHODS = ("magnitude", "random", "random_layerwise")
DEFAULT_BISECTION_STEPS = 4
DEFAULT_EPS_MATCH = 0.01
DEFAULT_EPS_BARRIER = 0.02
CRITERIA = {
    "success": "headline: L(w') <= L(w_L) + epsilon and loss barrier <= epsilon on E5's training examples",
    "success_matching": "test error <= dense + eps_match and test-error barrier <= eps_barrier",
    "success_connected": "test-error barrier <= eps_barrier",
}
P_STAR_OF = {"success": "p_star", "success_matching": "p_star_matching", "success_connected": "p_star_connected"}

__all__ = [
    "CRITERIA",
    "METHODS",
    "PruningRatioSettings",
    "analyse",
    "dyadic_fractions",
    "empirical_p_star",
    "pruned_mask",
    "pruning_ratio",
]


@dataclass(frozen=True)
class PruningRatioSettings(PathSettings):
    """Options of E6 (the ``pruning_ratio`` command's flags)."""

    bisection_steps: int = field(
        default=DEFAULT_BISECTION_STEPS,
        metadata={"help": "retrainings per (level, method, mask): p* is found to 1/2^steps on the grid k/2^steps"},
    )
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "pruning methods", "choices": METHODS})
    random_masks: int = field(default=1, metadata={"help": "random masks per (method, fraction)"})
    epsilon: float = field(
        default=DEFAULT_EPSILON,
        metadata={"help": "headline: train-loss tolerance of the sublevel set in nats, E5's epsilon (0.02 ln 2)"},
    )
    subset_size: int | None = field(
        default=None,
        metadata={"help": "headline: training examples of the train loss, E4's subset (default: the train-eval set)"},
    )
    subset_seed: int = field(default=0, metadata={"help": "seed of that subset, E4's seed (%(default)s)"})
    eps_match: float = field(
        default=DEFAULT_EPS_MATCH,
        metadata={"help": "secondary: matching tolerance on test error (absolute) over the dense level-0 solution"},
    )
    eps_barrier: float = field(
        default=DEFAULT_EPS_BARRIER, metadata={"help": "secondary: zero-barrier threshold on test error"}
    )
    bn_mode: str = field(
        default="interpolate", metadata={"help": "BatchNorm handling along the path", "choices": BN_MODES}
    )


def dyadic_fractions(steps: int) -> np.ndarray:
    """The fractions bisection can evaluate in ``steps`` steps: ``k / 2^steps`` for ``k = 1 … 2^steps − 1``."""
    if not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 10:
        raise ConfigError(f"bisection_steps must be an integer from 1 to 10, got {steps!r}")
    return np.arange(1, 2**steps) / 2**steps


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


def _check(methods, random_masks, epsilon, subset_size, eps_match, eps_barrier) -> tuple[tuple[str, ...], int]:
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad or len(set(methods)) != len(methods):
        raise ConfigError(f"methods must be distinct values from {METHODS}, got {list(methods)}")
    if random_masks < 1:
        raise ConfigError(f"random_masks must be >= 1, got {random_masks}")
    if not (epsilon > 0 and np.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a positive number of nats, got {epsilon}")
    if subset_size is not None and subset_size < 1:
        raise ConfigError(f"subset_size must be >= 1 (or None: the train-eval set), got {subset_size}")
    for name, value in (("eps_match", eps_match), ("eps_barrier", eps_barrier)):
        if not (value >= 0 and np.isfinite(value)):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    return methods, int(random_masks)


def _same_mask(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[n].cpu(), b[n].cpu()) for n in a)


def _sublevel_split(run, subset_size: int | None, subset_seed: int) -> tuple[str, dict, int]:
    """The evaluation set of the headline train loss and its size: the train-eval split itself when E4's
    subset is all of it, else E4's subset as an extra set named ``sublevel``."""
    n = len(run.data.subset("train", None)[1])
    if subset_size is None or subset_size >= n:
        return "train", {}, n
    return "sublevel", {"sublevel": run.data.subset("train", subset_size, subset_seed)}, int(subset_size)


def pruning_ratio(
    run,
    levels: Sequence[int],
    bisection_steps: int = DEFAULT_BISECTION_STEPS,
    methods: Sequence[str] = METHODS,
    random_masks: int = 1,
    epsilon: float = DEFAULT_EPSILON,
    subset_size: int | None = None,
    subset_seed: int = 0,
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

    Dims ``seed, level, prune_method, fraction, replicate`` (+ ``split``, ``gamma`` for curves);
    ``fraction`` is the dyadic grid of :func:`dyadic_fractions`, retrained values NaN where the
    bisection did not go.  ``scratch`` keeps finished retrainings so a rerun resumes (default: a
    temporary folder); ``models_at_once`` and ``compile``: see
    :func:`~unmasking.analyses.retraining.train_jobs`.
    """
    levels = _check_levels(run, levels)
    fractions = dyadic_fractions(bisection_steps)
    methods, nrep = _check(methods, random_masks, epsilon, subset_size, eps_match, eps_barrier)
    g = gamma_grid(gammas)
    if bn_mode not in BN_MODES:
        raise ConfigError(f"unknown BatchNorm mode {bn_mode!r}; choose from {BN_MODES}")
    batch_size, bn_batch_size = eval_settings(run, batch_size, bn_batch_size)
    sublevel, extra, examples = _sublevel_split(run, subset_size, subset_seed)
    ev = PathEvaluator(run.data, batch_size, bn_batches, bn_batch_size, run.device, extra=extra)
    sweep = _Sweep(levels, methods, fractions, nrep, g, ev.splits, sublevel)
    _prune_all(run, sweep, ev, bn_mode, progress)
    with scratch_folder(scratch) as folder:
        for step in range(int(bisection_steps)):
            jobs = _plan_round(run, sweep)
            desc = f"pruning-ratio: retrain (bisection step {step + 1}/{bisection_steps})"
            trained = train_jobs(
                [job for _, job in jobs],
                run.data,
                run.recipe.train,
                run.recipe.prune.rewind_step,
                folder,
                models_at_once,
                compile,
                progress,
                desc=desc,
            )
            sweep.results.update(zip([idx for idx, _ in jobs], trained))
            _evaluate_round(run, sweep, ev, bn_mode)
            _bisect(sweep, epsilon)
    dense_test = ev.endpoint(run.solution(0).eval(), bn_mode, run.mask(0), key=0)[0, sweep.splits.index("test")]
    ds = _dataset(run, sweep, dense_test, epsilon, eps_match, eps_barrier)
    ds.attrs.update(
        run.provenance(
            "E6_pruning_ratio",
            search="bisection",
            retraining_mode=retraining_mode(models_at_once, compile, run.device),
            bisection_steps=int(bisection_steps),
            methods=list(methods),
            random_masks=nrep,
            epsilon=epsilon,
            epsilon_units="nats",
            sublevel_examples=examples,
            subset_size=-1 if subset_size is None else int(subset_size),
            subset_seed=int(subset_seed),
            eps_match=eps_match,
            eps_barrier=eps_barrier,
            gammas=list(g),
            bn_mode=bn_mode,
            batch_size=batch_size,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            trainings=sweep.trainings,
        )
    )
    return ds


class _Sweep:
    """E6's cells (level, method, fraction, replicate), the bisection brackets, and what the steps learn."""

    def __init__(
        self,
        levels: list[int],
        methods: tuple[str, ...],
        fractions: np.ndarray,
        replicates: int,
        gammas: np.ndarray,
        splits: Sequence[str],
        sublevel: str,
    ):
        self.levels, self.methods, self.fractions, self.replicates = levels, methods, fractions, replicates
        self.gammas, self.splits, self.sublevel = gammas, tuple(splits), sublevel
        self.shape = (len(levels), len(methods), len(fractions), replicates)
        self.pruned = self.nan(2, len(self.splits))  # [metric, split] of m' ⊙ w_L (no retraining)
        self.curves = self.nan(len(gammas), 2, len(self.splits))  # w_L -> the retrained network
        self.density, self.projection, self.rewind_distance = self.nan(), self.nan(), self.nan()
        self.mask_seed = np.full(self.shape, -1, dtype=np.int64)
        self.reused, self.diverged = np.zeros(self.shape, dtype=np.int8), np.zeros(self.shape, dtype=np.int8)
        self.ran = np.zeros(self.shape, dtype=bool)
        self.level_values = np.empty((len(levels), 2, len(self.splits)))  # [metric, split] of w_L
        self.masks: dict[tuple[int, int, int, int], M.Mask] = {}  # every cell's m'
        self.reusable: dict[tuple[int, int, int, int], int] = {}  # cells whose m' is the run's m_L+1
        self.results: dict[tuple[int, int, int, int], nn.Module | None] = {}  # retrained (None: diverged)
        n = len(fractions) + 1  # brackets in grid steps: p = k / n, k = 0 … n
        self.lo = {b: 0 for b in self.brackets()}
        self.hi = {b: n for b in self.brackets()}
        self.trainings = 0

    def nan(self, *extra: int) -> np.ndarray:
        return np.full(self.shape + extra, np.nan)

    def masks_of(self, method: str) -> range:
        """The mask replicates of ``method`` (magnitude pruning is deterministic: replicate 0 only)."""
        return range(self.replicates if method != "magnitude" else 1)

    def brackets(self):
        """``(level index, method index, replicate)`` of every bisection."""
        for i in range(len(self.levels)):
            for a, method in enumerate(self.methods):
                for r in self.masks_of(method):
                    yield i, a, r

    def cells(self, i: int):
        """``(cell, method, fraction, replicate)`` of level index ``i``, every grid fraction."""
        for a, method in enumerate(self.methods):
            for b, p in enumerate(self.fractions):
                for r in self.masks_of(method):
                    yield (i, a, b, r), method, p, r


def _prune_all(run, sweep: _Sweep, ev: PathEvaluator, bn_mode: str, progress: bool) -> None:
    """Prune every level's ``w_L`` into each cell's mask ``m'`` and evaluate ``m' ⊙ w_L`` (no retraining)."""
    rewind_w = dict(run.rewind_model().named_parameters())
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
            sweep.masks[idx] = mask
            if method == "magnitude" and nxt is not None and _same_mask(mask, nxt):
                sweep.reusable[idx] = level + 1


def _plan_round(run, sweep: _Sweep) -> list[tuple[tuple[int, int, int, int], TrainJob]]:
    """The retrainings of one bisection step: each bracket's midpoint (the run's ``w_{L+1}`` where ``m'`` is
    the run's own ``m_{L+1}``)."""
    rewind = run.rewind_model()
    jobs = []
    for i, a, r in sweep.brackets():
        mid = (sweep.lo[i, a, r] + sweep.hi[i, a, r]) // 2
        idx = (i, a, mid - 1, r)
        if idx in sweep.reusable:
            sweep.results[idx] = run.solution(sweep.reusable[idx])
            sweep.reused[idx] = 1
            continue
        level, method, p = sweep.levels[i], sweep.methods[a], sweep.fractions[mid - 1]
        start = copy.deepcopy(rewind)
        M.apply_mask(start, sweep.masks[idx])
        jobs.append((idx, TrainJob(f"L{level:02d}_{method}_p{p:g}_r{r}", start, sweep.masks[idx], run.seeds)))
    sweep.trainings += len(jobs)
    return jobs


def _evaluate_round(run, sweep: _Sweep, ev: PathEvaluator, bn_mode: str) -> None:
    """Error and loss along ``w_L → retrained`` for the cells retrained in this step."""
    solutions: dict[int, tuple] = {}
    for idx, model in sorted(sweep.results.items()):
        if sweep.ran[idx]:  # evaluated in an earlier step
            continue
        sweep.ran[idx] = True
        if model is None:
            sweep.diverged[idx] = 1
            continue
        level = sweep.levels[idx[0]]
        if level not in solutions:
            solutions[level] = (run.solution(level).eval(), run.mask(level))
        wl, ml = solutions[level]
        sweep.curves[idx] = ev.curve(wl, model.eval(), sweep.gammas, (bn_mode,), ml, key_a=level)[0]


def _headline(sweep: _Sweep, epsilon: float) -> np.ndarray:
    """The headline criterion of every cell (NaN where it did not run; a diverged retraining fails)."""
    s = sweep.splits.index(sweep.sublevel)
    after = sweep.curves[..., -1, 1, s]
    level_loss = sweep.level_values[:, 1, s][:, None, None, None]
    b = barrier(sweep.curves[..., 1, s], sweep.gammas, axis=-1)
    with np.errstate(invalid="ignore"):
        ok = (after <= level_loss + epsilon) & (b <= epsilon)
    return np.where(sweep.ran, ok, np.nan)


def _bisect(sweep: _Sweep, epsilon: float) -> None:
    """Move every bracket to the half whose ends disagree under the headline criterion."""
    success = _headline(sweep, epsilon)
    for i, a, r in sweep.brackets():
        mid = (sweep.lo[i, a, r] + sweep.hi[i, a, r]) // 2
        if success[i, a, mid - 1, r] == 1.0:
            sweep.lo[i, a, r] = mid
        else:
            sweep.hi[i, a, r] = mid


def _judge(
    sweep: _Sweep, dense_test: float, epsilon: float, eps_match: float, eps_barrier: float
) -> dict[str, np.ndarray]:
    """Barriers, the three criteria of every cell and their ``p*`` (NaN where a cell did not run)."""
    t = sweep.splits.index("test")
    after = sweep.curves[..., -1, :, :]
    b_err = barrier(sweep.curves[..., 0, :], sweep.gammas, axis=-2)
    b_loss = barrier(sweep.curves[..., 1, :], sweep.gammas, axis=-2)
    tie = 1e-9  # errors are multiples of 1/n: a value on the threshold counts as within it despite rounding
    with np.errstate(invalid="ignore"):  # a diverged retraining (NaN) is neither matching nor connected
        is_matching = after[..., 0, t] <= dense_test + eps_match + tie
        is_connected = b_err[..., t] <= eps_barrier + tie
    out = {
        "after": after,
        "barrier_error": b_err,
        "barrier_loss": b_loss,
        "matching": np.where(sweep.ran, is_matching, np.nan),
        "connected": np.where(sweep.ran, is_connected, np.nan),
        "success": _headline(sweep, epsilon),
        "success_matching": np.where(sweep.ran, is_matching & is_connected, np.nan),
        "success_connected": np.where(sweep.ran, is_connected, np.nan),
    }
    for crit, name in P_STAR_OF.items():
        out[name] = empirical_p_star(sweep.fractions, out[crit], axis=2)
    return out


def _dataset(run, sweep: _Sweep, dense_test: float, epsilon: float, eps_match: float, eps_barrier: float) -> xr.Dataset:
    """E6's result dataset (without provenance)."""
    j = _judge(sweep, dense_test, epsilon, eps_match, eps_barrier)
    keep = [sweep.splits.index(s) for s in ("test", "train")]  # the stored splits (E5's subset separately)
    sub = sweep.splits.index(sweep.sublevel)
    curves = sweep.curves[..., keep]
    dims = ("seed", "level", "prune_method", "fraction", "replicate")
    sd, cd = dims + ("split",), dims + ("gamma", "split")
    pdims = ("seed", "level", "prune_method", "replicate")
    frac, nats = {"units": "fraction"}, {"units": "nats"}
    flag = "1/0; NaN: not evaluated"
    variables = {
        "pruned_error": (
            sd,
            sweep.pruned[None, ..., 0, keep],
            {"description": "error of m' * w_L (no retraining)", **frac},
        ),
        "pruned_loss": (
            sd,
            sweep.pruned[None, ..., 1, keep],
            {"description": "loss of m' * w_L (no retraining)", **nats},
        ),
        "error": (
            sd,
            j["after"][None, ..., 0, keep],
            {"description": "error after rewinding to m' * w_t and retraining", **frac},
        ),
        "loss": (
            sd,
            j["after"][None, ..., 1, keep],
            {"description": "loss after rewinding to m' * w_t and retraining", **nats},
        ),
        "barrier_error": (
            sd,
            j["barrier_error"][None][..., keep],
            {"description": "B(w_L, retrained) of the error curve", **frac},
        ),
        "barrier_loss": (
            sd,
            j["barrier_loss"][None][..., keep],
            {"description": "B(w_L, retrained) of the loss curve", **nats},
        ),
        "error_curve": (cd, curves[None, ..., 0, :], {"description": "error along (1-γ) w_L + γ retrained", **frac}),
        "loss_curve": (cd, curves[None, ..., 1, :], {"description": "loss along (1-γ) w_L + γ retrained", **nats}),
        "sublevel_loss": (
            dims,
            j["after"][None, ..., 1, sub],
            {"description": "L(w'): train loss on E5's examples", **nats},
        ),
        "sublevel_barrier": (
            dims,
            j["barrier_loss"][None, ..., sub],
            {"description": "loss barrier of w_L -> w' on E5's examples", **nats},
        ),
        "sublevel_path_excess": (
            dims,
            (np.max(sweep.curves[..., 1, sub], axis=-1) - sweep.level_values[:, 1, sub][:, None, None, None])[None],
            {
                "description": "max over the path w_L -> w' of L - L(w_L) on E5's examples (<= epsilon: the whole path "
                "inside the sublevel set; not the headline criterion, stored for comparison)",
                **nats,
            },
        ),
        "success": (
            dims,
            j["success"][None],
            {"description": f"headline ({flag}): {CRITERIA['success']}, epsilon {epsilon:g}"},
        ),
        "success_matching": (
            dims,
            j["success_matching"][None],
            {"description": f"secondary ({flag}): {CRITERIA['success_matching']}"},
        ),
        "success_connected": (
            dims,
            j["success_connected"][None],
            {"description": f"secondary ({flag}): {CRITERIA['success_connected']}"},
        ),
        "matching": (dims, j["matching"][None], {"description": f"1 if test error <= dense + eps_match ({eps_match})"}),
        "connected": (
            dims,
            j["connected"][None],
            {"description": f"1 if test-error barrier <= eps_barrier ({eps_barrier})"},
        ),
        "p_star": (
            pdims,
            j["p_star"][None],
            {"description": "largest p that succeeded under the headline criterion (bisection; 0: none)", **frac},
        ),
        "p_star_matching": (
            pdims,
            j["p_star_matching"][None],
            {"description": "largest evaluated p that succeeded under success_matching", **frac},
        ),
        "p_star_connected": (
            pdims,
            j["p_star_connected"][None],
            {"description": "largest evaluated p that succeeded under success_connected", **frac},
        ),
        "density": (dims, sweep.density[None], {"description": "density of the pruned mask m'", **frac}),
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
            sweep.level_values[None, :, 0][..., keep],
            {"description": "error of the IMP solution w_L", **frac},
        ),
        "level_loss": (
            ("seed", "level", "split"),
            sweep.level_values[None, :, 1][..., keep],
            {"description": "loss of the IMP solution w_L", **nats},
        ),
        "level_sublevel_loss": (
            ("seed", "level"),
            sweep.level_values[None, :, 1, sub],
            {"description": "L(w_L): train loss on E5's examples", **nats},
        ),
        "dense_test_error": (
            ("seed",),
            [dense_test],
            {"description": "test error of the run's dense level-0 solution", **frac},
        ),
    }
    ds = xr.Dataset(
        variables,
        coords={
            "seed": [run.seed],
            "level": sweep.levels,
            "prune_method": list(sweep.methods),
            "fraction": sweep.fractions,
            "replicate": np.arange(sweep.replicates),
            "gamma": sweep.gammas,
            "split": ["test", "train"],
        },
    )
    ds["fraction"].attrs["description"] = "p: fraction of the surviving weights of w_L pruned at once (k / 2^steps)"
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
