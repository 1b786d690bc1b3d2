"""Fig. 2 — IMP's error and the successive-level barrier (E1 + E2; SPEC §4, claim 1).

One column per rewind step.  Top: error of the level-L solutions ``w_L`` vs % weights
remaining (log axis, IMP's levels as ticks), mean ± std over seeds, with the dense error
± ``ε_match`` band.  Bottom: the barrier ``B(w_L, w_{L+1})`` plotted at the % remaining of
``w_{L+1}`` (so a pair sits above the sparser of its two solutions), with the ``ε_barrier``
line; one line style per BatchNorm mode when E2 ran several.  Levels whose solution is
matching (the claims report's definition, from test error) are shaded in both panels.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..foundations.hparams import ConfigError
from ..metrics.levels import level_percent
from ..metrics.matching import dense_error, epsilon_match, matching_levels
from ..metrics.selection import rewind_steps, select_arch, select_run
from ..metrics.statistics import count_seeds
from . import splits
from . import style as S

ID = "fig2_imp_connectivity"
SPLITS = splits(ID)
BN_STYLES = {"interpolate": "-", "reset": "--"}


def plot(*, imp: xr.Dataset, interpolation: xr.Dataset, split: str = "test", eps_barrier: float = 0.02,
         match_floor: float = 0.01, arch: str | None = None):
    """The figure for one architecture: columns = rewind steps (those both datasets have)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    steps = rewind_steps(imp, interpolation, arch=arch)
    if not steps:
        raise ConfigError("imp and interpolation share no rewind step")
    arch_name = str(select_arch(imp, arch).arch.values)
    fig = S.new_figure(S.COLUMN if len(steps) == 1 else S.FULL, 3.6)
    axes = fig.subplots(2, len(steps), squeeze=False, sharex="col")
    seeds = 0
    for j, t in enumerate(steps):
        run = select_run(imp, arch, t)
        e2 = select_run(interpolation, arch, t)
        seeds = max(seeds, count_seeds(run[f"{split}_error"]))
        _column(axes[0, j], axes[1, j], run, e2, split, eps_barrier, match_floor)
        if len(steps) > 1:
            axes[0, j].set_title(f"rewind step t = {t}", fontsize=S.RC["axes.titlesize"])
    S.run_title(fig, arch_name, steps[0] if len(steps) == 1 else None, seeds)
    handles = [*S.legend_entries(axes.ravel()).values(), S.matching_patch("matching levels (test error)")]
    S.figure_legend(fig, handles=handles, ncol=2 if len(steps) == 1 else 4)
    return fig


def _column(top, bottom, imp: xr.Dataset, e2: xr.Dataset, split: str, eps_barrier: float, match_floor: float):
    levels = [int(v) for v in imp.level.values]
    pct = level_percent(levels, imp)
    err = imp[f"{split}_error"].transpose("seed", "level").values * 100
    match = matching_levels(imp, epsilon_match(imp, match_floor, "test"))
    flags = [bool(match.sel(level=lv)) for lv in levels]
    dense, _, _ = dense_error(imp, split)
    eps = epsilon_match(imp, match_floor, split)
    for ax in (top, bottom):
        S.shade_levels(ax, pct, flags)
        S.percent_axis(ax, pct)
    top.axhspan((dense - eps) * 100, (dense + eps) * 100, color="0.5", alpha=0.25, linewidth=0,
                label=f"dense ± ε_match ({split})")
    top.axhline(dense * 100, color="0.3", linewidth=0.8)
    S.mean_band(top, pct, err, axis=0, color=S.METHOD_COLORS["magnitude"], marker="o", label="IMP solution w_L")
    top.set_ylabel(S.ERROR_LABELS[split])
    top.set_xlabel("")
    top.tick_params(labelbottom=True)

    modes = [str(m) for m in e2.bn_mode.values]
    barriers = []
    for mode in modes:
        b = e2.barrier_error.sel(pair="successive", split=split, bn_mode=mode).transpose("seed", "level")
        have = [int(v) for v in b.level.values if int(v) + 1 in levels]
        if not have:
            continue
        x = level_percent([lv + 1 for lv in have], imp)
        vals = b.sel(level=have).values * 100
        barriers.append(vals)
        label = "B(w_L, w_L+1)" + (f", BatchNorm {mode}" if len(modes) > 1 else "")
        S.mean_band(bottom, x, vals, axis=0, color="k", linestyle=BN_STYLES.get(mode, "-"), marker="o",
                    label=label)
    S.threshold_line(bottom, eps_barrier * 100, f"ε_barrier = {eps_barrier * 100:g}%")
    S.barrier_axis(bottom, np.concatenate(barriers, axis=1) if barriers else np.zeros((1, 1)), eps_barrier * 100)
    bottom.set_ylabel(f"{split} error barrier (%)")
    bottom.set_xlabel("weights remaining (%) — of w_L (top), of w_L+1 (bottom)", fontsize=S.RC["xtick.labelsize"])
