"""IMP's levels as the figures show them: the % of weights remaining at each, and a few levels to show."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..foundations.hparams import ConfigError
from .statistics import spread


def level_density(ds: xr.Dataset) -> xr.DataArray | None:
    """The per-level density (fraction of prunable weights remaining) of a dataset, averaged over seeds."""
    if "density" not in ds or "level" not in ds["density"].dims or not set(ds["density"].dims) <= {"seed", "level"}:
        return None
    d = ds["density"]
    return (
        xr.DataArray(spread(d.values, d.dims.index("seed"))[0], coords={"level": d.level.values}, dims="level")
        if "seed" in d.dims
        else d
    )


def level_percent(levels: Sequence[int], *sources: xr.Dataset | None) -> np.ndarray:
    """% of prunable weights remaining at ``levels``, from the first source with a per-level density
    (IMP's ``imp`` dataset has every level; E2, E3 and E8 carry their own)."""
    levels = [int(v) for v in levels]
    for ds in sources:
        d = None if ds is None else level_density(ds)
        if d is None:
            continue
        have = {int(v) for v in d.level.values}
        if all(v in have for v in levels):
            out = 100.0 * np.asarray(d.sel(level=levels).values, dtype=float)
            if np.all(np.isfinite(out)):
                return out
    raise ConfigError(f"no per-level density for levels {levels}: add the IMP dataset (imp.nc) to the inputs")


def pick_levels(levels: Sequence[int], n: int = 5, requested: Sequence[int] | None = None) -> list[int]:
    """``requested`` (checked against ``levels``) or ``n`` levels spread evenly from the first to the last."""
    levels = sorted(int(v) for v in levels)
    if requested:
        missing = sorted(set(int(v) for v in requested) - set(levels))
        if missing:
            raise ConfigError(f"levels {missing} are not in the data (it has {levels})")
        return sorted(set(int(v) for v in requested))
    if len(levels) <= n:
        return levels
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, n)).astype(int))
    return [levels[i] for i in idx]
