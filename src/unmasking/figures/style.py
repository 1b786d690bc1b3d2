"""One shared style so the figure set reads as one paper's figures.

- sized for a two-column paper: a single column is 3.3 in wide, a full-width figure 6.9 in;
- one colour per method / strength / rewind step, used in every figure;
- the x axis of "% weights remaining" is logarithmic, decreasing to the right, with IMP's
  levels as ticks;
- mean ± spread over seeds is drawn as a line with a shaded band.

Only how figures look lives here; which data they show (an architecture, a rewind step, the %
of weights remaining per level, statistics over seeds) is :mod:`unmasking.metrics`.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from ..metrics.statistics import spread  # noqa: E402

COLUMN = 3.3
FULL = 6.9

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "figure.dpi": 150,
    "pdf.fonttype": 42,
}

METHOD_COLORS = {
    "magnitude": "#1f77b4",
    "random": "#d62728",
    "random_layerwise": "#ff7f0e",
    "theory_magnitude": "#1f77b4",
    "theory_random": "#d62728",
    "imp": "#2ca02c",
    "one_shot": "#9467bd",
}
SPLIT_STYLES = {"test": "-", "train": "--"}
ERROR_LABELS = {"test": "test error (%)", "train": "train error (%)"}
MATCHING_SHADE = "#2ca02c"
PNG_DPI = 300  # resolution of the PNGs (the PDFs are vector graphics)


def use_style() -> None:
    plt.rcParams.update(RC)


def strength_colors(strengths: Sequence[float]) -> dict[float, tuple]:
    """Strength 0 (the SGD-noise baseline) is black; larger perturbations get warmer colours."""
    cmap = plt.get_cmap("plasma")
    nonzero = sorted(s for s in strengths if s != 0)
    colors = {0.0: (0.0, 0.0, 0.0, 1.0)}
    for i, s in enumerate(nonzero):
        colors[float(s)] = cmap(0.15 + 0.7 * i / max(len(nonzero) - 1, 1))
    return colors


def series_colors(keys: Sequence) -> dict:
    cmap = plt.get_cmap("viridis")
    return {k: cmap(0.1 + 0.75 * i / max(len(keys) - 1, 1)) for i, k in enumerate(keys)}


def log_spaced_ticks(values: Sequence[float], max_ticks: int = 8) -> np.ndarray:
    """Of ``values`` (decreasing), the largest and then each one at least 1/``max_ticks`` of the
    log range below the last kept, so that labels never crowd where the levels are uneven."""
    v = np.asarray(values, dtype=float)
    if len(v) <= 1:
        return v
    gap = 0.999 * np.log10(v[0] / v[-1]) / max(1, max_ticks - 1)
    kept = [v[0]]
    for x in v[1:]:
        if np.log10(kept[-1] / x) >= gap:
            kept.append(x)
    return np.asarray(kept)


def percent_axis(ax, percents: Sequence[float], max_ticks: int = 8) -> None:
    """Log x axis of % weights remaining, decreasing to the right, IMP's levels as ticks."""
    p = np.asarray(sorted(set(np.round(np.asarray(percents, dtype=float), 6)), reverse=True))
    ax.set_xscale("log")
    ticks = log_spaced_ticks(p, max_ticks)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    ax.set_xlim(p.max() * 1.15, p.min() / 1.15)
    ax.set_xlabel("weights remaining (%)")


def mean_band(ax, x, values, axis=0, label: str | None = None, color=None, alpha: float = 0.2,
              band: str = "std", **kw):
    """Plot the mean over ``axis`` (seeds) with a shaded band; NaNs are ignored.

    ``band="std"``: ±1 standard deviation; ``band="range"``: minimum to maximum (for log axes,
    where mean − std can be negative).
    """
    mean, std, _ = spread(values, axis)
    if band == "range":
        v = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(v, axis=axis), np.nanmax(v, axis=axis)
    elif band == "std":
        lo, hi = mean - std, mean + std
    else:
        raise ValueError(f"band must be 'std' or 'range', got {band!r}")
    (line,) = ax.plot(x, mean, label=label, color=color, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def save(fig, path_stem: str | Path) -> list[Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` (:data:`PNG_DPI`) and close the figure."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, kw in (("pdf", {}), ("png", {"dpi": PNG_DPI})):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp, **kw)
        tmp.replace(path)
        out.append(path)
    plt.close(fig)
    return out


def level_colors(levels: Sequence[int]) -> dict[int, tuple]:
    """Sequential colours for a few selected levels: light (dense) to dark (sparse)."""
    cmap = plt.get_cmap("viridis_r")
    levels = list(levels)
    return {lv: cmap(0.12 + 0.8 * i / max(len(levels) - 1, 1)) for i, lv in enumerate(levels)}


def level_label(level: int, percent: float) -> str:
    return f"L={level} ({percent:.3g}%)"


def panel(ax, letter: str, title: str) -> None:
    """Panel letter and a short title, left-aligned above the axes."""
    ax.set_title(f"({letter}) {title}", loc="left", fontsize=RC["axes.titlesize"])


def run_title(fig, arch: str, rewind_step: int | None = None, seeds: int | None = None, extra: str = "",
              log_range: bool = False) -> None:
    """One small line naming the architecture, rewind step and number of seeds (and how bands are drawn)."""
    parts = [arch]
    if rewind_step is not None:
        parts.append(f"rewind step t = {rewind_step}")
    if seeds is not None:
        if seeds > 1:
            parts.append(f"{seeds} seeds: mean ± std" + (" (log axes: min–max)" if log_range else ""))
        else:
            parts.append("1 seed")
    if extra:
        parts.append(extra)
    width = int(fig.get_figwidth() * 17)  # characters of 8-pt text per line that fit the figure
    fig.suptitle(textwrap.fill(", ".join(parts), width), fontsize=RC["font.size"])


def threshold_line(ax, y: float, label: str, color="0.35") -> None:
    ax.axhline(y, color=color, linestyle=":", linewidth=1.0, label=label, zorder=1)


def level_edges(percents: Sequence[float]) -> np.ndarray:
    """Edges between levels on the log % axis (geometric midpoints), beyond the ends by the axis margin."""
    p = np.asarray(percents, dtype=float)
    mids = np.sqrt(p[:-1] * p[1:])
    return np.concatenate([[p[0] * 1.15], mids, [p[-1] / 1.15]])


def shade_levels(ax, percents: Sequence[float], flags: Sequence[bool], color=MATCHING_SHADE, alpha=0.12,
                 label: str | None = None) -> None:
    """Shade the x ranges of the levels whose flag is true (contiguous levels as one span)."""
    p = np.asarray(percents, dtype=float)
    order = np.argsort(-p)
    p, f = p[order], np.asarray(flags, dtype=bool)[order]
    edges = level_edges(p)
    i = 0
    while i < len(p):
        if not f[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(p) and f[j + 1]:
            j += 1
        ax.axvspan(edges[i], edges[j + 1], color=color, alpha=alpha, linewidth=0, zorder=0)
        i = j + 1


def matching_patch(label: str = "IMP matching") -> Patch:
    return Patch(facecolor=MATCHING_SHADE, alpha=0.25, edgecolor="none", label=label)


def legend_entries(axes: Sequence) -> dict[str, object]:
    """Label -> handle of the labelled artists of ``axes`` (first occurrence of each label)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    return seen


def figure_legend(fig, axes: Sequence | None = None, handles: Sequence | None = None, ncol: int | None = None,
                  loc: str = "outside lower center") -> None:
    """One legend for the whole figure, outside the axes (so it hides no data); labels deduplicated."""
    seen = legend_entries(axes or fig.axes) if handles is None else {h.get_label(): h for h in handles}
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc=loc, ncol=ncol or min(len(seen), 4),
                   handlelength=1.8, columnspacing=1.2)


def panel_row(fig, n: int, width_ratios: Sequence[float] | None = None) -> list:
    """``n`` side-by-side subfigures, each to hold its panel(s) and its own legend underneath."""
    return list(np.atleast_1d(fig.subfigures(1, n, width_ratios=width_ratios, wspace=0.0)))


def panel_legends(groups: Sequence[tuple], ncol: int = 1) -> None:
    """A legend under each subfigure: ``groups`` of ``(subfigure, axes or handles[, ncol])``.

    The legends are padded with blank rows to the same height, so the panels of the row keep
    the same height and stay aligned.
    """
    entries = []
    for group in groups:
        sub, items = group[0], list(group[1])
        cols = group[2] if len(group) > 2 else ncol
        if items and hasattr(items[0], "get_legend_handles_labels"):
            entries.append((sub, legend_entries(items), cols))
        else:
            entries.append((sub, {h.get_label(): h for h in items}, cols))
    rows = max((int(np.ceil(len(e) / c)) for _, e, c in entries), default=0)
    for sub, e, cols in entries:
        handles, labels = list(e.values()), list(e.keys())
        while len(handles) < rows * cols:
            handles.append(Line2D([], [], linestyle="none", marker=None))
            labels.append(" ")
        if handles:
            sub.legend(handles, labels, loc="outside lower center", ncol=cols, handlelength=1.5,
                       columnspacing=0.8, handletextpad=0.5)


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Tick labels of a log axis as plain numbers (0.3, 10, 300) instead of powers of ten; minor ticks
    (2, 5 × a power of ten) are labelled too when the axis spans less than two decades."""
    target = ax.yaxis if axis == "y" else ax.xaxis

    def minor(v, _):
        lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
        short = lo > 0 and hi / lo < 100
        return f"{v:g}" if short and f"{v:.0e}"[0] in "25" else ""

    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(minor))


def barrier_axis(ax, values, eps_pct: float, axis=0) -> None:
    """Y axis of barriers in %: linear, or symlog (linear up to 5·ε_barrier, at least 5%) when the
    largest mean + std is far above that, so that the region around ε_barrier stays readable."""
    mean, std, _ = spread(values, axis)
    tops = (mean + std)[np.isfinite(mean + std)]
    top = max(float(tops.max()) if len(tops) else 0.0, 2.5 * eps_pct)
    thresh = max(5.0 * eps_pct, 5.0)
    if top > 3 * thresh:
        ax.set_yscale("symlog", linthresh=thresh, linscale=2.0)
        ticks = [t for t in (0, 2, 5, 10, 20, 50, 100) if t <= top * 1.3]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(-0.5, min(110.0, top * 1.3))
    else:
        ax.set_ylim(-0.5, top * 1.08)


def log_if_wide(ax, values, axis: str = "y", decades: float = 1.0) -> None:
    """Log scale with plain tick labels when the positive values span more than ``decades``, else linear."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() > 10 ** decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        plain_log_ticks(ax, axis)


def log_scale(ax, values, axis: str = "y") -> None:
    """Log scale when every finite value is positive, else symlog around the smallest magnitude."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    if len(v) == 0 or np.all(v > 0):
        setter("log")
    else:
        nonzero = np.abs(v[v != 0])
        setter("symlog", linthresh=float(nonzero.min()) if len(nonzero) else 1.0)


def new_figure(width: float, height: float, **kw):
    """A figure in the shared style with constrained layout (room for outside legends)."""
    use_style()
    return plt.figure(figsize=(width, height), layout="constrained", **kw)
