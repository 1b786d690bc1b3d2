"""E3 — robustness of the sparse rewind point to perturbation (SPEC §3).

At level ``L``: ``u = m_L ⊙ w_t`` and ``u' = u + c · d_L · g/‖g‖`` with ``g ~ N(0, I)`` on the
support of ``m_L`` (prunable weights only; biases and BatchNorm untouched) and
``d_L = ‖(m_L − m_{L+1}) ⊙ w_t‖`` (the distance between successive pruned rewind points, read
from the run's ``level_{L+1}/prune.json``; for a level with no next mask it is computed by
pruning ``w_L`` by the IMP fraction).  ``u'`` is trained with ``m_L`` on the same schedule from
step ``t`` with a data order of its own per replicate; ``c = 0`` is the SGD-noise baseline.
Reported: ``B(w_L, trained u')`` (test/train error and loss, whole curves), the trained
network's error and loss, ``‖u' − u‖`` and the seeds.

Seeds (recorded): replicate ``r`` at level ``L`` uses noise seed
``derive_seed(run_seed, "perturb-noise", L, r)`` and data order
``run.seeds.with_order(run_seed, "perturb", L, r)`` for every strength, so strengths differ
only in ``c`` (common random numbers).

Trainings go through :func:`~unmasking.analyses.retraining.train_jobs` (``models_at_once``
of them together), which saves each finished network in a scratch folder, so an interrupted
job resumes where it stopped.
"""

from __future__ import annotations

import copy
import math
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
from ..foundations.io import read_json
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
from .retraining import TrainJob, retraining_mode, scratch_folder, train_jobs

DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)
DEFAULT_REPLICATES = 2

__all__ = [
    "DEFAULT_STRENGTHS",
    "PerturbationSettings",
    "analyse",
    "noise_direction",
    "perturb",
    "perturbation_robustness",
    "rewind_distance",
]


@dataclass(frozen=True)
class PerturbationSettings(PathSettings):
    """Options of E3 (the ``perturbation`` command's flags)."""

    strengths: tuple[float, ...] = field(
        default=DEFAULT_STRENGTHS, metadata={"help": "perturbation norms in units of d_L (0: SGD-noise baseline)"}
    )
    replicates: int = field(default=DEFAULT_REPLICATES, metadata={"help": "replicates per strength"})
    bn_mode: str = field(
        default="interpolate", metadata={"help": "BatchNorm handling along the path", "choices": BN_MODES}
    )


# --- the perturbation ---------------------------------------------------------------------------------------------


def rewind_distance(run, level: int) -> tuple[float, bool]:
    """``d_L`` and whether it was computed here (``True``) rather than read from ``level_{L+1}/prune.json``."""
    path = run.level_dir(level + 1) / "prune.json"
    if path.exists():
        return float(read_json(path)["rewind_distance"]), False
    mask = run.mask(level)
    nxt = M.magnitude_prune(dict(run.solution(level).named_parameters()), mask, run.recipe.prune.fraction)
    return M.masked_norm(dict(run.rewind_model().named_parameters()), M.difference(mask, nxt)), True


def noise_direction(mask: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A unit vector ``g/‖g‖`` (float64, on CPU), ``g ~ N(0, I)`` on the support of ``mask``, exact zeros elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    g = {n: torch.randn(m.shape, generator=gen, dtype=torch.float64) * m.cpu() for n, m in mask.items()}
    norm = math.sqrt(sum(float(v.pow(2).sum()) for v in g.values()))
    if norm == 0.0:
        raise ValueError("the mask has no surviving weights to perturb")
    return {n: v / norm for n, v in g.items()}


@torch.no_grad()
def perturb(model: nn.Module, direction: Mapping[str, torch.Tensor], scale: float) -> float:
    """Add ``scale · direction`` to ``model``'s parameters in place; return the realized ``‖u' − u‖`` (float64)."""
    params = dict(model.named_parameters())
    sq = 0.0
    for n, d in direction.items():
        p = params[n]
        new = (p.double() + scale * d.to(p.device)).to(p.dtype)
        sq += float((new.double() - p.double()).pow(2).sum())
        p.copy_(new)
    return math.sqrt(sq)


def _check_strengths(strengths: Sequence[float], replicates: int) -> tuple[np.ndarray, int]:
    s = np.asarray([float(c) for c in strengths])
    if s.ndim != 1 or len(s) == 0 or np.any(s < 0) or len(set(s.tolist())) != len(s):
        raise ConfigError(f"strengths must be distinct non-negative numbers, got {list(strengths)}")
    if replicates < 1:
        raise ConfigError(f"replicates must be >= 1, got {replicates}")
    return s, int(replicates)


def perturbation_robustness(
    run,
    levels: Sequence[int],
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    replicates: int = DEFAULT_REPLICATES,
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
    """E3 on an :class:`~unmasking.imp.ImpRun`; dims ``seed, level, strength, replicate`` (+ ``split``, ``gamma``).

    ``scratch`` keeps finished trainings so a rerun resumes (default: a temporary folder);
    ``models_at_once`` and ``compile``: see :func:`~unmasking.analyses.retraining.train_jobs`.
    """
    levels = _check_levels(run, levels)
    strengths, replicates = _check_strengths(strengths, replicates)
    g = gamma_grid(gammas)
    if bn_mode not in BN_MODES:
        raise ConfigError(f"unknown BatchNorm mode {bn_mode!r}; choose from {BN_MODES}")
    batch_size, bn_batch_size = eval_settings(run, batch_size, bn_batch_size)
    t = run.recipe.prune.rewind_step
    nl, ns = len(levels), len(strengths)
    d = np.empty(nl)
    computed = np.zeros(nl, dtype=np.int8)
    noise_seed = np.empty((nl, replicates), dtype=np.int64)
    order_seed = np.empty((nl, replicates), dtype=np.int64)
    norms = np.empty((nl, ns, replicates))
    jobs: list[TrainJob] = []
    rewind = run.rewind_model()
    for i, level in enumerate(levels):
        mask = run.mask(level)
        d[i], computed[i] = rewind_distance(run, level)
        for r in range(replicates):
            noise_seed[i, r] = derive_seed(run.seed, "perturb-noise", level, r)
            seeds = run.seeds.with_order(run.seed, "perturb", level, r)
            order_seed[i, r] = seeds.order
            direction = noise_direction(mask, int(noise_seed[i, r]))
            for j, c in enumerate(strengths):
                u = copy.deepcopy(rewind)
                M.apply_mask(u, mask)
                norms[i, j, r] = perturb(u, direction, float(c) * d[i])
                jobs.append(TrainJob(f"L{level:02d}_c{c:g}_r{r}", u, mask, seeds))

    with scratch_folder(scratch) as folder:
        trained = train_jobs(
            jobs, run.data, run.recipe.train, t, folder, models_at_once, compile, progress, desc="perturb: train"
        )

    ev = PathEvaluator(run.data, batch_size, bn_batches, bn_batch_size, run.device)
    curves = np.full((nl, ns, replicates, len(g), 2, len(ev.splits)), np.nan)
    level_vals = np.empty((nl, 2, len(ev.splits)))
    it = iter(trained)
    for i, level in enumerate(tqdm(levels, desc="perturb: evaluate", disable=not progress)):
        wl, mask = run.solution(level).eval(), run.mask(level)
        level_vals[i] = ev.endpoint(wl, bn_mode, mask, key=level)
        for r in range(replicates):
            for j in range(ns):
                model = next(it)
                if model is not None:
                    curves[i, j, r] = ev.curve(wl, model.eval(), g, (bn_mode,), mask, key_a=level)[0]
    trained_vals = curves[:, :, :, -1]  # γ = 1: the trained u'

    dims = ("seed", "level", "strength", "replicate")
    sdims = dims + ("split",)
    cdims = dims + ("gamma", "split")
    ds = xr.Dataset(
        {
            "barrier_error": (
                sdims,
                barrier(curves[None, ..., 0, :], g, axis=4),
                {"description": "B(w_L, trained u') of the error curve", "units": "fraction"},
            ),
            "barrier_loss": (
                sdims,
                barrier(curves[None, ..., 1, :], g, axis=4),
                {"description": "B(w_L, trained u') of the loss curve", "units": "nats"},
            ),
            "error": (
                sdims,
                trained_vals[None, ..., 0, :],
                {"description": "0-1 error of the trained u'", "units": "fraction"},
            ),
            "loss": (
                sdims,
                trained_vals[None, ..., 1, :],
                {"description": "mean cross-entropy of the trained u'", "units": "nats"},
            ),
            "error_curve": (
                cdims,
                curves[None, ..., 0, :],
                {"description": "error along (1-γ) w_L + γ trained u'", "units": "fraction"},
            ),
            "loss_curve": (
                cdims,
                curves[None, ..., 1, :],
                {"description": "loss along (1-γ) w_L + γ trained u'", "units": "nats"},
            ),
            "level_error": (
                ("seed", "level", "split"),
                level_vals[None, :, 0],
                {"description": "0-1 error of the IMP solution w_L", "units": "fraction"},
            ),
            "perturbation_norm": (
                dims,
                norms[None],
                {"description": "realized |u' - u| (float64 over the stored weights)", "units": "weight-space L2"},
            ),
            "target_norm": (
                dims[:3],
                (strengths[None, :] * d[:, None])[None],
                {"description": "c * d_L, the intended |u' - u|", "units": "weight-space L2"},
            ),
            "rewind_distance": (
                ("seed", "level"),
                d[None],
                {"description": "d_L = |(m_L - m_L+1) * w_t|", "units": "weight-space L2"},
            ),
            "rewind_distance_computed": (
                ("seed", "level"),
                computed[None],
                {
                    "description": "1: d_L computed by pruning w_L by the IMP fraction (no "
                    "next mask in the run); 0: read from prune.json"
                },
            ),
            "diverged": (
                dims,
                np.array([m is None for m in trained], dtype=np.int8).reshape(1, nl, ns, replicates),
                {"description": "1 where training u' diverged (its values are NaN)"},
            ),
            "noise_seed": (
                ("seed", "level", "replicate"),
                noise_seed[None],
                {"description": "seed of g ~ N(0, I) (torch.Generator, float64 randn per mask tensor)"},
            ),
            "order_seed": (
                ("seed", "level", "replicate"),
                order_seed[None],
                {"description": "data-order seed of the replicate's training"},
            ),
            "density": (
                ("seed", "level"),
                [[M.density(run.mask(lv)) for lv in levels]],
                {"description": "fraction of prunable weights remaining at level L", "units": "fraction"},
            ),
        },
        coords={
            "seed": [run.seed],
            "level": levels,
            "strength": strengths,
            "replicate": np.arange(replicates),
            "gamma": g,
            "split": list(ev.splits),
        },
    )
    ds["strength"].attrs["description"] = "c: perturbation norm in units of d_L (0: SGD-noise baseline)"
    ds.attrs.update(
        run.provenance(
            "E3_perturbation",
            strengths=strengths.tolist(),
            replicates=replicates,
            gammas=list(g),
            bn_mode=bn_mode,
            batch_size=batch_size,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            trainings=len(jobs),
            retraining_mode=retraining_mode(models_at_once, compile, run.device),
        )
    )
    return ds


SETTINGS = PerturbationSettings


def analyse(
    run,
    levels: Sequence[int],
    settings: PerturbationSettings = PerturbationSettings(),
    scratch: str | Path | None = None,
    models_at_once: int = 1,
    compile: bool = False,
) -> xr.Dataset:
    """E3 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``perturbation`` command).

    ``scratch``, ``models_at_once`` and ``compile``: see :func:`perturbation_robustness`.
    """
    return perturbation_robustness(
        run,
        levels,
        **settings_kwargs(settings),
        scratch=scratch,
        models_at_once=models_at_once,
        compile=compile,
        progress=run.progress,
    )
