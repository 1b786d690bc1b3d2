"""Statistics over seeds (and replicates) that ignore the NaN of runs missing from an aggregate."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr


def spread(values, axis=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation (ddof 1; 0 where one value) and count of the finite values along ``axis``.

    ``axis`` may be a tuple (e.g. seeds and replicates pooled).  Where no value is finite the
    mean and deviation are NaN.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    total = np.where(ok, v, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(ok, v - np.expand_dims(mean, axis), 0.0)
        var = (dev**2).sum(axis=axis) / np.maximum(n - 1, 1)
    std = np.where(n > 1, np.sqrt(var), np.where(n == 1, 0.0, np.nan))
    return mean, std, n


def seed_mean(da: xr.DataArray, dims: Sequence[str] = ("seed",)) -> xr.DataArray:
    """Mean over ``dims`` (those present), ignoring NaN (all-NaN stays NaN)."""
    present = [d for d in dims if d in da.dims]
    if not present:
        return da
    ok = np.isfinite(da)
    return da.where(ok, 0.0).sum(present) / ok.sum(present).where(ok.sum(present) > 0)


def count_seeds(da: xr.DataArray) -> int:
    """Seeds with at least one finite value."""
    if "seed" not in da.dims:
        return 1
    other = [d for d in da.dims if d != "seed"]
    return int(np.isfinite(da).any(other).sum()) if other else int(np.isfinite(da).sum())
