"""E5 — the maximal pruning ratio predicted from the Hessian spectrum (SPEC §3).

For the level-L solution ``w_L`` with ``D_L`` surviving weights, spectral measure ``ρ`` of the
masked Hessian (E4's SLQ nodes and weights: a discrete measure normalized over the ``D_L``
weights, used as is), tolerance ``ε`` on the train-loss increase and projection length
``R(p)`` of pruning a fraction ``p`` of the surviving weights:

    p* = sup { p : p ≤ F(p) },   F(p) = ∫ ρ(λ) · 2ε / (2ε + max(λ, 0) · R(p)²) dλ.

This is the Gaussian-width condition of Larsen et al. (2022): an axial subspace of
codimension ``p·D_L`` at distance ``R`` from ``w_L`` meets the ellipsoidal sublevel set with
radii ``√(2ε/λ_i)`` when ``p·D_L ≤ Σ r_i² / (R² + r_i²)``; directions with ``λ ≤ 0`` are
unbounded (``r = ∞``) and count fully.

Pruning removes whole weights: pruning a fraction ``p`` removes ``k = ceil(p·D_L)`` of them
(SPEC §2), so ``R(p)² = R²_k`` is a step function of ``p`` and so is ``F``.  The supremum is
found exactly: on ``((k−1)/D_L, k/D_L]`` the condition reads ``p ≤ F_k``, which some ``p``
there meets iff ``F_k > (k−1)/D_L``.  That predicate holds for small ``k`` and fails beyond
one point (``F_k`` does not increase, ``(k−1)/D_L`` does), so a bisection over ``k`` finds the
last ``K`` where it holds and ``p* = min(K/D_L, F_K)`` — exact, with no tolerance and no
bracketing failures; the edge cases fall out (all ``λ ≤ 0``: ``F ≡ 1``, ``p* = 1``; ``ε = 0``
with positive curvature: ``p* = 0``).

Methods:
- ``magnitude``: ``R²_k`` = the sum of the ``k`` smallest squared surviving weights.
- ``random``: the exact expectation over uniformly random masks, ``E[R²_k] = (k/D_L)·‖m_L ⊙ w_L‖²``
  (the expectation of ``R²`` enters ``F``; no masks are sampled).

``ε`` defaults to :data:`DEFAULT_EPSILON` = ``0.02 · ln 2 ≈ 0.0139`` nats, absolute and the same at
every level: a misclassified example has cross-entropy ``≥ ln 2``, so the train error is at most
``loss / ln 2`` and a loss budget of ``0.02 · ln 2`` corresponds to SPEC's 2% error barrier
(docs/analyses_hessian.md discusses the choice) with a band ``p*(ε/k)`` … ``p*(ε·k)``, ``k`` = :data:`DEFAULT_BAND`.  ``p*`` is also
reported on a sweep of ``ε`` over four decades.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ..config import ConfigError
from ..results import load_dataset, write_dataset
from .hessian import _check_levels, run_attrs

METHODS = ("magnitude", "random")
EPS_BARRIER = 0.02  # SPEC's zero-barrier threshold on the error
DEFAULT_EPSILON = EPS_BARRIER * math.log(2)  # ≈ 0.0139 nats; see docs/analyses_hessian.md
DEFAULT_BAND = 2.0
SWEEP_FACTORS = tuple(10.0 ** (e / 4) for e in range(-8, 9))  # ε × 10^-2 … 10^2, quarter decades

__all__ = ["DEFAULT_BAND", "DEFAULT_EPSILON", "METHODS", "SWEEP_FACTORS", "projection_r2", "pruning_theory",
           "p_star", "p_star_bounds", "right_side", "right_side_bounds", "spectral_measure", "EPS_BARRIER"]


def spectral_measure(nodes, weights) -> tuple[np.ndarray, np.ndarray]:
    """Flatten SLQ nodes/weights ``(..., probe, node)`` into one discrete measure of total mass 1.

    Each probe's weights sum to 1, so the probe average is the sum divided by the number of
    probes; padded entries (NaN nodes, zero weights) are dropped.
    """
    nodes, weights = np.asarray(nodes, dtype=float), np.asarray(weights, dtype=float)
    if nodes.shape != weights.shape:
        raise ValueError(f"nodes and weights differ in shape: {nodes.shape} vs {weights.shape}")
    keep = np.isfinite(nodes) & np.isfinite(weights) & (weights > 0)
    if not keep.any():
        raise ValueError("the spectral measure is empty (no finite nodes with positive weight)")
    lam, mu = nodes[keep], weights[keep]
    if np.any(mu < 0):
        raise ValueError("spectral weights must be non-negative")
    return lam, mu / mu.sum()


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
    """``F = Σ_i μ_i · 2ε / (2ε + max(λ_i, 0) · R²)`` for each ``R²`` in ``r2`` (terms with ``λ_i ≤ 0`` or ``R = 0`` are 1)."""
    r2 = np.asarray(r2, dtype=np.float64)
    curv = np.maximum(np.asarray(lam, dtype=np.float64), 0.0)[None, :] * r2.reshape(-1, 1)
    two_eps = 2.0 * float(epsilon)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(curv > 0, two_eps / (two_eps + curv), 1.0)
    return (g @ np.asarray(mu, dtype=np.float64)).reshape(r2.shape)


def _g(lam: np.ndarray, epsilon: float, r2: float) -> np.ndarray:
    curv = np.maximum(lam, 0.0) * r2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(curv > 0, 2.0 * epsilon / (2.0 * epsilon + curv), 1.0)


def right_side_bounds(nodes, weights, epsilon: float, r2: float) -> tuple[float, float]:
    """Bounds on ``F`` over every spectral measure that the Lanczos runs cannot tell apart.

    By the Chebyshev–Markov–Stieltjes inequalities, each probe's true spectral measure has a
    distribution function between those of its Gauss rule with every weight moved to the next
    node up and to the next node down.  The integrand is non-increasing in ``λ``, so moving
    the weights up (the top one to ``+∞``) gives a lower bound and down (the bottom one to
    ``−∞``) an upper bound; the bounds are averaged over probes.  Their gap measures how well
    ``lanczos_steps`` resolve the spectrum where the integrand changes (near ``λ = 2ε/R²``).
    """
    nodes, weights = np.atleast_2d(np.asarray(nodes, dtype=float)), np.atleast_2d(np.asarray(weights, dtype=float))
    low = high = 0.0
    for theta, w in zip(nodes, weights):
        keep = np.isfinite(theta) & (w > 0)
        order = np.argsort(theta[keep], kind="stable")
        theta, w = theta[keep][order], w[keep][order]
        g = _g(theta, epsilon, r2)
        low += float(np.dot(w, np.append(g[1:], 0.0)))
        high += float(np.dot(w, np.insert(g[:-1], 0, 1.0)))
    return low / len(nodes), high / len(nodes)


def _supremum(f_at: Callable[[int], float], d: int) -> float:
    """``sup {p : p ≤ F(p)}`` where ``F(p) = f_at(ceil(p·d))`` does not increase (see the module docstring)."""
    f1 = f_at(1)
    if not f1 > 0:
        return 0.0
    f_d = f_at(d)
    if f_d > (d - 1) / d:
        return min(1.0, f_d)
    lo, hi, f_lo = 1, d, f1  # F_lo > (lo-1)/d holds, at hi it fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f = f_at(mid)
        if f > (mid - 1) / d:
            lo, f_lo = mid, f
        else:
            hi = mid
    return min(lo / d, f_lo)


def _check_r2(r2) -> np.ndarray:
    r2 = np.asarray(r2, dtype=np.float64)
    if r2.ndim != 1 or len(r2) < 2 or r2[0] != 0 or np.any(np.diff(r2) < 0):
        raise ValueError("r2 must be R²_k for k = 0 … D: starting at 0, not decreasing")
    return r2


def _check_epsilon(epsilon: float) -> float:
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a finite number >= 0, got {epsilon}")
    return float(epsilon)


def p_star(lam: np.ndarray, mu: np.ndarray, r2: np.ndarray, epsilon: float) -> float:
    """The exact ``sup {p : p ≤ F(p)}`` for ``R²_k`` = ``r2[k]`` (``k = ceil(p·D)``, ``D = len(r2) − 1``)."""
    epsilon, r2 = _check_epsilon(epsilon), _check_r2(r2)
    return _supremum(lambda k: float(right_side(lam, mu, epsilon, r2[k])), len(r2) - 1)


def p_star_bounds(nodes, weights, r2: np.ndarray, epsilon: float) -> tuple[float, float]:
    """``p*`` with ``F`` replaced by each side of :func:`right_side_bounds` (so they bracket ``p*``)."""
    epsilon, r2 = _check_epsilon(epsilon), _check_r2(r2)
    d = len(r2) - 1
    return (_supremum(lambda k: right_side_bounds(nodes, weights, epsilon, r2[k])[0], d),
            _supremum(lambda k: right_side_bounds(nodes, weights, epsilon, r2[k])[1], d))


def _check_e4(hessian: xr.Dataset, run, levels: Sequence[int]) -> None:
    if hessian.attrs.get("experiment") != "E4_hessian":
        raise ConfigError("the --hessian file is not an E4 (hessian) output")
    if hessian.attrs.get("config_hash") != run.recipe.hash() or int(hessian.seed.values[0]) != run.seed:
        raise ConfigError(f"the --hessian file is for another run (recipe hash {hessian.attrs.get('config_hash')}, "
                          f"seed {int(hessian.seed.values[0])}); this run has {run.recipe.hash()}, seed {run.seed}")
    missing = [lv for lv in levels if lv not in set(int(v) for v in hessian.level.values)]
    if missing:
        raise ConfigError(f"the --hessian file has no levels {missing} (it has {list(hessian.level.values)})")


def pruning_theory(run, hessian: xr.Dataset, levels: Sequence[int] | None = None,
                   epsilon: float = DEFAULT_EPSILON, band: float = DEFAULT_BAND,
                   methods: Sequence[str] = METHODS, p_grid: int = 101, progress: bool = True) -> xr.Dataset:
    """E5 for ``levels`` (default: all of ``hessian``'s) of an :class:`~unmasking.imp.ImpRun`, from E4's output."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"epsilon must be a positive number of nats, got {epsilon}")
    if not band >= 1:
        raise ConfigError(f"the epsilon band factor must be >= 1, got {band}")
    methods = tuple(methods)
    if not methods or len(set(methods)) != len(methods) or any(m not in METHODS for m in methods):
        raise ConfigError(f"methods must be distinct values from {METHODS}, got {list(methods)}")
    if p_grid < 2:
        raise ConfigError(f"p_grid must be >= 2, got {p_grid}")
    levels = [int(v) for v in hessian.level.values] if levels is None else list(levels)
    levels = _check_levels(run, levels)
    _check_e4(hessian, run, levels)
    grid = np.linspace(0.0, 1.0, p_grid)
    sweep = epsilon * np.asarray(SWEEP_FACTORS)
    shape = (len(levels), len(methods))
    ps, lo, hi, q_lo, q_hi = (np.zeros(shape) for _ in range(5))
    swp = np.zeros(shape + (len(sweep),))
    r_curve, f_curve = np.zeros(shape + (p_grid,)), np.zeros(shape + (p_grid,))
    norms = np.zeros(len(levels))
    for i, level in enumerate(tqdm(levels, desc="pruning-theory", disable=not progress)):
        h = hessian.sel(level=level).isel(seed=0)
        lam, mu = spectral_measure(h.slq_nodes.values, h.slq_weights.values)
        mask = run.mask(level)
        params = dict(run.solution(level).named_parameters())
        w = np.concatenate([params[n].detach().cpu().double().reshape(-1)[mask[n].reshape(-1).cpu()].numpy()
                            for n in mask])
        if len(w) != int(h.num_weights):
            raise ConfigError(f"level {level}: the --hessian file has D_L = {int(h.num_weights)} weights but the "
                              f"run's mask keeps {len(w)}; it was computed for another run")
        norms[i] = float(np.sqrt(np.sum(w ** 2)))
        d = len(w)
        k_grid = np.ceil(grid * d).astype(int)  # the count masks.num_to_prune uses
        for j, method in enumerate(methods):
            r2 = projection_r2(w, method)
            ps[i, j] = p_star(lam, mu, r2, epsilon)
            lo[i, j] = p_star(lam, mu, r2, epsilon / band)
            hi[i, j] = p_star(lam, mu, r2, epsilon * band)
            q_lo[i, j], q_hi[i, j] = p_star_bounds(h.slq_nodes.values, h.slq_weights.values, r2, epsilon)
            swp[i, j] = [p_star(lam, mu, r2, e) for e in sweep]
            r_curve[i, j] = np.sqrt(r2[k_grid])
            f_curve[i, j] = right_side(lam, mu, epsilon, r2[k_grid])

    dims = ("seed", "level", "prune_method")
    frac = {"units": "fraction of the surviving weights"}
    ds = xr.Dataset(
        {
            "p_star": (dims, ps[None], {"description": "predicted maximal pruning ratio p* at epsilon", **frac}),
            "p_star_low": (dims, lo[None], {"description": "p* at epsilon / band (stricter tolerance)", **frac}),
            "p_star_high": (dims, hi[None], {"description": "p* at epsilon * band (looser tolerance)", **frac}),
            "p_star_quadrature_low": (dims, q_lo[None],
                                      {"description": "lower bound on p* over all spectra consistent with the "
                                                      "Lanczos runs (Chebyshev-Markov-Stieltjes)", **frac}),
            "p_star_quadrature_high": (dims, q_hi[None],
                                       {"description": "upper bound on p* over all spectra consistent with the "
                                                       "Lanczos runs (Chebyshev-Markov-Stieltjes)", **frac}),
            "p_star_sweep": (dims + ("epsilon",), swp[None], {"description": "p* as a function of epsilon", **frac}),
            "projection_length": (dims + ("p",), r_curve[None],
                                  {"description": "R(p): norm of the weights removed by pruning ceil(p D_L) "
                                                  "(random: sqrt of the expected R^2)", "units": "weight-space L2"}),
            "right_side": (dims + ("p",), f_curve[None],
                           {"description": "F(p) = int rho(l) 2 eps / (2 eps + max(l,0) R(p)^2) dl at epsilon; "
                                           "p* is where p crosses it", **frac}),
            "weight_norm": (("seed", "level"), norms[None], {"description": "|m_L * w_L|",
                                                             "units": "weight-space L2"}),
            "num_weights": (("seed", "level"), hessian.num_weights.sel(level=levels).values.reshape(1, -1),
                            {"description": "D_L: surviving prunable weights"}),
        },
        coords={"seed": [run.seed], "level": levels, "prune_method": list(methods), "p": grid, "epsilon": sweep})
    ds["epsilon"].attrs.update(description="train-loss increase tolerance of the sublevel set", units="nats")
    ds["p"].attrs["description"] = "fraction of the surviving weights pruned at once"
    ds["prune_method"].attrs["description"] = ("magnitude: smallest |w_L|; random: expected R^2 over uniformly "
                                               "random masks, E[R^2] = p |m_L * w_L|^2")
    ds.attrs.update(run_attrs(run, "E5_pruning_theory", epsilon=epsilon, epsilon_units="nats", epsilon_band=band,
                              methods=list(methods),
                              random_r2="exact expectation E[R^2] = (ceil(p D_L) / D_L) |m_L * w_L|^2",
                              p_star_solver="exact supremum over k = ceil(p D_L) by bisection",
                              **{f"hessian_{k}": v for k, v in hessian.attrs.items()
                                 if k.startswith("hessian_")}))
    return ds


def _cmd_pruning_theory(args) -> None:
    from ..imp import ImpRun

    run = ImpRun.open(args.run, device=args.device, progress=not args.quiet)
    ds = pruning_theory(run, load_dataset(args.hessian), args.levels, args.epsilon, args.epsilon_band,
                        args.methods, progress=not args.quiet)
    out = write_dataset(ds, Path(args.out))
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        row = "  ".join(f"{m}: {float(r.p_star.sel(prune_method=m)):.3f} "
                        f"[{float(r.p_star_low.sel(prune_method=m)):.3f}, "
                        f"{float(r.p_star_high.sel(prune_method=m)):.3f}]" for m in ds.prune_method.values)
        print(f"level {level:2d}  p*  {row}")
    print(f"wrote {out}")


def register(subparsers) -> None:
    from ..cli import add_common_args

    p = subparsers.add_parser("pruning-theory", help="E5: the maximal pruning ratio p* predicted from the Hessian "
                              "spectrum (needs the E4 output)", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished IMP run folder")
    p.add_argument("--levels", type=int, nargs="+", default=None,
                   help="levels (default: every level of the --hessian file)")
    p.add_argument("--out", required=True, help="output netCDF file")
    p.add_argument("--hessian", required=True, help="E4 output (unmasking hessian) for the same run and levels")
    p.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON,
                   help="train-loss increase tolerance of the sublevel set, in nats")
    p.add_argument("--epsilon-band", type=float, default=DEFAULT_BAND,
                   help="sensitivity band: p* is also computed at epsilon / band and epsilon * band")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="pruning methods")
    add_common_args(p)
    p.set_defaults(func=_cmd_pruning_theory)
