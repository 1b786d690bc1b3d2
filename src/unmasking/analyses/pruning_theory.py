"""E5 — the maximal pruning ratio predicted from the Hessian spectrum (SPEC §3).

For the level-L solution ``w_L`` with ``D_L`` surviving weights, spectral measure ``ρ`` of the
masked Hessian normalized over the ``D_L`` weights (from E4's Lanczos runs), tolerance ``ε`` on
the train-loss increase and projection length ``R(p)`` of pruning a fraction ``p`` of the
surviving weights:

    p* = sup { p : p ≤ F(p) },   F(p) = ∫ ρ(λ) · 2ε / (2ε + max(λ, 0) · R(p)²) dλ.

This is the Gaussian-width condition of Larsen et al. (2022): an axial subspace of
codimension ``p·D_L`` at distance ``R`` from ``w_L`` meets the ellipsoidal sublevel set with
radii ``√(2ε/λ_i)`` when ``p·D_L ≤ Σ r_i² / (R² + r_i²)``; directions with ``λ ≤ 0`` are
unbounded (``r = ∞``) and count fully.

**The spectral measure.**  For realistic ``ε`` the integrand is nearly a step at
``λ ≈ 2ε/R² ~ 10⁻⁴``, inside the dense bulk of near-zero eigenvalues, and a Gauss rule with
``m`` nodes (E4's ``slq_nodes``/``slq_weights``) resolves that poorly: its estimate jumps as
single heavy nodes cross the step (against the full spectrum of a 7,680-weight MLP, by up to
±0.17 in ``p*`` between 30 and 100 steps).  The default ``quadrature="averaged"`` uses Laurie's
averaged Gauss rule instead: the mean of the Gauss rule of ``T_{m−1}`` and the anti-Gauss rule
of ``T_m`` (last off-diagonal × √2), both from the same Lanczos coefficients.  It is exact for
polynomials of degree ``2m − 1`` like the ``m``-node Gauss rule, its two halves have errors of
opposite sign (Laurie 1996), and in that comparison it stayed within ~0.03 of the exact ``p*``
from 30 steps on.  ``p*`` under each half is reported as ``p_star_quadrature_low/high`` (an error
estimate, not a guarantee) and ``p*`` under the plain ``m``-node Gauss rule as ``p_star_gauss``.
When the Lanczos basis spans the whole space the Gauss rule is the exact spectrum and all
coincide.  Probes are averaged (each probe's rule has mass 1).

**The supremum.**  Pruning removes whole weights: a fraction ``p`` removes ``k = ceil(p·D_L)``
(SPEC §2), so ``R(p)² = R²_k`` and ``F`` are step functions of ``p``.  On ``((k−1)/D_L, k/D_L]``
the condition reads ``p ≤ F_k``, which some ``p`` there meets iff ``F_k > (k−1)/D_L``; that
predicate holds up to some ``K`` and fails beyond (``F_k`` does not increase, ``(k−1)/D_L``
does), so a bisection over ``k`` finds ``K`` and ``p* = min(K/D_L, F_K)`` exactly, with no
tolerance and no bracketing failure.  Edge cases fall out: all ``λ ≤ 0`` gives ``F ≡ 1`` and
``p* = 1``; ``ε = 0`` with positive curvature gives ``p* = 0``.

**Methods.**  ``magnitude``: ``R²_k`` = the sum of the ``k`` smallest squared surviving weights.
``random``: the exact expectation over uniformly random masks, ``E[R²_k] = (k/D_L)·‖m_L ⊙ w_L‖²``
(the expectation of ``R²`` enters ``F``; no masks are sampled).

**ε.**  Default :data:`DEFAULT_EPSILON` = ``0.02 · ln 2 ≈ 0.0139`` nats, absolute and the same at
every level: a misclassified example has cross-entropy ``≥ ln 2``, so the train error is at most
``loss / ln 2``, and a loss budget of ``0.02 · ln 2`` is SPEC's 2% error barrier in loss units
(docs/analyses_hessian.md).  A band ``p*(ε/k) … p*(ε·k)`` (``k`` = :data:`DEFAULT_BAND`) and a sweep
over four decades of ``ε`` are reported with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import xarray as xr
from tqdm.auto import tqdm

from ..foundations.hparams import ConfigError
from .hessian import _check_levels

METHODS = ("magnitude", "random")
QUADRATURES = ("averaged", "gauss")
EPS_BARRIER = 0.02  # SPEC's zero-barrier threshold on the error
DEFAULT_EPSILON = EPS_BARRIER * math.log(2)  # ≈ 0.0139 nats
DEFAULT_BAND = 2.0
SWEEP_FACTORS = tuple(10.0 ** (e / 4) for e in range(-8, 9))  # ε × 10^-2 … 10^2, quarter decades

__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_EPSILON",
    "EPS_BARRIER",
    "METHODS",
    "QUADRATURES",
    "SPECTRUM_PARTS",
    "SWEEP_FACTORS",
    "PruningTheorySettings",
    "analyse",
    "lanczos_rules",
    "p_star",
    "projection_r2",
    "pruning_theory",
    "right_side",
    "right_side_parts",
    "spectral_measure",
]


@dataclass(frozen=True)
class PruningTheorySettings:
    """Options of E5 (the ``pruning_theory`` command's flags)."""

    epsilon: float = field(
        default=DEFAULT_EPSILON,
        metadata={"help": "train-loss increase tolerance of the sublevel set, in nats (default 0.02 ln 2)"},
    )
    epsilon_band: float = field(
        default=DEFAULT_BAND,
        metadata={"help": "sensitivity band: p* is also computed at epsilon / band and epsilon * band"},
    )
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "pruning methods", "choices": METHODS})
    quadrature: str = field(
        default="averaged",
        metadata={
            "help": "spectral measure for p*: Laurie's averaged Gauss/anti-Gauss rule, or the plain Gauss rule",
            "choices": QUADRATURES,
        },
    )


def spectral_measure(nodes, weights) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-probe rules ``(..., probe, node)`` into one discrete measure of total mass 1.

    Each probe's weights sum to 1, so the probe average is the sum divided by the total mass;
    padded entries (NaN nodes, zero weights) are dropped.
    """
    nodes, weights = np.asarray(nodes, dtype=float), np.asarray(weights, dtype=float)
    if nodes.shape != weights.shape:
        raise ValueError(f"nodes and weights differ in shape: {nodes.shape} vs {weights.shape}")
    if np.any(weights < 0):
        raise ValueError("spectral weights must be non-negative")
    keep = np.isfinite(nodes) & np.isfinite(weights) & (weights > 0)
    if not keep.any():
        raise ValueError("the spectral measure is empty (no finite nodes with positive weight)")
    lam, mu = nodes[keep], weights[keep]
    return lam, mu / mu.sum()


def _rule(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule (nodes, weights) of the tridiagonal with diagonal ``alpha`` and off-diagonal ``beta``."""
    if len(alpha) == 1:
        return alpha.astype(float), np.ones(1)
    theta, s = scipy.linalg.eigh_tridiagonal(alpha, beta)
    return theta, s[0] ** 2


def lanczos_rules(alpha, beta, dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The quadrature rules of one probe's Lanczos run, as (nodes, weights) of mass 1.

    ``alpha``: the ``m`` diagonal entries; ``beta``: the off-diagonal entries (entries past
    ``m − 1``, such as E4's trailing residual norm, and NaN padding are ignored).  Rules:
    ``gauss`` (``T_m``), ``gauss_previous`` (``T_{m−1}``), ``anti_gauss`` (``T_m`` with its last
    off-diagonal entry × √2) and ``averaged`` (the mean of the previous two).  When the run
    spans the space (``m = dim``), every rule is the exact ``gauss`` one.
    """
    alpha, beta = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    alpha = alpha[np.isfinite(alpha)]
    m = len(alpha)
    if m == 0:
        raise ValueError("empty Lanczos run")
    beta = beta[: m - 1]
    if len(beta) != m - 1 or not np.all(np.isfinite(beta)):
        raise ValueError(f"a Lanczos run with {m} diagonal entries needs {m - 1} finite off-diagonal ones")
    gauss = _rule(alpha, beta)
    if m == 1 or m >= dim:
        return {"gauss": gauss, "gauss_previous": gauss, "anti_gauss": gauss, "averaged": gauss}
    previous = _rule(alpha[:-1], beta[:-1])
    stretched = beta.copy()
    stretched[-1] *= math.sqrt(2.0)
    anti = _rule(alpha, stretched)
    averaged = (np.concatenate([previous[0], anti[0]]), np.concatenate([previous[1], anti[1]]) / 2)
    return {"gauss": gauss, "gauss_previous": previous, "anti_gauss": anti, "averaged": averaged}


def _measures(alpha, beta, dim: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Probe-averaged measures of each rule from E4's ``lanczos_alpha``/``lanczos_beta`` ``(probe, node)``."""
    rules = [lanczos_rules(a, b, dim) for a, b in zip(np.atleast_2d(alpha), np.atleast_2d(beta))]
    return {
        name: spectral_measure(np.concatenate([r[name][0] for r in rules]), np.concatenate([r[name][1] for r in rules]))
        for name in rules[0]
    }


def projection_r2(weights: np.ndarray, method: str) -> np.ndarray:
    """``R²_k`` for ``k = 0 … D`` removed weights of the surviving ``weights`` (float64, length ``D+1``)."""
    w2 = np.asarray(weights, dtype=np.float64).ravel() ** 2
    d = len(w2)
    if d == 0:
        raise ValueError("no surviving weights")
    if method == "magnitude":
        return np.concatenate([[0.0], np.cumsum(np.sort(w2, kind="stable"))])
    if method == "random":
        return np.arange(d + 1) / d * w2.sum()
    raise ConfigError(f"unknown pruning method {method!r}; choose from {METHODS}")


def right_side(lam: np.ndarray, mu: np.ndarray, epsilon: float, r2) -> np.ndarray:
    """``F = Σ_i μ_i · 2ε / (2ε + max(λ_i, 0) · R²)`` for each ``R²`` in ``r2``.

    Terms with ``λ_i ≤ 0`` or ``R = 0`` are 1.
    """
    r2 = np.asarray(r2, dtype=np.float64)
    curv = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)[None, :] * r2.reshape(-1, 1)
    two_eps = 2.0 * float(epsilon)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(curv > 0, two_eps / (two_eps + curv), 1.0)
    return (g @ np.asarray(mu, dtype=np.float64)).reshape(r2.shape)


SPECTRUM_PARTS = ("nonpositive", "flat", "curved")


def right_side_parts(lam: np.ndarray, mu: np.ndarray, epsilon: float, r2: float) -> tuple[np.ndarray, np.ndarray]:
    """Which part of the spectrum carries ``F`` at ``R²``: contributions to ``F`` and spectral mass of
    :data:`SPECTRUM_PARTS` — eigenvalues ``≤ 0`` (free directions, each counting fully), the flat bulk
    ``0 < λ ≤ 2ε/R²`` (sublevel radius at least ``R``: each counts at least 1/2) and the rest."""
    lam, mu = np.asarray(lam, dtype=np.float64), np.asarray(mu, dtype=np.float64)
    r2 = float(r2)
    edge = 2.0 * float(epsilon) / r2 if r2 > 0 else np.inf
    parts = [lam <= 0, (lam > 0) & (lam <= edge), lam > edge]
    with np.errstate(invalid="ignore", divide="ignore"):
        curv = np.maximum(lam, 0.0) * r2
        each = np.where(curv > 0, 2.0 * epsilon / (2.0 * epsilon + curv), 1.0)
    contrib = np.array([float(np.sum(mu[p] * each[p])) for p in parts])
    mass = np.array([float(np.sum(mu[p])) for p in parts])
    return contrib, mass


def _supremum(f_at: Callable[[int], float], d: int) -> float:
    """``sup {p : p ≤ F(p)}`` where ``F(p) = f_at(ceil(p·d))`` does not increase (see the module docstring)."""
    f1 = f_at(1)
    if not f1 > 0:
        return 0.0
    f_d = f_at(d)
    if f_d > (d - 1) / d:
        return min(1.0, f_d)
    lo, hi, f_lo = 1, d, f1  # the predicate holds at lo and fails at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f = f_at(mid)
        if f > (mid - 1) / d:
            lo, f_lo = mid, f
        else:
            hi = mid
    return min(lo / d, f_lo)


def p_star(lam: np.ndarray, mu: np.ndarray, r2: np.ndarray, epsilon: float) -> float:
    """The exact ``sup {p : p ≤ F(p)}`` for the measure ``(lam, mu)`` and ``R²_k = r2[k]``.

    ``k = ceil(p·D)`` and ``D = len(r2) − 1``.
    """
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a finite number >= 0, got {epsilon}")
    r2 = np.asarray(r2, dtype=np.float64)
    if r2.ndim != 1 or len(r2) < 2 or r2[0] != 0 or np.any(np.diff(r2) < 0):
        raise ValueError("r2 must be R²_k for k = 0 … D: starting at 0, not decreasing")
    return _supremum(lambda k: float(right_side(lam, mu, epsilon, r2[k])), len(r2) - 1)


def _check_e4(hessian: xr.Dataset, run, levels: Sequence[int]) -> None:
    if hessian.attrs.get("experiment") != "E4_hessian":
        raise ConfigError("the --hessian file is not an E4 (hessian) output")
    if hessian.attrs.get("config_hash") != run.recipe.hash() or int(hessian.seed.values[0]) != run.seed:
        raise ConfigError(
            f"the --hessian file is for another run (recipe hash {hessian.attrs.get('config_hash')}, "
            f"seed {int(hessian.seed.values[0])}); this run has {run.recipe.hash()}, seed {run.seed}"
        )
    if "lanczos_alpha" not in hessian:
        raise ConfigError("the --hessian file has no Lanczos coefficients (made by an older version); rerun E4")
    missing = [lv for lv in levels if lv not in set(int(v) for v in hessian.level.values)]
    if missing:
        raise ConfigError(f"the --hessian file has no levels {missing} (it has {list(hessian.level.values)})")


def pruning_theory(
    run,
    hessian: xr.Dataset,
    levels: Sequence[int] | None = None,
    epsilon: float = DEFAULT_EPSILON,
    band: float = DEFAULT_BAND,
    methods: Sequence[str] = METHODS,
    quadrature: str = "averaged",
    p_grid: int = 101,
    progress: bool = True,
) -> xr.Dataset:
    """E5 for ``levels`` (default: all of ``hessian``'s) of an :class:`~unmasking.imp.ImpRun`, from E4's output."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a positive number of nats, got {epsilon}")
    if not band >= 1:
        raise ConfigError(f"the epsilon band factor must be >= 1, got {band}")
    methods = tuple(methods)
    if not methods or len(set(methods)) != len(methods) or any(m not in METHODS for m in methods):
        raise ConfigError(f"methods must be distinct values from {METHODS}, got {list(methods)}")
    if quadrature not in QUADRATURES:
        raise ConfigError(f"quadrature must be one of {QUADRATURES}, got {quadrature!r}")
    if p_grid < 2:
        raise ConfigError(f"p_grid must be >= 2, got {p_grid}")
    levels = [int(v) for v in hessian.level.values] if levels is None else list(levels)
    levels = _check_levels(run, levels)
    _check_e4(hessian, run, levels)
    grid = np.linspace(0.0, 1.0, p_grid)
    sweep = epsilon * np.asarray(SWEEP_FACTORS)
    shape = (len(levels), len(methods))
    ps, lo, hi, q_lo, q_hi, gauss = (np.zeros(shape) for _ in range(6))
    swp = np.zeros(shape + (len(sweep),))
    r_curve, f_curve = np.zeros(shape + (p_grid,)), np.zeros(shape + (p_grid,))
    part_f, part_mass = np.zeros(shape + (len(SPECTRUM_PARTS),)), np.zeros(shape + (len(SPECTRUM_PARTS),))
    norms = np.zeros(len(levels))
    for i, level in enumerate(tqdm(levels, desc="pruning-theory", disable=not progress)):
        h = hessian.sel(level=level).isel(seed=0)
        mask = run.mask(level)
        params = dict(run.solution(level).named_parameters())
        w = np.concatenate(
            [params[n].detach().cpu().double().reshape(-1)[mask[n].reshape(-1).cpu()].numpy() for n in mask]
        )
        d = len(w)
        if d != int(h.num_weights):
            raise ConfigError(
                f"level {level}: the --hessian file has D_L = {int(h.num_weights)} weights but the "
                f"run's mask keeps {d}; it was computed for another run"
            )
        rules = _measures(h.lanczos_alpha.values, h.lanczos_beta.values, d)
        measure = rules[quadrature]
        norms[i] = float(np.sqrt(np.sum(w**2)))
        k_grid = np.ceil(grid * d).astype(int)  # the count masks.num_to_prune uses
        for j, method in enumerate(methods):
            r2 = projection_r2(w, method)
            ps[i, j] = p_star(*measure, r2, epsilon)
            k_star = min(d, max(1, math.ceil(ps[i, j] * d)))  # the pruning step at p* (at least one weight)
            part_f[i, j], part_mass[i, j] = right_side_parts(*measure, epsilon, r2[k_star])
            lo[i, j] = p_star(*measure, r2, epsilon / band)
            hi[i, j] = p_star(*measure, r2, epsilon * band)
            halves = [p_star(*rules[name], r2, epsilon) for name in ("gauss_previous", "anti_gauss")]
            q_lo[i, j], q_hi[i, j] = min(halves), max(halves)
            gauss[i, j] = p_star(*rules["gauss"], r2, epsilon)
            swp[i, j] = [p_star(*measure, r2, e) for e in sweep]
            r_curve[i, j] = np.sqrt(r2[k_grid])
            f_curve[i, j] = right_side(*measure, epsilon, r2[k_grid])

    dims = ("seed", "level", "prune_method")
    frac = {"units": "fraction of the surviving weights"}
    ds = xr.Dataset(
        {
            "p_star": (
                dims,
                ps[None],
                {"description": f"predicted maximal pruning ratio p* at epsilon ({quadrature} quadrature)", **frac},
            ),
            "p_star_low": (dims, lo[None], {"description": "p* at epsilon / band (stricter tolerance)", **frac}),
            "p_star_high": (dims, hi[None], {"description": "p* at epsilon * band (looser tolerance)", **frac}),
            "p_star_quadrature_low": (
                dims,
                q_lo[None],
                {
                    "description": "smaller p* of the Gauss rule of T_m-1 and the anti-Gauss "
                    "rule of T_m (the averaged rule's halves): an estimate of "
                    "the quadrature error",
                    **frac,
                },
            ),
            "p_star_quadrature_high": (dims, q_hi[None], {"description": "larger p* of the same two rules", **frac}),
            "p_star_gauss": (
                dims,
                gauss[None],
                {"description": "p* from the plain m-node Gauss rule (E4's slq_nodes/slq_weights)", **frac},
            ),
            "p_star_sweep": (dims + ("epsilon",), swp[None], {"description": "p* as a function of epsilon", **frac}),
            "projection_length": (
                dims + ("p",),
                r_curve[None],
                {
                    "description": "R(p): norm of the weights removed by pruning ceil(p D_L) "
                    "(random: sqrt of the expected R^2)",
                    "units": "weight-space L2",
                },
            ),
            "right_side": (
                dims + ("p",),
                f_curve[None],
                {
                    "description": "F(p) = int rho(l) 2 eps / (2 eps + max(l,0) R(p)^2) dl at epsilon; "
                    "p* is where p crosses it",
                    **frac,
                },
            ),
            "right_side_part": (
                dims + ("spectrum_part",),
                part_f[None],
                {
                    "description": "F(p*) split by the part of the spectrum that carries it: eigenvalues <= 0, "
                    "the flat bulk 0 < l <= 2 eps / R(p*)^2, and the rest (sums to F(p*))",
                    **frac,
                },
            ),
            "spectral_mass_part": (
                dims + ("spectrum_part",),
                part_mass[None],
                {"description": "spectral mass of each part (at R(p*)), out of 1", **frac},
            ),
            "weight_norm": (("seed", "level"), norms[None], {"description": "|m_L * w_L|", "units": "weight-space L2"}),
            "num_weights": (
                ("seed", "level"),
                hessian.num_weights.sel(level=levels).values.reshape(1, -1),
                {"description": "D_L: surviving prunable weights"},
            ),
        },
        coords={
            "seed": [run.seed],
            "level": levels,
            "prune_method": list(methods),
            "p": grid,
            "epsilon": sweep,
            "spectrum_part": list(SPECTRUM_PARTS),
        },
    )
    ds["epsilon"].attrs.update(description="train-loss increase tolerance of the sublevel set", units="nats")
    ds["p"].attrs["description"] = "fraction of the surviving weights pruned at once"
    ds["prune_method"].attrs["description"] = (
        "magnitude: smallest |w_L|; random: expected R^2 over uniformly random masks, E[R^2] = p |m_L * w_L|^2"
    )
    ds.attrs.update(
        run.provenance(
            "E5_pruning_theory",
            epsilon=epsilon,
            epsilon_units="nats",
            epsilon_band=band,
            methods=list(methods),
            quadrature=quadrature,
            random_r2="exact expectation E[R^2] = (ceil(p D_L) / D_L) |m_L * w_L|^2",
            p_star_solver="exact supremum over k = ceil(p D_L) by bisection",
            **{k: v for k, v in hessian.attrs.items() if k.startswith("hessian_")},
        )
    )
    return ds


SETTINGS = PruningTheorySettings


def analyse(
    run, levels: Sequence[int] | None, settings: PruningTheorySettings = PruningTheorySettings(), *, hessian: xr.Dataset
) -> xr.Dataset:
    """E5 on an opened :class:`~unmasking.imp.ImpRun` from ``hessian``, its E4 output (the library entry point of
    the ``pruning_theory`` command); ``levels`` None: every level of ``hessian``."""
    return pruning_theory(
        run,
        hessian,
        levels,
        settings.epsilon,
        settings.epsilon_band,
        settings.methods,
        settings.quadrature,
        progress=run.progress,
    )
