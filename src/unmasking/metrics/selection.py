"""One architecture and rewind step of an aggregated dataset.

Aggregates (``results/<config>/<arch>/<experiment>.nc``) have the dims ``arch, rewind_step, seed,
level, …``; a single run's output has neither ``arch`` nor ``rewind_step`` and gets them here
(:func:`standardize`), so that both are selected the same way.  Combined aggregates pad the runs
one of them lacks with NaN: a run "has results" where a floating-point variable is finite.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import xarray as xr

from ..foundations.hparams import ConfigError


def standardize(ds: xr.Dataset) -> xr.Dataset:
    """A single run's output with the aggregate's ``arch`` and ``rewind_step`` dimensions (no-op on aggregates)."""
    if "rewind_step" not in ds.dims:
        t = ds.attrs.get("rewind_step", ds.coords["rewind_step"].item() if "rewind_step" in ds.coords else 0)
        ds = ds.drop_vars("rewind_step", errors="ignore").expand_dims(rewind_step=[int(t)])
    if "arch" not in ds.dims:
        name = ds.attrs.get("arch_name") or ds.attrs.get("recipe_name") or "run"
        ds = ds.drop_vars("arch", errors="ignore").expand_dims(arch=[str(name)])
    return ds


def architectures(datasets: Mapping[str, xr.Dataset]) -> list[str]:
    """Architecture names present in any of the datasets, in order of appearance."""
    names: list[str] = []
    for ds in datasets.values():
        for a in ds.arch.values:
            if str(a) not in names:
                names.append(str(a))
    return names


def select_arch(ds: xr.Dataset, arch: str | None = None) -> xr.Dataset:
    """One architecture of an aggregate (the only one when ``arch`` is None), without the ``arch`` dim."""
    ds = standardize(ds)
    names = [str(a) for a in ds.arch.values]
    if arch is None:
        if len(names) > 1:
            raise ConfigError(f"the inputs hold several architectures ({', '.join(names)}); choose one (--arch)")
        arch = names[0]
    if arch not in names:
        raise ConfigError(f"architecture {arch!r} is not in the inputs (they have {', '.join(names)})")
    return ds.sel(arch=arch)


def has_data(ds: xr.Dataset) -> bool:
    """Whether any floating-point variable holds a finite value (combined aggregates pad missing runs with NaN)."""
    return any(np.isfinite(ds[v].values).any() for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.floating))


def rewind_steps(*datasets: xr.Dataset | None, arch: str | None = None) -> list[int]:
    """Rewind steps with results in every given dataset (ascending), for ``arch`` when given."""
    common = None
    for ds in datasets:
        if ds is None:
            continue
        ds = standardize(ds)
        if arch is not None or ds.sizes["arch"] == 1:
            ds = select_arch(ds, arch)
        have = {int(t) for t in ds.rewind_step.values if has_data(ds.sel(rewind_step=t))}
        common = have if common is None else common & have
    return sorted(common or [])


def choose_rewind(requested: int | None, *datasets: xr.Dataset | None, arch: str | None = None) -> int:
    """``requested``, or the largest rewind step the datasets share (late rewinding: the paper's main setting)."""
    steps = rewind_steps(*datasets, arch=arch)
    if not steps:
        raise ConfigError("the inputs share no rewind step with results (they come from different IMP runs)")
    if requested is None:
        return steps[-1]
    if int(requested) not in steps:
        raise ConfigError(f"rewind step {requested} is not in the inputs (they share {steps})")
    return int(requested)


def select_run(ds: xr.Dataset | None, arch: str | None, rewind_step: int) -> xr.Dataset | None:
    """One architecture and rewind step: a dataset with ``seed``, ``level`` and the experiment's own dims."""
    if ds is None:
        return None
    return select_arch(ds, arch).sel(rewind_step=rewind_step)


def run_with_data(ds: xr.Dataset | None, arch: str, rewind_step: int) -> xr.Dataset | None:
    """Like :func:`select_run`, but None where the aggregate lacks the run (or has only NaN for it)."""
    if ds is None or arch not in [str(a) for a in ds.arch.values]:
        return None
    ds = select_arch(ds, arch)
    if rewind_step not in [int(v) for v in ds.rewind_step.values]:
        return None
    ds = ds.sel(rewind_step=rewind_step)
    return ds if has_data(ds) else None


def steps_with_data(datasets: Mapping[str, xr.Dataset], arch: str) -> list[int]:
    """Rewind steps with results for ``arch`` in any dataset (ascending)."""
    steps: set[int] = set()
    for ds in datasets.values():
        if arch in [str(a) for a in ds.arch.values]:
            steps |= {
                int(t) for t in select_arch(ds, arch).rewind_step.values if run_with_data(ds, arch, int(t)) is not None
            }
    return sorted(steps)
