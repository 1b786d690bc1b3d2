"""E9 (error-landscape plane): basis, reconstruction, grid values against direct evaluation, determinism."""

import copy

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.analyses.landscape import (
    POINTS,
    BatchNormReset,
    bn_reset_batches,
    evaluate_plane,
    grid_axes,
    landscape_level,
    plane_through,
)
from unmasking.commands import main
from unmasking.data.base import TensorData
from unmasking.foundations.io import read_json
from unmasking.foundations.netcdf import load_dataset
from unmasking.foundations.recipes import build_recipe
from unmasking.imp import ImpRun
from unmasking.models import build_model, prunable_names
from unmasking.training import evaluate


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorData(
        "tiny",
        torch.randn(200, 40, generator=g),
        torch.randint(0, 10, (200,), generator=g),
        torch.randn(100, 40, generator=g),
        torch.randint(0, 10, (100,), generator=g),
        10,
    )


@pytest.fixture(scope="module")
def setup():
    """A tiny BatchNorm CNN: w_L, m_L+1, w_L+1 (w_L perturbed on m_L+1, with other BN statistics), w_t."""
    torch.manual_seed(0)
    model = build_model("cnn1d", 10, width=4, seed=1)
    data = _data()
    with torch.no_grad():  # give the BN statistics non-trivial values
        model.train()
        for _, x, _ in data.train_batches(0, 4, 50, 0, 0):
            model(x)
    model.eval()
    names = prunable_names(model)
    sol = copy.deepcopy(model.state_dict())
    mask = {n: torch.ones_like(sol[n], dtype=torch.bool) for n in names}
    next_mask = M.magnitude_prune(sol, mask, 0.2)
    g = torch.Generator().manual_seed(2)
    nxt = {
        n: (t + 0.05 * torch.randn(t.shape, generator=g) if t.is_floating_point() else t.clone())
        for n, t in sol.items()
    }
    for n in names:
        nxt[n] = nxt[n] * next_mask[n]
    nxt["bn1.running_var"] = sol["bn1.running_var"] * 1.5
    rewind = {
        n: (t + 0.3 * torch.randn(t.shape, generator=g) if t.is_floating_point() else t.clone()) for n, t in sol.items()
    }
    return model, data, sol, mask, next_mask, nxt, rewind


def _plane(setup):
    model, _, sol, _, next_mask, nxt, _ = setup
    proj = {n: t * next_mask[n] if n in next_mask else t for n, t in sol.items()}
    return plane_through(sol, proj, nxt, [n for n, _ in model.named_parameters()]), proj


def test_basis_is_orthonormal(setup):
    plane, _ = _plane(setup)
    gram = torch.stack([plane.e1, plane.e2]) @ torch.stack([plane.e1, plane.e2]).T
    assert torch.allclose(gram, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert plane.anchors[1, 1] == 0.0 and plane.anchors[1, 0] > 0 and plane.anchors[2, 1] > 0
    # w_L+1 is zero where m_L+1 pruned, so it sits straight "above" the projection
    assert plane.anchors[2, 0] == pytest.approx(plane.anchors[1, 0], rel=1e-12)


def test_defining_points_are_reconstructed(setup):
    model, _, sol, _, next_mask, nxt, _ = setup
    plane, proj = _plane(setup)
    for state, (x, y) in zip((sol, proj, nxt), plane.anchors):
        cx, cy, off = plane.coords(state)
        assert (cx, cy) == pytest.approx((x, y), abs=1e-12) and off == pytest.approx(0.0, abs=1e-9)
        flat = plane.flat_at(x, y)[0]
        assert torch.allclose(flat, torch.cat([state[n].double().reshape(-1) for n in plane.names]), atol=1e-12)
        rebuilt = plane.state_at(x, y)
        for n, t in state.items():
            assert torch.allclose(rebuilt[n].double(), t.double(), atol=1e-6), n
    # the projection is exactly m_L+1 * w_L: its pruned coordinates are zero up to rounding
    rebuilt = plane.state_at(*plane.anchors[1])
    assert all(float(rebuilt[n][~next_mask[n]].abs().max()) < 1e-7 for n in next_mask)


def test_bn_statistics_are_not_extrapolated(setup):
    _, _, sol, _, _, nxt, _ = setup
    plane, _ = _plane(setup)
    (bx, by), mid = plane.anchors[2], 0.5 * plane.anchors[2]
    beyond = plane.buffers_at(np.array([bx, -bx, mid[0]]), np.array([2.5 * by, -by, mid[1]]))
    for n, t in beyond.items():
        if t.is_floating_point():
            assert torch.allclose(t[0], nxt[n], atol=1e-6) and torch.allclose(t[1], sol[n], atol=1e-6)
            assert torch.allclose(t[2], 0.5 * (sol[n] + nxt[n]), atol=1e-6)


def test_offplane_distance_and_coords_of_rewind(setup):
    model, _, _, mask, _, _, rewind = setup
    plane, _ = _plane(setup)
    x, y, off = plane.coords(rewind)
    flat = torch.cat([rewind[n].double().reshape(-1) for n in plane.names])
    assert off == pytest.approx(float(torch.linalg.vector_norm(flat - plane.flat_at(x, y)[0])), rel=1e-9)
    assert off > 0.1


def test_grid_values_equal_direct_evaluation(setup):
    model, data, *_ = setup
    plane, _ = _plane(setup)
    xs, ys = grid_axes(plane, 4, 0.5)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    vals = evaluate_plane(model, plane, gx, gy, data, ("test", "train"), batch_size=64, bn_mode="interpolate", chunk=3)
    plain = evaluate_plane(model, plane, gx, gy, data, ("test", "train"), batch_size=64, bn_mode="interpolate", chunk=1)
    for key, v in plain.items():  # vmap-ed chunks and one-point calls agree
        assert np.array_equal(v, vals[key]) if "error" in key else np.allclose(v, vals[key], rtol=1e-5)
    net = copy.deepcopy(model)
    for i in (0, 5, 15):
        net.load_state_dict(plane.state_at(gx.ravel()[i], gy.ravel()[i]))
        for split in ("test", "train"):
            ref = evaluate(net, data, split, 64)
            assert vals[f"{split}_error"][i] == ref["error"]
            assert vals[f"{split}_loss"][i] == pytest.approx(ref["loss"], rel=1e-5)
    # extrapolated BN variances stay valid
    assert all(float(v.min()) >= 0 for n, v in plane.buffers_at(gx.ravel(), gy.ravel()).items() if "var" in n)


def test_reset_mode_recomputes_statistics(setup):
    model, data, *_ = setup
    plane, _ = _plane(setup)
    x, y = 0.3 * plane.anchors[2, 0], 0.4 * plane.anchors[2, 1]
    vals = evaluate_plane(
        model,
        plane,
        [x, -x],
        [y, 2 * y],
        data,
        ("test",),
        batch_size=100,
        bn_mode="reset",
        bn_batches=3,
        bn_batch_size=50,
        chunk=2,
    )
    for i, (px, py) in enumerate([(x, y), (-x, 2 * y)]):
        net = copy.deepcopy(model)  # reference: the module-level recipe E2 uses
        net.load_state_dict(plane.state_at(px, py))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            for _, (xb, _) in zip(range(3), data.eval_batches("train", 50)):
                net(xb)
        ref = evaluate(net, data, "test", 100)
        assert vals["test_error"][i] == ref["error"]
        assert vals["test_loss"][i] == pytest.approx(ref["loss"], rel=1e-5)
    before = copy.deepcopy(model.state_dict())
    reset = BatchNormReset(model, bn_reset_batches(data, 2, 50, "cpu"))
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = reset(params, dict(model.named_buffers()))
    assert int(buffers["bn1.num_batches_tracked"]) == 2
    assert not torch.equal(buffers["bn1.running_mean"], model.bn1.running_mean)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())  # template untouched
    assert all(torch.equal(reset(params, dict(model.named_buffers()))[n], t) for n, t in buffers.items())


def test_landscape_level_points_and_determinism(setup):
    model, data, sol, mask, next_mask, nxt, rewind = setup
    kw = dict(grid=5, margin=0.1, splits=("test",), batch_size=100, chunk=7, bn_mode="interpolate")
    ds = landscape_level(model, sol, nxt, mask, next_mask, rewind, data, **kw)
    again = landscape_level(model, sol, nxt, mask, next_mask, rewind, data, **kw)
    assert ds.identical(again)
    kw.update(bn_mode="reset", bn_batches=2, bn_batch_size=50, grid=3)
    reset = landscape_level(model, sol, nxt, mask, next_mask, rewind, data, **kw)
    assert reset.identical(landscape_level(model, sol, nxt, mask, next_mask, rewind, data, **kw))
    assert ds.test_error.dims == ("x", "y") and list(ds.point.values) == list(POINTS)
    net = copy.deepcopy(model)
    net.load_state_dict(nxt)
    assert float(ds.point_test_error.sel(point="next_solution")) == evaluate(net, data, "test", 100)["error"]
    assert float(ds.point_x.sel(point="solution")) == 0.0 and float(ds.point_offplane.sel(point="projection")) < 1e-9
    px, py = ds.plane_x.values, ds.plane_y.values
    anchors = np.stack([ds.point_x.values[:3], ds.point_y.values[:3]], 1)
    assert px.min() < anchors[:, 0].min() and px.max() > anchors[:, 0].max()
    assert py.min() < anchors[:, 1].min() and py.max() > anchors[:, 1].max()
    # the grid corner equals the plane evaluated there
    plane, _ = _plane(setup)
    vals = evaluate_plane(model, plane, [px[0]], [py[-1]], data, ("test",), 100, bn_mode="interpolate")
    assert vals["test_error"][0] == float(ds.test_error[0, -1])


def test_bad_inputs(setup):
    model, data, sol, *_ = setup
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="nothing pruned"):
        plane_through(sol, sol, sol, names)
    plane, _ = _plane(setup)
    with pytest.raises(ValueError, match="bn_mode"):
        evaluate_plane(model, plane, [0.0], [0.0], data, bn_mode="keep")
    with pytest.raises(ValueError, match="grid"):
        grid_axes(plane, 1)


def test_run_wrapper_and_cli(tmp_path, monkeypatch):
    data = _data(1)
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: data)
    recipe = build_recipe(
        "mnist1d-cnn",
        None,
        [
            "model.width=4",
            "train.steps=20",
            "train.milestones=[10]",
            "train.batch_size=50",
            "prune.rewind_step=2",
            "prune.levels=2",
        ],
    )
    run = ImpRun(recipe, 0, tmp_path / "run", device="cpu", progress=False)
    run.run(2)
    out = tmp_path / "e9.nc"
    assert (
        main(
            [
                "landscape",
                "--run",
                str(run.root),
                "--levels",
                "0",
                "1",
                "--grid",
                "3",
                "--out",
                str(out),
                "--bn-mode",
                "interpolate",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert ds.test_error.dims == ("seed", "level", "x", "y") and ds.test_error.shape == (1, 2, 3, 3)
    assert ds.point_x.dims == ("seed", "level", "point") and ds.attrs["experiment"] == "E9_landscape"
    assert ds.attrs["bn_mode"] == "interpolate" and "seed_init" in ds.attrs
    err = ds.point_test_error.isel(seed=0)
    assert float(err.sel(level=1, point="solution")) == float(err.sel(level=0, point="next_solution"))
    assert float(err.sel(level=1, point="solution")) == read_json(run.metrics_path(1))["test_error"]
    assert main(["landscape", "--run", str(run.root), "--levels", "2", "--out", str(out)]) == 2
    assert (
        main(
            [
                "landscape",
                "--run",
                str(run.root),
                "--levels",
                "1",
                "--grid",
                "2",
                "--bn-batches",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert ds.attrs["bn_mode"] == "reset" and ds.attrs["bn_batch_size"] == 50 and ds.test_error.shape == (1, 1, 2, 2)
