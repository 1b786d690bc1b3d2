"""Fig. 4 — robustness of the pruned rewind point to perturbation (E3; SPEC §4, claim 2).

(a) the barrier ``B(w_L, trained u')`` vs % weights remaining, one curve per strength ``c``
(``c = 0``, black: the SGD-noise baseline); (b) the error of the trained ``u'`` beside IMP's
``w_L`` and the dense error ± ``ε_match``.  Mean ± std over seeds and replicates; levels where
IMP matches are shaded (with the IMP results among the inputs).
"""

from __future__ import annotations

import xarray as xr

from ..metrics.levels import level_percent
from ..metrics.matching import dense_error, epsilon_match, matching_levels
from ..metrics.selection import choose_rewind, rewind_steps, select_run
from ..metrics.statistics import count_seeds
from . import splits
from . import style as S

ID = "fig4_robustness"
SPLITS = splits(ID)


def plot(*, perturbation: xr.Dataset, imp: xr.Dataset | None = None, split: str = "test",
         rewind_step: int | None = None, eps_barrier: float = 0.02, match_floor: float = 0.01,
         arch: str | None = None):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    t = choose_rewind(rewind_step, perturbation, arch=arch)
    e3 = select_run(perturbation, arch, t).sel(split=split)
    run = select_run(imp, arch, t) if imp is not None and t in rewind_steps(imp, arch=arch) else None
    levels = [int(v) for v in e3.level.values]
    pct = level_percent(levels, e3, run)
    strengths = [float(c) for c in e3.strength.values]
    colors = S.strength_colors(strengths)

    fig = S.new_figure(S.FULL, 2.5)
    ax_b, ax_e = fig.subplots(1, 2)
    if run is not None:
        match = matching_levels(run, epsilon_match(run, match_floor, "test"))
        imp_levels = [int(v) for v in run.level.values]  # every IMP level, so the shaded region is exact
        flags = [bool(match.sel(level=lv)) for lv in imp_levels]
        for ax in (ax_b, ax_e):
            S.shade_levels(ax, level_percent(imp_levels, run), flags)
        dense, _, _ = dense_error(run, split)
        eps = epsilon_match(run, match_floor, split)
        ax_e.axhspan((dense - eps) * 100, (dense + eps) * 100, color="0.5", alpha=0.25, linewidth=0,
                     label=f"dense ± ε_match ({split})")
    for c in strengths:
        label = "c = 0 (SGD noise)" if c == 0 else f"c = {c:g}"
        b = e3.barrier_error.sel(strength=c).transpose("seed", "replicate", "level").values * 100
        S.mean_band(ax_b, pct, b, axis=(0, 1), color=colors[c], marker="o", label=label)
        e = e3.error.sel(strength=c).transpose("seed", "replicate", "level").values * 100
        S.mean_band(ax_e, pct, e, axis=(0, 1), color=colors[c], marker="o", alpha=0.12)
    lvl = e3.level_error.transpose("seed", "level").values * 100
    S.mean_band(ax_e, pct, lvl, axis=0, color=S.METHOD_COLORS["magnitude"], linestyle="--", marker="s",
                markersize=2.5, label="IMP solution w_L")
    S.threshold_line(ax_b, eps_barrier * 100, f"ε_barrier = {eps_barrier * 100:g}%")
    for ax in (ax_b, ax_e):
        S.percent_axis(ax, pct)
    ax_b.set_ylabel(f"{split} error barrier (%)")
    S.barrier_axis(ax_b, e3.barrier_error.transpose("seed", "replicate", "strength", "level").values.reshape(
        -1, len(levels) * len(strengths)) * 100, eps_barrier * 100)
    ax_e.set_ylabel(S.ERROR_LABELS[split])
    S.panel(ax_b, "a", "barrier B(w_L, trained u')")
    S.panel(ax_e, "b", "error of the trained u'")
    seeds = count_seeds(e3.barrier_error)
    reps = int(e3.sizes.get("replicate", 1))
    S.run_title(fig, str(e3.arch.values), t, seeds,
                extra=f"{reps} replicate{'s' if reps != 1 else ''} per strength; |u' − u| = c · d_L")
    handles = []
    for ax in (ax_b, ax_e):
        handles += [h for h, lab in zip(*ax.get_legend_handles_labels()) if lab]
    if run is not None:
        handles.append(S.matching_patch("IMP matching (test error)"))
    S.figure_legend(fig, handles=_unique(handles), ncol=5)
    return fig


def _unique(handles):
    seen = {}
    for h in handles:
        seen.setdefault(h.get_label(), h)
    return list(seen.values())
