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
from unmasking.training import evaluate, train

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


def test_experiment(run, tmp_path, monkeypatch):
    kw = dict(fractions=(0.2, 0.6), random_masks=2, gammas=3, eps_match=0.05, progress=False)
    ds = R.pruning_ratio(run, [1], scratch=tmp_path / "scratch", **kw)
    sizes = {"seed": 1, "level": 1, "prune_method": 3, "fraction": 2, "replicate": 2}
    assert dict(ds.success.sizes) == sizes and dict(ds.error.sizes) == {**sizes, "split": 2}
    c = ds.isel(seed=0, level=0)
    mag = c.sel(prune_method="magnitude")
    assert np.all(np.isnan(mag.error.sel(replicate=1))) and np.all(np.isnan(mag.success.sel(replicate=1)))
    assert np.all(mag.mask_seed == -1) and np.all(c.sel(prune_method="random").mask_seed > 0)
    assert ds.attrs["trainings"] == 1 + 2 * 2 * 2  # magnitude p=0.2 is IMP's own next level, reused
    # the reuse is exact: IMP's w_2 is what retraining m_2 * w_t with the run's seeds gives
    assert int(mag.reused_imp_level.sel(fraction=0.2, replicate=0)) == 1
    start = run.rewind_model()
    M.apply_mask(start, run.mask(2))
    train(start, run.mask(2), run.data, run.recipe.train, run.seeds, run.recipe.prune.rewind_step, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), run.solution(2).state_dict().values()))
    assert float(mag.error.sel(fraction=0.2, replicate=0, split="test")) == read_json(run.metrics_path(2))["test_error"]
    # after-pruning errors are those of m' * w_L
    w1 = run.solution(1)
    pruned = copy.deepcopy(w1)
    M.apply_mask(pruned, R.pruned_mask(dict(w1.named_parameters()), run.mask(1), 0.6, "magnitude"))
    assert (
        float(mag.pruned_error.sel(fraction=0.6, replicate=0, split="test"))
        == evaluate(pruned, run.data, "test")["error"]
    )
    n1 = M.count(run.mask(1))
    np.testing.assert_allclose(
        c.density.sel(prune_method="random", replicate=0),
        [(n1 - math.ceil(p * n1)) / M.size(run.mask(1)) for p in (0.2, 0.6)],
    )
    # success = matching and connected, recomputed from the stored raw values
    dense = float(ds.dense_test_error.isel(seed=0))
    assert dense == read_json(run.metrics_path(0))["test_error"]
    ok = c.error.sel(split="test") <= dense + 0.05 + 1e-9
    conn = c.barrier_error.sel(split="test") <= 0.02 + 1e-9
    ran = ~np.isnan(c.error.sel(split="test"))
    np.testing.assert_array_equal(c.success.values, np.where(ran, ok & conn, np.nan))
    np.testing.assert_array_equal(c.p_star.values, R.empirical_p_star([0.2, 0.6], c.success.values, axis=1))

    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("a finished retraining was redone"))
    monkeypatch.setattr(T, "train_many", lambda *a, **k: pytest.fail("a finished retraining was redone"))
    again = R.pruning_ratio(run, [1], scratch=tmp_path / "scratch", **kw)
    for name in ds.data_vars:
        np.testing.assert_array_equal(ds[name].values, again[name].values)


def test_experiment_is_deterministic(run):
    kw = dict(fractions=(0.5,), methods=("random", "random_layerwise"), gammas=3, progress=False)
    a = R.pruning_ratio(run, [2], **kw)
    b = R.pruning_ratio(run, [2], **kw)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["experiment"] == "E6_pruning_ratio" and a.attrs["seed_run"] == 0
    assert int(a.reused_imp_level.sum()) == 0  # level 2 is the last: nothing to reuse


def test_bad_parameters(run):
    for kw in (dict(fractions=(0.0,)), dict(fractions=(0.5, 0.5)), dict(methods=("snip",)), dict(random_masks=0)):
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
                "--fractions",
                "0.5",
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
