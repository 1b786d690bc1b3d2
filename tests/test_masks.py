"""Pruning rules against independent NumPy computations, and mask invariants."""

import math

import numpy as np
import pytest
import torch

from unmasking import masks as M
from unmasking.foundations.hparams import ConfigError
from unmasking.models import build_model, prunable_names


def numpy_global_magnitude(weights: dict, mask: dict, fraction: float) -> dict:
    """Independent reference: stable argsort over the surviving |w| of all layers, in name order."""
    names = list(mask)
    w = np.concatenate([weights[n].detach().numpy().ravel() for n in names])
    m = np.concatenate([mask[n].numpy().ravel() for n in names])
    alive = np.flatnonzero(m)
    k = math.ceil(fraction * len(alive))
    order = np.argsort(np.abs(w[alive]), kind="stable")
    m = m.copy()
    m[alive[order[:k]]] = False
    out, i = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = torch.from_numpy(m[i : i + size].reshape(mask[n].shape))
        i += size
    return out


def test_magnitude_prune_matches_numpy_reference():
    model = build_model("mlp", 10, width=16, seed=3)
    names = prunable_names(model)
    weights = dict(model.named_parameters())
    mask = M.dense_mask(model, names)
    for _ in range(5):
        new = M.magnitude_prune(weights, mask, 0.2)
        ref = numpy_global_magnitude(weights, mask, 0.2)
        assert all(torch.equal(new[n], ref[n]) for n in names)
        assert M.count(mask) - M.count(new) == math.ceil(0.2 * M.count(mask))
        mask = new


def test_ties_are_broken_by_position_and_ranking_is_global():
    weights = {"a.weight": torch.tensor([[0.5, 0.1], [0.1, 2.0]]), "b.weight": torch.tensor([0.1, 0.1, 3.0, -0.05])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    # 8 weights, fraction 0.5 -> 4 pruned: -0.05 (b[3]), then ties at 0.1 in position order: a[0,1], a[1,0], b[0].
    new = M.magnitude_prune(weights, mask, 0.5)
    assert new["a.weight"].tolist() == [[True, False], [False, True]]
    assert new["b.weight"].tolist() == [False, True, True, False]
    ref = numpy_global_magnitude(weights, mask, 0.5)
    assert all(torch.equal(new[n], ref[n]) for n in weights)


def test_only_surviving_weights_are_ranked():
    weights = {"w": torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 4.0])}
    mask = {"w": torch.tensor([False, False, True, True, True, True])}
    new = M.magnitude_prune(weights, mask, 0.25)  # ceil(0.25*4) = 1 of the 4 survivors
    assert new["w"].tolist() == [False, False, False, True, True, True]


def test_ceil_count():
    weights = {"w": torch.arange(1.0, 11.0)}
    mask = {"w": torch.ones(10, dtype=torch.bool)}
    assert M.count(M.magnitude_prune(weights, mask, 0.21)) == 10 - 3


def test_ignore_list_excludes_layers_from_ranking():
    model = build_model("mlp", 10, width=16, seed=0)
    names = prunable_names(model, ignore=["fc3.weight"])
    assert names == ["fc1.weight", "fc2.weight"]
    with torch.no_grad():
        model.fc3.weight.mul_(1e-6)  # smallest weights of the net, but ignored
    weights = dict(model.named_parameters())
    mask = M.dense_mask(model, names)
    new = M.magnitude_prune(weights, mask, 0.5)
    assert "fc3.weight" not in new
    ref = numpy_global_magnitude(weights, mask, 0.5)
    assert all(torch.equal(new[n], ref[n]) for n in names)
    with pytest.raises(ConfigError, match="fc9.weight"):
        prunable_names(model, ignore=["fc9.weight"])


@pytest.mark.parametrize("name", ["resnet20", "resnet1d"])
def test_prunable_names_cover_conv_linear_and_shortcuts(name):
    names = prunable_names(build_model(name, 10))
    assert names[0] == "conv.weight" and names[-1] == "fc.weight"
    assert sum("shortcut" in n for n in names) == 2
    assert not any("bn" in n or n.endswith("bias") for n in names)


def test_masks_are_nested_and_density_follows_ceil_rule():
    model = build_model("cnn1d", 10, seed=1)
    names = prunable_names(model)
    mask = M.dense_mask(model, names)
    counts = [M.count(mask)]
    for level in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))  # a "retrained" net: new weights each level
        new = M.magnitude_prune(dict(model.named_parameters()), mask, 0.2)
        assert M.is_nested(new, mask)
        counts.append(M.count(new))
        mask = new
    for a, b in zip(counts, counts[1:]):
        assert b == a - math.ceil(0.2 * a)


def test_random_prune_global_and_layerwise():
    model = build_model("mlp", 10, width=16, seed=0)
    names = prunable_names(model)
    mask = M.dense_mask(model, names)
    g = torch.Generator().manual_seed(0)
    rand = M.random_prune(mask, 0.3, g)
    assert M.count(rand) == M.count(mask) - math.ceil(0.3 * M.count(mask))
    assert M.is_nested(rand, mask)
    mag = M.magnitude_prune(dict(model.named_parameters()), mask, 0.3)
    layerwise = M.random_prune(mask, 0.3, g, like=mag)
    assert {n: int(m.sum()) for n, m in layerwise.items()} == {n: int(m.sum()) for n, m in mag.items()}
    assert not all(torch.equal(layerwise[n], mag[n]) for n in names)
    again = M.random_prune(mask, 0.3, torch.Generator().manual_seed(0))
    assert all(torch.equal(rand[n], again[n]) for n in names)


def test_apply_mask_and_masked_norm():
    model = build_model("mlp", 10, width=8, seed=0)
    names = prunable_names(model)
    mask = M.magnitude_prune(dict(model.named_parameters()), M.dense_mask(model, names), 0.5)
    M.apply_mask(model, mask)
    params = dict(model.named_parameters())
    for n in names:
        assert torch.all(params[n][~mask[n]] == 0)
    expected = math.sqrt(sum(float(params[n].double().pow(2).sum()) for n in names))
    assert M.masked_norm(params, mask) == pytest.approx(expected, rel=1e-12)


def test_save_load_roundtrip_and_corrupt_file(tmp_path):
    mask = {"a": torch.tensor([True, False]), "b": torch.ones(2, 2, dtype=torch.bool)}
    M.save_mask(mask, tmp_path / "m.pt")
    back = M.load_mask(tmp_path / "m.pt")
    assert all(torch.equal(mask[n], back[n]) for n in mask)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(M.CorruptCheckpointError, match="delete it"):
        M.load_mask(tmp_path / "bad.pt")
