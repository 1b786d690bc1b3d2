"""Result files to ``{experiment: dataset}``: the inputs of the figures and of the claims report.

Inputs are aggregated datasets (``results/<config>/<arch>/<experiment>.nc``) or single-run
outputs; the experiment a file holds is read from its attributes (names from the registry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import xarray as xr

from ..foundations.hparams import ConfigError
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


def load_inputs(paths: Iterable[str | Path]) -> dict[str, xr.Dataset]:
    """Load result files into ``{experiment: dataset}``; several files of one experiment (several
    architectures, or single runs) are combined along their coordinates."""
    groups: dict[str, list[xr.Dataset]] = {}
    for path in paths:
        ds = load_dataset(path)
        groups.setdefault(experiment_of(ds, path), []).append(standardize(ds))
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
