"""E4 — the Hessian spectrum of a level-L solution, restricted to its mask (SPEC §3).

The operator is the masked Hessian ``P H Pᵀ`` of :class:`~unmasking.spectral.masked_hessian.MaskedHessian`:
the Hessian of the mean training cross-entropy on a fixed, un-augmented subset of the training
data with respect to the prunable weights alive in ``m_L`` (biases and BatchNorm parameters held
fixed, BatchNorm in eval mode).  From its Hessian-vector products
(:mod:`unmasking.spectral.lanczos`):

- **SLQ** (stochastic Lanczos quadrature): ``probes`` Lanczos runs of ``lanczos_steps`` steps
  with full reorthogonalization, each from a seeded Rademacher probe; the Ritz values are the
  nodes and the squared first components of the Ritz vectors the weights of a discrete
  spectral measure (each probe's weights sum to 1, so ``ρ = mean over probes``).  With ``m``
  steps, the quadrature is exact for polynomials of degree ``≤ 2m − 1``.  The tridiagonals are
  stored too: E5 builds better-suited quadrature rules from them.
- **Top-k eigenvalues**: the largest Ritz values of the first probe's Lanczos run (no extra
  Hessian-vector products), with their residual bounds ``|β_m s_{m,i}|`` (each Ritz value is
  within its bound of an eigenvalue).
- **Trace** (Hutchinson): ``tr(H) = tr(QᵀHQ) + E[zᵀ(I−QQᵀ)H(I−QQᵀ)z]`` with ``Q`` the
  orthonormal Krylov basis of the first probe's Lanczos run (``tr(QᵀHQ)`` is the sum of its
  tridiagonal's diagonal) and ``z`` seeded Rademacher vectors independent of ``Q``.  Deflating
  the top of the spectrum this way keeps the estimator unbiased and cuts its variance by
  orders of magnitude on Hessians dominated by a few outliers; ``deflate=False`` gives the
  plain estimator.
- A **density** on a grid: the discrete measure broadened by Gaussians of width
  ``broadening × (largest − smallest node)``, for plotting only.

Seeds: probe ``i`` of level ``L`` is drawn from ``derive_seed(seed, "hessian", "slq", L, i)``, the
Hutchinson vectors from ``(seed, "hessian", "hutchinson", L, i)``, the data subset from
``data.subset("train", subset_size, seed)``; ``seed`` is recorded in the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ..foundations.hparams import ConfigError
from ..spectral.lanczos import broadened_density, hutchinson_trace, slq
from ..spectral.masked_hessian import MaskedHessian

DTYPES = {"float32": torch.float32, "float64": torch.float64}

__all__ = ["DTYPES", "HessianSettings", "analyse", "hessian_spectrum", "hessian_study", "subset_for"]


@dataclass(frozen=True)
class HessianSettings:
    """Parameters of E4 (defaults and their cost: docs/analyses_hessian.md); the ``hessian`` command's options."""

    topk: int = field(default=10, metadata={"help": "top eigenvalues to report (%(default)s)"})
    lanczos_steps: int = field(default=40, metadata={"help": "Lanczos steps per probe (%(default)s)"})
    probes: int = field(default=2, metadata={"help": "SLQ probes, i.e. Lanczos runs (%(default)s)"})
    hutchinson_probes: int = field(default=4, metadata={"help": "Hutchinson trace probes (%(default)s)"})
    subset_size: int | None = field(
        default=None, metadata={"help": "training examples the Hessian is taken on (default: the whole train-eval set)"}
    )
    chunk_size: int = field(default=4096, metadata={"help": "examples per Hessian-vector-product chunk (%(default)s)"})
    dtype: str = field(
        default="float32", metadata={"help": "arithmetic precision (%(default)s)", "choices": tuple(sorted(DTYPES))}
    )
    deflate: bool = field(default=True, metadata={"help": "plain Hutchinson trace (no Krylov deflation)"})
    broadening: float = field(
        default=0.01,
        metadata={"help": "Gaussian width of the plotted density, as a fraction of the eigenvalue range (%(default)s)"},
    )
    grid_points: int = field(default=400, metadata={"help": "points of the density's grid", "flag": False})
    seed: int = field(
        default=0, metadata={"help": "seed of the probes, random masks and the data subset (%(default)s)"}
    )

    def check(self, spectrum: bool = True) -> "HessianSettings":
        """Raise :class:`ConfigError` on a bad value (``spectrum=False``: ``lanczos_steps = 0`` allowed)."""
        checks = [
            (self.topk >= 1, "topk must be >= 1"),
            (self.lanczos_steps >= (1 if spectrum else 0), "lanczos_steps must be >= 1"),
            (self.probes >= 1, "probes must be >= 1"),
            (self.hutchinson_probes >= 1, "hutchinson_probes must be >= 1"),
            (self.subset_size is None or self.subset_size >= 1, "subset_size must be >= 1 (or None: all)"),
            (self.chunk_size >= 1, "chunk_size must be >= 1"),
            (self.dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}"),
            (self.broadening > 0, "broadening must be > 0"),
            (self.grid_points >= 2, "grid_points must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"hessian: {message}, got {self}")
        return self


def subset_for(run, settings: HessianSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, un-augmented training subset the Hessian is taken on."""
    return run.data.subset("train", settings.subset_size, settings.seed)


def hessian_spectrum(
    model: nn.Module,
    mask: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: HessianSettings = HessianSettings(),
    key: Sequence[object] = (),
    progress: bool = False,
) -> dict[str, np.ndarray | float | int]:
    """E4 for one solution: top eigenvalues, trace, SLQ nodes/weights and a plotting density.

    ``key`` (e.g. the level) enters the probes' seeds so that levels draw independent probes.
    """
    settings.check()
    op = MaskedHessian(model, mask, x, y, settings.chunk_size, DTYPES[settings.dtype])
    nodes, weights, runs = slq(op, settings.probes, settings.lanczos_steps, settings.seed, *key, progress=progress)
    alpha, beta = np.full((settings.probes, settings.lanczos_steps), np.nan), np.full_like(nodes, np.nan)
    for i, run in enumerate(runs):
        alpha[i, : run.steps] = run.alpha
        beta[i, : run.steps] = np.append(run.beta, run.residual)
    top, resid = runs[0].top(settings.topk)
    topk = np.full(settings.topk, np.nan)
    topr = np.full(settings.topk, np.nan)
    topk[: len(top)], topr[: len(top)] = top, resid
    trace, trace_std, samples = hutchinson_trace(
        op, settings.hutchinson_probes, settings.seed, *key, deflation=runs[0] if settings.deflate else None
    )
    grid, dens = broadened_density(nodes, weights, settings.broadening, settings.grid_points)
    slq_trace = op.dim * float(np.nansum(nodes * weights) / settings.probes)
    return {
        "top_eigenvalues": topk,
        "top_residuals": topr,
        "trace": trace,
        "trace_std": trace_std,
        "trace_samples": samples,
        "trace_slq": slq_trace,
        "slq_nodes": nodes,
        "slq_weights": weights,
        "lanczos_alpha": alpha,
        "lanczos_beta": beta,
        "lam": grid,
        "density": dens,
        "num_weights": op.dim,
        "train_loss": op.loss(),
        "num_examples": op.num_examples,
        "matvecs": op.matvecs,
    }


def _check_levels(run, levels: Sequence[int]) -> list[int]:
    levels = [int(v) for v in levels]
    if not levels or len(set(levels)) != len(levels) or min(levels) < 0:
        raise ConfigError(f"levels must be distinct non-negative integers, got {levels}")
    for level in levels:
        if not run.final_path(level).exists():
            raise FileNotFoundError(f"level {level} of {run.root} is not trained ({run.final_path(level)} is missing)")
    return levels


def hessian_study(
    run, levels: Sequence[int], settings: HessianSettings = HessianSettings(), progress: bool = True
) -> xr.Dataset:
    """E4 on an :class:`~unmasking.imp.ImpRun` for ``levels``: one dataset with ``seed`` and ``level`` dims."""
    settings.check()
    levels = _check_levels(run, levels)
    x, y = subset_for(run, settings)
    rows = []
    for level in tqdm(levels, desc="hessian", disable=not progress):
        rows.append(
            hessian_spectrum(run.solution(level), run.mask(level), x, y, settings, key=(level,), progress=progress)
        )

    def stack(name):
        return np.stack([np.asarray(r[name]) for r in rows])[None]

    lvl = ("seed", "level")
    ds = xr.Dataset(
        {
            "top_eigenvalues": (
                lvl + ("k",),
                stack("top_eigenvalues"),
                {
                    "description": "largest Ritz values of the masked Hessian (first SLQ probe's "
                    "Lanczos run), descending",
                    "units": "nats / weight^2",
                },
            ),
            "top_residuals": (
                lvl + ("k",),
                stack("top_residuals"),
                {
                    "description": "Ritz residual bound |beta_m s_m,i|: an eigenvalue lies within it",
                    "units": "nats / weight^2",
                },
            ),
            "trace": (
                lvl,
                stack("trace"),
                {
                    "description": "tr(P H P^T), Hutchinson"
                    + (" deflated by the first probe's Krylov basis" if settings.deflate else ""),
                    "units": "nats / weight^2",
                },
            ),
            "trace_std": (
                lvl,
                stack("trace_std"),
                {"description": "standard error of the trace estimate", "units": "nats / weight^2"},
            ),
            "trace_samples": (
                lvl + ("hutchinson_probe",),
                stack("trace_samples"),
                {"description": "per-probe trace estimates (their mean is trace)", "units": "nats / weight^2"},
            ),
            "trace_slq": (
                lvl,
                stack("trace_slq"),
                {
                    "description": "D_L * mean first SLQ moment (plain Hutchinson over the SLQ probes)",
                    "units": "nats / weight^2",
                },
            ),
            "slq_nodes": (
                lvl + ("probe", "node"),
                stack("slq_nodes"),
                {"description": "SLQ quadrature nodes (Ritz values); NaN: padding", "units": "nats / weight^2"},
            ),
            "slq_weights": (
                lvl + ("probe", "node"),
                stack("slq_weights"),
                {
                    "description": "SLQ quadrature weights; each probe's sum to 1, so the spectral density "
                    "normalized over the D_L weights is their mean over probes"
                },
            ),
            "lanczos_alpha": (
                lvl + ("probe", "node"),
                stack("lanczos_alpha"),
                {
                    "description": "diagonal of each probe's Lanczos tridiagonal T (NaN: padding)",
                    "units": "nats / weight^2",
                },
            ),
            "lanczos_beta": (
                lvl + ("probe", "node"),
                stack("lanczos_beta"),
                {
                    "description": "off-diagonal of T (entry i couples steps i and i+1; the last "
                    "entry is the final residual norm; 0: restart; NaN: padding)",
                    "units": "nats / weight^2",
                },
            ),
            "density": (
                lvl + ("grid",),
                stack("density"),
                {
                    "description": "spectral density broadened by Gaussians of width broadening * node range",
                    "units": "1 / (nats / weight^2)",
                },
            ),
            "lam": (
                lvl + ("grid",),
                stack("lam"),
                {"description": "eigenvalue grid of density (per level)", "units": "nats / weight^2"},
            ),
            "num_weights": (lvl, stack("num_weights"), {"description": "D_L: surviving prunable weights"}),
            "train_loss": (
                lvl,
                stack("train_loss"),
                {"description": "mean cross-entropy on the Hessian's subset", "units": "nats"},
            ),
            "matvecs": (lvl, stack("matvecs"), {"description": "Hessian-vector products used"}),
        },
        coords={
            "seed": [run.seed],
            "level": levels,
            "k": np.arange(settings.topk) + 1,
            "probe": np.arange(settings.probes),
            "node": np.arange(settings.lanczos_steps),
            "grid": np.arange(settings.grid_points),
            "hutchinson_probe": np.arange(settings.hutchinson_probes),
        },
    )
    ds["k"].attrs["description"] = "rank of the eigenvalue (1: largest)"
    ds.attrs.update(
        run.provenance(
            "E4_hessian",
            **{f"hessian_{k}": v for k, v in asdict(settings).items()},
            subset_examples=int(rows[0]["num_examples"]),
            probe_distribution="rademacher",
            probe_seeds="derive_seed(hessian_seed, 'hessian', 'slq'|'hutchinson', level, i)",
            hvp="reverse-over-reverse autograd through torch.func.functional_call, "
            "BatchNorm in eval mode, prunable weights only",
        )
    )
    return ds


SETTINGS = HessianSettings


def analyse(run, levels: Sequence[int], settings: HessianSettings = HessianSettings()) -> xr.Dataset:
    """E4 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``hessian`` command)."""
    return hessian_study(run, levels, settings, progress=run.progress)
