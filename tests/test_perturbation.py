"""E3: perturbation direction and norm, d_L, the experiment's determinism and resume, and its CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.analyses import perturbation as P
from unmasking.analyses import retraining as R
from unmasking.analyses.interpolation import barrier
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.io import read_json
from unmasking.foundations.netcdf import load_dataset
from unmasking.training import evaluate

from conftest import teacher_data, tiny_imp_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"))


def test_noise_direction_is_a_unit_vector_on_the_mask(run):
    mask = run.mask(2)
    d = P.noise_direction(mask, 123)
    assert math.sqrt(sum(float(v.pow(2).sum()) for v in d.values())) == pytest.approx(1.0, abs=1e-12)
    assert all(torch.all(d[n][~m] == 0) and torch.all(d[n][m] != 0) for n, m in mask.items())
    again = P.noise_direction(mask, 123)
    assert all(torch.equal(d[n], again[n]) for n in d)
    assert not torch.equal(d["conv1.weight"], P.noise_direction(mask, 124)["conv1.weight"])


def test_perturbation_has_norm_c_d_and_stays_on_the_mask(run):
    mask = run.mask(1)
    u = run.rewind_model()
    M.apply_mask(u, mask)
    before = {n: p.detach().clone() for n, p in u.named_parameters()}
    scale = 2.0 * 0.37
    realized = P.perturb(u, P.noise_direction(mask, 5), scale)
    after = {n: p.detach() for n, p in u.named_parameters()}
    assert realized == pytest.approx(scale, rel=1e-6)
    delta_sq = sum(float((after[n].double() - before[n].double()).pow(2).sum()) for n in before)
    assert math.sqrt(delta_sq) == pytest.approx(realized, rel=1e-12)
    for n, m in mask.items():
        assert torch.all(after[n][~m] == 0)  # exact zeros off the mask
        assert torch.all(after[n][m] != before[n][m])
    for n in before:
        if n not in mask:  # biases and BatchNorm parameters untouched
            assert torch.equal(after[n], before[n])


def test_rewind_distance(run):
    d1, computed1 = P.rewind_distance(run, 1)
    assert not computed1 and d1 == read_json(run.level_dir(2) / "prune.json")["rewind_distance"]
    d2, computed2 = P.rewind_distance(run, 2)  # last level: pruned here by the IMP fraction
    mask = run.mask(2)
    nxt = M.magnitude_prune(dict(run.solution(2).named_parameters()), mask, 0.2)
    removed = M.difference(mask, nxt)
    expect = math.sqrt(
        sum(
            float((p.detach().double()[removed[n]]).pow(2).sum())
            for n, p in run.rewind_model().named_parameters()
            if n in removed
        )
    )
    assert computed2 and d2 == pytest.approx(expect, rel=1e-12)
    assert M.count(removed) == math.ceil(0.2 * M.count(mask))


def test_experiment(run, tmp_path, monkeypatch):
    kw = dict(strengths=(0.0, 1.0, 3.0), replicates=2, gammas=3, progress=False)
    ds = P.perturbation_robustness(run, [1, 2], scratch=tmp_path / "scratch", **kw)
    assert dict(ds.barrier_error.sizes) == {"seed": 1, "level": 2, "strength": 3, "replicate": 2, "split": 2}
    assert dict(ds.error_curve.sizes)["gamma"] == 3
    c = ds.isel(seed=0)
    np.testing.assert_allclose(c.perturbation_norm, c.target_norm.broadcast_like(c.perturbation_norm), rtol=1e-6)
    assert np.all(c.perturbation_norm.sel(strength=0.0) == 0)
    np.testing.assert_allclose(c.target_norm.sel(strength=3.0), 3.0 * c.rewind_distance)
    assert list(c.rewind_distance_computed.values) == [0, 1]
    assert c.noise_seed.values[0, 0] != c.noise_seed.values[0, 1] and len(np.unique(c.order_seed)) == 4
    assert run.seeds.order not in c.order_seed.values  # replicates never reuse IMP's own data order
    np.testing.assert_array_equal(c.barrier_error.values, barrier(c.error_curve.values, 3, axis=3))
    np.testing.assert_array_equal(c.error.values, c.error_curve.isel(gamma=-1).values)
    for level in (1, 2):  # γ=0 is w_L
        assert (
            float(c.level_error.sel(level=level, split="test"))
            == evaluate(run.solution(level), run.data, "test")["error"]
        )
        assert np.all(
            c.error_curve.sel(level=level, gamma=0.0, split="test") == c.level_error.sel(level=level, split="test")
        )
    assert np.all(c.diverged == 0) and ds.attrs["trainings"] == 12

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training was redone")

    monkeypatch.setattr(R, "train", no_training)  # resume: every training comes from the scratch folder
    monkeypatch.setattr(R, "train_many", no_training)
    again = P.perturbation_robustness(run, [1, 2], scratch=tmp_path / "scratch", **kw)
    for name in ds.data_vars:
        np.testing.assert_array_equal(ds[name].values, again[name].values)


def test_experiment_is_deterministic(run):
    kw = dict(strengths=(0.0, 2.0), replicates=1, gammas=3, progress=False)
    a = P.perturbation_robustness(run, [1], **kw)
    b = P.perturbation_robustness(run, [1], **kw)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["seed_run"] == 0 and a.attrs["experiment"] == "E3_perturbation"


def test_bad_parameters(run):
    with pytest.raises(ConfigError):
        P.perturbation_robustness(run, [1], strengths=(-1.0,), progress=False)
    with pytest.raises(ConfigError):
        P.perturbation_robustness(run, [1], replicates=0, progress=False)


def test_cli(run, tmp_path, monkeypatch):
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data())
    out = tmp_path / "e3.nc"
    assert (
        main(
            [
                "perturbation",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(out),
                "--strengths",
                "0",
                "1",
                "--replicates",
                "1",
                "--gammas",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert list(ds.strength.values) == [0.0, 1.0] and list(ds.level.values) == [2] and len(ds.replicate) == 1
    assert not R.scratch_for(out).exists()
