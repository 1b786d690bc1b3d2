"""E6: pruned masks (counts, nestedness, layer-wise counts), success and p*, determinism, resume, CLI."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.analyses import pruning_ratio as R
from unmasking.analyses import retraining as T
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.io import read_json
from unmasking.foundations.netcdf import load_dataset
from unmasking.metrics.pruning import p_star_at, sublevel_success
from unmasking.training import evaluate

from conftest import teacher_data, tiny_imp_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"))


@pytest.mark.parametrize("fraction", [0.1, 0.35, 0.9])
def test_pruned_masks(run, fraction):
    weights, mask = dict(run.solution(1).named_parameters()), run.mask(1)
    n = M.count(mask)
    expect = n - math.ceil(fraction * n)
    out = {m: R.pruned_mask(weights, mask, fraction, m, seed=7) for m in R.METHODS}
    for method, new in out.items():
        assert M.count(new) == expect, method
        assert M.is_nested(new, mask), method
    for name in mask:  # layer-wise-preserving: same per-layer counts as magnitude pruning
        assert int(out["random_layerwise"][name].sum()) == int(out["magnitude"][name].sum())
    kept = torch.cat([weights[n].detach().abs()[out["magnitude"][n]] for n in mask])
    gone = torch.cat([weights[n].detach().abs()[mask[n] & ~out["magnitude"][n]] for n in mask])
    assert float(kept.min()) >= float(gone.max())  # magnitude removes the smallest surviving weights
    assert any(not torch.equal(out["random"][n], out["magnitude"][n]) for n in mask)
    again = R.pruned_mask(weights, mask, fraction, "random", seed=7)
    assert all(torch.equal(again[n], out["random"][n]) for n in mask)
    with pytest.raises(ConfigError):
        R.pruned_mask(weights, mask, 1.0, "magnitude")
    with pytest.raises(ConfigError):
        R.pruned_mask(weights, mask, 0.5, "snip", seed=1)


def test_empirical_p_star():
    f = [0.1, 0.2, 0.3, 0.4]
    assert R.empirical_p_star(f, [1, 1, 0, 1]) == 0.4  # the largest successful p (SPEC)
    assert R.empirical_p_star(f, [0, 0, 0, 0]) == 0.0
    assert math.isnan(R.empirical_p_star(f, [np.nan] * 4))
    np.testing.assert_array_equal(R.empirical_p_star(f, np.array([[1, 0, 0, 0], [1, 1, 1, np.nan]])), [0.1, 0.3])


def _evaluated(cell) -> list[float]:
    """The fractions a bracket was retrained at."""
    return [float(p) for p in cell.fraction.values if not np.isnan(float(cell.success.sel(fraction=p)))]


def test_experiment(run, tmp_path, monkeypatch):
    kw = dict(bisection_steps=2, random_masks=2, gammas=3, eps_match=0.05, progress=False)
    ds = R.pruning_ratio(run, [1], scratch=tmp_path / "scratch", **kw)
    sizes = {"seed": 1, "level": 1, "prune_method": 3, "fraction": 3, "replicate": 2}
    assert dict(ds.success.sizes) == sizes and dict(ds.error.sizes) == {**sizes, "split": 2}
    np.testing.assert_array_equal(ds.fraction.values, [0.25, 0.5, 0.75])
    c = ds.isel(seed=0, level=0)
    mag = c.sel(prune_method="magnitude")
    assert np.all(np.isnan(mag.error.sel(replicate=1))) and np.all(np.isnan(mag.success.sel(replicate=1)))
    assert np.all(mag.mask_seed == -1) and np.all(c.sel(prune_method="random").mask_seed > 0)
    assert ds.attrs["trainings"] == 2 * (1 + 2 + 2)  # two bisection steps of 5 brackets
    # bisection: 0.5 first, then 0.25 after a failure or 0.75 after a success; p* the largest success
    eps = ds.attrs["epsilon"]
    for method in R.METHODS:
        for r in range(1 if method == "magnitude" else 2):
            cell = c.sel(prune_method=method, replicate=r)
            first = float(cell.success.sel(fraction=0.5))
            assert _evaluated(cell) == sorted([0.5, 0.75 if first == 1 else 0.25])
            assert float(cell.p_star) == R.empirical_p_star(c.fraction.values, cell.success.values)
    # the headline criterion, recomputed from the stored values: w' in the eps-sublevel set of w_L, connected
    level_loss = float(c.level_sublevel_loss)
    assert level_loss == float(c.level_loss.sel(split="train"))  # E5's examples are the whole train-eval set
    ran = ~np.isnan(c.error.sel(split="test"))
    inside = (c.sublevel_loss <= level_loss + eps) & (c.sublevel_barrier <= eps)
    np.testing.assert_array_equal(c.success.values, np.where(ran, inside, np.nan))
    np.testing.assert_array_equal(c.sublevel_loss.values, c.loss.sel(split="train").values)
    excess = c.loss_curve.sel(split="train").max("gamma") - level_loss
    np.testing.assert_allclose(c.sublevel_path_excess.values, excess.values, rtol=0, atol=1e-12)
    # the torch-free recomputation (claims robustness) reproduces E6's own verdicts and p* at its epsilon
    np.testing.assert_array_equal(sublevel_success(ds, eps).values, ds.success.values)
    np.testing.assert_array_equal(p_star_at(ds, eps).values, ds.p_star.values)
    # after-pruning errors are those of m' * w_L, at every grid fraction
    w1 = run.solution(1)
    pruned = copy.deepcopy(w1)
    M.apply_mask(pruned, R.pruned_mask(dict(w1.named_parameters()), run.mask(1), 0.75, "magnitude"))
    assert (
        float(mag.pruned_error.sel(fraction=0.75, replicate=0, split="test"))
        == evaluate(pruned, run.data, "test")["error"]
    )
    n1 = M.count(run.mask(1))
    np.testing.assert_allclose(
        c.density.sel(prune_method="random", replicate=0),
        [(n1 - math.ceil(p * n1)) / M.size(run.mask(1)) for p in (0.25, 0.5, 0.75)],
    )
    # the secondary criteria: matching and connected, and connected alone
    dense = float(ds.dense_test_error.isel(seed=0))
    assert dense == read_json(run.metrics_path(0))["test_error"]
    ok = c.error.sel(split="test") <= dense + 0.05 + 1e-9
    conn = c.barrier_error.sel(split="test") <= 0.02 + 1e-9
    np.testing.assert_array_equal(c.success_matching.values, np.where(ran, ok & conn, np.nan))
    np.testing.assert_array_equal(c.success_connected.values, np.where(ran, conn, np.nan))
    np.testing.assert_array_equal(
        c.p_star_matching.values, R.empirical_p_star(c.fraction.values, c.success_matching.values, axis=1)
    )

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("a finished retraining was redone"))
    monkeypatch.setattr(T, "train_many", lambda *a, **k: pytest.fail("a finished retraining was redone"))
    again = R.pruning_ratio(run, [1], scratch=tmp_path / "scratch", **kw)
    for name in ds.data_vars:
        np.testing.assert_array_equal(ds[name].values, again[name].values)


def _hand_sweep(level_loss: float, gammas=(0.0, 0.5, 1.0)) -> R._Sweep:
    fractions = R.dyadic_fractions(4)
    sweep = R._Sweep([3], ("random",), fractions, 1, np.asarray(gammas), ("test", "train"), "train")
    sweep.level_values[:] = level_loss
    return sweep


def test_headline_criterion_by_hand():
    """L(w_L) = 0.10 and epsilon = 0.05: inside the connected sublevel set means L(w') <= 0.15 and a loss
    barrier <= 0.05 on the path."""
    sweep = _hand_sweep(0.10)
    t = 1  # the train split carries E5's examples here
    cases = {  # fraction index: loss along gamma = 0, 0.5, 1 -> inside?
        0: ([0.10, 0.12, 0.14], 1.0),  # below the line: barrier 0 - 0.12 < line 0.12 -> inside
        1: ([0.10, 0.13, 0.16], 0.0),  # end above L(w_L) + eps
        2: ([0.10, 0.19, 0.12], 0.0),  # ends inside, but barrier 0.19 - 0.11 = 0.08 > eps
        3: ([0.10, 0.16, 0.12], 1.0),  # barrier 0.16 - 0.11 = 0.05 <= eps: on the threshold counts as inside
    }
    for b, (curve, _) in cases.items():
        sweep.curves[0, 0, b, 0, :, 1, t] = curve
        sweep.ran[0, 0, b, 0] = True
    got = R._headline(sweep, 0.05)[0, 0, :4, 0]
    np.testing.assert_array_equal(got, [expect for _, expect in cases.values()])
    assert np.all(np.isnan(R._headline(sweep, 0.05)[0, 0, 4:, 0]))  # not evaluated
    sweep.ran[0, 0, 5, 0] = True  # a diverged retraining (NaN curve) is outside
    assert R._headline(sweep, 0.05)[0, 0, 5, 0] == 0.0


@pytest.mark.parametrize("true_p_star", [0.0, 0.3, 0.5, 0.97])
def test_bisection_finds_a_known_p_star(true_p_star):
    """Success exactly for p <= true_p_star: four bisection steps end on the largest grid point k/16 below it,
    evaluating 4 fractions, and the loss curves decide (no other input)."""
    sweep = _hand_sweep(0.10)
    for _ in range(4):
        mid = (sweep.lo[0, 0, 0] + sweep.hi[0, 0, 0]) // 2
        p = sweep.fractions[mid - 1]
        end = 0.12 if p <= true_p_star else 0.5
        sweep.curves[0, 0, mid - 1, 0, :, 1, 1] = [0.10, (0.10 + end) / 2, end]
        sweep.ran[0, 0, mid - 1, 0] = True
        R._bisect(sweep, 0.05)
    assert int(sweep.ran.sum()) == 4
    expect = math.floor(true_p_star * 16) / 16
    assert sweep.lo[0, 0, 0] / 16 == expect
    assert R.empirical_p_star(sweep.fractions, R._headline(sweep, 0.05)[0, 0, :, 0]) == expect


def test_experiment_is_deterministic(run):
    kw = dict(bisection_steps=1, methods=("random", "random_layerwise"), gammas=3, progress=False)
    a = R.pruning_ratio(run, [2], **kw)
    b = R.pruning_ratio(run, [2], **kw)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["experiment"] == "E6_pruning_ratio" and a.attrs["seed_run"] == 0
    assert int(a.reused_imp_level.sum()) == 0  # level 2 is the last: nothing to reuse


def test_subset_of_the_train_loss(run):
    """With E4's subset smaller than the train-eval set, the headline loss is taken on that subset."""
    kw = dict(bisection_steps=1, methods=("magnitude",), gammas=3, progress=False)
    x, y = run.data.subset("train", 50, 3)
    ds = R.pruning_ratio(run, [1], subset_size=50, subset_seed=3, **kw)
    assert ds.attrs["sublevel_examples"] == 50 and ds.attrs["subset_seed"] == 3
    w1 = run.solution(1).eval()
    with torch.no_grad():
        expect = float(torch.nn.functional.cross_entropy(w1(x), y))
    assert float(ds.level_sublevel_loss.isel(seed=0, level=0)) == pytest.approx(expect, rel=1e-6)
    assert float(ds.level_sublevel_loss.isel(seed=0, level=0)) != float(
        ds.level_loss.isel(seed=0, level=0).sel(split="train")
    )


def test_bad_parameters(run):
    for kw in (
        dict(bisection_steps=0),
        dict(bisection_steps=11),
        dict(methods=("snip",)),
        dict(random_masks=0),
        dict(epsilon=0.0),
        dict(subset_size=0),
        dict(eps_match=float("nan")),
        dict(eps_barrier=-1.0),
    ):
        with pytest.raises(ConfigError):
            R.pruning_ratio(run, [1], progress=False, **kw)


def test_cli(run, tmp_path, monkeypatch):
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data())
    out = tmp_path / "e6.nc"
    assert (
        main(
            [
                "pruning_ratio",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(out),
                "--bisection-steps",
                "1",
                "--methods",
                "magnitude",
                "random",
                "--gammas",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert list(ds.prune_method.values) == ["magnitude", "random"] and list(ds.fraction.values) == [0.5]
    assert not T.scratch_for(out).exists()
