"""The commands that make and summarize IMP runs: ``recipes``, ``train``, ``pretrain``,
``train-level``, ``prune``, ``imp``, ``summarize`` and ``combine``.

Every command that trains takes a recipe (``--recipe``), an optional YAML file of overrides
(``--config``) and ``key=value`` overrides (``--set train.lr=0.05``), and prints where its outputs
went.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..foundations.hparams import ConfigError, Recipe, valid_keys
from ..foundations.recipes import build_recipe
from .flags import add_common_flags, add_expect_flags

__all__ = ["open_run", "register"]


def add_recipe_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--recipe", required=required, help="named recipe (see `unmasking recipes`)")
    p.add_argument("--config", help="YAML file of overrides (nested or dotted keys)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. train.lr=0.05")


def recipe_from_args(args) -> Recipe:
    return build_recipe(args.recipe, args.config, args.set)


def open_run(args):
    """An :class:`ImpRun` from ``--run`` (and the recipe options when creating it)."""
    from ..imp import ImpRun

    kw = dict(device=args.device, progress=not args.quiet, compile=args.compile_imp)
    if args.recipe:
        return ImpRun(recipe_from_args(args), args.seed, Path(args.run), **kw)
    return ImpRun.open(args.run, args.expect_seed, args.expect_hash, **kw)


def _run_parser(sub, name: str, help: str, create: bool = False) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--run", required=True, help="run folder (created by `pretrain`/`imp`)")
    if create:
        add_recipe_args(p)
        p.add_argument("--seed", type=int, default=0, help="run seed (init, data order, augmentation)")
    else:
        add_recipe_args(p, required=False)
        p.add_argument("--seed", type=int, default=0, help="run seed, when --recipe creates the run")
        add_expect_flags(p)
    p.add_argument(
        "--compile",
        dest="compile_imp",
        action="store_true",
        help="train through torch.compile (unmasking.multitrain; ~1.6x faster for the mnist1d CNN on "
        "a CPU core; deterministic, but not bitwise equal to eager training)",
    )
    add_common_flags(p)
    return p


def cmd_recipes(args) -> None:
    from ..foundations.recipes import RECIPES

    for name, r in RECIPES.items():
        print(
            f"{name:20s} data={r.data.name:9s} model={r.model.name:9s} steps={r.train.steps:<7d} "
            f"batch={r.train.batch_size:<5d} lr={r.train.lr:g} rewind={r.prune.rewind_step}"
        )
    print("\noverridable keys: " + ", ".join(valid_keys()))


def cmd_train(args) -> None:
    """Train a dense network for the full schedule and report its errors."""
    run = open_run(args)
    run.pretrain()
    metrics = run.train_level(0)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    print(f"wrote {run.final_path(0)} and {run.metrics_path(0)}")


def cmd_pretrain(args) -> None:
    run = open_run(args)
    print(f"wrote {run.pretrain()}")


def cmd_train_level(args) -> None:
    run = open_run(args)
    m = run.train_level(args.level)
    print(
        f"level {args.level}: test error {m['test_error']:.4f}, density {m['density']:.4f}; "
        f"wrote {run.final_path(args.level)}"
    )


def cmd_prune(args) -> None:
    from .. import masks as M

    run = open_run(args)
    mask = run.prune(args.level)
    print(f"density {M.density(mask):.4f}; wrote {run.mask_path(args.level + 1)}")


def cmd_imp(args) -> None:
    from ..foundations.netcdf import write_dataset

    run = open_run(args)
    ds = run.run(args.levels)
    out = write_dataset(ds, Path(args.out) if args.out else run.root / "imp.nc")
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        print(
            f"level {level:2d}  density {float(r.density):.4f}  test error {float(r.test_error):.4f}  "
            f"train error {float(r.train_error):.4f}"
        )
    print(f"wrote {out}")


def cmd_summarize(args) -> None:
    from ..foundations.netcdf import write_dataset

    run = open_run(args)
    print(f"wrote {write_dataset(run.summary(args.levels), args.out)}")


IDENTITY_ATTRS = {"experiment": "experiments", "config_hash": "recipes (recipe hash)"}


def cmd_combine(args) -> None:
    from ..foundations.netcdf import combine, load_dataset, write_dataset

    datasets = [load_dataset(p) for p in args.inputs]
    if not args.allow_mixed:
        for attr, what in IDENTITY_ATTRS.items():
            held = {str(p): ds.attrs.get(attr, "?") for p, ds in zip(args.inputs, datasets)}
            if len(set(held.values())) > 1:
                listed = ", ".join(f"{p} {v}" for p, v in held.items())
                raise ConfigError(
                    f"the inputs hold different {what}: {listed}; combine the files of one experiment and one "
                    f"recipe (or pass --allow-mixed to merge them anyway, dropping the differing labels)"
                )
    try:
        combined = combine(datasets)
    except ValueError as e:  # the same run twice, an aggregate with a per-run file, files without shared coordinates
        raise ConfigError(
            f"the inputs do not combine ({str(e).splitlines()[0][:160]}): combine per-run files of different runs, "
            f"or aggregates of different architectures or configurations, not the same run twice or a mix of both"
        ) from None
    print(f"wrote {write_dataset(combined, args.out)}")


# The commands :func:`register` adds (``main`` builds only these parsers for them).
COMMANDS = ("recipes", "train", "pretrain", "train-level", "prune", "imp", "summarize", "combine")


def register(sub) -> None:
    """Add the run commands (:data:`COMMANDS`) to the ``unmasking`` subparsers ``sub``."""
    sub.add_parser("recipes", help="list the named recipes and the overridable keys").set_defaults(func=cmd_recipes)
    _run_parser(sub, "train", "train a dense network (pretrain + level 0)", create=True).set_defaults(func=cmd_train)
    _run_parser(sub, "pretrain", "save w_0 and train the dense net to the rewind step").set_defaults(func=cmd_pretrain)
    p = _run_parser(sub, "train-level", "train level L from the rewind point with mask m_L")
    p.add_argument("--level", type=int, required=True)
    p.set_defaults(func=cmd_train_level)
    p = _run_parser(sub, "prune", "prune the level-L solution into mask m_{L+1}")
    p.add_argument("--level", type=int, required=True)
    p.set_defaults(func=cmd_prune)
    p = _run_parser(sub, "imp", "run IMP (pretrain, then train/prune each level) and write imp.nc")
    p.add_argument("--levels", type=int, default=None, help="last level (default: the recipe's prune.levels)")
    p.add_argument("--out", default=None, help="netCDF output (default: RUN/imp.nc)")
    p.set_defaults(func=cmd_imp)
    p = _run_parser(sub, "summarize", "write the per-level metrics of a run to netCDF")
    p.add_argument("--levels", type=int, default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summarize)
    p = sub.add_parser("combine", help="combine per-job netCDF files along their coordinates")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="merge files of different experiments or recipes (refused by default: their labels are dropped)",
    )
    p.set_defaults(func=cmd_combine)
