"""Result files to ``{experiment: dataset}``: the inputs of the figures and of the claims report.

Inputs are aggregated datasets (``results/<config>/<arch>/<experiment>.nc``) or single-run
outputs; the experiment a file holds is read from its attributes (names from the registry).  A file
named after one experiment that holds another, or an aggregate of another workflow configuration or
architecture than the one asked for, is refused (:class:`~unmasking.foundations.identity.IdentityError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import xarray as xr

from ..foundations.hparams import ConfigError
from ..foundations.identity import check_identity
from ..foundations.netcdf import combine, load_dataset
from ..foundations.registry import EXPERIMENTS, experiment_from_label
from .selection import standardize


def experiment_of(ds: xr.Dataset, path: str | Path | None = None) -> str:
    """The experiment a dataset holds (``imp``, ``interpolation``, …): from the aggregate's
    ``experiment_name``, a run output's ``experiment`` (``E2_interpolation``) or the file name."""
    name = str(ds.attrs.get("experiment_name", ""))
    if name in EXPERIMENTS:
        return name
    labelled = experiment_from_label(str(ds.attrs.get("experiment", "")))
    if labelled is not None:
        return labelled.name
    if path is not None and Path(path).stem in EXPERIMENTS:
        return Path(path).stem
    raise ConfigError(
        f"cannot tell which experiment {path or 'a dataset'} holds: it has no experiment_name/"
        f"experiment attribute and its file name is not one of {', '.join(EXPERIMENTS)}.nc"
    )


REGENERATE = "it is not this file's result: delete it and run snakemake again, which regenerates it"


def check_input(path: str | Path, ds: xr.Dataset, config_name: str | None = None, arch: str | None = None) -> str:
    """The experiment ``path`` holds, after refusing a file that is not what its place says: a file
    named ``<experiment>.nc`` holding another experiment, and (with ``config_name``, as the workflow
    calls it) an aggregate of another workflow configuration or of another architecture than ``arch``."""
    exp = experiment_of(ds, path)
    held = {"experiment": exp, "workflow_config": ds.attrs.get("workflow_config"), "arch": ds.attrs.get("arch_name")}
    expect = {}
    if Path(path).stem in EXPERIMENTS:
        expect["experiment"] = Path(path).stem
    if config_name and held["workflow_config"] is not None:
        expect["workflow_config"] = config_name
    if config_name and arch and held["arch"] is not None:  # the workflow's figure of one architecture
        expect["arch"] = arch
    check_identity(path, held, expect, REGENERATE)
    return exp


def load_inputs(
    paths: Iterable[str | Path], config_name: str | None = None, arch: str | None = None
) -> dict[str, xr.Dataset]:
    """Load result files into ``{experiment: dataset}``; several files of one experiment (several
    architectures, or single runs) are combined along their coordinates.  Each file is checked by
    :func:`check_input` (``config_name``, ``arch``: what the aggregates must belong to, when given)."""
    groups: dict[str, list[xr.Dataset]] = {}
    for path in paths:
        ds = load_dataset(path)
        groups.setdefault(check_input(path, ds, config_name, arch), []).append(standardize(ds))
    out = {}
    for exp, items in groups.items():
        if len(items) == 1:
            out[exp] = items[0]
            continue
        try:
            out[exp] = combine(items, data_vars="minimal")
        except ValueError as e:
            raise ConfigError(f"the {exp} inputs do not combine (overlapping runs?): {e}") from None
    return out
