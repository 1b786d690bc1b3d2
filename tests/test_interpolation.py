"""E2: barrier definition, interpolation on masks, both BatchNorm modes, the run-level experiment and its CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unmasking import masks as M
from unmasking.analyses.interpolation import (
    PathEvaluator,
    barrier,
    gamma_grid,
    interpolate_state,
    interpolation_curve,
    reset_batchnorm,
    successive_levels,
    union_mask,
)
from unmasking.commands import main
from unmasking.data import TensorData
from unmasking.foundations.hparams import ConfigError
from unmasking.foundations.netcdf import load_dataset
from unmasking.training import evaluate

from conftest import teacher_data, tiny_imp_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"))


# --- the barrier, by hand -----------------------------------------------------------------------------------------


def test_barrier_of_hand_built_curves():
    assert barrier([0.0, 0.5, 0.2], [0.0, 0.5, 1.0]) == pytest.approx(0.4)  # line at γ=.5 is 0.1
    assert barrier([0.3, 0.2, 0.1], 3) == pytest.approx(0.0)  # on or below the line: 0
    assert barrier([0.1, 0.0, 0.3], 3) == pytest.approx(0.0)  # the ends themselves give 0
    two = barrier(np.array([[0.0, 0.5, 0.2], [0.2, 0.2, 0.2]]), 3, axis=1)
    np.testing.assert_allclose(two, [0.4, 0.0])
    assert math.isnan(barrier([0.0, float("nan"), 0.0], 3))
    with pytest.raises(ConfigError):
        gamma_grid([0.0, 0.5])  # must end at 1
    with pytest.raises(ValueError):
        barrier([0.0, 1.0], 3)


class TwoUnits(nn.Module):
    """x → W2 relu(W1 x) + b: two hidden units, two classes."""

    def __init__(self, w1, w2, bias):
        super().__init__()
        self.l1 = nn.Linear(1, 2, bias=False)
        self.l2 = nn.Linear(2, 2)
        with torch.no_grad():
            self.l1.weight.copy_(torch.tensor(w1))
            self.l2.weight.copy_(torch.tensor(w2))
            self.l2.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def test_known_path_error_and_loss():
    """Two networks that differ by swapping hidden units: logits along the path are analytic.

    For x = +1 (label 0): logits (q, β − q) with q(γ) = (1−γ)² + γ², so the example is misclassified
    iff 2q < β; for x = −1 (label 1) the hidden units are off and the logits are (0, β) at every γ.
    """
    beta = 1.5
    a = TwoUnits([[1.0], [0.0]], [[1.0, 0.0], [-1.0, 0.0]], [0.0, beta])
    b = TwoUnits([[0.0], [1.0]], [[0.0, 1.0], [0.0, -1.0]], [0.0, beta])
    n_pos, n_neg = 30, 10
    x = torch.cat([torch.ones(n_pos, 1), -torch.ones(n_neg, 1)])
    y = torch.cat([torch.zeros(n_pos, dtype=torch.long), torch.ones(n_neg, dtype=torch.long)])
    data = TensorData("known", x, y, x.clone(), y.clone(), 2)
    gammas = gamma_grid(11)
    ds = interpolation_curve(a, b, data, gammas, batch_size=7)

    q = (1 - gammas) ** 2 + gammas**2
    err = np.where(2 * q < beta, n_pos / (n_pos + n_neg), 0.0)
    loss_pos = np.log1p(np.exp(beta - 2 * q))
    loss = (n_pos * loss_pos + n_neg * np.log1p(np.exp(-beta))) / (n_pos + n_neg)
    for split in ("test", "train"):
        c = ds.sel(bn_mode="interpolate", split=split)
        np.testing.assert_allclose(c.error.values, err, atol=1e-12)
        np.testing.assert_allclose(c.loss.values, loss, rtol=1e-5)
        assert float(c.barrier_error) == pytest.approx(n_pos / (n_pos + n_neg))
        assert float(c.barrier_loss) == pytest.approx(float(np.max(loss - loss[0])), rel=1e-5)
    assert err[1] == 0 and err[2] > 0 and err[8] > 0 and err[9] == 0  # misclassified for γ in [0.2, 0.8]


# --- masks ----------------------------------------------------------------------------------------------------------


def _masked_pair():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)), nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    names = ["0.weight", "1.weight"]
    g = torch.Generator().manual_seed(1)
    mask_a = {n: torch.rand(p.shape, generator=g) < 0.7 for n, p in a.named_parameters() if n in names}
    mask_b = M.random_prune(mask_a, 0.5, g)  # sparser and nested
    M.apply_mask(a, mask_a)
    M.apply_mask(b, mask_b)
    return a, b, mask_a, mask_b


def test_interpolation_is_exact_on_the_denser_mask():
    a, b, mask_a, mask_b = _masked_pair()
    union = union_mask(mask_a, mask_b)
    assert all(torch.equal(union[n], mask_a[n]) for n in mask_a)  # nested: the union is the denser mask
    sa, sb = a.state_dict(), b.state_dict()
    for g in gamma_grid(11):
        s = interpolate_state(sa, sb, float(g), union)
        for k in sa:
            assert torch.equal(s[k], (1.0 - g) * sa[k] + g * sb[k]), k
        only_a = mask_a["0.weight"] & ~mask_b["0.weight"]
        assert torch.equal(s["0.weight"][only_a], (1.0 - g) * sa["0.weight"][only_a])  # toward zero
        assert torch.all(s["0.weight"][~union["0.weight"]] == 0)
    assert all(torch.equal(interpolate_state(sa, sb, 0.0, union)[k], sa[k]) for k in sa)
    assert all(torch.equal(interpolate_state(sa, sb, 1.0, union)[k], sb[k]) for k in sa)


def test_interpolation_zeroes_weights_outside_the_union():
    a, b, mask_a, mask_b = _masked_pair()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)  # b now has non-zeros outside every mask
    union = union_mask(mask_a, mask_b)
    s = interpolate_state(a.state_dict(), b.state_dict(), 0.3, union)
    for n, m in union.items():
        assert torch.all(s[n][~m] == 0)
        assert torch.equal(s[n][m], ((1.0 - 0.3) * a.state_dict()[n] + 0.3 * b.state_dict()[n])[m])


# --- BatchNorm ------------------------------------------------------------------------------------------------------


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.lin(x))))


def _bn_data(n=50):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, generator=g) * 2 + 1
    y = (x[:, 0] > 1).long()
    return TensorData("bn", x, y, x[:20].clone(), y[:20].clone(), 2)


def _direct_stats(lin: nn.Linear, batches):
    with torch.no_grad():
        zs = [lin(x) for x in batches]
    return torch.stack([z.mean(0) for z in zs]).mean(0), torch.stack([z.var(0, unbiased=True) for z in zs]).mean(0)


def test_reset_batchnorm_equals_direct_batch_statistics():
    torch.manual_seed(1)
    net, data = BNNet(), _bn_data()
    batches = [x for x, _ in data.eval_batches("train", 10)][:3]
    reset_batchnorm(net, batches)
    mean, var = _direct_stats(net.lin, batches)
    torch.testing.assert_close(net.bn.running_mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(net.bn.running_var, var, rtol=1e-6, atol=1e-6)
    assert int(net.bn.num_batches_tracked) == 3 and net.bn.momentum == 0.1 and not net.training


def test_both_batchnorm_modes_along_a_path():
    torch.manual_seed(2)
    a, b, data = BNNet(), BNNet(), _bn_data()
    with torch.no_grad():  # distinct running statistics at the two ends
        a.bn.running_mean.fill_(0.5)
        b.bn.running_var.fill_(3.0)
    ev = PathEvaluator(data, batch_size=1000, bn_batches=3, bn_batch_size=10)
    work = BNNet()
    sa, sb = a.state_dict(), b.state_dict()
    g = 0.3
    ev.point(work, interpolate_state(sa, sb, g), "interpolate")
    torch.testing.assert_close(work.bn.running_mean, (1 - g) * sa["bn.running_mean"] + g * sb["bn.running_mean"])
    torch.testing.assert_close(work.bn.running_var, (1 - g) * sa["bn.running_var"] + g * sb["bn.running_var"])
    got = ev.point(work, interpolate_state(sa, sb, g), "reset")
    mean, var = _direct_stats(work.lin, [x for x, _ in data.eval_batches("train", 10)][:3])
    torch.testing.assert_close(work.bn.running_mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(work.bn.running_var, var, rtol=1e-6, atol=1e-6)
    assert got[0, 0] == evaluate(work, data, "test")["error"]  # evaluated with the recomputed statistics
    ds = interpolation_curve(a, b, data, 5, bn_mode=("interpolate", "reset"), bn_batches=3, bn_batch_size=10)
    assert list(ds.bn_mode.values) == ["interpolate", "reset"]
    assert float(ds.error.sel(bn_mode="interpolate", split="test", gamma=0.0)) == evaluate(a, data, "test")["error"]


# --- the experiment on an IMP run -----------------------------------------------------------------------------------


def test_successive_levels(run):
    ds = successive_levels(run, [0, 1, 2], gammas=5, bn_modes=("interpolate", "reset"), progress=False)
    assert dict(ds.error.sizes) == {"seed": 1, "level": 3, "pair": 2, "bn_mode": 2, "gamma": 5, "split": 2}
    assert list(ds.pair.values) == ["successive", "dense"] and list(ds.split.values) == ["test", "train"]
    c = ds.isel(seed=0)
    assert np.all(np.isnan(c.error.sel(level=2, pair="successive")))  # no level 3 in the run
    assert list(c.partner_level.sel(pair="successive").values) == [1, 2, -1]
    for level in (0, 1, 2):
        ref = evaluate(run.solution(level), run.data, "test")
        assert (
            float(c.error.sel(level=level, pair="dense", bn_mode="interpolate", split="test", gamma=1.0))
            == ref["error"]
        )
        if level < 2:
            assert (
                float(c.error.sel(level=level, pair="successive", bn_mode="interpolate", split="test", gamma=0.0))
                == ref["error"]
            )
    dense0 = c.error.sel(level=0, pair="dense")
    assert np.all(dense0 == dense0.isel(gamma=0)) and np.all(c.barrier_error.sel(level=0, pair="dense") == 0)
    np.testing.assert_array_equal(c.barrier_error.values, barrier(c.error.values, 5, axis=3))
    # each endpoint is evaluated once: L0-L1 5 points, L1-L2 4, w0-w1 and w0-w2 3 each, w0-w0 none; per mode
    assert ds.attrs["evaluations"] == 2 * (5 + 4 + 3 + 3)
    again = successive_levels(run, [0, 1, 2], gammas=5, bn_modes=("interpolate", "reset"), progress=False)
    for name in ds.data_vars:
        np.testing.assert_array_equal(ds[name].values, again[name].values)
    assert ds.attrs["seed_run"] == 0 and "seed_init" in ds.attrs and ds.attrs["experiment"] == "E2_interpolation"


def test_bad_levels_are_clear_errors(run):
    with pytest.raises(FileNotFoundError, match="level 7"):
        successive_levels(run, [7], progress=False)
    with pytest.raises(ConfigError):
        successive_levels(run, [1, 1], progress=False)


def test_cli(run, tmp_path, monkeypatch):
    monkeypatch.setattr("unmasking.imp.load_data", lambda hp: teacher_data())
    out = tmp_path / "e2.nc"
    assert (
        main(
            [
                "interpolation",
                "--run",
                str(run.root),
                "--levels",
                "1",
                "2",
                "--out",
                str(out),
                "--gammas",
                "3",
                "--bn-modes",
                "interpolate",
                "reset",
                "--quiet",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert list(ds.level.values) == [1, 2] and list(ds.bn_mode.values) == ["interpolate", "reset"]
    assert ds.error.attrs["units"] == "fraction" and len(ds.gamma) == 3
    assert main(["interpolation", "--run", str(run.root), "--levels", "9", "--out", str(out), "--quiet"]) == 2
