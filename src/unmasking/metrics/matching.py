"""Which IMP levels are matching, as the claims report defines it (and the figures shade it).

- ``ε_match`` = the standard deviation (ddof 1) over seeds of the dense (level-0) test error,
  floored at ``match_floor`` (the floor alone with one seed);
- level ``L`` is matching when the seed-mean ``E_test(w_L) ≤ E_test(dense) + ε_match``;
- a successive pair ``(w_L, w_{L+1})`` is matching when both solutions are (``w_L`` alone
  without a trained ``L+1``).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import xarray as xr

from ..foundations.hparams import ConfigError
from .statistics import seed_mean


def dense_error(imp: xr.Dataset, split: str = "test") -> tuple[float, float, int]:
    """Seed mean, standard deviation (ddof 1; NaN with one seed) and count of the dense (level-0) error."""
    values = np.asarray(imp[f"{split}_error"].sel(level=0).values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise ConfigError("the IMP results have no finite level-0 error")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values)


def epsilon_match(imp: xr.Dataset, floor: float, split: str = "test") -> float:
    """``ε_match``: the standard deviation of the dense error over seeds, floored at ``floor``."""
    _, std, _ = dense_error(imp, split)
    return float(floor) if not math.isfinite(std) else max(std, float(floor))


def matching_levels(imp: xr.Dataset, eps_match: float) -> xr.DataArray:
    """Per level: is the seed-mean test error of ``w_L`` within ``ε_match`` of the dense one (bool)."""
    dense, _, _ = dense_error(imp, "test")
    err = seed_mean(imp["test_error"])
    return (err <= dense + eps_match) & np.isfinite(err)


def pair_matching(match: xr.DataArray, levels: Iterable[int]) -> np.ndarray:
    """Matching of the successive pair at each level: ``L`` and ``L+1`` (``L`` alone without an ``L+1``)."""
    have = {int(v) for v in match.level.values}
    out = []
    for level in levels:
        level = int(level)
        ok = bool(match.sel(level=level)) if level in have else False
        if level + 1 in have:
            ok = ok and bool(match.sel(level=level + 1))
        out.append(ok)
    return np.asarray(out, dtype=bool)
