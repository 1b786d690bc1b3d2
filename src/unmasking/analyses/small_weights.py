"""E8 — retraining finds new small weights (SPEC §3, claim 4).

For the level-L solution ``w_L`` (mask ``m_L``, ``D_L`` surviving weights) and IMP pruning
fraction ``f`` this computes:

* the histogram of the surviving ``|w_L|`` on fixed log-spaced bins (shared by every level
  and every run, so histograms combine and compare), with under/overflow counts;
* the next pruning threshold: the largest magnitude IMP's next step removes, i.e. the
  ``ceil(f·D_L)``-th smallest surviving ``|w_L|``, and that step's projection length
  ``R_L = ‖(m_L − m_{L+1}) ⊙ w_L‖``;
* IMP's *following* step, after retraining: ``R_{L+1} = ‖(m_{L+1} − m_{L+2}) ⊙ w_{L+1}‖``
  and its threshold (the largest ``|w_{L+1}|`` it removes);
* the same density reached *without* retraining: a one-shot magnitude prune of ``w_L``
  from ``m_L`` by ``|m_L| − |m_{L+2}|`` weights — its projection length and threshold — and
  the part of it that corresponds to IMP's second step, ``‖S ⊙ w_L‖``, where ``S`` holds the
  ``n = |m_{L+1}| − |m_{L+2}|`` smallest ``|w_L|`` among the weights alive in ``m_{L+1}``
  (for a magnitude-pruned ``m_{L+1}``, one-shot² = ``R_L² + ‖S ⊙ w_L‖²``);
* the overlap between the weights IMP prunes at L+1, ``P = m_{L+1} − m_{L+2}``, and ``S``:
  ``|P ∩ S| / n`` (the fraction of IMP's pruned weights that were already the smallest before
  retraining; the primary measure) and the Jaccard index ``|P ∩ S| / |P ∪ S|``, each beside
  its chance level for a uniformly random ``S`` of the same size (``n / |m_{L+1}|`` and the
  exact hypergeometric expectation of the Jaccard index).

Masks ``m_{L+1}``/``m_{L+2}`` missing from the inputs are derived by IMP's own rule (global
magnitude pruning of the surviving weights by ``ceil(f·remaining)``), which reproduces a
run's saved masks exactly; quantities that need an unavailable solution are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .. import masks as M
from ..foundations.hparams import ConfigError

Weights = Mapping[str, torch.Tensor]

DEFAULT_BIN_RANGE = (1e-8, 1e1)
DEFAULT_BINS_PER_DECADE = 10


@dataclass(frozen=True)
class SmallWeightsSettings:
    """Options of E8 (the ``small_weights`` command's flags): the |w| histogram's bins."""

    bin_range: tuple[float, float] = field(
        default=DEFAULT_BIN_RANGE,
        metadata={"help": "range of the log-spaced |w| histogram bins (default: %(default)s)", "metavar": ("LO", "HI")},
    )
    bins_per_decade: int = field(
        default=DEFAULT_BINS_PER_DECADE, metadata={"help": "histogram bins per factor of 10 (default: %(default)s)"}
    )

    def bin_edges(self) -> np.ndarray:
        """The histogram's bin edges (:func:`log_bins`); a bad range is a :class:`ConfigError`."""
        try:
            return log_bins(self.bin_range[0], self.bin_range[1], self.bins_per_decade)
        except ValueError as e:
            raise ConfigError(f"--bin-range/--bins-per-decade: {e}") from None


def log_bins(
    lo: float = DEFAULT_BIN_RANGE[0], hi: float = DEFAULT_BIN_RANGE[1], per_decade: int = DEFAULT_BINS_PER_DECADE
) -> np.ndarray:
    """Log-spaced bin edges from ``lo`` to ``hi`` with ``per_decade`` bins per factor of 10."""
    if not (0 < lo < hi) or per_decade < 1:
        raise ValueError(f"need 0 < lo < hi and per_decade >= 1, got lo={lo}, hi={hi}, per_decade={per_decade}")
    n = max(1, round(per_decade * math.log10(hi / lo)))
    return np.logspace(math.log10(lo), math.log10(hi), n + 1)


def _flat(weights: Weights, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([weights[n].detach().reshape(-1).double().cpu() for n in names])


def _flat_mask(mask: Weights, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([mask[n].reshape(-1).bool().cpu() for n in names])


def _check_nested(inner: Weights, outer: Weights, what: str) -> None:
    if set(inner) != set(outer):
        raise ValueError(f"{what}: masks cover different parameters")
    if not M.is_nested(inner, outer):
        raise ValueError(f"{what}: the masks are not nested")


def _norm(values: torch.Tensor) -> float:
    return float(values.pow(2).sum().sqrt())


def chance_overlap(total: int, n: int) -> tuple[float, float]:
    """Expected ``|P∩S|/n`` and Jaccard index for a uniformly random ``S`` (``|S| = |P| = n`` of ``total``)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import hypergeom  # scipy.stats costs a second to import: only when needed

    k = np.arange(max(0, 2 * n - total), n + 1)
    pmf = hypergeom(total, n, n).pmf(k)
    return n / total, float(np.sum(pmf * k / (2 * n - k)))


def level_small_weights(
    weights: Weights,
    mask: Weights,
    fraction: float,
    next_weights: Weights | None = None,
    next_mask: Weights | None = None,
    next2_mask: Weights | None = None,
    bin_edges: np.ndarray | None = None,
) -> dict[str, float | np.ndarray]:
    """The E8 quantities of one level (see the module docstring) as a dict of numbers.

    ``weights``/``mask`` are ``w_L``/``m_L``; ``next_weights`` is ``w_{L+1}``; ``next_mask`` and
    ``next2_mask`` are ``m_{L+1}``/``m_{L+2}`` (derived by IMP's rule when omitted and the
    weights they come from are given).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"pruning fraction must be in (0, 1), got {fraction}")
    edges = log_bins() if bin_edges is None else np.asarray(bin_edges, dtype=float)
    names = list(mask)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"weights lack the masked parameters {missing}")
    nan = float("nan")
    w, m = _flat(weights, names), _flat_mask(mask, names)
    surviving = int(m.sum())
    alive_abs = w[m].abs().numpy()
    hist, _ = np.histogram(alive_abs, bins=edges)
    k = M.num_to_prune(mask, fraction)
    first = M.prune_indices(weights, mask, k)
    out: dict[str, float | np.ndarray] = {
        "histogram": hist.astype(np.int64),
        "underflow": int((alive_abs < edges[0]).sum()),
        "overflow": int((alive_abs > edges[-1]).sum()),
        "surviving": surviving,
        "density": surviving / m.numel(),
        "next_pruned": k,
        "next_threshold": float(w[first].abs().max()) if k else nan,
        "projection_length": _norm(w[first]),
    }
    if next_mask is None:
        next_mask = M.prune_count(weights, mask, k)
    _check_nested(next_mask, mask, "m_L+1 within m_L")
    if next2_mask is None and next_weights is not None:
        next2_mask = M.prune_count(next_weights, next_mask, M.num_to_prune(next_mask, fraction))
    out.update({key: nan for key in NEEDS_NEXT})
    if next2_mask is None:
        return out
    _check_nested(next2_mask, next_mask, "m_L+2 within m_L+1")
    m1, m2 = _flat_mask(next_mask, names), _flat_mask(next2_mask, names)
    pruned = m1 & ~m2
    n = int(pruned.sum())
    if next_weights is not None:
        w1 = _flat(next_weights, names)
        out["next_projection_length"] = _norm(w1[pruned])
        out["retrained_threshold"] = float(w1[pruned].abs().max()) if n else nan
    oneshot = M.prune_indices(weights, mask, surviving - int(m2.sum()))
    smallest = M.prune_indices(weights, next_mask, n)
    hits = int(pruned[smallest].sum())
    chance, chance_j = chance_overlap(int(m1.sum()), n)
    out.update(
        {
            "second_step_pruned": n,
            "oneshot_pruned": len(oneshot),
            "oneshot_projection_length": _norm(w[oneshot]),
            "oneshot_threshold": float(w[oneshot].abs().max()) if len(oneshot) else nan,
            "unretrained_step_length": _norm(w[smallest]),
            "overlap_count": hits,
            "overlap": hits / n if n else nan,
            "overlap_jaccard": hits / (2 * n - hits) if n else nan,
            "chance_overlap": chance,
            "chance_overlap_jaccard": chance_j,
        }
    )
    return out


NEEDS_NEXT = (
    "next_projection_length",
    "retrained_threshold",
    "second_step_pruned",
    "oneshot_pruned",
    "oneshot_projection_length",
    "oneshot_threshold",
    "unretrained_step_length",
    "overlap_count",
    "overlap",
    "overlap_jaccard",
    "chance_overlap",
    "chance_overlap_jaccard",
)
"""Quantities that need IMP's following step (``m_{L+2}``, and ``w_{L+1}`` for two of them)."""

VARIABLES = {
    "surviving": ("count", "D_L: surviving prunable weights of m_L"),
    "density": ("fraction", "D_L / D"),
    "underflow": ("count", "surviving |w_L| below the first bin edge"),
    "overflow": ("count", "surviving |w_L| above the last bin edge"),
    "next_pruned": ("count", "weights IMP's next step removes from w_L: ceil(fraction * D_L)"),
    "next_threshold": ("|w|", "largest |w_L| removed by IMP's next step (the ceil(fraction*D_L)-th smallest)"),
    "projection_length": ("L2 norm", "R_L = |(m_L - m_L+1) * w_L|"),
    "next_projection_length": ("L2 norm", "R_L+1 = |(m_L+1 - m_L+2) * w_L+1|: IMP's next step, after retraining"),
    "retrained_threshold": ("|w|", "largest |w_L+1| removed by IMP's step m_L+1 -> m_L+2"),
    "second_step_pruned": ("count", "n = |m_L+1| - |m_L+2|"),
    "oneshot_pruned": ("count", "|m_L| - |m_L+2|: one-shot prune of w_L to the density of level L+2"),
    "oneshot_projection_length": ("L2 norm", "norm of the weights of w_L removed by the one-shot prune to level L+2"),
    "oneshot_threshold": ("|w|", "largest |w_L| removed by the one-shot prune to level L+2"),
    "unretrained_step_length": (
        "L2 norm",
        "|S * w_L|, S = the n smallest |w_L| alive in m_L+1 (second step without retraining)",
    ),
    "overlap_count": ("count", "|P & S|, P = m_L+1 - m_L+2 (pruned by IMP at L+1), S as above"),
    "overlap": (
        "fraction",
        "|P & S| / n: fraction of IMP's pruned weights at L+1 that were already the smallest of w_L",
    ),
    "overlap_jaccard": ("fraction", "Jaccard index |P & S| / |P | S|"),
    "chance_overlap": ("fraction", "expected |P & S| / n for a uniformly random S: n / |m_L+1|"),
    "chance_overlap_jaccard": ("fraction", "expected Jaccard index for a uniformly random S (hypergeometric)"),
}


def small_weights(
    weights: Mapping[int, Weights],
    masks: Mapping[int, Weights],
    fraction: float,
    levels: Sequence[int] | None = None,
    bin_edges: np.ndarray | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """E8 for several levels from solutions ``weights[L]`` and masks ``masks[L]`` (dicts keyed by level).

    Level L needs ``weights[L]`` and ``masks[L]``; the comparisons with IMP's following step
    use ``weights[L+1]`` (and ``masks[L+1]``, ``masks[L+2]`` when given) and are NaN without them.
    Returns a dataset with dimensions ``level`` and ``bin``.
    """
    levels = sorted(weights) if levels is None else list(levels)
    if not levels:
        raise ValueError("no levels to analyse")
    edges = log_bins() if bin_edges is None else np.asarray(bin_edges, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
        raise ValueError("bin_edges must be a strictly increasing 1-D array of positive numbers")
    rows = []
    for level in tqdm(levels, desc="small weights", disable=not progress):
        if level not in weights or level not in masks:
            raise ValueError(f"level {level} needs both its solution w_L and its mask m_L")
        rows.append(
            level_small_weights(
                weights[level],
                masks[level],
                fraction,
                weights.get(level + 1),
                masks.get(level + 1),
                masks.get(level + 2),
                edges,
            )
        )
    centers = np.sqrt(edges[:-1] * edges[1:])
    ds = xr.Dataset(
        {
            "histogram": (
                ("level", "bin"),
                np.stack([r["histogram"] for r in rows]),
                {"units": "count", "description": "surviving |w_L| per log-spaced bin"},
            )
        },
        coords={
            "level": levels,
            "bin": ("bin", centers, {"description": "geometric bin center", "units": "|w|"}),
            "bin_lower": ("bin", edges[:-1], {"units": "|w|"}),
            "bin_upper": ("bin", edges[1:], {"units": "|w|"}),
        },
    )
    for name, (units, description) in VARIABLES.items():
        integer = name in ("surviving", "underflow", "overflow", "next_pruned")
        note = " (NaN when level L+1's step is unavailable)" if name in NEEDS_NEXT else ""
        ds[name] = (
            "level",
            np.array([r[name] for r in rows], dtype=np.int64 if integer else float),
            {"units": units, "description": description + note},
        )
    ds.attrs.update(
        pruning_fraction=fraction, overlap_measure="fraction of pruned |P&S|/n (overlap); Jaccard (overlap_jaccard)"
    )
    return ds


def small_weights_run(run, levels: Sequence[int], bin_edges: np.ndarray | None = None) -> xr.Dataset:
    """E8 on a finished :class:`~unmasking.imp.ImpRun`, with ``seed`` and provenance."""
    levels = sorted(set(levels))
    weights: dict[int, Weights] = {}
    masks: dict[int, Weights] = {}
    for level in levels:
        if not run.final_path(level).exists():
            raise FileNotFoundError(f"level {level} of {run.root} is not trained ({run.final_path(level)} is missing)")
    for level in sorted({lv + d for lv in levels for d in (0, 1, 2)}):
        if level == 0 or run.mask_path(level).exists():
            masks[level] = run.mask(level)
    for level in sorted({lv + d for lv in levels for d in (0, 1)}):
        if run.final_path(level).exists():
            weights[level] = run.final_state(level, "cpu")
    ds = small_weights(weights, masks, run.recipe.prune.fraction, levels, bin_edges, progress=run.progress)
    ds = ds.expand_dims(seed=[run.seed])
    ds.attrs.update(
        run.provenance(
            "E8_small_weights",
            pruning_fraction=run.recipe.prune.fraction,
        )
    )
    return ds


SETTINGS = SmallWeightsSettings


def analyse(run, levels: Sequence[int], settings: SmallWeightsSettings = SmallWeightsSettings()) -> xr.Dataset:
    """E8 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``small_weights`` command)."""
    return small_weights_run(run, levels, settings.bin_edges())
