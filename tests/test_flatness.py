"""E7: curvature along pruning directions against a dense float64 Hessian; masks, seeds, trace reuse, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from unmasking import masks as M
from unmasking.analyses import flatness as F
from unmasking.analyses import hessian as H
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import load_dataset
from unmasking.spectral import masked_hessian as MH

from conftest import teacher_data, tiny_imp_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"), width=3, data=teacher_data(120, 60))


def dense_hessian(model, mask, x, y) -> np.ndarray:
    """``torch.func.hessian`` of the mean cross-entropy w.r.t. the surviving weights (float64, native BatchNorm)."""
    model = model.double().eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    idx = {n: torch.nonzero(m.reshape(-1)).squeeze(1) for n, m in mask.items()}
    sizes = [len(idx[n]) for n in mask]

    def loss(theta):
        w = dict(params)
        for n, part in zip(mask, torch.split(theta, sizes)):
            w[n] = torch.zeros(params[n].numel(), dtype=theta.dtype).index_put((idx[n],), part).view_as(params[n])
        return nn.functional.cross_entropy(functional_call(model, w, (x.double(),)), y)

    return hessian(loss)(torch.cat([params[n].reshape(-1)[idx[n]] for n in mask])).numpy()


def flat_direction(weights, mask, removed) -> np.ndarray:
    """Δ in the coordinates of the surviving weights (mask order, flat index order)."""
    return np.concatenate([(weights[n].detach().double() * removed[n])[mask[n]].numpy() for n in mask])


SETTINGS = H.HessianSettings(lanczos_steps=6, hutchinson_probes=3, dtype="float64")


@pytest.fixture(scope="module")
def result(run):
    return F.flatness(
        run, [1, 2], random_masks=3, methods=("random", "random_layerwise"), settings=SETTINGS, progress=False
    )


def test_curvature_matches_dense_hessian(run, result):
    x, y = run.data.subset("train", None, 0)
    level = 1
    model, mask = run.solution(level), run.mask(level)
    hd = dense_hessian(run.solution(level), mask, x, y)
    weights = dict(model.named_parameters())
    nxt = M.magnitude_prune(weights, mask, run.recipe.prune.fraction)
    assert all(torch.equal(nxt[n], run.mask(level + 1)[n]) for n in nxt)  # IMP's own next mask
    delta = flat_direction(weights, mask, M.difference(mask, nxt))
    q = delta / np.linalg.norm(delta)
    r = result.sel(level=level).isel(seed=0)
    assert float(r.curvature_magnitude) == pytest.approx(q @ hd @ q, rel=1e-9)
    assert float(r.projection_length_magnitude) == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert int(r.num_pruned) == M.num_to_prune(mask, 0.2) and int(r.num_weights) == M.count(mask)
    for method in ("random", "random_layerwise"):
        for rep in range(3):
            seed = int(r.mask_seed.sel(prune_method=method, replicate=rep))
            gen = torch.Generator().manual_seed(seed)
            other = M.random_prune(mask, 0.2, gen, like=nxt if method == "random_layerwise" else None)
            d = flat_direction(weights, mask, M.difference(mask, other))
            qr = d / np.linalg.norm(d)
            assert float(r.curvature_random.sel(prune_method=method, replicate=rep)) == pytest.approx(
                qr @ hd @ qr, rel=1e-9
            )
            if method == "random_layerwise":
                assert all(int(other[n].sum()) == int(nxt[n].sum()) for n in nxt)
        vals = r.curvature_random.sel(prune_method=method).values
        assert float(r.curvature_random_mean.sel(prune_method=method)) == pytest.approx(vals.mean())
        assert float(r.curvature_random_std.sel(prune_method=method)) == pytest.approx(vals.std(ddof=1))
    assert float(r.trace) == pytest.approx(np.trace(hd), rel=0.2)
    assert float(r.average_curvature) == pytest.approx(float(r.trace) / M.count(mask))


def test_direction_helpers():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    mask = {"0.weight": torch.rand(3, 4) < 0.8, "2.weight": torch.ones(2, 3, dtype=torch.bool)}
    M.apply_mask(model, mask)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 2, (10,))
    op = MH.MaskedHessian(model, mask, x, y, dtype=torch.float64)
    hd = dense_hessian(model, mask, x, y)
    removed = {
        "0.weight": mask["0.weight"] & (torch.arange(12).view(3, 4) % 2 == 0),
        "2.weight": torch.zeros(2, 3, dtype=torch.bool),
    }
    delta = F.pruning_direction(op, removed)
    np.testing.assert_array_equal(delta.numpy(), flat_direction(dict(model.named_parameters()), mask, removed))
    curv, norm = F.direction_curvature(op, delta)
    assert curv == pytest.approx(delta.numpy() @ hd @ delta.numpy() / norm**2, rel=1e-10)
    assert math.isnan(F.direction_curvature(op, torch.zeros(op.dim, dtype=torch.float64))[0])
    outside = {"0.weight": ~mask["0.weight"], "2.weight": torch.zeros(2, 3, dtype=torch.bool)}
    if outside["0.weight"].any():
        with pytest.raises(ValueError, match="not alive"):
            F.pruning_direction(op, outside)


def test_trace_from_hessian_file_and_determinism(run, result):
    e4 = H.hessian_study(
        run,
        [1, 2],
        H.HessianSettings(topk=2, lanczos_steps=6, probes=1, hutchinson_probes=3, dtype="float64"),
        progress=False,
    )
    # the stand-alone trace uses E4's deflation basis and probes, so the numbers agree
    np.testing.assert_allclose(result.trace.values, e4.trace.values, rtol=1e-12)
    reused = F.flatness(
        run,
        [1, 2],
        random_masks=3,
        methods=("random", "random_layerwise"),
        settings=SETTINGS,
        hessian=e4,
        progress=False,
    )
    np.testing.assert_array_equal(reused.curvature_random.values, result.curvature_random.values)
    np.testing.assert_array_equal(reused.trace.values, e4.trace.values)
    assert reused.attrs["trace_source"] == "hessian file"
    assert (reused.matvecs.values == 1 + 2 * 3).all()
    again = F.flatness(
        run, [1, 2], random_masks=3, methods=("random", "random_layerwise"), settings=SETTINGS, progress=False
    )
    assert again.equals(result)
    assert result.attrs["experiment"] == "E7_flatness" and result.attrs["fraction"] == 0.2
    with pytest.raises(ConfigError, match="no level"):
        F.flatness(run, [0], settings=SETTINGS, hessian=e4, progress=False)


def test_bad_parameters(run):
    with pytest.raises(ConfigError):
        F.flatness(run, [1], fraction=1.5, settings=SETTINGS, progress=False)
    with pytest.raises(ConfigError):
        F.flatness(run, [1], methods=("magnitude",), settings=SETTINGS, progress=False)
    with pytest.raises(ConfigError):
        F.flatness(run, [1], random_masks=0, settings=SETTINGS, progress=False)
    with pytest.raises(FileNotFoundError):
        F.flatness(run, [5], settings=SETTINGS, progress=False)


def test_cli(run, tmp_path, monkeypatch):
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data(120, 60))
    e4 = tmp_path / "e4.nc"
    assert (
        main(
            [
                "hessian",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(e4),
                "--lanczos-steps",
                "5",
                "--probes",
                "1",
                "--hutchinson-probes",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    out = tmp_path / "e7.nc"
    assert (
        main(
            [
                "flatness",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(out),
                "--random-masks",
                "2",
                "--hessian",
                str(e4),
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert ds.sizes["replicate"] == 2 and list(ds.prune_method.values) == ["random"]
    assert float(ds.trace.squeeze()) == float(load_dataset(e4).trace.squeeze())
    # an E4 file on a data subset: E7 takes the same subset
    e4_sub = tmp_path / "e4_sub.nc"
    assert (
        main(
            [
                "hessian",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(e4_sub),
                "--lanczos-steps",
                "5",
                "--probes",
                "1",
                "--hutchinson-probes",
                "2",
                "--subset-size",
                "50",
                "--seed",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "flatness",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(out),
                "--random-masks",
                "2",
                "--hessian",
                str(e4_sub),
                "--quiet",
            ]
        )
        == 0
    )
    sub = load_dataset(out)
    assert sub.attrs["subset_examples"] == 50 and sub.attrs["hessian_seed"] == 3
    assert float(sub.curvature_magnitude.squeeze()) != float(ds.curvature_magnitude.squeeze())
    assert (
        main(
            [
                "flatness",
                "--run",
                str(run.root),
                "--levels",
                "2",
                "--out",
                str(out),
                "--random-masks",
                "2",
                "--hessian",
                str(e4_sub),
                "--subset-size",
                "60",
                "--quiet",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "flatness",
                "--run",
                str(run.root),
                "--levels",
                "1",
                "--out",
                str(out),
                "--random-masks",
                "2",
                "--lanczos-steps",
                "0",
                "--hutchinson-probes",
                "2",
                "--methods",
                "random",
                "random_layerwise",
                "--quiet",
            ]
        )
        == 0
    )
    assert load_dataset(out).attrs["trace_source"] == "hutchinson"
    assert (
        main(["flatness", "--run", str(run.root), "--levels", "2", "--out", str(out), "--fraction", "2", "--quiet"])
        == 2
    )
