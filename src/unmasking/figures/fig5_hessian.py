"""Fig. 5 — the Hessian spectrum of the level-L solutions (E4; SPEC §4, claim 3).

(a) the largest eigenvalue ``λ_1`` and the k-th largest reported, vs % weights remaining;
(b) the trace ``tr(H)`` (Hutchinson) and ``D_L · λ_1`` for scale; (c) the spectral density
(stochastic Lanczos quadrature, Gaussian-broadened, normalized over the ``D_L`` surviving
weights) for a few levels, averaged over seeds on a common eigenvalue grid.  The Hessian is
that of the training loss restricted to the surviving weights.  Mean ± std over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..metrics.levels import level_percent, pick_levels
from ..metrics.selection import choose_rewind, select_run
from ..metrics.statistics import count_seeds
from . import splits
from . import style as S

ID = "fig5_hessian"
SPLITS = splits(ID)


def plot(*, hessian: xr.Dataset, imp: xr.Dataset, levels: Sequence[int] | None = None,
         rewind_step: int | None = None, arch: str | None = None):
    t = choose_rewind(rewind_step, hessian, imp, arch=arch)
    e4 = select_run(hessian, arch, t)
    run = select_run(imp, arch, t)
    all_levels = [int(v) for v in e4.level.values]
    pct = level_percent(all_levels, run)
    fig = S.new_figure(S.FULL, 2.75)
    subs = S.panel_row(fig, 3)
    ax_l, ax_t, ax_d = (sub.subplots() for sub in subs)

    top = e4.top_eigenvalues.transpose("seed", "level", "k").values
    k_last = int(e4.k.values[-1])
    S.mean_band(ax_l, pct, top[..., 0], axis=0, color="k", marker="o", label="λ_1 (largest)", band="range")
    if top.shape[-1] > 1:
        S.mean_band(ax_l, pct, top[..., -1], axis=0, color="0.55", marker="s", markersize=2.5,
                    linestyle="--", label=f"λ_{k_last} ({_ordinal(k_last)} largest)", band="range")
    S.log_scale(ax_l, top[..., [0, -1]])
    S.plain_log_ticks(ax_l)
    ax_l.set_ylabel("eigenvalue (nats / weight²)")
    S.panel(ax_l, "a", "top eigenvalues")

    trace = e4.trace.transpose("seed", "level").values
    S.mean_band(ax_t, pct, trace, axis=0, color=S.METHOD_COLORS["magnitude"], marker="o", label="tr(H)",
                band="range")
    avg = trace / e4.num_weights.transpose("seed", "level").values
    S.mean_band(ax_t, pct, avg, axis=0, color=S.METHOD_COLORS["random"], marker="^", markersize=3,
                label="mean curvature tr(H) / D_L", band="range")
    S.log_scale(ax_t, np.concatenate([trace.ravel(), avg.ravel()]))
    S.plain_log_ticks(ax_t)
    ax_t.set_ylabel("nats / weight²")
    S.panel(ax_t, "b", "trace")
    for ax in (ax_l, ax_t):
        S.percent_axis(ax, pct)

    shown = pick_levels(all_levels, 4, levels)
    colors = S.level_colors(shown)
    floor, peak = np.inf, 0.0
    for lv in shown:
        grid, dens = _mean_density(e4.sel(level=lv))
        if grid is None:
            continue
        p = float(pct[all_levels.index(lv)])
        ax_d.plot(grid, dens, color=colors[lv], label=S.level_label(lv, p), linewidth=1.0)
        positive = dens[dens > 0]
        if len(positive):
            floor, peak = min(floor, positive.max() * 1e-5), max(peak, positive.max())
    ax_d.set_yscale("log")
    if np.isfinite(floor):
        ax_d.set_ylim(floor, peak * 3)
    ax_d.set_xlabel("eigenvalue λ (nats / weight²)")
    ax_d.set_ylabel("spectral density ρ(λ)")
    S.panel(ax_d, "c", "spectral density")
    S.run_title(fig, str(e4.arch.values), t, count_seeds(e4.trace),
                extra=f"Hessian on {int(e4.attrs.get('subset_examples', 0)) or 'all'} training examples",
                log_range=True)
    S.panel_legends([(subs[0], [ax_l]), (subs[1], [ax_t]), (subs[2], [ax_d], 1 if len(shown) <= 2 else 2)])
    return fig


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _mean_density(e4_level: xr.Dataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The seeds' broadened densities interpolated onto one grid spanning them all, averaged."""
    lam = e4_level.lam.transpose("seed", "grid").values
    dens = e4_level.density.transpose("seed", "grid").values
    ok = np.isfinite(lam).all(1) & np.isfinite(dens).all(1)
    if not ok.any():
        return None, None
    lam, dens = lam[ok], dens[ok]
    grid = np.linspace(lam.min(), lam.max(), lam.shape[1])
    vals = np.stack([np.interp(grid, x, y, left=0.0, right=0.0) for x, y in zip(lam, dens)])
    return grid, vals.mean(0)
