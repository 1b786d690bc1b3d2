"""E6's criteria recomputed from its stored values, at another tolerance (the claims' robustness check).

E6 (:mod:`unmasking.analyses.pruning_ratio`) stores, per ``(level, method, fraction, replicate)`` it
evaluated, the train loss ``L(w')`` and loss barrier of ``w_L → w'`` on E5's examples
(``sublevel_loss``, ``sublevel_barrier``) and ``L(w_L)`` (``level_sublevel_loss``).  The headline
criterion at a tolerance ``ε`` is ``L(w') ≤ L(w_L) + ε`` and barrier ``≤ ε``; ``p*`` the largest
successful evaluated fraction.  At the ``ε`` E6 ran with this reproduces its ``success`` and ``p_star``
exactly (tested); at another ``ε`` it is evaluated on the fractions E6's bisection chose, and a ``p*``
that those fractions do not pin down (no failure evaluated one grid step above it) is NaN, not a bound.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def sublevel_success(e6: xr.Dataset, epsilon: float) -> xr.DataArray:
    """The headline criterion at ``epsilon`` (1/0; NaN where E6 did not evaluate; a diverged retraining is 0)."""
    evaluated = np.isfinite(e6["success"])
    inside = (e6["sublevel_loss"] <= e6["level_sublevel_loss"] + epsilon) & (e6["sublevel_barrier"] <= epsilon)
    return inside.astype(float).where(evaluated)


def largest_success(success: xr.DataArray) -> xr.DataArray:
    """Largest ``fraction`` whose success is 1 (0 where none is; NaN where nothing was evaluated)."""
    ok = success.fraction.where(success == 1.0).max("fraction").fillna(0.0)
    return ok.where(np.isfinite(success).any("fraction"))


def p_star_at(e6: xr.Dataset, epsilon: float) -> xr.DataArray:
    """E6's headline ``p*`` at tolerance ``epsilon``, on the fractions E6 evaluated; NaN where the evaluated
    fractions do not pin it down.

    ``p*`` is resolved when the grid fraction one step above it was evaluated and failed (or is 1). At the
    ``ε`` E6 ran with, the bisection guarantees this; at another ``ε`` the largest success among the
    evaluated fractions may only be a lower bound (nothing evaluated just above it), and then it is NaN.
    """
    success = sublevel_success(e6, epsilon)
    p = largest_success(success)
    f = np.sort(np.asarray(success.fraction.values, dtype=float))
    step = float(np.min(np.diff(f))) if len(f) > 1 else float(f[0])
    nxt = p + step
    at_next = np.abs(success.fraction - nxt) < 1e-9
    failed_next = (success.where(at_next) == 0.0).any("fraction")
    return p.where(failed_next | (nxt >= 1.0 - 1e-9))
