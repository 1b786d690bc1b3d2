"""The analysis commands (E2–E9), generated from the registry: one subcommand per experiment in
:data:`~unmasking.foundations.registry.ANALYSES`, named exactly as the experiment
(``unmasking pruning_ratio``).

Each takes ``--run``, ``--levels``, ``--out``, ``--device`` and ``--quiet``; the flags generated
from its module's settings dataclass (``SETTINGS``, see :mod:`.flags`); ``--models-at-once`` and
``--compile`` where the experiment retrains networks (``Experiment.retrains``); and ``--hessian``
where it reads E4's output.  It opens the run, calls the module's ``analyse(run, levels, settings,
...)``, writes the dataset, prints a line per level and where the file went.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..foundations.identity import check_identity
from ..foundations.memory import keep_freed_memory
from ..foundations.netcdf import load_dataset, write_dataset
from ..foundations.registry import ANALYSES, EXPERIMENTS, Experiment
from ..imp import ImpRun
from .flags import add_common_flags, add_expect_flags, add_settings_flags, settings_from_args

__all__ = ["COMMANDS", "register"]


# --- what each command prints: a line per level ---------------------------------------------------------------------


def _interpolation(ds, settings) -> Iterator[str]:
    for level in ds.level.values:
        b = ds.barrier_error.sel(level=level, split="test", bn_mode=ds.bn_mode.values[0]).isel(seed=0)
        yield (
            f"level {level:2d}  B_test(w_L, w_L+1) {float(b.sel(pair='successive')):.4f}  "
            f"B_test(w_0, w_L) {float(b.sel(pair='dense')):.4f}"
        )


def _perturbation(ds, settings) -> Iterator[str]:
    mean = ds.barrier_error.sel(split="test").isel(seed=0).mean("replicate")
    for level in ds.level.values:
        row = "  ".join(f"c={c:g}: {float(mean.sel(level=level, strength=c)):.4f}" for c in ds.strength.values)
        yield f"level {level:2d}  mean B_test(w_L, u'_trained)  {row}"


def _hessian(ds, settings) -> Iterator[str]:
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        yield (
            f"level {level:2d}  D_L {int(r.num_weights):7d}  top eigenvalue {float(r.top_eigenvalues[0]):.4g}  "
            f"trace {float(r.trace):.4g} ± {float(r.trace_std):.2g}"
        )


def _pruning_theory(ds, settings) -> Iterator[str]:
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        row = "  ".join(
            f"{m}: {float(r.p_star.sel(prune_method=m)):.3f} "
            f"[ε band {float(r.p_star_low.sel(prune_method=m)):.3f}, "
            f"{float(r.p_star_high.sel(prune_method=m)):.3f}]"
            for m in ds.prune_method.values
        )
        yield f"level {level:2d}  p*  {row}"


def _pruning_ratio(ds, settings) -> Iterator[str]:
    ps = ds.p_star.isel(seed=0).mean("replicate")
    pm = ds.p_star_matching.isel(seed=0).mean("replicate")
    yield "p*: headline (train-loss sublevel set of w_L), in brackets the test-matching criterion"
    for level in ds.level.values:
        row = "  ".join(
            f"{m}: {float(ps.sel(level=level, prune_method=m)):.2f} ({float(pm.sel(level=level, prune_method=m)):.2f})"
            for m in ds.prune_method.values
        )
        yield f"level {level:2d}  p*  {row}"


def _flatness(ds, settings) -> Iterator[str]:
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        rows = "  ".join(
            f"{m} {float(r.curvature_random_mean.sel(prune_method=m)):.4g} "
            f"± {float(r.curvature_random_std.sel(prune_method=m)):.2g}"
            for m in ds.prune_method.values
        )
        yield (
            f"level {level:2d}  q'Hq magnitude {float(r.curvature_magnitude):.4g}  {rows}  "
            f"tr(H)/D_L {float(r.average_curvature):.4g}"
        )


def _small_weights(ds, settings) -> Iterator[str]:
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        yield (
            f"level {level:2d}  threshold {float(r.next_threshold):.3g}  R_L {float(r.projection_length):.3g}  "
            f"R_L+1 {float(r.next_projection_length):.3g}  one-shot {float(r.oneshot_projection_length):.3g}  "
            f"overlap {float(r.overlap):.3f} (chance {float(r.chance_overlap):.3f})"
        )


def _landscape(ds, settings) -> Iterator[str]:
    split = settings.splits[0]
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        e, g = r[f"point_{split}_error"].values, r[f"{split}_error"]
        yield (
            f"level {level:2d}  {split} error w_L {e[0]:.4f}  projection {e[1]:.4f}  w_L+1 {e[2]:.4f}  "
            f"grid min/max {float(g.min()):.4f}/{float(g.max()):.4f}"
        )


# --- the commands --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """What an analysis command has beyond the common flags and its settings."""

    summary: Callable  # (dataset, settings) -> the lines printed before "wrote OUT"
    levels: str = "levels to analyse"  # help of --levels
    all_levels: bool = False  # --levels may be left out: every level of the --hessian file
    hessian: str | None = None  # help of --hessian (E4's output, passed as `hessian=`); None: no such flag
    needs_hessian: bool = False  # --hessian is required
    keep_freed_memory: bool = False  # many large Hessian-vector products: see foundations.memory
    timed: bool = False  # also print the seconds per level


COMMANDS: dict[str, Command] = {
    "interpolation": Command(_interpolation, levels="levels to interpolate (w_L to w_L+1, and w_0 to w_L)"),
    "perturbation": Command(_perturbation, levels="levels to perturb"),
    "hessian": Command(_hessian, keep_freed_memory=True),
    "pruning_theory": Command(
        _pruning_theory,
        levels="levels (default: every level of the --hessian file)",
        all_levels=True,
        needs_hessian=True,
        hessian="E4 output (unmasking hessian) for the same run and levels",
    ),
    "pruning_ratio": Command(_pruning_ratio, levels="levels to prune"),
    "flatness": Command(
        _flatness,
        keep_freed_memory=True,
        hessian="E4 output for the same run and levels: read tr(H) from it instead of estimating it, "
        "and take its data subset (size and seed) unless --subset-size/--seed are given",
    ),
    "small_weights": Command(_small_weights, levels="levels L to analyse"),
    "landscape": Command(_landscape, levels="levels L (each needs level L+1 trained)", timed=True),
}


def _add_command(sub, experiment: Experiment, command: Command) -> None:
    module = importlib.import_module(experiment.module)
    p = sub.add_parser(
        experiment.name, help=f"{experiment.id}: {experiment.title}", description=module.__doc__.splitlines()[0]
    )
    p.add_argument("--run", required=True, help="a finished IMP run folder")
    p.add_argument("--levels", type=int, nargs="+", required=not command.all_levels, default=None, help=command.levels)
    p.add_argument("--out", required=True, help="output netCDF file")
    add_expect_flags(p)
    if command.hessian is not None:
        p.add_argument("--hessian", required=command.needs_hessian, default=None, help=command.hessian)
    add_settings_flags(p, module.SETTINGS)
    if experiment.retrains:
        p.add_argument(
            "--models-at-once",
            type=int,
            default=1,
            help="train this many networks together (unmasking.multitrain; 1: one at a time)",
        )
        p.add_argument("--compile", action="store_true", help="torch.compile the K-model training step")
    add_common_flags(p)
    p.set_defaults(func=functools.partial(run_command, experiment=experiment, command=command, module=module))


def check_hessian(path: str, ds, run: ImpRun) -> None:
    """Refuse a --hessian file that is not E4's output for this run (experiment, recipe hash, seed)."""
    held = {
        "experiment": ds.attrs.get("experiment"),
        "recipe_hash": ds.attrs.get("config_hash"),
        "seed": int(ds.seed.values[0]) if "seed" in ds.coords and ds.sizes.get("seed") == 1 else None,
    }
    expect = {"experiment": "E4_hessian", "recipe_hash": run.recipe.hash(), "seed": run.seed}
    check_identity(path, held, expect, f"pass the E4 output (unmasking hessian) of the run {run.root}")


def run_command(args: argparse.Namespace, experiment: Experiment, command: Command, module) -> None:
    """Open the run, analyse it, write the dataset and print the summary."""
    settings = settings_from_args(module.SETTINGS, args)
    if command.keep_freed_memory:
        keep_freed_memory()
    run = ImpRun.open(args.run, args.expect_seed, args.expect_hash, device=args.device, progress=not args.quiet)
    inputs = {}
    if command.hessian is not None:
        inputs["hessian"] = load_dataset(args.hessian) if args.hessian else None
        if args.hessian:
            check_hessian(args.hessian, inputs["hessian"], run)
    from ..analyses.retraining import scratch_for

    scratch = scratch_for(args.out) if experiment.retrains else None  # kept finished trainings (a rerun resumes)
    if experiment.retrains:
        inputs.update(scratch=scratch, models_at_once=args.models_at_once, compile=args.compile)
    start = time.perf_counter()
    ds = module.analyse(run, args.levels, settings, **inputs)
    elapsed = time.perf_counter() - start
    out = write_dataset(ds, Path(args.out))
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    for line in command.summary(ds, settings):
        print(line)
    if command.timed:
        print(f"{elapsed / len(ds.level):.1f} s per level")
    print(f"wrote {out}")


def register(sub, only: str | None = None) -> None:
    """Add one subcommand per analysis of the registry (or only the analysis ``only``) to the
    ``unmasking`` subparsers ``sub``."""
    for name in ANALYSES if only is None else [only]:
        _add_command(sub, EXPERIMENTS[name], COMMANDS[name])
