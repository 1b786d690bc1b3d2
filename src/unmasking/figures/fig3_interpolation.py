"""Fig. 3 — error along linear paths (E2; SPEC §4).

(a) the error along ``(1−γ) w_L + γ w_{L+1}`` for a few levels; (b) along
``(1−γ) w_0 + γ w_L`` (dense to sparse) for the same levels; (c) the dense-to-sparse barrier
``B(w_0, w_L)`` vs % weights remaining, beside the successive barrier ``B(w_L, w_{L+1})``
(each barrier at the % of its sparser end, as in Fig. 2) and the ``ε_barrier`` line.  Mean ± std over seeds; one
rewind step (default: the largest) and one BatchNorm mode (default: E2's first).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..foundations.hparams import ConfigError
from ..metrics.levels import level_percent, pick_levels
from ..metrics.selection import choose_rewind, rewind_steps, select_run
from ..metrics.statistics import count_seeds
from . import splits
from . import style as S

ID = "fig3_interpolation"
SPLITS = splits(ID)


def plot(*, interpolation: xr.Dataset, imp: xr.Dataset | None = None, split: str = "test",
         levels: Sequence[int] | None = None, rewind_step: int | None = None, bn_mode: str | None = None,
         eps_barrier: float = 0.02, arch: str | None = None):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    t = choose_rewind(rewind_step, interpolation, arch=arch)
    e2 = select_run(interpolation, arch, t)
    modes = [str(m) for m in e2.bn_mode.values]
    mode = bn_mode or modes[0]
    if mode not in modes:
        raise ConfigError(f"BatchNorm mode {mode!r} is not in the E2 results (they have {modes})")
    e2 = e2.sel(bn_mode=mode, split=split)
    run = select_run(imp, arch, t) if imp is not None and t in rewind_steps(imp, arch=arch) else None
    all_levels = [int(v) for v in e2.level.values]
    pct_all = level_percent(all_levels, e2, run)
    succ = e2.sel(pair="successive")
    with_partner = [lv for lv in all_levels if np.isfinite(succ.error.sel(level=lv).values).any()]
    shown = pick_levels(with_partner or all_levels, 5, levels)
    colors = S.level_colors(shown)
    gamma = e2.gamma.values

    fig = S.new_figure(S.FULL, 2.8)
    left, right = S.panel_row(fig, 2, width_ratios=[2.0, 1.0])
    ax_s, ax_d = left.subplots(1, 2, sharey=True)
    ax_b = right.subplots()
    curves = {(lv, pair): e2.error.sel(pair=pair, level=lv).transpose("seed", "gamma").values * 100
              for lv in shown for pair in ("successive", "dense") if not (pair == "dense" and lv == 0)}
    positive = np.concatenate([c.ravel() for c in curves.values()])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    wide = len(positive) > 0 and positive.max() / positive.min() > 10  # log axis: bands are min-max
    for (lv, pair), curve in curves.items():
        if np.isfinite(curve).any():
            S.mean_band(ax_s if pair == "successive" else ax_d, gamma, curve, axis=0, color=colors[lv],
                        marker="o", markersize=2.2, band="range" if wide else "std",
                        label=S.level_label(lv, float(pct_all[all_levels.index(lv)])))
    if wide:
        ax_s.set_yscale("log")
        S.plain_log_ticks(ax_s)
    ax_s.set_xlabel("γ   (w_L at 0, w_L+1 at 1)")
    ax_d.set_xlabel("γ   (dense w_0 at 0, w_L at 1)")
    ax_s.set_ylabel(S.ERROR_LABELS[split])
    for ax in (ax_s, ax_d):
        ax.set_xlim(-0.03, 1.03)
    S.panel(ax_s, "a", "successive levels")
    S.panel(ax_d, "b", "dense to sparse")

    dense_b = e2.barrier_error.sel(pair="dense").transpose("seed", "level").values * 100
    dense_b[:, np.asarray(all_levels) == 0] = np.nan  # w_0 to itself
    S.mean_band(ax_b, pct_all, dense_b, axis=0, color=S.METHOD_COLORS["random"], marker="o",
                label="B(w_0, w_L): dense to sparse")
    # the successive pair (L, L+1) sits at its sparser end, w_L+1, as in Fig. 2
    pairs = [lv for lv in all_levels if np.isfinite(succ.barrier_error.sel(level=lv).values).any()]
    succ_b = succ.barrier_error.sel(level=pairs).transpose("seed", "level").values * 100
    if pairs:
        S.mean_band(ax_b, level_percent([lv + 1 for lv in pairs], e2, run), succ_b, axis=0, color="0.45",
                    marker="s", markersize=2.5, linestyle="--", label="B(w_L, w_L+1): successive")
    S.threshold_line(ax_b, eps_barrier * 100, f"ε_barrier = {eps_barrier * 100:g}%")
    S.barrier_axis(ax_b, np.concatenate([dense_b, succ_b], axis=1), eps_barrier * 100)
    S.percent_axis(ax_b, pct_all)
    ax_b.set_ylabel(f"{split} error barrier (%)")
    S.panel(ax_b, "c", "barriers")
    seeds = count_seeds(e2.error)
    S.run_title(fig, str(e2.arch.values), t, seeds, extra=f"BatchNorm {mode}", log_range=wide)
    S.panel_legends([(left, [ax_s, ax_d], 3), (right, [ax_b], 1)])
    return fig
