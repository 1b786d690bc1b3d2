"""Fig. 7 — curvature along pruning directions (E7; SPEC §4, claims 3–4).

(a) ``qᵀHq`` along the unit direction of the weights removed by pruning ``w_L`` by IMP's
fraction: magnitude pruning vs random pruning (mean ± std over random masks, then over
seeds), beside the average curvature ``tr(H)/D_L``; (b) the ratio of the magnitude
direction's curvature to the random mean (below 1: magnitude pruning removes flatter
directions).  Mean ± std over seeds.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..metrics.levels import level_percent
from ..metrics.selection import choose_rewind, select_run
from ..metrics.statistics import count_seeds
from . import splits
from . import style as S

ID = "fig7_flat_directions"
SPLITS = splits(ID)
METHOD_LABELS = {"random": "random (global)", "random_layerwise": "random (layer-wise)"}


def plot(*, flatness: xr.Dataset, imp: xr.Dataset, rewind_step: int | None = None, arch: str | None = None):
    t = choose_rewind(rewind_step, flatness, imp, arch=arch)
    e7 = select_run(flatness, arch, t)
    run = select_run(imp, arch, t)
    levels = [int(v) for v in e7.level.values]
    pct = level_percent(levels, run)
    fig = S.new_figure(S.FULL, 2.8)
    subs = S.panel_row(fig, 2)
    ax_c, ax_r = (sub.subplots() for sub in subs)

    mag = e7.curvature_magnitude.transpose("seed", "level").values
    S.mean_band(ax_c, pct, mag, axis=0, color=S.METHOD_COLORS["magnitude"], marker="o",
                label="magnitude pruning (IMP's rule)", band="range")
    values, ratios = [mag.ravel()], [np.ones(1)]
    for m in [str(x) for x in e7.prune_method.values]:
        c = S.METHOD_COLORS.get(m, "k")
        per_mask = e7.curvature_random.sel(prune_method=m).transpose("seed", "replicate", "level").values
        S.mean_band(ax_c, pct, per_mask, axis=(0, 1), color=c, marker="^", markersize=3,
                    label=f"{METHOD_LABELS.get(m, m)} pruning (over masks and seeds)", band="range")
        values.append(per_mask.ravel())
        ratio = mag / e7.curvature_random_mean.sel(prune_method=m).transpose("seed", "level").values
        S.mean_band(ax_r, pct, ratio, axis=0, color=c, marker="o", label=f"magnitude / {METHOD_LABELS.get(m, m)}",
                    band="range")
        ratios.append(ratio.ravel())
    avg = e7.average_curvature.transpose("seed", "level").values
    S.mean_band(ax_c, pct, avg, axis=0, color="k", linestyle="--", label="average curvature tr(H) / D_L",
                band="range")
    values.append(avg.ravel())
    S.log_scale(ax_c, np.concatenate(values))
    ax_c.set_ylabel("curvature qᵀHq (nats / weight²)")
    ax_r.axhline(1.0, color="0.35", linestyle=":", linewidth=1.0, label="equal curvature")
    S.log_scale(ax_r, np.concatenate(ratios))
    S.plain_log_ticks(ax_r)
    ax_r.set_ylabel("curvature ratio")
    for ax in (ax_c, ax_r):
        S.percent_axis(ax, pct)
    S.panel(ax_c, "a", "curvature along the pruning direction")
    S.panel(ax_r, "b", "magnitude relative to random (< 1: flatter)")
    frac = e7.attrs.get("fraction")
    S.run_title(fig, str(e7.arch.values), t, count_seeds(e7.curvature_magnitude),
                extra=f"pruning {float(frac):g} of the surviving weights" if frac is not None else "",
                log_range=True)
    S.panel_legends([(subs[0], [ax_c], 1), (subs[1], [ax_r], 1)])
    return fig
