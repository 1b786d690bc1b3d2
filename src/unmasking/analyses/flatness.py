"""E7 — curvature along pruning directions (SPEC §3).

At the level-L solution ``w_L``, prune a fraction ``f`` (default: the recipe's
``prune.fraction``, IMP's own step) of the surviving weights and let ``Δ`` be the removed
weights (``(m_L − m') ⊙ w_L``) and ``q = Δ/‖Δ‖``.  The curvature along the pruning direction is
``qᵀHq``, with ``H`` the masked Hessian of E4 (same data subset, BatchNorm in eval mode,
prunable weights only).  It is computed for

- ``magnitude`` pruning (IMP's rule: ``m'`` is the run's own ``m_{L+1}`` at the recipe fraction), and
- ``random`` pruning (global) and optionally ``random_layerwise`` (each layer loses as many
  weights as under magnitude pruning), over ``random_masks`` seeded masks (mean and standard
  deviation reported; each mask's seed is recorded),

beside the average curvature ``tr(H)/D_L`` (Hutchinson, deflated as in E4, or read from an E4
output with ``hessian=``).  Each direction costs one Hessian-vector product.  Random mask ``r``
of level ``L`` uses ``derive_seed(seed, "flatness", method, L, r)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .. import masks as M
from ..foundations.hparams import ConfigError
from ..foundations.seeds import derive_seed
from ..spectral.lanczos import hutchinson_trace, lanczos, probe_vector
from ..spectral.masked_hessian import MaskedHessian
from .hessian import DTYPES, HessianSettings, _check_levels, subset_for

RANDOM_METHODS = ("random", "random_layerwise")
DEFAULT_RANDOM_MASKS = 8

__all__ = [
    "DEFAULT_RANDOM_MASKS",
    "RANDOM_METHODS",
    "FlatnessSettings",
    "analyse",
    "direction_curvature",
    "flatness",
    "pruning_direction",
]


@dataclass(frozen=True)
class FlatnessSettings:
    """Options of E7 (the ``flatness`` command's flags): the pruning directions and the Hessian's settings.

    ``subset_size`` and ``seed`` left at None take the data subset of the E4 output E7 reads (if
    any); the Hessian's other settings default to E4's (:class:`HessianSettings`).
    """

    random_masks: int = field(default=DEFAULT_RANDOM_MASKS, metadata={"help": "random masks per method (%(default)s)"})
    methods: tuple[str, ...] = field(
        default=("random",),
        metadata={"help": "random pruning methods compared with magnitude pruning", "choices": RANDOM_METHODS},
    )
    fraction: float | None = field(
        default=None,
        metadata={"help": "fraction of the surviving weights pruned (default: the recipe's prune.fraction)"},
    )
    lanczos_steps: int = field(
        default=HessianSettings.lanczos_steps,
        metadata={"help": "Lanczos steps of the trace's deflation basis; 0: plain Hutchinson (%(default)s)"},
    )
    hutchinson_probes: int = field(
        default=HessianSettings.hutchinson_probes, metadata={"help": "Hutchinson trace probes (%(default)s)"}
    )
    subset_size: int | None = field(
        default=None, metadata={"help": "training examples the Hessian is taken on (default: the whole train-eval set)"}
    )
    chunk_size: int = field(
        default=HessianSettings.chunk_size, metadata={"help": "examples per Hessian-vector-product chunk (%(default)s)"}
    )
    dtype: str = field(
        default=HessianSettings.dtype,
        metadata={"help": "arithmetic precision (%(default)s)", "choices": tuple(sorted(DTYPES))},
    )
    seed: int | None = field(
        default=None,
        metadata={"help": f"seed of the probes, random masks and the data subset ({HessianSettings.seed})"},
    )

    def hessian_settings(self, hessian: xr.Dataset | None = None) -> HessianSettings:
        """The Hessian's settings; with an E4 output, its data subset (size and seed) unless given here."""
        subset_size, seed = self.subset_size, self.seed
        if hessian is not None:  # by default, the Hessian of E4's data subset
            if subset_size is None:
                subset_size = hessian.attrs.get("hessian_subset_size")
            if seed is None:
                seed = int(hessian.attrs.get("hessian_seed", HessianSettings.seed))
        if seed is None:
            seed = HessianSettings.seed
        return HessianSettings(
            lanczos_steps=self.lanczos_steps,
            hutchinson_probes=self.hutchinson_probes,
            subset_size=subset_size,
            chunk_size=self.chunk_size,
            dtype=self.dtype,
            seed=seed,
        ).check(spectrum=False)


def pruning_direction(op: MaskedHessian, removed: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``Δ = removed ⊙ w`` as a ``D_L`` vector of ``op`` (``removed`` must lie inside the operator's mask)."""
    outside = sum(int((removed[n].to(op.device) & ~op.mask[n]).sum()) for n in op.names)
    if outside:
        raise ValueError(f"{outside} removed weights are not alive in the operator's mask")
    delta = op.gather({n: op.weights[n] * removed[n].to(op.device, op.dtype) for n in op.names})
    return delta


def direction_curvature(op: MaskedHessian, delta: torch.Tensor) -> tuple[float, float]:
    """``(qᵀHq, ‖Δ‖)`` for ``q = Δ/‖Δ‖`` (NaN curvature when ``Δ = 0``)."""
    norm = float(torch.linalg.vector_norm(delta.double()))
    if norm == 0:
        return math.nan, 0.0
    return op.quadratic_form(delta / norm), norm


def _check_hessian_file(hessian: xr.Dataset, run, levels: Sequence[int], settings: HessianSettings) -> None:
    """Refuse an E4 output of another run, data subset or level set (before any work is done)."""
    if hessian.attrs.get("experiment") != "E4_hessian":
        raise ConfigError("the --hessian file is not an E4 (hessian) output")
    if hessian.attrs.get("config_hash") != run.recipe.hash() or int(hessian.seed.values[0]) != run.seed:
        raise ConfigError("the --hessian file is for another run")
    subset = (hessian.attrs.get("hessian_subset_size"), hessian.attrs.get("hessian_seed"))
    if subset[0] != settings.subset_size or (settings.subset_size is not None and subset[1] != settings.seed):
        raise ConfigError(
            f"the --hessian file's Hessian was taken on another data subset (size {subset[0]}, seed "
            f"{subset[1]}; here {settings.subset_size}, seed {settings.seed})"
        )
    missing = [lv for lv in levels if lv not in set(int(v) for v in hessian.level.values)]
    if missing:
        raise ConfigError(f"the --hessian file has no level {missing} (it has {list(hessian.level.values)})")


def _trace_from(hessian: xr.Dataset, level: int, dim: int) -> tuple[float, float]:
    h = hessian.sel(level=level).isel(seed=0)
    if int(h.num_weights) != dim:
        raise ConfigError(f"level {level}: the --hessian file has D_L = {int(h.num_weights)}, the run's mask {dim}")
    return float(h.trace), float(h.trace_std)


def flatness(
    run,
    levels: Sequence[int],
    random_masks: int = DEFAULT_RANDOM_MASKS,
    fraction: float | None = None,
    methods: Sequence[str] = ("random",),
    settings: HessianSettings = HessianSettings(),
    hessian: xr.Dataset | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """E7 on an :class:`~unmasking.imp.ImpRun` for ``levels``.

    ``settings`` gives the data subset, chunking, dtype, seed and the trace estimator
    (``hutchinson_probes``; ``lanczos_steps`` > 0 deflates by a Krylov basis of that size, 0 is
    plain Hutchinson).  With ``hessian`` (an E4 output for the same run and settings), the
    trace is read from it instead and no trace products are spent.
    """
    settings.check(spectrum=False)
    levels = _check_levels(run, levels)
    fraction = run.recipe.prune.fraction if fraction is None else float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction}")
    methods = tuple(methods)
    if len(set(methods)) != len(methods) or any(m not in RANDOM_METHODS for m in methods):
        raise ConfigError(f"random methods must be distinct values from {RANDOM_METHODS}, got {list(methods)}")
    if random_masks < 1 and methods:
        raise ConfigError(f"random_masks must be >= 1, got {random_masks}")
    if hessian is not None:
        _check_hessian_file(hessian, run, levels, settings)
    x, y = subset_for(run, settings)
    n_l, n_m, n_r = len(levels), len(methods), int(random_masks)
    mag, mag_len = np.zeros(n_l), np.zeros(n_l)
    rnd, rnd_len = np.full((n_l, n_m, n_r), np.nan), np.full((n_l, n_m, n_r), np.nan)
    seeds = np.full((n_l, n_m, n_r), -1, dtype=np.int64)
    trace, trace_std = np.zeros(n_l), np.zeros(n_l)
    dims, pruned, products = (np.zeros(n_l, dtype=np.int64) for _ in range(3))
    for i, level in enumerate(tqdm(levels, desc="flatness", disable=not progress)):
        model, mask = run.solution(level), run.mask(level)
        op = MaskedHessian(model, mask, x, y, settings.chunk_size, DTYPES[settings.dtype])
        dims[i] = op.dim
        weights = dict(model.named_parameters())
        magnitude = M.magnitude_prune(weights, mask, fraction)
        pruned[i] = M.count(mask) - M.count(magnitude)
        mag[i], mag_len[i] = direction_curvature(op, pruning_direction(op, M.difference(mask, magnitude)))
        for a, method in enumerate(methods):
            for r in range(n_r):
                seeds[i, a, r] = derive_seed(settings.seed, "flatness", method, level, r)
                gen = torch.Generator().manual_seed(int(seeds[i, a, r]))
                other = M.random_prune(mask, fraction, gen, like=magnitude if method == "random_layerwise" else None)
                removed = M.difference(mask, other)
                rnd[i, a, r], rnd_len[i, a, r] = direction_curvature(op, pruning_direction(op, removed))
        if hessian is not None:
            trace[i], trace_std[i] = _trace_from(hessian, level, op.dim)
        else:
            basis = None
            if settings.lanczos_steps > 0 and settings.deflate:
                start = probe_vector(
                    op.dim, settings.seed, "hessian", "slq", level, 0, dtype=op.dtype, device=op.device
                )
                basis = lanczos(op.matvec, start, settings.lanczos_steps, restart_seed=settings.seed)
            trace[i], trace_std[i], _ = hutchinson_trace(
                op, settings.hutchinson_probes, settings.seed, level, deflation=basis
            )
        products[i] = op.matvecs

    with np.errstate(invalid="ignore"):
        r_mean = np.nanmean(rnd, axis=-1) if n_m else np.zeros((n_l, 0))
        r_std = np.nanstd(rnd, axis=-1, ddof=1) if n_r > 1 else np.full((n_l, n_m), np.nan)
    curv = {"units": "nats / weight^2"}
    lvl, rd = ("seed", "level"), ("seed", "level", "prune_method")
    ds = xr.Dataset(
        {
            "curvature_magnitude": (
                lvl,
                mag[None],
                {"description": "q^T H q along the magnitude-pruning direction", **curv},
            ),
            "curvature_random": (
                rd + ("replicate",),
                rnd[None],
                {"description": "q^T H q along a random-pruning direction, per random mask", **curv},
            ),
            "curvature_random_mean": (rd, r_mean[None], {"description": "mean of curvature_random over masks", **curv}),
            "curvature_random_std": (
                rd,
                r_std[None],
                {"description": "standard deviation (ddof 1) of curvature_random over masks", **curv},
            ),
            "average_curvature": (lvl, (trace / dims)[None], {"description": "tr(H) / D_L", **curv}),
            "average_curvature_std": (
                lvl,
                (trace_std / dims)[None],
                {"description": "standard error of tr(H) / D_L", **curv},
            ),
            "trace": (lvl, trace[None], {"description": "tr(H) of the masked Hessian", **curv}),
            "trace_std": (lvl, trace_std[None], {"description": "standard error of the trace", **curv}),
            "projection_length_magnitude": (
                lvl,
                mag_len[None],
                {"description": "|Delta| of magnitude pruning", "units": "weight-space L2"},
            ),
            "projection_length_random": (
                rd + ("replicate",),
                rnd_len[None],
                {"description": "|Delta| of random pruning", "units": "weight-space L2"},
            ),
            "mask_seed": (rd + ("replicate",), seeds[None], {"description": "seed of each random mask"}),
            "num_weights": (lvl, dims[None], {"description": "D_L: surviving prunable weights"}),
            "num_pruned": (lvl, pruned[None], {"description": "weights removed: ceil(fraction * D_L)"}),
            "matvecs": (lvl, products[None], {"description": "Hessian-vector products used"}),
        },
        coords={"seed": [run.seed], "level": levels, "prune_method": list(methods), "replicate": np.arange(n_r)},
    )
    ds["prune_method"].attrs["description"] = (
        "random: uniformly random among the surviving weights; "
        "random_layerwise: as many per layer as magnitude pruning removes"
    )
    ds.attrs.update(
        run.provenance(
            "E7_flatness",
            fraction=fraction,
            random_masks=n_r,
            random_methods=list(methods),
            trace_source="hessian file" if hessian is not None else "hutchinson",
            subset_examples=len(y),
            **{f"hessian_{k}": v for k, v in asdict(settings).items()},
        )
    )
    return ds


SETTINGS = FlatnessSettings


def analyse(
    run, levels: Sequence[int], settings: FlatnessSettings = FlatnessSettings(), hessian: xr.Dataset | None = None
) -> xr.Dataset:
    """E7 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``flatness`` command).

    ``hessian``: an E4 output of the same run and levels, read for tr(H) and its data subset.
    """
    return flatness(
        run,
        levels,
        settings.random_masks,
        settings.fraction,
        settings.methods,
        settings.hessian_settings(hessian),
        hessian,
        progress=run.progress,
    )
