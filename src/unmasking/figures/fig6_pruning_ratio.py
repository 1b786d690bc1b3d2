"""Fig. 6 — the maximal pruning ratio ``p*``, predicted and measured (E5 + E6; SPEC §4, claim 3).

(a) ``p*`` vs % weights remaining at level L: theory (E5, dashed; band = ``p*`` at ``ε/band``
… ``ε·band``) for magnitude and random pruning, and experiment (E6, solid with dots: the headline
criterion, the retrained network in the linearly connected train-loss sublevel set of ``w_L``;
mean ± std over seeds and random masks) for each pruning method, with E6's ``p*`` under the
earlier test-matching criterion dotted.  (b…) for a few E6 levels: the error of ``w_L`` pruned
by a fraction ``p`` without retraining (solid) and after rewinding and retraining (crosses, at
the fractions the bisection evaluated), with the dense error + ``ε_match`` (dash-dot).
Either experiment may be missing (its curves are then absent).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr
from matplotlib.lines import Line2D

from ..foundations.hparams import ConfigError
from ..metrics.levels import level_percent, pick_levels
from ..metrics.matching import dense_error, epsilon_match
from ..metrics.selection import choose_rewind, select_run
from ..metrics.statistics import count_seeds, spread
from . import splits
from . import style as S

ID = "fig6_pruning_ratio"
SPLITS = splits(ID)
METHOD_LABELS = {"magnitude": "magnitude", "random": "random (global)", "random_layerwise": "random (layer-wise)"}


def plot(*, imp: xr.Dataset, pruning_theory: xr.Dataset | None = None, pruning_ratio: xr.Dataset | None = None,
         split: str = "test", levels: Sequence[int] | None = None, rewind_step: int | None = None,
         match_floor: float = 0.01, arch: str | None = None):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if pruning_theory is None and pruning_ratio is None:
        raise ConfigError("fig6 needs the pruning_theory (E5) or pruning_ratio (E6) results among the inputs")
    t = choose_rewind(rewind_step, imp, pruning_theory, pruning_ratio, arch=arch)
    run = select_run(imp, arch, t)
    e5 = select_run(pruning_theory, arch, t)
    e6 = select_run(pruning_ratio, arch, t)
    e6_levels = [int(v) for v in e6.level.values] if e6 is not None else []
    shown = pick_levels(e6_levels, 4, levels) if e6_levels else []

    if shown:
        fig = S.new_figure(S.FULL, 3.4 if len(shown) > 2 else 2.9)
        left, right = S.panel_row(fig, 2, width_ratios=[1.0, 1.35])
    else:
        fig = S.new_figure(S.COLUMN, 3.0)
        left, right = fig, None
    ax_p = left.subplots()
    methods: list[str] = []
    counts = {}
    plotted_pct = []
    if e5 is not None:
        lv = [int(v) for v in e5.level.values]
        pct = level_percent(lv, run)
        plotted_pct += list(pct)
        for m in [str(x) for x in e5.prune_method.values]:
            c = S.METHOD_COLORS.get(f"theory_{m}", "k")
            ps = e5.p_star.sel(prune_method=m).transpose("seed", "level").values
            lo, _, _ = spread(e5.p_star_low.sel(prune_method=m).transpose("seed", "level").values, 0)
            hi, _, _ = spread(e5.p_star_high.sel(prune_method=m).transpose("seed", "level").values, 0)
            mean, _, _ = spread(ps, 0)
            ax_p.plot(pct, mean, color=c, linestyle="--")
            methods.append(m)
            ax_p.fill_between(pct, np.minimum(lo, hi), np.maximum(lo, hi), color=c, alpha=0.12, linewidth=0)
        counts["E5"] = count_seeds(e5.p_star)
    if e6 is not None:
        pct = level_percent(e6_levels, run)
        plotted_pct += list(pct)
        for m in [str(x) for x in e6.prune_method.values]:
            ps = e6.p_star.sel(prune_method=m).transpose("seed", "replicate", "level").values
            S.mean_band(ax_p, pct, ps, axis=(0, 1), color=S.METHOD_COLORS.get(m, "k"), marker="o")
            if "p_star_matching" in e6:  # the earlier criterion, for comparison
                pm = e6.p_star_matching.sel(prune_method=m).transpose("seed", "replicate", "level").values
                mean, _, _ = spread(pm, (0, 1))
                ax_p.plot(pct, mean, color=S.METHOD_COLORS.get(m, "k"), linestyle=":", linewidth=1.0, alpha=0.8)
            methods.append(m)
        counts["E6"] = count_seeds(e6.p_star)
    S.percent_axis(ax_p, sorted(set(np.round(plotted_pct, 6)), reverse=True))
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel("maximal pruning ratio p*\n(fraction of the surviving weights)")
    S.panel(ax_p, "a", "p* vs level")

    wide = _error_panels(right, run, e6, shown, split, match_floor) if shown else False
    same = len(set(counts.values())) == 1
    extra = [] if same else [", ".join(f"{k}: {n} seed{'s' if n != 1 else ''}" for k, n in counts.items())
                             + ": mean ± std" + (" (log axes: min–max)" if wide else "")]
    if e5 is not None and "epsilon" in e5.attrs:
        extra.append(f"theory ε = {float(e5.attrs['epsilon']):.3g} nats")
    S.run_title(fig, str(run.arch.values), t, next(iter(counts.values())) if same else None,
                extra=", ".join(extra), log_range=wide)
    grey = "0.3"
    colours = [Line2D([], [], color=S.METHOD_COLORS.get(m, "k"), label=METHOD_LABELS.get(m, m))
               for m in dict.fromkeys(methods)]
    band = f"{float(e5.attrs.get('epsilon_band', 2)):g}" if e5 is not None else ""
    styles = ([Line2D([], [], color=grey, linestyle="--", label=f"theory (E5); band: ε/{band} … {band}ε")]
              if e5 is not None else [])
    styles += [Line2D([], [], color=grey, marker="o", label="experiment (E6): train-loss sublevel set")] if e6 is not None else []
    if e6 is not None and "p_star_matching" in e6:
        styles.append(Line2D([], [], color=grey, linestyle=":", label="experiment (E6): test-matching criterion"))
    groups = [(left, colours + styles, 1)]
    if shown:
        groups.append((right, [Line2D([], [], color=grey, marker="o", markersize=2.5,
                                      label="pruned by p, not retrained"),
                               Line2D([], [], color=grey, linestyle="none", marker="x",
                                      label="rewound and retrained (bisection points)"),
                               Line2D([], [], color="0.35", linestyle="-.", linewidth=1.0,
                                      label=f"dense + ε_match ({split})")], 1))
    S.panel_legends(groups)
    return fig


def _error_panels(subfig, run: xr.Dataset, e6: xr.Dataset, shown: Sequence[int], split: str,
                  match_floor: float) -> bool:
    ncol = 2 if len(shown) > 1 else 1
    nrow = int(np.ceil(len(shown) / ncol))
    axes = subfig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    pct = level_percent(shown, run)
    dense, _, _ = dense_error(run, split)
    eps = epsilon_match(run, match_floor, split)
    fractions = e6.fraction.values
    letters = "bcdefghij"
    methods = [str(x) for x in e6.prune_method.values]
    curves = {(lv, m, kind): e6[var].sel(level=lv, split=split, prune_method=m)
              .transpose("seed", "replicate", "fraction").values * 100
              for lv in shown for m in methods for kind, var in (("pruned", "pruned_error"), ("after", "error"))}
    values = np.concatenate([v.ravel() for v in curves.values()] + [np.array([(dense + eps) * 100])])
    positive = values[np.isfinite(values) & (values > 0)]
    wide = len(positive) > 0 and positive.max() / positive.min() > 10  # log axis: bands are min-max
    band = "range" if wide else "std"
    for i, (ax, lv) in enumerate(zip(axes.ravel(), shown)):
        for m in methods:
            c = S.METHOD_COLORS.get(m, "k")
            S.mean_band(ax, fractions, curves[lv, m, "pruned"], axis=(0, 1), color=c, marker="o", markersize=2.5,
                        band=band)
            S.mean_band(ax, fractions, curves[lv, m, "after"], axis=(0, 1), color=c, linestyle="none", marker="x",
                        markersize=4, alpha=0.1, band=band)
        ax.axhline((dense + eps) * 100, color="0.35", linestyle="-.", linewidth=1.0)
        S.panel(ax, letters[i], S.level_label(lv, float(pct[i])))
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("fraction pruned at once, p")
    for ax in axes[:, 0]:
        ax.set_ylabel(S.ERROR_LABELS[split])
    if wide:
        axes[0, 0].set_yscale("log")
        S.plain_log_ticks(axes[0, 0])
    return wide
