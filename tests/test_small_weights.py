"""E8 (new small weights) on hand-built weights and masks with known answers, and on a tiny IMP run."""

import math

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.analyses.small_weights import chance_overlap, level_small_weights, log_bins, small_weights
from unmasking.commands import main
from unmasking.data.base import TensorData
from unmasking.foundations.netcdf import load_dataset
from unmasking.foundations.recipes import build_recipe
from unmasking.imp import ImpRun


def t(values):
    return torch.tensor(values, dtype=torch.float32)


# w_L: surviving magnitudes 0.02 0.05 0.10 | 0.30 0.40 0.50 0.60 0.70 0.90 (b[1,2] pruned earlier).
W_L = {"a": t([0.10, -0.50, 0.90, 0.05]), "b": t([[0.30, -0.02, 0.70], [0.40, -0.60, 0.0]])}
M_L = {"a": torch.tensor([True, True, True, True]), "b": torch.tensor([[True, True, True], [True, True, False]])}
# IMP at fraction 0.25: ceil(0.25 * 9) = 3 pruned (0.02, 0.05, 0.10).
M_L1 = {"a": torch.tensor([False, True, True, False]), "b": torch.tensor([[True, False, True], [True, True, False]])}
# w_L+1, retrained on m_L+1: its smallest ceil(0.25 * 6) = 2 are b[0,2] (0.01) and b[1,0] (0.03).
W_L1 = {"a": t([0.0, 0.20, 1.00, 0.0]), "b": t([[0.80, 0.0, -0.01], [-0.03, 0.50, 0.0]])}
M_L2 = {"a": torch.tensor([False, True, True, False]), "b": torch.tensor([[True, False, False], [False, True, False]])}
F = 0.25


def test_masks_of_the_example_follow_imp_rule():
    assert all(torch.equal(M.magnitude_prune(W_L, M_L, F)[n], M_L1[n]) for n in M_L)
    assert all(torch.equal(M.magnitude_prune(W_L1, M_L1, F)[n], M_L2[n]) for n in M_L)


def test_known_answers():
    r = level_small_weights(W_L, M_L, F, W_L1, M_L1, M_L2, bin_edges=np.array([0.01, 0.2, 1.0, 10.0]))
    assert r["surviving"] == 9 and r["density"] == pytest.approx(9 / 10)
    assert r["next_pruned"] == 3
    assert r["next_threshold"] == pytest.approx(0.10)
    assert r["projection_length"] == pytest.approx(math.sqrt(0.02**2 + 0.05**2 + 0.10**2), rel=1e-6)
    assert r["histogram"].tolist() == [3, 6, 0] and r["underflow"] == 0 and r["overflow"] == 0
    assert r["next_projection_length"] == pytest.approx(math.sqrt(0.01**2 + 0.03**2), rel=1e-6)
    assert r["retrained_threshold"] == pytest.approx(0.03)
    assert r["second_step_pruned"] == 2
    # one-shot from m_L to |m_L+2| = 4: the 5 smallest of w_L.
    assert r["oneshot_pruned"] == 5
    assert r["oneshot_projection_length"] == pytest.approx(
        math.sqrt(0.02**2 + 0.05**2 + 0.10**2 + 0.30**2 + 0.40**2), rel=1e-6
    )
    assert r["oneshot_threshold"] == pytest.approx(0.40)
    # S = the 2 smallest |w_L| in m_L+1 = {b00 (0.3), b10 (0.4)}; P = {b02, b10}: one in common.
    assert r["unretrained_step_length"] == pytest.approx(0.5, rel=1e-6)
    assert r["overlap_count"] == 1
    assert r["overlap"] == pytest.approx(0.5)
    assert r["overlap_jaccard"] == pytest.approx(1 / 3)
    # random S of 2 among 6: E[k]/2 = 2/6; E[k/(4-k)] = (8/15)(1/3) + (1/15)(1) = 11/45.
    assert r["chance_overlap"] == pytest.approx(1 / 3)
    assert r["chance_overlap_jaccard"] == pytest.approx(11 / 45)
    assert r["oneshot_projection_length"] ** 2 == pytest.approx(
        r["projection_length"] ** 2 + r["unretrained_step_length"] ** 2, rel=1e-9
    )


def test_under_overflow_and_missing_masks_derived():
    r = level_small_weights(W_L, M_L, F, W_L1, bin_edges=np.array([0.06, 0.45]))
    assert r["underflow"] == 2 and r["overflow"] == 4 and r["histogram"].tolist() == [3]
    full = level_small_weights(W_L, M_L, F, W_L1, M_L1, M_L2)
    derived = level_small_weights(W_L, M_L, F, W_L1)
    assert all(np.array_equal(full[k], derived[k]) for k in full)


def test_unavailable_next_level_gives_nan():
    r = level_small_weights(W_L, M_L, F)
    assert r["next_threshold"] == pytest.approx(0.10)
    assert math.isnan(r["next_projection_length"]) and math.isnan(r["overlap"])
    # with m_L+2 but no w_L+1: one-shot and overlap are defined, the retrained length is not
    r = level_small_weights(W_L, M_L, F, None, M_L1, M_L2)
    assert math.isnan(r["next_projection_length"]) and r["overlap"] == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="not nested"):
        level_small_weights(W_L, M_L, F, W_L1, M_L1, M_L)
    with pytest.raises(ValueError, match="fraction"):
        level_small_weights(W_L, M_L, 1.0)
    with pytest.raises(ValueError):
        log_bins(1.0, 0.1)
    with pytest.raises(ValueError, match="level 3"):
        small_weights({0: W_L}, {0: M_L}, F, levels=[3])


def test_chance_overlap_matches_simulation():
    frac, jac = chance_overlap(50, 10)
    g = np.random.default_rng(0)
    k = np.array([len(set(g.choice(50, 10, replace=False)) & set(range(10))) for _ in range(20000)])
    assert frac == pytest.approx(0.2)
    assert jac == pytest.approx(np.mean(k / (20 - k)), abs=0.005)


def test_dataset_layout():
    ds = small_weights({0: W_L, 1: W_L1}, {0: M_L, 1: M_L1, 2: M_L2}, F, levels=[0, 1])
    assert ds.histogram.dims == ("level", "bin") and len(ds.bin) == len(log_bins()) - 1
    assert ds.histogram.sum("bin").values.tolist() == [9, 6]
    assert float(ds.overlap.sel(level=0)) == pytest.approx(0.5)
    assert np.isnan(float(ds.overlap.sel(level=1)))  # m_L+3 unknown
    assert float(ds.next_threshold.sel(level=1)) == pytest.approx(0.03)
    assert all("description" in ds[v].attrs for v in ds.data_vars)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    data = TensorData(
        "tiny",
        torch.randn(200, 40, generator=g),
        torch.randint(0, 10, (200,), generator=g),
        torch.randn(100, 40, generator=g),
        torch.randint(0, 10, (100,), generator=g),
        10,
    )
    recipe = build_recipe(
        "mnist1d-mlp",
        None,
        [
            "model.width=8",
            "train.steps=20",
            "train.milestones=[10]",
            "train.batch_size=50",
            "prune.rewind_step=2",
            "prune.levels=3",
        ],
    )
    root = tmp_path_factory.mktemp("sw") / "run"
    run = ImpRun(recipe, 0, root, device="cpu", progress=False)
    run.data = data
    run.run(3)
    return run


def test_run_wrapper_matches_imp_records_and_cli(tiny_run, tmp_path):
    from unmasking.analyses.small_weights import small_weights_run
    from unmasking.foundations.io import read_json

    ds = small_weights_run(tiny_run, [0, 1, 2, 3]).isel(seed=0)
    assert ds.histogram.dims == ("level", "bin") and int(ds.seed) == 0
    for level in range(3):
        rec = read_json(tiny_run.level_dir(level + 1) / "prune.json")
        assert float(ds.projection_length.sel(level=level)) == pytest.approx(rec["projection_length"], rel=1e-6)
    for level in range(2):
        assert float(ds.next_projection_length.sel(level=level)) == pytest.approx(
            float(ds.projection_length.sel(level=level + 1)), rel=1e-9
        )
    assert np.isnan(float(ds.overlap.sel(level=3))) and not np.isnan(float(ds.overlap.sel(level=1)))
    assert ds.attrs["experiment"] == "E8_small_weights" and "seed_init" in ds.attrs
    out = tmp_path / "e8.nc"
    assert main(["small_weights", "--run", str(tiny_run.root), "--levels", "0", "1", "--out", str(out), "--quiet"]) == 0
    loaded = load_dataset(out)
    assert np.array_equal(loaded.histogram.isel(seed=0).values, ds.histogram.sel(level=[0, 1]).values)
    assert main(["small_weights", "--run", str(tiny_run.root), "--levels", "9", "--out", str(out)]) == 2
