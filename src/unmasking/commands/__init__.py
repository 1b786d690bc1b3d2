"""The ``unmasking`` command: thin wrappers around the Python API, one module per group of commands.

- :mod:`.runs`: ``recipes``, ``train``, ``pretrain``, ``train-level``, ``prune``, ``imp``,
  ``summarize``, ``combine`` (IMP runs and their results);
- :mod:`.analyses`: one command per analysis of the registry (``interpolation`` ... ``landscape``),
  its flags generated from the analysis' settings dataclass (:mod:`.flags`);
- :mod:`.figures`: ``figure`` and ``claims``.  These import neither torch nor the science modules,
  and :func:`main` builds only their parser for them, so the workflow's many small plotting jobs
  start in a fraction of the time.

The user's errors (a bad option or config key, a missing or corrupt file, a diverged training)
are printed as one line, ``unmasking COMMAND: error: ...``, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..foundations.hparams import ConfigError
from ..foundations.registry import ANALYSES
from .runs import COMMANDS as RUN_COMMANDS

__all__ = ["LIGHT_COMMANDS", "build_parser", "main"]

# Commands that need no torch: with these, only their module's parser is built.
LIGHT_COMMANDS = ("figure", "claims")


def expected_errors(light: bool) -> tuple[type[Exception], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    if light:
        return ConfigError, FileNotFoundError
    from ..foundations.checkpoints import CorruptCheckpointError
    from ..foundations.datasets import DataMissingError
    from ..training import TrainingDiverged

    return ConfigError, DataMissingError, CorruptCheckpointError, TrainingDiverged, FileNotFoundError


def build_parser(light: bool = False, command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``light`` only the torch-free commands; with ``command`` only the parser of
    that command's group (the run commands, or that one analysis). Each analysis command's flags come
    from its module, and importing all of them (scipy.stats, the retraining machinery) would cost every
    short workflow job seconds."""
    from . import figures, runs

    parser = argparse.ArgumentParser(prog="unmasking", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    if not light and command not in ANALYSES:
        runs.register(sub)
    if not light and command not in runs.COMMANDS:
        from . import analyses

        analyses.register(sub, only=command if command in ANALYSES else None)
    if command is None or light:
        figures.register(sub)
    return parser


# Analysis commands of earlier versions (they now carry their experiment's name): a clear error, no alias.
RENAMED = {
    "interpolate": "interpolation",
    "perturb": "perturbation",
    "pruning-theory": "pruning_theory",
    "pruning-ratio": "pruning_ratio",
    "small-weights": "small_weights",
}


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv`` without the program name; default: ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in RENAMED:
        print(
            f"unmasking: error: the command {argv[0]!r} is now {RENAMED[argv[0]]!r} (analysis commands carry "
            f"their experiment's name; docs/architecture.md)",
            file=sys.stderr,
        )
        return 2
    light = bool(argv) and argv[0] in LIGHT_COMMANDS
    known = argv[0] if argv and not light and argv[0] in (*ANALYSES, *RUN_COMMANDS) else None
    args = build_parser(light, known).parse_args(argv)
    try:
        args.func(args)
    except expected_errors(light) as e:
        print(f"unmasking {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
