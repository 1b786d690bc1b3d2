"""The claims report (SPEC §1, §4): the paper's four claims evaluated on the aggregated results.

Every claim is judged per architecture and rewind step, from seed means, with explicit
thresholds (:class:`Thresholds`), and gets a verdict — ``holds``, ``does not hold`` or
``inconclusive`` (with the reason, e.g. too few levels) — plus the numbers behind it.

Definitions shared with the figures (:mod:`unmasking.metrics.matching`, so a shaded "matching"
level in a figure is the same level the report counts):

- ``ε_match`` = the standard deviation (ddof 1) over seeds of the dense (level-0) test error,
  floored at ``match_floor`` (the floor alone with one seed);
- level ``L`` is **matching** when the seed-mean ``E_test(w_L) ≤ E_test(dense) + ε_match``;
- a successive pair ``(w_L, w_{L+1})`` is matching when both solutions are matching (for a
  level without a trained ``L+1``, ``w_L`` alone);
- a barrier is **zero** when its seed mean (and replicate mean) is ``≤ ε_barrier``.

The claims (numbered as in SPEC §1; the flatness of magnitude directions is judged with
claim 4, as the report's brief asks):

1. *Mask information*: successive-level barrier is zero **iff** the pair is matching —
   agreement fraction over levels, and both directions of the "iff" (levels that are
   matching with a barrier, and connected but not matching).
2. *SGD robustness*: trained perturbed rewind points at strength ``c`` (default 1: a
   perturbation as long as ``d_L``) stay connected to ``w_L`` exactly where IMP matches.
3. *Flatness limits the pruning ratio*: theoretical (E5) and empirical (E6) ``p*`` of random
   pruning agree (mean absolute difference within the tolerance: the larger of
   ``p_star_tolerance`` and E6's grid spacing), and magnitude pruning reaches a higher
   empirical ``p*`` than random pruning.  E6's ``p*`` is its headline one, the object of the
   theory: the retrained network lies in the linearly connected train-loss sublevel set of
   ``w_L`` at E5's ``ε`` (recomputed from E6's stored losses, :mod:`unmasking.metrics.pruning`).
4. *New small weights*: magnitude-pruning directions are flatter than random ones
   (``qᵀHq`` below the random mean at most levels, E7), and IMP's next projection after
   retraining ``R_{L+1}`` is shorter than the same step taken without retraining (E8).

A claim needs ``min_levels`` evaluable levels; an "iff" claim also needs both matching and
non-matching levels (otherwise one direction cannot be tested).

**Robustness** (:func:`robustness`): every verdict is computed again under each threshold variation that
concerns its claim (ε_barrier at ½ and 1½ times, the ε_match floor at half and double, E5's ε divided
and multiplied by its band with E6's headline recomputed) and on each seed alone; the report shows
"robust" or the variations that change the verdict, and how many seeds hold on their own.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .foundations.hparams import ConfigError
from .foundations.io import atomic_path, write_json
from .metrics.inputs import load_inputs
from .metrics.matching import dense_error, epsilon_match, matching_levels, pair_matching
from .metrics.pruning import p_star_at
from .metrics.selection import architectures, run_with_data, standardize, steps_with_data
from .metrics.statistics import seed_mean

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
SCHEMA = "unmasking-claims/1"

CLAIMS = {
    1: (
        "mask information",
        "Successive IMP solutions w_L, w_L+1 are linearly connected (zero error barrier) if and only if they "
        "are matching.",
    ),
    2: (
        "SGD robustness",
        "Perturbed pruned rewind points (perturbation as long as d_L) train to the mode of w_L (zero barrier) "
        "exactly at the levels where IMP is matching.",
    ),
    3: (
        "flatness limits the pruning ratio",
        "The Hessian-based p* predicts the largest fraction random pruning removes with the retrained network "
        "in the linearly connected train-loss sublevel set of w_L; magnitude pruning reaches a higher p*.",
    ),
    4: (
        "new small weights",
        "Magnitude-pruning directions are flatter than random ones, and after retraining IMP's next "
        "projection R_L+1 is shorter than the same pruning step taken without retraining.",
    ),
}


def _threshold(default: float | int, text: str):
    """A field of :class:`Thresholds`: its default and the help text of its command-line option."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the claims (the workflow passes ``thresholds`` of its config).

    The one declaration of the thresholds: each field's ``metadata["help"]`` is the help text of its
    option (``--eps-barrier`` for ``eps_barrier``), its default the option's default (:meth:`options`).
    """

    eps_barrier: float = _threshold(0.02, "zero-barrier threshold")
    match_floor: float = _threshold(0.01, "floor of epsilon_match")
    min_levels: int = _threshold(3, "levels a claim needs to be decided")
    min_agreement: float = _threshold(0.8, "agreement fraction an 'iff' claim (1, 2) needs to hold")
    majority: float = _threshold(0.5, "'most levels' means a fraction strictly above this (claims 3, 4)")
    strength: float = _threshold(1.0, "perturbation strength c of claim 2")
    p_star_tolerance: float = _threshold(
        0.1, "claim 3: allowed mean |p*_theory - p*_experiment| (at least E6's fraction grid step)"
    )

    def check(self) -> "Thresholds":
        """``self``, after checking every threshold's range (a ConfigError names the first out of range)."""
        checks = [
            (0 <= self.eps_barrier <= 1, "eps_barrier must be in [0, 1]"),
            (0 <= self.match_floor <= 1, "match_floor must be in [0, 1]"),
            (self.min_levels >= 1, "min_levels must be >= 1"),
            (0 < self.min_agreement <= 1, "min_agreement must be in (0, 1]"),
            (0 <= self.majority < 1, "majority must be in [0, 1)"),
            (self.strength >= 0, "strength must be >= 0"),
            (self.p_star_tolerance >= 0, "p_star_tolerance must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"claims thresholds: {message}, got {self}")
        return self


@dataclass
class ClaimResult:
    """One claim for one architecture and rewind step."""

    arch: str
    rewind_step: int
    claim: int
    verdict: str
    reason: str
    evidence: str = ""
    numbers: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    robustness: dict = field(default_factory=dict)  # see robustness(): verdicts under variations and per seed

    @property
    def name(self) -> str:
        return CLAIMS[self.claim][0]

    def to_dict(self) -> dict:
        return {
            "arch": self.arch,
            "rewind_step": self.rewind_step,
            "claim": self.claim,
            "name": self.name,
            "statement": CLAIMS[self.claim][1],
            "verdict": self.verdict,
            "reason": self.reason,
            "evidence": self.evidence,
            "numbers": _plain(self.numbers),
            "thresholds": _plain(self.thresholds),
            "robustness": _plain(self.robustness),
        }


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --- helpers of the evidence ----------------------------------------------------------------------------------


def _percent(imp: xr.Dataset | None, levels: Sequence[int]) -> list[float] | None:
    if imp is None or "density" not in imp:
        return None
    d = seed_mean(imp["density"])
    have = {int(v) for v in d.level.values}
    return [100.0 * float(d.sel(level=lv)) if lv in have else math.nan for lv in levels]


def _levels_text(levels: Sequence[int]) -> str:
    return ", ".join(str(int(v)) for v in levels) if len(levels) else "none"


def _f(x: float, digits: int = 2) -> str:
    """A number for the evidence text ('n/a' for NaN)."""
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else "n/a"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fraction(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if len(flags) else math.nan


# --- the claims ---------------------------------------------------------------------------------------------------


def claim_mask_information(
    imp: xr.Dataset | None,
    interpolation: xr.Dataset | None,
    th: Thresholds,
    bn_mode: str | None = None,
    arch: str = "",
    rewind_step: int = 0,
) -> ClaimResult:
    """Claim 1 on one run group (datasets with ``seed``/``level`` dims): zero barrier ⇔ matching."""
    used = {
        "eps_barrier": th.eps_barrier,
        "match_floor": th.match_floor,
        "min_levels": th.min_levels,
        "min_agreement": th.min_agreement,
    }
    result = ClaimResult(arch, rewind_step, 1, INCONCLUSIVE, "", thresholds=used)
    if imp is None or interpolation is None:
        result.reason = "needs the IMP (imp) and interpolation (E2) results"
        return result
    mode = bn_mode or str(interpolation.bn_mode.values[0])
    eps_m = epsilon_match(imp, th.match_floor)
    match = matching_levels(imp, eps_m)
    b = interpolation.barrier_error.sel(pair="successive", split="test", bn_mode=mode)
    bmean = seed_mean(b)
    imp_levels = {int(v) for v in imp.level.values}
    levels = [int(v) for v in bmean.level.values if np.isfinite(float(bmean.sel(level=v))) and int(v) + 1 in imp_levels]
    barrier = np.array([float(bmean.sel(level=lv)) for lv in levels])
    matching = pair_matching(match, levels)
    zero = barrier <= th.eps_barrier
    agree = matching == zero
    own = np.array([bool(match.sel(level=lv)) for lv in levels], dtype=bool)
    per_seed = _per_seed_agreement(imp, b, levels, eps_m, th.eps_barrier)
    dense, dense_std, n_seeds = dense_error(imp)
    result.numbers = {
        "bn_mode": mode,
        "eps_match": eps_m,
        "dense_test_error": dense,
        "dense_test_error_std": dense_std,
        "seeds": n_seeds,
        "levels": levels,
        "percent_remaining": _percent(imp, levels),
        "barrier": barrier,
        "matching": matching,
        "zero_barrier": zero,
        "n_levels": len(levels),
        "agreeing_levels": int(agree.sum()),
        "agreement": _fraction(agree),
        "matching_with_barrier": [lv for lv, m, z in zip(levels, matching, zero) if m and not z],
        "zero_barrier_not_matching": [lv for lv, m, z in zip(levels, matching, zero) if z and not m],
        "agreement_level_L_only": _fraction(own == zero),
        "agreement_per_seed": per_seed,
    }
    result.evidence = (
        f"zero barrier ⇔ matching at {int(agree.sum())}/{len(levels)} levels "
        f"({_f(_fraction(agree))}); matching with barrier: "
        f"{_levels_text(result.numbers['matching_with_barrier'])}; zero barrier, not matching: "
        f"{_levels_text(result.numbers['zero_barrier_not_matching'])}; ε_match = {eps_m:.4f}"
    )
    if len(levels) < th.min_levels:
        result.reason = f"only {_n(len(levels), 'successive pair')} with a barrier (needs {th.min_levels})"
    elif matching.all() or not matching.any():
        kind = "matching" if matching.all() else "not matching"
        result.reason = (
            f"every pair is {kind}, so only one direction of the 'iff' can be tested "
            f"(the levels do not span the end of the matching regime)"
        )
    elif _fraction(agree) >= th.min_agreement:
        result.verdict, result.reason = HOLDS, f"agreement {_fraction(agree):.2f} ≥ {th.min_agreement}"
    else:
        result.verdict, result.reason = FAILS, f"agreement {_fraction(agree):.2f} < {th.min_agreement}"
    return result


def _per_seed_agreement(
    imp: xr.Dataset, barrier: xr.DataArray, levels: Sequence[int], eps_m: float, eps_b: float
) -> float:
    """Agreement over (seed, level) with each seed judged against its own dense error."""
    hits, total = 0, 0
    imp_levels = {int(v) for v in imp.level.values}
    for s in barrier.seed.values:
        if s not in imp.seed.values:
            continue
        err = imp.test_error.sel(seed=s)
        dense = float(err.sel(level=0))
        for lv in levels:
            b = float(barrier.sel(seed=s, level=lv))
            pair = [lv, lv + 1] if lv + 1 in imp_levels else [lv]
            e = [float(err.sel(level=v)) for v in pair]
            if not (math.isfinite(b) and math.isfinite(dense) and all(map(math.isfinite, e))):
                continue
            total += 1
            hits += (all(x <= dense + eps_m for x in e)) == (b <= eps_b)
    return hits / total if total else math.nan


def claim_sgd_robustness(
    imp: xr.Dataset | None, perturbation: xr.Dataset | None, th: Thresholds, arch: str = "", rewind_step: int = 0
) -> ClaimResult:
    """Claim 2: trained perturbed rewind points stay connected to ``w_L`` exactly where IMP matches."""
    used = {
        "eps_barrier": th.eps_barrier,
        "match_floor": th.match_floor,
        "min_levels": th.min_levels,
        "min_agreement": th.min_agreement,
        "strength": th.strength,
    }
    result = ClaimResult(arch, rewind_step, 2, INCONCLUSIVE, "", thresholds=used)
    if imp is None or perturbation is None:
        result.reason = "needs the IMP (imp) and perturbation (E3) results"
        return result
    strengths = [float(c) for c in perturbation.strength.values]
    exact = [c for c in strengths if math.isclose(c, th.strength)]
    c_used = exact[0] if exact else min((c for c in strengths if c >= 1), default=None)
    eps_m = epsilon_match(imp, th.match_floor)
    match = matching_levels(imp, eps_m)
    b = seed_mean(perturbation.barrier_error.sel(split="test"), ("seed", "replicate"))
    per_strength = {}
    for c in strengths:
        bc = b.sel(strength=c)
        levels = [int(v) for v in bc.level.values if np.isfinite(float(bc.sel(level=v)))]
        barrier = np.array([float(bc.sel(level=lv)) for lv in levels])
        matching = pair_matching(match, levels)
        connected = barrier <= th.eps_barrier
        agree = matching == connected
        per_strength[f"{c:g}"] = {
            "levels": levels,
            "barrier": barrier,
            "matching": matching,
            "connected": connected,
            "agreement": _fraction(agree),
            "connected_where_matching": _fraction(connected[matching]),
            "disconnected_where_not_matching": _fraction(~connected[~matching]),
        }
    result.numbers = {"strength_used": c_used, "eps_match": eps_m, "strengths": per_strength}
    if c_used is None:
        result.reason = f"no perturbation strength c ≥ 1 among {strengths} (the claim is about c = 1, distance d_L)"
        return result
    s = per_strength[f"{c_used:g}"]
    n, matching = len(s["levels"]), s["matching"]
    base = per_strength.get("0")
    result.evidence = (
        f"c = {c_used:g}: connected ⇔ matching at {int((s['matching'] == s['connected']).sum())}/{n} "
        f"levels ({_f(s['agreement'])}); connected where matching "
        f"{_f(s['connected_where_matching'])}, disconnected where not "
        f"{_f(s['disconnected_where_not_matching'])}"
        + (f"; c = 0 baseline agreement {_f(base['agreement'])}" if base else "")
    )
    if n < th.min_levels:
        result.reason = f"only {_n(n, 'perturbed level')} (needs {th.min_levels})"
    elif matching.all() or not matching.any():
        kind = "matching" if matching.all() else "not matching"
        result.reason = (
            f"IMP is {kind} at every perturbed level, so 'exactly where' cannot be tested "
            f"(connected where matching: {_f(s['connected_where_matching'])})"
        )
    elif s["agreement"] >= th.min_agreement:
        result.verdict, result.reason = HOLDS, f"agreement {s['agreement']:.2f} ≥ {th.min_agreement} at c = {c_used:g}"
    else:
        result.verdict, result.reason = FAILS, f"agreement {s['agreement']:.2f} < {th.min_agreement} at c = {c_used:g}"
    return result


EPSILON_SIDES = ("base", "low", "high")  # E5's tolerance, E5's ε / band, ε × band
THEORY_P_STAR = {"base": "p_star", "low": "p_star_low", "high": "p_star_high"}


def _epsilon(pruning_theory: xr.Dataset, side: str) -> float:
    """E5's tolerance (``side`` base), or its band's ends (``low``: ε / band, ``high``: ε × band)."""
    eps = float(pruning_theory.attrs.get("epsilon", math.nan))
    band = float(pruning_theory.attrs.get("epsilon_band", 2.0))
    return {"base": eps, "low": eps / band, "high": eps * band}[side]


def _p_star_experiment(pruning_ratio: xr.Dataset, method: str, epsilon: float) -> xr.DataArray | None:
    """E6's headline ``p*`` of ``method`` at ``epsilon`` (mean over masks and seeds), None without it."""
    if method not in [str(m) for m in pruning_ratio.prune_method.values]:
        return None
    p = p_star_at(pruning_ratio.sel(prune_method=method), epsilon)
    return seed_mean(p, ("replicate", "seed"))


def _spectrum_parts(pruning_theory: xr.Dataset, levels: Sequence[int]) -> dict | None:
    """Mean over ``levels`` of the parts of the spectrum that carry E5's F(p*) for random pruning."""
    if "right_side_part" not in pruning_theory or not levels:
        return None
    parts = seed_mean(pruning_theory.right_side_part.sel(prune_method="random", level=list(levels)))
    return {str(k): float(parts.sel(spectrum_part=k).mean("level")) for k in parts.spectrum_part.values}


def claim_pruning_ratio(
    pruning_theory: xr.Dataset | None,
    pruning_ratio: xr.Dataset | None,
    th: Thresholds,
    arch: str = "",
    rewind_step: int = 0,
    epsilon_side: str = "base",
) -> ClaimResult:
    """Claim 3: E5's p* ≈ E6's headline p* for random pruning; magnitude pruning reaches a higher headline p*.

    E6's headline criterion is the object of E5's theory (the retrained network in the linearly connected
    train-loss sublevel set of ``w_L``), recomputed from E6's stored values at E5's tolerance; with
    ``epsilon_side`` ``low``/``high`` both sides use ε / band and ε × band instead.
    """
    used = {"p_star_tolerance": th.p_star_tolerance, "min_levels": th.min_levels, "majority": th.majority}
    result = ClaimResult(arch, rewind_step, 3, INCONCLUSIVE, "", thresholds=used)
    if pruning_theory is None or pruning_ratio is None:
        result.reason = "needs the pruning_theory (E5) and pruning_ratio (E6) results"
        return result
    missing = [
        v for v in ("sublevel_loss", "sublevel_barrier", "level_sublevel_loss", "success") if v not in pruning_ratio
    ]
    if missing:
        result.reason = (
            f"the E6 results have no train-loss sublevel criterion ({', '.join(missing)} missing: an older "
            f"version made them); rerun E6"
        )
        return result
    methods = [str(m) for m in pruning_theory.prune_method.values]
    eps = _epsilon(pruning_theory, epsilon_side)
    exp_random = _p_star_experiment(pruning_ratio, "random", eps)
    exp_mag = _p_star_experiment(pruning_ratio, "magnitude", eps)
    if exp_random is None or "random" not in methods:
        result.reason = "random pruning is missing from E5 or E6"
        return result
    theory = seed_mean(pruning_theory[THEORY_P_STAR[epsilon_side]].sel(prune_method="random"))
    fractions = np.sort(np.asarray(pruning_ratio.fraction.values, dtype=float))
    grid = float(np.min(np.diff(fractions))) if len(fractions) > 1 else float(fractions[0])
    tol = max(th.p_star_tolerance, grid)
    result.thresholds.update(tolerance_used=tol, epsilon=eps)
    t_levels = {int(v) for v in theory.level.values if np.isfinite(float(theory.sel(level=v)))}
    levels = [
        int(v) for v in exp_random.level.values if int(v) in t_levels and np.isfinite(float(exp_random.sel(level=v)))
    ]
    unresolved = sorted(
        set(_unresolved(pruning_ratio, "random", eps, t_levels))
        | set(_unresolved(pruning_ratio, "magnitude", eps, t_levels))
    )
    t = np.array([float(theory.sel(level=lv)) for lv in levels])
    e = np.array([float(exp_random.sel(level=lv)) for lv in levels])
    mad = float(np.mean(np.abs(t - e))) if levels else math.nan
    corr = float(np.corrcoef(t, e)[0, 1]) if len(levels) >= 3 and np.std(t) > 0 and np.std(e) > 0 else math.nan
    numbers = {
        "criterion": "E6 headline: L_train(w') <= L_train(w_L) + epsilon and train-loss barrier <= epsilon",
        "epsilon": eps,
        "epsilon_e6_ran_with": float(pruning_ratio.attrs.get("epsilon", math.nan)),
        "levels": levels,
        "theory_random": t,
        "experiment_random": e,
        "mean_abs_difference": mad,
        "correlation": corr,
        "fraction_grid_step": grid,
    }
    for crit in ("p_star_matching", "p_star_connected"):  # the secondary criteria, for comparison
        if crit in pruning_ratio and levels:
            sec = seed_mean(pruning_ratio[crit].sel(prune_method="random"), ("replicate", "seed"))
            numbers[f"experiment_random_{crit[7:]}"] = [float(sec.sel(level=lv)) for lv in levels]
    parts = _spectrum_parts(pruning_theory, levels)
    if parts is not None:
        numbers["theory_random_right_side_parts"] = parts
    mag_ok = None
    if exp_mag is not None:
        m_levels = [
            int(v)
            for v in exp_mag.level.values
            if np.isfinite(float(exp_mag.sel(level=v))) and np.isfinite(float(exp_random.sel(level=v)))
        ]
        m = np.array([float(exp_mag.sel(level=lv)) for lv in m_levels])
        r = np.array([float(exp_random.sel(level=lv)) for lv in m_levels])
        diff = float(np.mean(m - r)) if m_levels else math.nan
        at_least = _fraction(m >= r)
        numbers.update(
            {
                "magnitude_levels": m_levels,
                "experiment_magnitude": m,
                "magnitude_minus_random_mean": diff,
                "fraction_magnitude_at_least_random": at_least,
                "fraction_magnitude_higher": _fraction(m > r),
            }
        )
        if "magnitude" in methods:
            tm = seed_mean(pruning_theory[THEORY_P_STAR[epsilon_side]].sel(prune_method="magnitude"))
            tl = [lv for lv in m_levels if lv in {int(v) for v in tm.level.values}]
            numbers["theory_magnitude"] = [float(tm.sel(level=lv)) for lv in tl]
            numbers["theory_magnitude_levels"] = tl
        if len(m_levels) >= th.min_levels:
            mag_ok = bool(diff > 0 and at_least > th.majority)
    result.numbers = numbers
    result.evidence = (
        f"random p*, E5 theory vs E6 headline (train-loss sublevel set, ε = {eps:.3g} nats) at levels "
        f"{_levels_text(levels)}: theory {_list(t)}, experiment {_list(e)}; mean |Δ| = {_f(mad, 3)}"
        + (f", r = {corr:.2f}" if math.isfinite(corr) else "")
        + (
            f"; magnitude − random p* = {numbers['magnitude_minus_random_mean']:+.3f}"
            if "magnitude_minus_random_mean" in numbers
            else ""
        )
        + (
            f"; E5's F(p*) carried by λ ≤ 0: {parts['nonpositive']:.2f}, flat bulk: {parts['flat']:.2f}, "
            f"curved: {parts['curved']:.2f}"
            if parts
            else ""
        )
    )
    numbers["unresolved_levels"] = unresolved
    if unresolved:
        result.reason = (
            f"E6's bisection (run at ε = {numbers['epsilon_e6_ran_with']:.3g}) does not pin down random pruning's "
            f"p* at ε = {eps:.3g} at levels {_levels_text(unresolved)} (no failure evaluated one grid step above)"
        )
        return result
    if len(levels) < th.min_levels:
        result.reason = (
            f"only {_n(len(levels), 'level')} with both theoretical and empirical p* (needs {th.min_levels})"
        )
        return result
    agree = mad <= tol
    parts_text = [
        f"theory {'agrees' if agree else 'disagrees'} with random pruning (|Δ| {mad:.3f} "
        f"{'≤' if agree else '>'} {tol:g})"
    ]
    if mag_ok is None:
        parts_text.append("magnitude vs random p* not testable (magnitude missing or too few levels)")
        result.verdict = FAILS if not agree else INCONCLUSIVE
    else:
        parts_text.append(f"magnitude p* {'higher' if mag_ok else 'not higher'} than random")
        result.verdict = HOLDS if (agree and mag_ok) else FAILS
    result.reason = "; ".join(parts_text)
    return result


def _unresolved(pruning_ratio: xr.Dataset, method: str, epsilon: float, levels) -> list[int]:
    """Levels in ``levels`` where E6 evaluated ``method`` but, for some seed or mask, its ``p*`` at ``epsilon`` is
    not pinned down by the evaluated fractions (:func:`unmasking.metrics.pruning.p_star_at`)."""
    if method not in [str(m) for m in pruning_ratio.prune_method.values]:
        return []
    cells = pruning_ratio.sel(prune_method=method)
    ran = np.isfinite(cells.success).any("fraction")
    open_ = ran & ~np.isfinite(p_star_at(cells, epsilon))
    open_ = open_.any([d for d in open_.dims if d != "level"])
    return [int(v) for v in open_.level.values if int(v) in levels and bool(open_.sel(level=v))]


def _list(values) -> str:
    return "[" + ", ".join(_f(float(v)) for v in values) + "]"


def _most_levels(flags: np.ndarray, th: Thresholds, too_few: str, statement: str) -> tuple[str, bool | None]:
    """A part of claim 4 that holds at more than ``majority`` of the levels: its reason and state
    (None with fewer than ``min_levels`` levels, whose reason is ``too_few``)."""
    if len(flags) < th.min_levels:
        return f"{too_few} (needs {th.min_levels})", None
    ok = _fraction(flags) > th.majority
    return f"{statement} at {int(flags.sum())}/{len(flags)} levels ({'>' if ok else '≤'} {th.majority:g})", ok


def _flatter_part(flatness: xr.Dataset | None, th: Thresholds, numbers: dict) -> tuple[str, bool | None]:
    """Claim 4, E7: magnitude-pruning directions flatter than random ones at most levels (adds to ``numbers``)."""
    if flatness is None:
        return "flatness (E7) results missing", None
    mag = seed_mean(flatness.curvature_magnitude)
    if "random" not in [str(m) for m in flatness.prune_method.values]:
        return "E7 has no global random pruning", None
    rnd = seed_mean(flatness.curvature_random_mean.sel(prune_method="random"))
    levels = [
        int(v)
        for v in mag.level.values
        if np.isfinite(float(mag.sel(level=v))) and np.isfinite(float(rnd.sel(level=v)))
    ]
    m = np.array([float(mag.sel(level=lv)) for lv in levels])
    r = np.array([float(rnd.sel(level=lv)) for lv in levels])
    flatter = m < r
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.median(m / r)) if levels else math.nan
    numbers.update(
        {
            "flatness_levels": levels,
            "curvature_magnitude": m,
            "curvature_random_mean": r,
            "fraction_flatter": _fraction(flatter),
            "median_ratio_magnitude_to_random": ratio,
        }
    )
    return _most_levels(flatter, th, f"only {_n(len(levels), 'E7 level')}", "magnitude directions flatter")


def _level_mean(da: xr.DataArray, levels: Sequence[int]) -> float:
    """Mean over ``levels`` of a seed-mean series, NaN ignored (NaN without levels)."""
    return float(np.nanmean([float(da.sel(level=lv)) for lv in levels])) if levels else math.nan


def _shorter_part(small_weights: xr.Dataset | None, th: Thresholds, numbers: dict) -> tuple[str, bool | None]:
    """Claim 4, E8: IMP's next projection after retraining shorter than the unretrained step at most levels."""
    if small_weights is None:
        return "small_weights (E8) results missing", None
    nxt = seed_mean(small_weights.next_projection_length)
    un = seed_mean(small_weights.unretrained_step_length)
    levels = [
        int(v) for v in nxt.level.values if np.isfinite(float(nxt.sel(level=v))) and np.isfinite(float(un.sel(level=v)))
    ]
    a = np.array([float(nxt.sel(level=lv)) for lv in levels])
    b = np.array([float(un.sel(level=lv)) for lv in levels])
    shorter = a < b
    rl = seed_mean(small_weights.projection_length)
    one = seed_mean(small_weights.oneshot_projection_length)
    imp_two = np.array([math.hypot(float(rl.sel(level=lv)), float(nxt.sel(level=lv))) for lv in levels])
    oneshot = np.array([float(one.sel(level=lv)) for lv in levels])
    numbers.update(
        {
            "small_weights_levels": levels,
            "next_projection_length": a,
            "unretrained_step_length": b,
            "fraction_shorter": _fraction(shorter),
            "imp_two_step_length": imp_two,
            "oneshot_projection_length": oneshot,
            "fraction_two_steps_shorter_than_oneshot": _fraction(imp_two < oneshot),
            "mean_overlap": _level_mean(seed_mean(small_weights.overlap), levels),
            "mean_chance_overlap": _level_mean(seed_mean(small_weights.chance_overlap), levels),
        }
    )
    return _most_levels(
        shorter,
        th,
        f"only {_n(len(levels), 'E8 level')} with IMP's following step",
        "R_L+1 shorter than the unretrained step",
    )


def claim_small_weights(
    flatness: xr.Dataset | None, small_weights: xr.Dataset | None, th: Thresholds, arch: str = "", rewind_step: int = 0
) -> ClaimResult:
    """Claim 4: magnitude directions are flatter (E7) and retraining shortens the next projection (E8)."""
    used = {"majority": th.majority, "min_levels": th.min_levels}
    result = ClaimResult(arch, rewind_step, 4, INCONCLUSIVE, "", thresholds=used)
    numbers: dict = {}
    parts, states = zip(_flatter_part(flatness, th, numbers), _shorter_part(small_weights, th, numbers))
    result.numbers = numbers
    result.evidence = "; ".join(
        (
            [f"q'Hq magnitude/random median {_f(numbers['median_ratio_magnitude_to_random'])}"]
            if "median_ratio_magnitude_to_random" in numbers
            else []
        )
        + (
            [
                f"R_L+1 < unretrained at fraction {_f(numbers['fraction_shorter'])}; overlap "
                f"{_f(numbers['mean_overlap'])} (chance {_f(numbers['mean_chance_overlap'])})"
            ]
            if "fraction_shorter" in numbers
            else []
        )
    )
    if any(s is False for s in states):
        result.verdict = FAILS
    elif all(s is True for s in states):
        result.verdict = HOLDS
    result.reason = "; ".join(parts)
    return result


# --- the report ---------------------------------------------------------------------------------------------------


# --- robustness: each verdict under the threshold variations and per seed ---------------------------------------

BARRIER_FACTORS = (0.5, 1.5)  # ε_barrier × these: 1 % and 3 % around the default 2 %
MATCH_FLOOR_FACTORS = (0.5, 2.0)  # the ε_match floor at half and double
CLAIM_INPUTS = {  # the experiments each claim reads (its per-seed check uses the seeds they share)
    1: ("imp", "interpolation"),
    2: ("imp", "perturbation"),
    3: ("pruning_theory", "pruning_ratio"),
    4: ("flatness", "small_weights"),
}
VARIED = {1: ("eps_barrier", "match_floor"), 2: ("eps_barrier", "match_floor"), 3: ("epsilon",), 4: ()}


@dataclass(frozen=True)
class Variation:
    """One change of the thresholds a verdict is checked under (``epsilon_side``: E5/E6's tolerance)."""

    kind: str
    label: str
    thresholds: Thresholds
    epsilon_side: str = "base"


def variations(th: Thresholds) -> list[Variation]:
    """The threshold variations of the robustness check: ε_barrier at ½ and 1½ times (1 % and 3 % around 2 %),
    the ε_match floor at half and double, and E5's ε (with E6's headline recomputed) at ε / band and ε × band."""
    out = [
        Variation("eps_barrier", f"ε_barrier {th.eps_barrier * f:g}", replace(th, eps_barrier=th.eps_barrier * f))
        for f in BARRIER_FACTORS
    ]
    out += [
        Variation("match_floor", f"ε_match floor {th.match_floor * f:g}", replace(th, match_floor=th.match_floor * f))
        for f in MATCH_FLOOR_FACTORS
    ]
    out += [Variation("epsilon", "E5's ε / band", th, "low"), Variation("epsilon", "E5's ε × band", th, "high")]
    return out


def _judge(claim: int, d: Mapping[str, xr.Dataset | None], th: Thresholds, side: str = "base", **kw) -> ClaimResult:
    if claim == 1:
        return claim_mask_information(d.get("imp"), d.get("interpolation"), th, **kw)
    if claim == 2:
        return claim_sgd_robustness(d.get("imp"), d.get("perturbation"), th, **kw)
    if claim == 3:
        return claim_pruning_ratio(d.get("pruning_theory"), d.get("pruning_ratio"), th, epsilon_side=side, **kw)
    return claim_small_weights(d.get("flatness"), d.get("small_weights"), th, **kw)


def _seeds(claim: int, d: Mapping[str, xr.Dataset | None]) -> list[int]:
    """The seeds every input of ``claim`` has."""
    sets = [
        {int(v) for v in d[k].seed.values} for k in CLAIM_INPUTS[claim] if d.get(k) is not None and "seed" in d[k].dims
    ]
    return sorted(set.intersection(*sets)) if sets else []


def robustness(claim: int, base: ClaimResult, d: Mapping[str, xr.Dataset | None], th: Thresholds, **kw) -> dict:
    """The verdict of ``claim`` under each relevant threshold variation and on each seed alone.

    On one seed, ``ε_match`` stays the one of all seeds (the standard deviation over seeds, floored), so
    a per-seed verdict differs from the pooled one only through that seed's own values.
    """
    varied = {
        v.label: _judge(claim, d, v.thresholds, v.epsilon_side, **kw).verdict
        for v in variations(th)
        if v.kind in VARIED[claim]
    }
    seed_th = th
    if d.get("imp") is not None:
        seed_th = replace(th, match_floor=epsilon_match(d["imp"], th.match_floor))
    per_seed = {}
    for s in _seeds(claim, d):
        one = {
            k: (v.sel(seed=[s]) if v is not None and "seed" in v.dims and s in v.seed.values else v)
            for k, v in d.items()
        }
        per_seed[str(s)] = _judge(claim, one, seed_th, **kw).verdict
    changed = [f"{verdict} at {label}" for label, verdict in varied.items() if verdict != base.verdict]
    held = sum(v == HOLDS for v in per_seed.values())
    text = ("robust" if not changed else "; ".join(changed)) if varied else "no threshold to vary"
    seeds = f"{held}/{len(per_seed)} seeds hold" if per_seed else "no per-seed results"
    return {
        "variations": varied,
        "robust": not changed,
        "per_seed": per_seed,
        "seeds_holding": held,
        "seeds": len(per_seed),
        "text": f"{text}; {seeds}",
    }


def evaluate(datasets: Mapping[str, xr.Dataset], thresholds: Thresholds = Thresholds()) -> list[ClaimResult]:
    """All four claims for every architecture and rewind step in ``datasets`` (``{experiment: aggregate}``),
    each with its robustness (:func:`robustness`)."""
    thresholds.check()
    datasets = {k: standardize(v) for k, v in datasets.items()}
    if not datasets:
        raise ConfigError("no results to evaluate the claims on")
    out = []
    for arch in architectures(datasets):
        for t in steps_with_data(datasets, arch):
            d = {k: run_with_data(v, arch, t) for k, v in datasets.items()}
            kw = dict(arch=arch, rewind_step=t)
            for claim in CLAIMS:
                result = _judge(claim, d, thresholds, **kw)
                result.robustness = robustness(claim, result, d, thresholds, **kw)
                out.append(result)
    return out


def report(
    results: Sequence[ClaimResult], thresholds: Thresholds, config_name: str = "", inputs: Sequence[str] = ()
) -> dict:
    """The machine-readable report (see docs/figures.md for the schema)."""
    summary: dict = {}
    for r in results:
        summary.setdefault(r.arch, {}).setdefault(str(r.rewind_step), {})[str(r.claim)] = r.verdict
    return {
        "schema": SCHEMA,
        "config": config_name,
        "thresholds": asdict(thresholds),
        "definitions": {
            "eps_match": "max(std (ddof 1) over seeds of the dense test error, match_floor)",
            "matching": "seed-mean E_test(w_L) <= seed-mean E_test(dense) + eps_match; a successive pair "
            "(L, L+1) is matching when both levels are",
            "zero_barrier": "seed-mean (and replicate-mean) test-error barrier <= eps_barrier",
            "most_levels": "a fraction of the levels strictly above majority",
            "robustness": "the verdict again under each threshold variation of its claim (eps_barrier x "
            f"{BARRIER_FACTORS}, match_floor x {MATCH_FLOOR_FACTORS}: claims 1, 2; E5's epsilon / and x its band, "
            "E6 recomputed: claim 3) and on each seed alone (eps_match of all seeds)",
            "claim3_experiment": "E6 headline: L_train(w') <= L_train(w_L) + epsilon and train-loss barrier <= "
            "epsilon, epsilon E5's, on E5's examples",
        },
        "claims_text": {str(k): {"name": v[0], "statement": v[1]} for k, v in CLAIMS.items()},
        "inputs": [str(p) for p in inputs],
        "summary": summary,
        "claims": [r.to_dict() for r in results],
    }


def _robust_text(claim: dict) -> str:
    return (claim.get("robustness") or {}).get("text", "—")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(rep: dict) -> str:
    """A Markdown table of a report: one row per architecture, rewind step and claim."""
    th = rep["thresholds"]
    lines = [
        f"## Claims — configuration `{rep['config'] or '?'}`",
        "",
        f"Thresholds: ε_barrier = {th['eps_barrier']:g}; ε_match = max(std of the dense test error over "
        f"seeds, {th['match_floor']:g}); a claim needs ≥ {th['min_levels']} levels; 'iff' agreement ≥ "
        f"{th['min_agreement']:g}; 'most levels' > {th['majority']:g}; claim 2 at c = {th['strength']:g}; "
        f"claim 3 tolerance {th['p_star_tolerance']:g} (at least E6's grid step), E6's headline criterion "
        f"(train-loss sublevel set at E5's ε).",
        "",
        f"Robustness: each verdict again with ε_barrier × {' and × '.join(f'{f:g}' for f in BARRIER_FACTORS)} and the "
        f"ε_match floor × {' and × '.join(f'{f:g}' for f in MATCH_FLOOR_FACTORS)} (claims 1, 2), with E5's ε ÷ and × "
        f"its band, E6 recomputed (claim 3); 'robust' when no variation changes it; and on each seed alone.",
        "",
        "| architecture | rewind step | claim | verdict | robustness | evidence | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rep["claims"]:
        lines.append(
            f"| {_cell(c['arch'])} | {c['rewind_step']} | {c['claim']}. {_cell(c['name'])} | "
            f"**{c['verdict']}** | {_cell(_robust_text(c))} | {_cell(c['evidence'] or '—')} | {_cell(c['reason'])} |"
        )
    lines += ["", "Claims: " + " ".join(f"({k}) {v['statement']}" for k, v in rep["claims_text"].items()), ""]
    return "\n".join(lines)


def to_html(rep: dict) -> str:
    """A self-contained HTML page of the report's table (for ``snakemake --report``)."""
    md = to_markdown(rep).splitlines()
    colour = {HOLDS: "#d8f0d8", FAILS: "#f6d5d5", INCONCLUSIVE: "#eeeeee"}
    rows = "\n".join(
        f"<tr style='background:{colour.get(c['verdict'], '#fff')}'><td>{html.escape(c['arch'])}</td>"
        f"<td>{c['rewind_step']}</td><td>{c['claim']}. {html.escape(c['name'])}</td>"
        f"<td><b>{html.escape(c['verdict'])}</b></td><td>{html.escape(_robust_text(c))}</td>"
        f"<td>{html.escape(c['evidence'] or '—')}</td>"
        f"<td>{html.escape(c['reason'])}</td></tr>"
        for c in rep["claims"]
    )
    statements = "".join(f"<li>({k}) {html.escape(v['statement'])}</li>" for k, v in rep["claims_text"].items())
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Claims</title>"
        f"<style>body{{font-family:sans-serif;font-size:14px}}table{{border-collapse:collapse}}"
        f"td,th{{border:1px solid #999;padding:4px 6px;vertical-align:top}}</style></head><body>"
        f"<h2>Claims — configuration <code>{html.escape(rep['config'] or '?')}</code></h2>"
        f"<p>{html.escape(md[2])}</p><p>{html.escape(md[4])}</p>"
        f"<table><tr><th>architecture</th><th>rewind step</th><th>claim</th><th>verdict</th><th>robustness</th>"
        f"<th>evidence</th>"
        f"<th>reason</th></tr>{rows}</table><ol style='list-style:none'>{statements}</ol></body></html>"
    )


def write_report(
    rep: dict, out_json: str | Path, out_md: str | Path | None = None, out_html: str | Path | None = None
) -> list[Path]:
    """Write the JSON (and Markdown / HTML) files atomically; returns their paths."""
    write_json(rep, Path(out_json))
    written = [Path(out_json)]
    for path, text in ((out_md, to_markdown(rep)), (out_html, to_html(rep))):
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
            written.append(Path(path))
    return written


def main(
    inputs: Sequence[str | Path],
    out_json: str | Path,
    out_md: str | Path | None = None,
    out_html: str | Path | None = None,
    thresholds: Thresholds = Thresholds(),
    config_name: str = "",
) -> dict:
    """Evaluate the claims on result files and write the report; returns it."""
    results = load_inputs(inputs, config_name or None)
    rep = report(evaluate(results, thresholds), thresholds, config_name, [str(p) for p in inputs])
    write_report(rep, out_json, out_md, out_html)
    return rep
