"""Fig. 8 — retraining finds new small weights (E8; SPEC §4, claim 4).

(a) the distribution of the surviving ``|w_L|`` (log-spaced bins; fraction of the surviving
weights per bin, pooled over seeds) for a few levels, each with IMP's next pruning threshold
(dashed); (b) the length of IMP's next pruning step after retraining, ``R_{L+1}``, against the
same step taken from ``w_L`` without retraining (solid), and the two IMP steps together,
``√(R_L² + R_{L+1}²)``, against one-shot pruning of ``w_L`` to the density of level L+2
(dotted); (c) the fraction of the weights IMP prunes at L+1 that were already the smallest of
``w_L`` before retraining, beside its chance level.  Mean ± std over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..metrics.levels import level_percent, pick_levels
from ..metrics.selection import choose_rewind, rewind_steps, select_run
from ..metrics.statistics import count_seeds, spread
from . import splits
from . import style as S

ID = "fig8_small_weights"
SPLITS = splits(ID)


def plot(*, small_weights: xr.Dataset, imp: xr.Dataset | None = None, levels: Sequence[int] | None = None,
         rewind_step: int | None = None, arch: str | None = None):
    t = choose_rewind(rewind_step, small_weights, arch=arch)
    e8 = select_run(small_weights, arch, t)
    run = select_run(imp, arch, t) if imp is not None and t in rewind_steps(imp, arch=arch) else None
    all_levels = [int(v) for v in e8.level.values]
    pct = level_percent(all_levels, e8, run)
    fig = S.new_figure(S.FULL, 2.9)
    subs = S.panel_row(fig, 3)
    ax_h, ax_p, ax_o = (sub.subplots() for sub in subs)

    shown = pick_levels(all_levels, 4, levels)
    colors = S.level_colors(shown)
    edges = np.concatenate([e8.bin_lower.values[:1], e8.bin_upper.values])
    pooled = np.zeros(len(edges) - 1)
    for lv in shown:
        d = e8.sel(level=lv)
        counts = np.nansum(d.histogram.transpose("seed", "bin").values.astype(float), axis=0)
        total = float(np.nansum(d.surviving.values.astype(float)))
        if total <= 0:
            continue
        frac = counts / total
        pooled += frac
        p = float(pct[all_levels.index(lv)])
        ax_h.stairs(frac, edges, color=colors[lv], linewidth=1.0, label=S.level_label(lv, p))
        thr, _, _ = spread(d.next_threshold.values, 0)
        if np.isfinite(thr):
            ax_h.axvline(float(thr), color=colors[lv], linestyle="--", linewidth=0.9)
    ax_h.set_xscale("log")
    if pooled.sum() > 0:  # the bins holding all but 0.1% of the weights at either end
        cum = np.cumsum(pooled) / pooled.sum()
        first, last = int(np.searchsorted(cum, 1e-3)), int(np.searchsorted(cum, 1 - 1e-3))
        ax_h.set_xlim(edges[first] / 1.5, edges[min(last + 1, len(edges) - 1)] * 1.5)
    per_decade = 1.0 / np.log10(edges[1] / edges[0])
    ax_h.set_xlabel(f"surviving |w_L| ({per_decade:.0f} bins per decade)")
    ax_h.set_ylabel("fraction of the weights per bin")
    ax_h.plot([], [], color="0.3", linestyle="--", linewidth=0.9, label="next threshold")
    S.panel(ax_h, "a", "weight magnitudes")

    def series(name):
        return e8[name].transpose("seed", "level").values

    nxt, unret = series("next_projection_length"), series("unretrained_step_length")
    two = np.hypot(series("projection_length"), nxt)
    one = series("oneshot_projection_length")
    imp_c, one_c = S.METHOD_COLORS["imp"], S.METHOD_COLORS["one_shot"]
    for values, color, style, label in (
            (nxt, imp_c, dict(marker="o"), "IMP next step, retrained: R_L+1"),
            (unret, one_c, dict(marker="s", markersize=2.8), "same step from w_L, not retrained"),
            (two, imp_c, dict(linestyle=":"), "IMP, 2 steps: √(R_L² + R_L+1²)"),
            (one, one_c, dict(linestyle=":"), "one-shot, w_L to level L+2")):
        S.mean_band(ax_p, pct, values, axis=0, color=color, label=label, band="range", **style)
    S.log_scale(ax_p, np.concatenate([nxt.ravel(), unret.ravel(), two.ravel(), one.ravel()]))
    S.plain_log_ticks(ax_p)
    ax_p.set_ylabel("projection length (L2)")
    S.panel(ax_p, "b", "projection lengths")

    S.mean_band(ax_o, pct, series("overlap"), axis=0, color="k", marker="o",
                label="pruned at L+1 and among the\nsmallest of w_L (fraction)")
    S.mean_band(ax_o, pct, series("chance_overlap"), axis=0, color="0.55", linestyle="--", label="chance")
    ax_o.set_ylim(-0.02, 1.02)
    ax_o.set_ylabel("overlap |P ∩ S| / |P|")
    S.panel(ax_o, "c", "overlap with the old smallest")
    for ax in (ax_p, ax_o):
        S.percent_axis(ax, pct)
        ax.set_xlabel("weights remaining at level L (%)")
    S.run_title(fig, str(e8.arch.values), t, count_seeds(e8.projection_length), log_range=True)
    S.panel_legends([(subs[0], [ax_h], 2), (subs[1], [ax_p], 1), (subs[2], [ax_o], 1)])
    return fig
