"""One shared style so the figure set reads as one paper's figures.

- sized for a two-column paper: a single column is 3.3 in wide, a full-width figure 6.9 in;
- one colour per method / strength / rewind step, used in every figure;
- the x axis of "% weights remaining" is logarithmic, decreasing to the right, with IMP's
  levels as ticks;
- mean ± spread over seeds is drawn as a line with a shaded band.

It also holds what every figure module shares about the data: loading aggregated datasets
(``results/<config>/<arch>/<experiment>.nc``, dims ``arch, rewind_step, seed, level, …``) or
single-run outputs, selecting one architecture and rewind step, the % of weights remaining
per level, statistics over seeds, and picking a few levels to show.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

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


def spread(values, axis=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation (ddof 1; 0 where one value) and count of the finite values along ``axis``.

    ``axis`` may be a tuple (e.g. seeds and replicates pooled).  Where no value is finite the
    mean and deviation are NaN.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(axis=axis)
    total = np.where(ok, v, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(ok, v - np.expand_dims(mean, axis), 0.0)
        var = (dev ** 2).sum(axis=axis) / np.maximum(n - 1, 1)
    std = np.where(n > 1, np.sqrt(var), np.where(n == 1, 0.0, np.nan))
    return mean, std, n


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


# --- data shared by the figure modules --------------------------------------------------------------------------

EXPERIMENTS = ("imp", "interpolation", "perturbation", "hessian", "pruning_theory", "pruning_ratio", "flatness",
               "small_weights", "landscape")
ERROR_LABELS = {"test": "test error (%)", "train": "train error (%)"}
SPLITS = ("test", "train")


def _config_error(message: str) -> Exception:
    from ..foundations.hparams import ConfigError

    return ConfigError(message)


def experiment_of(ds: xr.Dataset, path: str | Path | None = None) -> str:
    """The experiment a dataset holds (``imp``, ``interpolation``, …): from the aggregate's
    ``experiment_name``, a run output's ``experiment`` (``E2_interpolation``) or the file name."""
    name = str(ds.attrs.get("experiment_name", ""))
    if name in EXPERIMENTS:
        return name
    m = re.fullmatch(r"E\d+_(\w+)", str(ds.attrs.get("experiment", "")))
    if m and m.group(1) in EXPERIMENTS:
        return m.group(1)
    if path is not None and Path(path).stem in EXPERIMENTS:
        return Path(path).stem
    raise _config_error(f"cannot tell which experiment {path or 'a dataset'} holds: it has no experiment_name/"
                        f"experiment attribute and its file name is not one of {', '.join(EXPERIMENTS)}.nc")


def standardize(ds: xr.Dataset) -> xr.Dataset:
    """A single run's output with the aggregate's ``arch`` and ``rewind_step`` dimensions (no-op on aggregates)."""
    if "rewind_step" not in ds.dims:
        t = ds.attrs.get("rewind_step", ds.coords["rewind_step"].item() if "rewind_step" in ds.coords else 0)
        ds = ds.drop_vars("rewind_step", errors="ignore").expand_dims(rewind_step=[int(t)])
    if "arch" not in ds.dims:
        name = ds.attrs.get("arch_name") or ds.attrs.get("recipe_name") or "run"
        ds = ds.drop_vars("arch", errors="ignore").expand_dims(arch=[str(name)])
    return ds


def load_inputs(paths: Iterable[str | Path]) -> dict[str, xr.Dataset]:
    """Load result files into ``{experiment: dataset}``; several files of one experiment (several
    architectures, or single runs) are combined along their coordinates."""
    from ..foundations.netcdf import load_dataset

    groups: dict[str, list[xr.Dataset]] = {}
    for path in paths:
        ds = load_dataset(path)
        groups.setdefault(experiment_of(ds, path), []).append(standardize(ds))
    out = {}
    for exp, items in groups.items():
        if len(items) == 1:
            out[exp] = items[0]
            continue
        try:
            out[exp] = xr.combine_by_coords(items, data_vars="minimal", combine_attrs="drop_conflicts",
                                            join="outer")
        except ValueError as e:
            raise _config_error(f"the {exp} inputs do not combine (overlapping runs?): {e}") from None
    return out


def architectures(datasets: Mapping[str, xr.Dataset]) -> list[str]:
    """Architecture names present in any of the datasets, in order of appearance."""
    names: list[str] = []
    for ds in datasets.values():
        for a in ds.arch.values:
            if str(a) not in names:
                names.append(str(a))
    return names


def select_arch(ds: xr.Dataset, arch: str | None = None) -> xr.Dataset:
    """One architecture of an aggregate (the only one when ``arch`` is None), without the ``arch`` dim."""
    ds = standardize(ds)
    names = [str(a) for a in ds.arch.values]
    if arch is None:
        if len(names) > 1:
            raise _config_error(f"the inputs hold several architectures ({', '.join(names)}); choose one (--arch)")
        arch = names[0]
    if arch not in names:
        raise _config_error(f"architecture {arch!r} is not in the inputs (they have {', '.join(names)})")
    return ds.sel(arch=arch)


def has_data(ds: xr.Dataset) -> bool:
    """Whether any floating-point variable holds a finite value (combined aggregates pad missing runs with NaN)."""
    return any(np.isfinite(ds[v].values).any() for v in ds.data_vars if np.issubdtype(ds[v].dtype, np.floating))


def rewind_steps(*datasets: xr.Dataset | None, arch: str | None = None) -> list[int]:
    """Rewind steps with results in every given dataset (ascending), for ``arch`` when given."""
    common = None
    for ds in datasets:
        if ds is None:
            continue
        ds = standardize(ds)
        if arch is not None or ds.sizes["arch"] == 1:
            ds = select_arch(ds, arch)
        have = {int(t) for t in ds.rewind_step.values if has_data(ds.sel(rewind_step=t))}
        common = have if common is None else common & have
    return sorted(common or [])


def choose_rewind(requested: int | None, *datasets: xr.Dataset | None, arch: str | None = None) -> int:
    """``requested``, or the largest rewind step the datasets share (late rewinding: the paper's main setting)."""
    steps = rewind_steps(*datasets, arch=arch)
    if not steps:
        raise _config_error("the inputs share no rewind step with results (they come from different IMP runs)")
    if requested is None:
        return steps[-1]
    if int(requested) not in steps:
        raise _config_error(f"rewind step {requested} is not in the inputs (they share {steps})")
    return int(requested)


def select_run(ds: xr.Dataset | None, arch: str | None, rewind_step: int) -> xr.Dataset | None:
    """One architecture and rewind step: a dataset with ``seed``, ``level`` and the experiment's own dims."""
    if ds is None:
        return None
    return select_arch(ds, arch).sel(rewind_step=rewind_step)


def level_density(ds: xr.Dataset) -> xr.DataArray | None:
    """The per-level density (fraction of prunable weights remaining) of a dataset, averaged over seeds."""
    if "density" not in ds or "level" not in ds["density"].dims or not set(ds["density"].dims) <= {"seed", "level"}:
        return None
    d = ds["density"]
    return xr.DataArray(spread(d.values, d.dims.index("seed"))[0], coords={"level": d.level.values},
                        dims="level") if "seed" in d.dims else d


def level_percent(levels: Sequence[int], *sources: xr.Dataset | None) -> np.ndarray:
    """% of prunable weights remaining at ``levels``, from the first source with a per-level density
    (IMP's ``imp`` dataset has every level; E2, E3 and E8 carry their own)."""
    levels = [int(v) for v in levels]
    for ds in sources:
        d = None if ds is None else level_density(ds)
        if d is None:
            continue
        have = {int(v) for v in d.level.values}
        if all(v in have for v in levels):
            out = 100.0 * np.asarray(d.sel(level=levels).values, dtype=float)
            if np.all(np.isfinite(out)):
                return out
    raise _config_error(f"no per-level density for levels {levels}: add the IMP dataset (imp.nc) to the inputs")


def pick_levels(levels: Sequence[int], n: int = 5, requested: Sequence[int] | None = None) -> list[int]:
    """``requested`` (checked against ``levels``) or ``n`` levels spread evenly from the first to the last."""
    levels = sorted(int(v) for v in levels)
    if requested:
        missing = sorted(set(int(v) for v in requested) - set(levels))
        if missing:
            raise _config_error(f"levels {missing} are not in the data (it has {levels})")
        return sorted(set(int(v) for v in requested))
    if len(levels) <= n:
        return levels
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, n)).astype(int))
    return [levels[i] for i in idx]


def count_seeds(da: xr.DataArray) -> int:
    """Seeds with at least one finite value."""
    if "seed" not in da.dims:
        return 1
    other = [d for d in da.dims if d != "seed"]
    return int(np.isfinite(da).any(other).sum()) if other else int(np.isfinite(da).sum())


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


def render(plot: Callable, datasets: Mapping[str, xr.Dataset], out: str | Path, **options) -> list[Path]:
    """Call a figure's ``plot`` with the datasets and options it takes, and write ``out``.pdf/.png.

    Datasets are passed by experiment name (``imp=…``); a plot parameter named after an
    experiment without a default is required.  Options set to None are left at their defaults.
    """
    import inspect

    kwargs = {}
    for name, param in inspect.signature(plot).parameters.items():
        if name in EXPERIMENTS:
            if name in datasets:
                kwargs[name] = datasets[name]
            elif param.default is inspect.Parameter.empty:
                raise _config_error(f"{plot.__module__.rsplit('.', 1)[-1]} needs the {name} results "
                                    f"(results/<config>/<arch>/{name}.nc) among the inputs")
        elif options.get(name) is not None:
            kwargs[name] = options[name]
    return save(plot(**kwargs), out)
