"""The figures and the claims report (SPEC §4): ``unmasking figure`` and ``unmasking claims``.

    unmasking figure fig2_imp_connectivity --inputs results/embedded/cnn/imp.nc \\
        results/embedded/cnn/interpolation.nc --out figures/embedded/cnn/fig2_imp_connectivity [--split train]
    unmasking claims --inputs results/embedded/*/*.nc --out-json figures/embedded/claims.json \\
        --out-md figures/embedded/claims.md

Inputs are aggregated datasets (``results/<config>/<arch>/<experiment>.nc``) or single-run
outputs; the experiment of each file is read from its attributes.  ``--out`` is a path
without extension: the figure is written as ``OUT.pdf`` and ``OUT.png``.  Neither command
imports torch or the science modules, so the workflow's many plotting jobs start quickly.
"""

from __future__ import annotations

from ..foundations.hparams import ConfigError
from ..foundations.registry import FIGURES
from .flags import add_settings_flags, settings_from_args

__all__ = ["register"]

FIGURE_OPTIONS = ("split", "levels", "rewind_step", "seed", "bn_mode", "arch", "eps_barrier", "match_floor")


def cmd_figure(args) -> None:
    from ..figures import figure_module, make_figure

    module = figure_module(args.figure)
    if args.split not in module.SPLITS:
        raise ConfigError(f"{args.figure} has no {args.split} variant (it has {', '.join(module.SPLITS)})")
    options = {k: getattr(args, k) for k in FIGURE_OPTIONS}
    for path in make_figure(args.figure, args.inputs, args.out, args.config_name, **options):
        print(f"wrote {path}")


def cmd_claims(args) -> None:
    from .. import claims

    th = settings_from_args(claims.Thresholds, args).check()
    rep = claims.main(args.inputs, args.out_json, args.out_md, args.out_html, th, args.config_name)
    print(claims.to_markdown(rep))
    for path in (args.out_json, args.out_md, args.out_html):
        if path:
            print(f"wrote {path}")


def register(sub) -> None:
    """Add ``figure`` and ``claims`` to the ``unmasking`` subparsers ``sub``."""
    from ..claims import Thresholds

    p = sub.add_parser(
        "figure",
        help="render one of the paper's figures (PDF and PNG) from result files",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("figure", choices=list(FIGURES), help="figure id")
    p.add_argument("--inputs", nargs="+", required=True, help="result files (aggregated or single-run netCDF)")
    p.add_argument("--out", required=True, help="output path without extension (writes OUT.pdf and OUT.png)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="error shown (train: the variant)")
    p.add_argument("--arch", default=None, help="architecture (needed when the inputs hold several)")
    p.add_argument(
        "--rewind-step",
        type=int,
        default=None,
        help="rewind step shown (default: the largest in the inputs; fig2 shows all)",
    )
    p.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=None,
        help="levels shown in the per-level panels (default: a few spread over the levels)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the landscape (fig1; default: the first)")
    p.add_argument(
        "--config-name",
        default=None,
        help="refuse aggregates of another workflow configuration (the workflow passes it)",
    )
    p.add_argument(
        "--bn-mode",
        choices=["interpolate", "reset"],
        default=None,
        help="BatchNorm mode of the E2 curves (fig3; default: the first in the data)",
    )
    add_settings_flags(p, Thresholds, only=("eps_barrier", "match_floor"))
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser(
        "claims",
        help="evaluate the paper's four claims on result files (JSON, Markdown)",
        description="The claims report (SPEC §1, §4); prints the Markdown table.",
    )
    p.add_argument("--inputs", nargs="+", required=True, help="result files of every architecture")
    p.add_argument("--out-json", required=True, help="machine-readable report")
    p.add_argument("--out-md", default=None, help="Markdown table")
    p.add_argument("--out-html", default=None, help="HTML table (for snakemake --report)")
    p.add_argument(
        "--config-name", default="", help="workflow configuration (recorded; aggregates of another are refused)"
    )
    add_settings_flags(p, Thresholds)
    p.set_defaults(func=cmd_claims)
