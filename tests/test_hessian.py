"""E4: the masked Hessian operator, Lanczos/SLQ and Hutchinson against a dense float64 Hessian."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from unmasking import masks as M
from unmasking.analyses import hessian as H
from unmasking.commands import main
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import load_dataset
from unmasking.spectral import lanczos as LZ
from unmasking.spectral import masked_hessian as MH

from conftest import teacher_data, tiny_imp_run


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(1, 3, 3, padding=1, bias=False), nn.BatchNorm1d(3)
        self.conv2, self.bn2 = nn.Conv1d(3, 4, 3, stride=2, padding=1), nn.BatchNorm1d(4)
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x.view(len(x), 1, -1))))
        return self.fc(torch.relu(self.bn2(self.conv2(x))).flatten(1))


def make_problem(kind: str, seed: int = 0, n: int = 30):
    """A float64 tiny model (pruned weights zeroed, BatchNorm statistics randomized), data and a random mask."""
    torch.manual_seed(seed)
    model = (TinyMLP() if kind == "mlp" else TinyCNN()).double()
    for bn in [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]:
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    model.eval()
    x = torch.randn(n, 6 if kind == "mlp" else 10, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    names = [name for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    g = torch.Generator().manual_seed(seed + 1)
    params = dict(model.named_parameters())
    mask = {name: torch.rand(params[name].shape, generator=g) < 0.7 for name in names}
    M.apply_mask(model, mask)
    return model, mask, x, y


def dense_hessian(model, mask, x, y) -> torch.Tensor:
    """``torch.func.hessian`` of the mean cross-entropy w.r.t. the surviving weights (native BatchNorm)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    idx = {n: torch.nonzero(m.reshape(-1)).squeeze(1) for n, m in mask.items()}
    sizes = [len(idx[n]) for n in mask]

    def loss(theta):
        w = dict(params)
        for n, part in zip(mask, torch.split(theta, sizes)):
            w[n] = torch.zeros(params[n].numel(), dtype=theta.dtype).index_put((idx[n],), part).view_as(params[n])
        return nn.functional.cross_entropy(functional_call(model, w, (x,)), y)

    theta = torch.cat([params[n].reshape(-1)[idx[n]] for n in mask])
    return hessian(loss)(theta)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def problem(request):
    model, mask, x, y = make_problem(request.param)
    op = MH.MaskedHessian(model, mask, x, y, chunk_size=1000, dtype=torch.float64)
    return model, mask, x, y, op, dense_hessian(model, mask, x, y).numpy()


def test_operator_matches_dense_hessian(problem):
    model, mask, x, y, op, hd = problem
    assert op.dim == M.count(mask) and hd.shape == (op.dim, op.dim)
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(op.matvec(v).numpy(), hd @ v.numpy(), rtol=0, atol=1e-12 * np.abs(hd).max())
    assert op.retain  # one chunk: the gradient graph is built once and reused
    for retain in (False, True):  # chunked, recomputing or keeping every chunk's graph; twice to reuse it
        chunked = MH.MaskedHessian(model, mask, x, y, chunk_size=7, dtype=torch.float64, retain=retain)
        for _ in range(2):
            np.testing.assert_allclose(chunked.matvec(v).numpy(), hd @ v.numpy(), rtol=0, atol=1e-12 * np.abs(hd).max())
    with torch.no_grad():
        assert op.loss() == pytest.approx(float(nn.functional.cross_entropy(model(x), y)), rel=1e-12)
    # P w: the surviving weights in mask order
    flat = torch.cat([p.detach().reshape(-1)[mask[n].reshape(-1)] for n, p in model.named_parameters() if n in mask])
    assert torch.equal(op.flat_weights(), flat)


def test_full_lanczos_is_exact(problem):
    """With as many steps as dimensions: Ritz values = spectrum, quadrature = the probe's spectral measure."""
    *_, op, hd = problem
    evals, evecs = np.linalg.eigh(hd)
    nodes, weights, runs = LZ.slq(op, 2, op.dim + 5, seed=4)
    assert nodes.shape == (2, op.dim + 5) and np.isnan(nodes[:, op.dim :]).all() and (weights[:, op.dim :] == 0).all()
    for p in range(2):
        np.testing.assert_allclose(np.sort(nodes[p, : op.dim]), evals, atol=1e-10 * np.abs(evals).max())
        np.testing.assert_allclose(weights[p].sum(), 1.0, rtol=1e-12)
        z = LZ.probe_vector(op.dim, 4, "hessian", "slq", p, dtype=torch.float64).numpy()
        assert set(np.unique(z)) == {-1.0, 1.0}
        q = z / np.linalg.norm(z)
        for k in range(5):  # moments: sum_i w_i λ_i^k = qᵀ H^k q, and D × that = zᵀ H^k z
            exact = q @ np.linalg.matrix_power(hd, k) @ q
            got = np.nansum(weights[p] * nodes[p] ** k)
            assert got == pytest.approx(exact, rel=1e-8, abs=1e-13)
            assert op.dim * got == pytest.approx(z @ np.linalg.matrix_power(hd, k) @ z, rel=1e-8, abs=1e-11)
        basis = runs[p].basis.numpy()
        np.testing.assert_allclose(basis @ basis.T, np.eye(op.dim), atol=1e-10)
    top, resid = runs[0].top(5)
    np.testing.assert_allclose(top, evals[::-1][:5], rtol=1e-10)
    assert np.all(resid < 1e-8)
    trace, std, _ = LZ.hutchinson_trace(op, 3, 0, deflation=runs[0])
    assert trace == pytest.approx(np.trace(hd), rel=1e-10) and std == 0.0


def test_gauss_quadrature_exact_to_degree_2m_minus_1(problem):
    *_, op, hd = problem
    m = 3
    nodes, weights, runs = LZ.slq(op, 1, m, seed=9)
    z = LZ.probe_vector(op.dim, 9, "hessian", "slq", 0, dtype=torch.float64).numpy()
    q = z / np.linalg.norm(z)
    for k in range(2 * m):
        exact = q @ np.linalg.matrix_power(hd, k) @ q
        assert np.sum(weights[0] * nodes[0] ** k) == pytest.approx(exact, rel=1e-8, abs=1e-13)
    # top Ritz value with a few steps: within its residual bound of an eigenvalue, below λ_max
    evals = np.linalg.eigvalsh(hd)
    top, resid = runs[0].top(1)
    assert top[0] <= evals[-1] + 1e-12 and np.min(np.abs(evals - top[0])) <= resid[0] + 1e-12


def test_slq_moments_average_to_traces(problem):
    """D × the first two SLQ moments, averaged over probes, estimate tr(H) and tr(H²) (Hutchinson)."""
    *_, op, hd = problem
    nodes, weights, _ = LZ.slq(op, 200, 2, seed=5)  # 2 steps: exact for degree <= 3
    for k in (1, 2):
        est = op.dim * np.sum(weights * nodes**k, axis=1)
        exact = np.trace(np.linalg.matrix_power(hd, k))
        assert abs(est.mean() - exact) < 4 * est.std(ddof=1) / math.sqrt(len(est))


def test_hutchinson_plain_and_deflated(problem):
    *_, op, hd = problem
    trace, std, samples = LZ.hutchinson_trace(op, 5, 7)
    zs = [LZ.probe_vector(op.dim, 7, "hessian", "hutchinson", i, dtype=torch.float64).numpy() for i in range(5)]
    np.testing.assert_allclose(samples, [z @ hd @ z for z in zs], rtol=1e-10)
    assert trace == pytest.approx(np.mean(samples)) and std == pytest.approx(np.std(samples, ddof=1) / math.sqrt(5))
    lz = LZ.lanczos(op.matvec, torch.from_numpy(zs[0]), 6)
    q = lz.basis.numpy()
    np.testing.assert_allclose(np.sum(lz.alpha), np.trace(q @ hd @ q.T), rtol=1e-10)
    trace_d, _, samples_d = LZ.hutchinson_trace(op, 5, 7, deflation=lz)
    proj = np.eye(op.dim) - q.T @ q
    np.testing.assert_allclose(samples_d, [np.sum(lz.alpha) + z @ proj @ hd @ proj @ z for z in zs], rtol=1e-9)
    # both are unbiased: many probes land within 4 standard errors of the trace
    for defl in (None, lz):
        t, s, _ = LZ.hutchinson_trace(op, 200, 8, deflation=defl)
        assert abs(t - np.trace(hd)) < 4 * s
    with pytest.raises(ValueError, match="probes"):
        LZ.hutchinson_trace(op, 0, 7)


def test_lanczos_restarts_on_repeated_eigenvalues():
    """An operator with multiplicities: the run continues past the invariant subspace and sees every eigenvalue."""
    diag = torch.tensor([3.0, 3.0, 3.0, 1.0, 1.0, 0.0, -2.0, 5.0], dtype=torch.float64)
    start = torch.ones(8, dtype=torch.float64)
    run = LZ.lanczos(lambda v: diag * v, start, 8)
    theta, s = run.ritz()
    np.testing.assert_allclose(theta, np.sort(diag.numpy()), atol=1e-12)
    np.testing.assert_allclose(run.basis @ run.basis.T, np.eye(8), atol=1e-12)
    nodes, weights = run.quadrature()
    # the start vector's measure: weight 3/8 at 3, 2/8 at 1, 1/8 each at 0, -2 and 5
    for lam, w in [(3.0, 3 / 8), (1.0, 2 / 8), (0.0, 1 / 8), (-2.0, 1 / 8), (5.0, 1 / 8)]:
        assert weights[np.isclose(nodes, lam)].sum() == pytest.approx(w, abs=1e-12)
    assert (run.beta == 0).sum() >= 1  # at least one restart


def test_eval_copy_matches_batchnorm_and_leaves_model_alone():
    model, mask, x, y = make_problem("cnn")
    model.train()
    copy = MH._eval_copy(model, torch.float64)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), rtol=1e-12, atol=1e-12)
    assert not copy.training and "forward" not in vars(model.bn1)


def test_float32_agrees_with_float64():
    model, mask, x, y = make_problem("cnn", seed=2, n=40)
    s64 = H.HessianSettings(topk=3, lanczos_steps=12, probes=2, hutchinson_probes=3, dtype="float64")
    s32 = H.HessianSettings(topk=3, lanczos_steps=12, probes=2, hutchinson_probes=3, dtype="float32")
    a, b = H.hessian_spectrum(model, mask, x, y, s64), H.hessian_spectrum(model, mask, x, y, s32)
    np.testing.assert_allclose(b["top_eigenvalues"], a["top_eigenvalues"], rtol=1e-4)
    assert b["trace"] == pytest.approx(a["trace"], rel=1e-4)


def test_broadened_density_integrates_to_one():
    nodes = np.array([[0.0, 1.0, 4.0, np.nan], [0.5, 2.0, 3.0, np.nan]])
    weights = np.array([[0.5, 0.25, 0.25, 0.0], [0.2, 0.3, 0.5, 0.0]])
    grid, dens = LZ.broadened_density(nodes, weights, 0.02, 4000)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, rel=1e-6)
    assert np.trapezoid(dens * grid, grid) == pytest.approx(np.nansum(nodes * weights) / 2, rel=1e-6)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"), data=teacher_data(120, 60))


SMALL = H.HessianSettings(topk=4, lanczos_steps=8, probes=2, hutchinson_probes=3, grid_points=50)


def test_study_schema_and_determinism(run):
    a = H.hessian_study(run, [0, 2], SMALL, progress=False)
    b = H.hessian_study(run, [0, 2], SMALL, progress=False)
    assert a.equals(b)
    assert dict(a.sizes) == {"seed": 1, "level": 2, "k": 4, "probe": 2, "node": 8, "grid": 50, "hutchinson_probe": 3}
    for level in (0, 2):
        r = a.sel(level=level).isel(seed=0)
        assert int(r.num_weights) == M.count(run.mask(level))
        assert np.all(np.diff(r.top_eigenvalues.values) <= 0)
        np.testing.assert_allclose(r.slq_weights.sum("node").values, 1.0, rtol=1e-6)
        # the stored tridiagonals reproduce the stored quadrature, and the deflated trace's known part
        for p in range(2):
            al, be = r.lanczos_alpha.values[p], r.lanczos_beta.values[p]
            nodes = np.sort(np.linalg.eigvalsh(np.diag(al) + np.diag(be[:-1], 1) + np.diag(be[:-1], -1)))
            np.testing.assert_allclose(nodes, np.sort(r.slq_nodes.values[p]), rtol=1e-4, atol=1e-6)
        assert float(r.trace) == pytest.approx(
            np.sum(r.lanczos_alpha.values[0]) + np.mean(r.trace_samples.values - np.sum(r.lanczos_alpha.values[0])),
            rel=1e-6,
        )
        assert int(r.matvecs) == 2 * 8 + 3
    assert a.attrs["experiment"] == "E4_hessian" and a.attrs["hessian_seed"] == 0
    assert a.attrs["seed_run"] == 0 and a.attrs["subset_examples"] == 120
    other = H.hessian_study(run, [2], H.HessianSettings(**{**SMALL.__dict__, "seed": 1}), progress=False)
    assert not np.array_equal(other.slq_nodes.values, a.sel(level=[2]).slq_nodes.values)


def test_study_on_the_run_matches_dense(run):
    """The run's level-2 solution (a CNN with BatchNorm): top eigenvalues and trace against the dense Hessian."""
    x, y = run.data.subset("train", None, 0)
    model, mask = run.solution(2).double().eval(), run.mask(2)
    hd = dense_hessian(model, mask, x.double(), y).numpy()
    s = H.HessianSettings(topk=5, lanczos_steps=M.count(mask), probes=1, hutchinson_probes=2, dtype="float64")
    out = H.hessian_spectrum(run.solution(2), mask, x, y, s)
    evals = np.linalg.eigvalsh(hd)
    np.testing.assert_allclose(out["top_eigenvalues"], evals[::-1][:5], rtol=1e-8)
    assert out["trace"] == pytest.approx(np.trace(hd), rel=1e-9)


def test_bad_input(run):
    with pytest.raises(ConfigError):
        H.HessianSettings(probes=0).check()
    with pytest.raises(ConfigError):
        H.HessianSettings(dtype="float16").check()
    with pytest.raises(FileNotFoundError, match="level 7"):
        H.hessian_study(run, [7], SMALL, progress=False)
    with pytest.raises(ConfigError):
        H.hessian_study(run, [1, 1], SMALL, progress=False)
    model, mask, x, y = make_problem("mlp")
    with pytest.raises(ValueError):
        MH.MaskedHessian(model, mask, x, y[:-1])
    with pytest.raises(ConfigError):
        MH.MaskedHessian(model, {"nope.weight": torch.ones(2, dtype=torch.bool)}, x, y)


def test_cli(run, tmp_path, monkeypatch):
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data(120, 60))
    out = tmp_path / "e4.nc"
    assert (
        main(
            [
                "hessian",
                "--run",
                str(run.root),
                "--levels",
                "1",
                "2",
                "--out",
                str(out),
                "--topk",
                "3",
                "--lanczos-steps",
                "6",
                "--probes",
                "2",
                "--hutchinson-probes",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert list(ds.level.values) == [1, 2] and ds.sizes["k"] == 3 and ds.sizes["node"] == 6
    assert ds.attrs["hessian_dtype"] == "float32" and ds.top_eigenvalues.attrs["units"]
    assert main(["hessian", "--run", str(run.root), "--levels", "9", "--out", str(out), "--quiet"]) == 2
