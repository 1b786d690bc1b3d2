"""Fig. 1 — the error landscape on the plane through ``w_L``, ``m_{L+1} ⊙ w_L`` and ``w_{L+1}``
(E9; SPEC §4: the measured counterpart of the paper's schematic Fig. 1).

One panel per level (a few of E9's levels), for one seed: error contours over the plane
(``w_L`` at the origin, the pruning direction along x), with triangles for the solutions
``w_L`` and ``w_{L+1}``, a cross for the projection ``m_{L+1} ⊙ w_L`` and circles for the
pruned rewind points ``m_L ⊙ w_t`` and ``m_{L+1} ⊙ w_t`` (their orthogonal projections onto the
plane; points outside the evaluated grid are listed under the panel).  Each panel has its own
colour scale (bands at quantiles of its grid's errors, so the basin is resolved).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..foundations.hparams import ConfigError
from ..metrics.levels import level_percent, pick_levels
from ..metrics.selection import choose_rewind, rewind_steps, select_run
from . import style as S

ID = "fig1_landscape"
SPLITS = ("test", "train")  # train where E9 evaluated it: the data decides, not the registry
MARKERS = {  # point -> (marker, face colour, label, size, z-order): crosses on top of circles
    "solution": ("^", "white", r"$w_L$", 6.5, 6),
    "next_solution": ("^", "#ffd000", r"$w_{L+1}$", 6.5, 6),
    "projection": ("X", "#ff4040", r"$m_{L+1}\odot w_L$", 6.0, 7),
    "rewind": ("o", "white", r"$m_L\odot w_t$", 5.5, 5),
    "next_rewind": ("o", "#ffd000", r"$m_{L+1}\odot w_t$", 5.5, 5),
}


def plot(*, landscape: xr.Dataset, imp: xr.Dataset | None = None, split: str = "test",
         levels: Sequence[int] | None = None, rewind_step: int | None = None, seed: int | None = None,
         arch: str | None = None):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    t = choose_rewind(rewind_step, landscape, arch=arch)
    e9 = select_run(landscape, arch, t)
    var = f"{split}_error"
    if var not in e9:
        raise ConfigError(f"the landscape results have no {split} error (run E9 with --splits {split})")
    seeds = [int(s) for s in e9.seed.values if np.isfinite(e9[var].sel(seed=s).values).any()]
    if seed is None:
        seed = seeds[0] if seeds else int(e9.seed.values[0])
    elif int(seed) not in seeds:
        raise ConfigError(f"seed {seed} has no landscape results (seeds with results: {seeds})")
    d = e9.sel(seed=int(seed))
    have = [int(v) for v in d.level.values if np.isfinite(d[var].sel(level=v).values).any()]
    shown = pick_levels(have, 3, levels)
    run = select_run(imp, arch, t) if imp is not None and t in rewind_steps(imp, arch=arch) else None
    pct = level_percent(shown, run) if run is not None else [None] * len(shown)

    n = len(shown)
    fig = S.new_figure(S.COLUMN if n == 1 else S.FULL, 2.7 if n > 1 else 2.9)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    for i, (ax, lv) in enumerate(zip(axes, shown)):
        p = d.sel(level=lv)
        xs, ys = p.plane_x.values, p.plane_y.values
        z = p[var].values.T * 100  # rows: y, columns: x
        bounds = _contour_levels(z[np.isfinite(z)])
        norm = BoundaryNorm(bounds, 256, extend="max")
        cs = ax.contourf(xs, ys, z, levels=bounds, cmap="viridis", norm=norm, extend="max")
        ax.contour(xs, ys, z, levels=bounds, colors="k", linewidths=0.25, alpha=0.4)
        off = []
        for point in [str(v) for v in p.point.values]:
            marker, face, label, size, order = MARKERS[point]
            px, py = float(p.point_x.sel(point=point)), float(p.point_y.sel(point=point))
            if not (xs.min() <= px <= xs.max() and ys.min() <= py <= ys.max()):
                off.append(label)
                continue
            ax.plot(px, py, marker=marker, markersize=size, markerfacecolor=face, markeredgecolor="k",
                    markeredgewidth=0.8, linestyle="none", zorder=order)
        ax.set_xlim(xs.min(), xs.max())
        ax.set_ylim(ys.min(), ys.max())
        ax.grid(False)
        ax.set_xlabel("along the pruning direction (L2)")
        if i == 0:
            ax.set_ylabel(r"toward $w_{L+1}$, orthogonal (L2)")
        title = f"L = {lv}" + (f" ({float(pct[i]):.3g}% → {_next_pct(run, lv):.3g}%)" if run is not None else "")
        S.panel(ax, "abcdefgh"[i], title)
        if off:
            ax.text(0.0, -0.3, "outside the grid: " + ", ".join(off), transform=ax.transAxes, fontsize=6,
                    va="top")
        cbar = fig.colorbar(cs, ax=ax, pad=0.02, fraction=0.06)
        cbar.ax.tick_params(labelsize=6)
        if i == n - 1:
            cbar.set_label(S.ERROR_LABELS[split])
    handles = [Line2D([], [], marker=m, markerfacecolor=f, markeredgecolor="k", linestyle="none", markersize=6,
                      label=lab) for m, f, lab, _, _ in MARKERS.values()]
    S.run_title(fig, str(e9.arch.values), t, None, extra=f"seed {seed}; plane through w_L, m_L+1⊙w_L, w_L+1")
    S.figure_legend(fig, handles=handles, ncol=5)
    return fig


def _next_pct(run: xr.Dataset, level: int) -> float:
    return float(level_percent([level + 1], run)[0])


def _contour_levels(z: np.ndarray) -> np.ndarray:
    """Contour edges that resolve the low-error basin: fine steps near the minimum, coarser above.

    Quantiles of the grid's errors (so every band covers part of the plane), rounded and made
    unique, from the minimum to the 90th percentile; higher errors share the last band.  When
    most of the plane has one error (e.g. zero train error), evenly spaced round values up to
    the maximum instead.
    """
    if len(z) == 0:
        return np.array([0.0, 1.0])
    lo, hi = float(z.min()), float(np.quantile(z, 0.9))
    edges = np.unique(np.round(np.quantile(z, np.linspace(0.0, 0.9, 13)), 1)) if hi > lo else np.array([lo])
    if len(edges) < 3:
        top = float(z.max())
        edges = MaxNLocator(8).tick_values(lo, top) if top > lo else np.array([lo, lo + 1.0])
    return edges
