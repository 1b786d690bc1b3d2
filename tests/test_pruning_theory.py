"""E5: the p* solver on synthetic spectra with closed forms, edge cases, monotonicity, R(p), the run wrapper, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.analyses import hessian as H
from unmasking.analyses import pruning_theory as T
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import load_dataset
from unmasking.spectral import lanczos as LZ

from conftest import teacher_data, tiny_imp_run


def brute_force(lam, mu, r2, eps) -> float:
    """sup {p : p ≤ F(ceil(p D))} by checking every interval ((k-1)/D, k/D]."""
    d = len(r2) - 1
    f = T.right_side(lam, mu, eps, r2[1:])
    k = np.arange(1, d + 1)
    ok = f > (k - 1) / d
    return float(np.max(np.where(ok, np.minimum(k / d, f), 0.0)))


def test_single_eigenvalue_closed_form():
    """All eigenvalues λ, R(p)² = c·p: p solves p = 2ε/(2ε + λ c p), i.e. λc p² + 2ε p − 2ε = 0."""
    lam, c, d = 3.0, 40.0, 100_000
    r2 = c * np.arange(d + 1) / d
    for eps in (1e-3, 0.05, 2.0):
        exact = (-2 * eps + math.sqrt(4 * eps**2 + 8 * eps * lam * c)) / (2 * lam * c)
        got = T.p_star(np.array([lam]), np.array([1.0]), r2, eps)
        assert abs(got - exact) <= 1.0 / d
        # the random method's R² is exactly this linear form
        w = np.full(d, math.sqrt(c / d))
        np.testing.assert_allclose(T.projection_r2(w, "random"), r2, rtol=1e-12)


def test_solver_matches_brute_force_on_random_spectra():
    rng = np.random.default_rng(0)
    for trial in range(20):
        d = int(rng.integers(5, 400))
        lam = rng.normal(0, 1, 30) * 10.0 ** rng.uniform(-3, 1)
        mu = rng.uniform(size=30)
        mu /= mu.sum()
        w = rng.normal(size=d) * rng.uniform(0.01, 2)
        w[: int(rng.integers(0, 3))] = 0.0  # some exactly-zero weights
        eps = 10.0 ** rng.uniform(-4, 0)
        for method in T.METHODS:
            r2 = T.projection_r2(w, method)
            assert T.p_star(lam, mu, r2, eps) == pytest.approx(brute_force(lam, mu, r2, eps), abs=1e-15)


def test_edge_cases():
    d = 1000
    r2 = T.projection_r2(np.linspace(0.1, 1, d), "magnitude")
    assert T.p_star(np.array([-1.0, 0.0]), np.array([0.5, 0.5]), r2, 0.01) == 1.0  # no positive curvature
    huge = T.p_star(np.array([1e12]), np.array([1.0]), r2, 0.01)
    assert 0 < huge < 1e-9
    assert T.p_star(np.array([1.0]), np.array([1.0]), r2, 0.0) == 0.0  # no tolerance, all curved
    # a flat fraction f of the spectrum: p* ≥ f, and → f as the curved part gets very sharp
    flat = T.p_star(np.array([0.0, 1e12]), np.array([0.3, 0.7]), r2, 0.01)
    assert 0.3 <= flat <= 0.3 + 2 / d
    # zero weights can be pruned for free
    w = np.concatenate([np.zeros(250), np.ones(750)])
    assert T.p_star(np.array([1e12]), np.array([1.0]), T.projection_r2(w, "magnitude"), 0.01) >= 0.25
    with pytest.raises(ConfigError):
        T.p_star(np.array([1.0]), np.array([1.0]), r2, -1.0)
    with pytest.raises(ValueError):
        T.p_star(np.array([1.0]), np.array([1.0]), np.array([1.0, 0.5]), 0.1)
    with pytest.raises(ValueError):
        T.spectral_measure(np.full((2, 3), np.nan), np.zeros((2, 3)))


def test_monotone_in_epsilon_curvature_and_method():
    rng = np.random.default_rng(1)
    lam = np.concatenate([rng.exponential(0.01, 200), rng.normal(0, 1e-3, 50), [5.0, 2.0]])
    mu = np.full(len(lam), 1 / len(lam))
    w = rng.normal(size=3000)
    mag, rnd = T.projection_r2(w, "magnitude"), T.projection_r2(w, "random")
    eps = np.logspace(-5, 1, 25)
    for r2 in (mag, rnd):
        ps = [T.p_star(lam, mu, r2, e) for e in eps]
        assert np.all(np.diff(ps) >= 0) and ps[-1] > ps[0]
        sharper = [T.p_star(3 * lam, mu, r2, e) for e in eps]
        assert np.all(np.array(sharper) <= np.array(ps))
    # magnitude pruning removes the smallest weights: R² never exceeds random's expectation, so p* is larger
    assert np.all(mag <= rnd * (1 + 1e-12))
    assert all(T.p_star(lam, mu, mag, e) >= T.p_star(lam, mu, rnd, e) for e in eps)


def test_projection_r2_matches_the_masks():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(7, 5, generator=g), "b": torch.randn(30, generator=g)}
    mask = {"a": torch.rand(7, 5, generator=g) < 0.8, "b": torch.rand(30, generator=g) < 0.6}
    w = np.concatenate([weights[n][mask[n]].double().numpy() for n in mask])
    d = M.count(mask)
    mag, rnd = T.projection_r2(w, "magnitude"), T.projection_r2(w, "random")
    for p in (0.1, 0.2, 0.55):
        k = M.num_to_prune(mask, p)
        removed = M.difference(mask, M.magnitude_prune(weights, mask, p))
        assert math.sqrt(mag[k]) == pytest.approx(M.masked_norm(weights, removed), rel=1e-12)
        # the random method is the exact expectation over uniformly random masks
        r2 = [M.masked_norm(weights, M.difference(mask, M.random_prune(mask, p, g))) ** 2 for _ in range(1000)]
        assert rnd[k] == pytest.approx(k / d * np.sum(w**2), rel=1e-12)
        assert abs(np.mean(r2) - rnd[k]) < 4 * np.std(r2) / math.sqrt(len(r2))


def moments(nodes, weights, k):
    return float(np.sum(weights * nodes**k))


def test_lanczos_rules_exactness():
    """Gauss rules are exact to degree 2m-1; the anti-Gauss error is minus that of the (m-1)-node Gauss rule."""
    rng = np.random.default_rng(3)
    evals = np.concatenate([rng.normal(0, 0.01, 60), rng.exponential(0.1, 40), [2.0, 1.5]])
    diag = torch.tensor(evals)
    z = LZ.probe_vector(len(evals), 1, "test").double()
    q2 = (z / z.norm()).numpy() ** 2
    m = 6
    run = LZ.lanczos(lambda v: diag * v, z, m)
    rules = T.lanczos_rules(run.alpha, np.append(run.beta, run.residual), len(evals))
    np.testing.assert_allclose(rules["gauss"][0], run.quadrature()[0])
    for name in ("gauss", "averaged"):
        assert sum(rules[name][1]) == pytest.approx(1.0)
        for k in range(2 * m):
            assert moments(*rules[name], k) == pytest.approx(moments(evals, q2, k), rel=1e-9, abs=1e-15)
    for k in (2 * m - 2, 2 * m - 1):  # where the (m-1)-node rule is no longer exact
        err_prev = moments(evals, q2, k) - moments(*rules["gauss_previous"], k)
        err_anti = moments(evals, q2, k) - moments(*rules["anti_gauss"], k)
        assert abs(err_prev) > 1e-9 and err_anti == pytest.approx(-err_prev, rel=1e-6)
    # a run that spans the space is the exact spectrum: every rule is the Gauss rule
    full = LZ.lanczos(lambda v: diag * v, z, len(evals))
    exact = T.lanczos_rules(full.alpha, full.beta, len(evals))
    for name in exact:
        np.testing.assert_array_equal(exact[name][0], exact["gauss"][0])
    with pytest.raises(ValueError):
        T.lanczos_rules(run.alpha, run.beta[:2], len(evals))


def test_averaged_rule_beats_gauss_on_a_hessian_like_spectrum():
    """A bulk of tiny eigenvalues of both signs, a tail and outliers: the regime where the Gauss rule's p* jumps."""
    rng = np.random.default_rng(4)
    d = 3000
    evals = np.concatenate(
        [rng.normal(0, 3e-4, 1200), 10 ** rng.uniform(-4, -1, d - 1210), 10 ** rng.uniform(0, 0.5, 10)]
    )
    diag, w = torch.tensor(evals), rng.normal(size=d) * 0.2
    r2 = T.projection_r2(w, "random")
    truth = T.p_star(evals, np.full(d, 1 / d), r2, T.DEFAULT_EPSILON)
    errors = {"gauss": [], "averaged": []}
    for m in (30, 40, 50, 60):
        runs = [LZ.lanczos(lambda v: diag * v, LZ.probe_vector(d, 0, "bulk", i).double(), m) for i in range(2)]
        measures = T._measures(
            np.stack([r.alpha for r in runs]), np.stack([np.append(r.beta, r.residual) for r in runs]), d
        )
        for name in errors:
            errors[name].append(abs(T.p_star(*measures[name], r2, T.DEFAULT_EPSILON) - truth))
    assert max(errors["averaged"]) < 0.04 and max(errors["averaged"]) < max(errors["gauss"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"), "mnist1d-mlp", width=6, data=teacher_data(120, 60))


@pytest.fixture(scope="module")
def e4(run):
    return H.hessian_study(
        run,
        [0, 1, 2],
        H.HessianSettings(topk=3, lanczos_steps=10, probes=2, hutchinson_probes=2, grid_points=20),
        progress=False,
    )


def test_on_a_run(run, e4):
    ds = T.pruning_theory(run, e4, [1, 2], progress=False)
    again = T.pruning_theory(run, e4, [1, 2], progress=False)
    assert ds.equals(again)
    assert dict(ds.sizes) == {
        "seed": 1,
        "level": 2,
        "prune_method": 2,
        "p": 101,
        "epsilon": len(T.SWEEP_FACTORS),
        "spectrum_part": 3,
    }
    assert ds.attrs["epsilon"] == pytest.approx(0.02 * math.log(2)) and ds.attrs["experiment"] == "E5_pruning_theory"
    p = ds.p_star.values
    assert np.all((0 <= p) & (p <= 1))
    assert np.all(ds.p_star_low.values <= p) and np.all(p <= ds.p_star_high.values)
    assert np.all(ds.p_star_quadrature_low.values <= ds.p_star_quadrature_high.values)
    assert np.all(ds.p_star.sel(prune_method="magnitude") >= ds.p_star.sel(prune_method="random"))
    assert np.all(ds.p_star_sweep.diff("epsilon") >= 0)
    # recompute level 2, magnitude, from the E4 output and the run's weights
    h = e4.sel(level=2).isel(seed=0)
    mask, params = run.mask(2), dict(run.solution(2).named_parameters())
    w = np.concatenate([params[n].detach().double()[mask[n]].numpy() for n in mask])
    r2 = T.projection_r2(w, "magnitude")
    gauss = T.spectral_measure(h.slq_nodes.values, h.slq_weights.values)  # E4's nodes/weights, used directly
    assert ds.p_star_gauss.sel(level=2, prune_method="magnitude").item() == T.p_star(*gauss, r2, T.DEFAULT_EPSILON)
    rules = [T.lanczos_rules(a, b, len(w)) for a, b in zip(h.lanczos_alpha.values, h.lanczos_beta.values)]
    averaged = T.spectral_measure(
        np.concatenate([r["averaged"][0] for r in rules]), np.concatenate([r["averaged"][1] for r in rules])
    )
    assert ds.p_star.sel(level=2, prune_method="magnitude").item() == T.p_star(*averaged, r2, T.DEFAULT_EPSILON)
    r = ds.projection_length.sel(level=2, prune_method="magnitude").isel(seed=0)
    removed = M.difference(mask, M.magnitude_prune(params, mask, 0.2))
    assert r.sel(p=0.2).item() == pytest.approx(M.masked_norm(params, removed), rel=1e-12)
    assert r.sel(p=0.0).item() == 0.0 and float(ds.right_side.sel(p=0.0).min()) == 1.0
    # the parts of the spectrum that carry F(p*) sum to F at p*'s pruning step, their masses to 1
    parts = ds.right_side_part.sel(level=2, prune_method="magnitude").isel(seed=0).values
    k = max(1, math.ceil(ds.p_star.sel(level=2, prune_method="magnitude").item() * len(w)))
    assert parts.sum() == pytest.approx(float(T.right_side(*averaged, T.DEFAULT_EPSILON, r2[k])), rel=1e-12)
    np.testing.assert_allclose(ds.spectral_mass_part.sum("spectrum_part"), 1.0, rtol=1e-12)


def test_right_side_parts_by_hand():
    """Eigenvalues -1, 0, 0.5, 1, 100 with equal mass, eps = 1 and R^2 = 2: the flat edge 2 eps / R^2 is 1, so
    -1 and 0 count fully, 0.5 and 1 count 2/(2 + l R^2) = 2/3 and 1/2, and 100 counts 2/202."""
    lam, mu = np.array([-1.0, 0.0, 0.5, 1.0, 100.0]), np.full(5, 0.2)
    contrib, mass = T.right_side_parts(lam, mu, 1.0, 2.0)
    np.testing.assert_allclose(contrib, [0.4, 0.2 * (2 / 3 + 1 / 2), 0.2 * 2 / 202], rtol=1e-12)
    np.testing.assert_allclose(mass, [0.4, 0.4, 0.2], rtol=1e-12)
    assert contrib.sum() == pytest.approx(float(T.right_side(lam, mu, 1.0, 2.0)), rel=1e-12)


def test_rejects_mismatched_inputs(run, e4, tmp_path):
    with pytest.raises(ConfigError, match="no levels"):
        T.pruning_theory(run, e4.sel(level=[0]), [1], progress=False)
    other = e4.copy()
    other.attrs = {**e4.attrs, "config_hash": "0000"}
    with pytest.raises(ConfigError, match="another run"):
        T.pruning_theory(run, other, progress=False)
    # the command checks the file first and names it: E4's output of another seed, or not E4's at all
    from unmasking.commands.analyses import check_hessian

    check_hessian("h.nc", e4, run)
    with pytest.raises(ConfigError, match=r"^h.nc holds seed 1 where seed 0 is expected; pass the E4 output"):
        check_hessian("h.nc", e4.assign_coords(seed=[1]), run)
    with pytest.raises(ConfigError, match="holds experiment E2_interpolation where experiment E4_hessian"):
        check_hessian("h.nc", e4.assign_attrs(experiment="E2_interpolation"), run)
    with pytest.raises(ConfigError):
        T.pruning_theory(run, e4, epsilon=0.0, progress=False)
    with pytest.raises(ConfigError):
        T.pruning_theory(run, e4, band=0.5, progress=False)
    with pytest.raises(ConfigError):
        T.pruning_theory(run, e4, quadrature="simpson", progress=False)
    with pytest.raises(ConfigError, match="Lanczos coefficients"):
        T.pruning_theory(run, e4.drop_vars(["lanczos_alpha", "lanczos_beta"]), progress=False)


def test_cli(run, e4, tmp_path, monkeypatch):
    from unmasking.foundations.netcdf import write_dataset

    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data(120, 60))
    hfile = write_dataset(e4, tmp_path / "e4.nc")
    out = tmp_path / "e5.nc"
    assert (
        main(
            [
                "pruning_theory",
                "--run",
                str(run.root),
                "--hessian",
                str(hfile),
                "--levels",
                "0",
                "2",
                "--out",
                str(out),
                "--epsilon",
                "0.05",
                "--epsilon-band",
                "3",
                "--quadrature",
                "gauss",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert list(ds.level.values) == [0, 2] and ds.attrs["epsilon"] == 0.05 and ds.attrs["epsilon_band"] == 3
    np.testing.assert_array_equal(ds.p_star.values, ds.p_star_gauss.values)  # --quadrature gauss
    assert (
        main(
            [
                "pruning_theory",
                "--run",
                str(run.root),
                "--hessian",
                str(tmp_path / "missing.nc"),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
