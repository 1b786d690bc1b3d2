"""Model parameter counts, registries and configuration errors."""

import pytest
import torch

from unmasking.foundations.hparams import ConfigError, apply_overrides, parse_overrides, valid_keys
from unmasking.foundations.recipes import RECIPES, build_recipe, get_recipe
from unmasking.models import build_model, prunable_names


def _resnet20_count(classes=10, w=16):
    """Independent count: 3x3 stem, 9 basic blocks, two 1x1 projection shortcuts, BN (2 params per channel)."""
    conv = 3 * 9 * w + 2 * w
    cin = w
    for width in (w, 2 * w, 4 * w):
        for i in range(3):
            conv += cin * 9 * width + 2 * width + width * 9 * width + 2 * width
            if cin != width:
                conv += cin * width + 2 * width
            cin = width
    return conv + cin * classes + classes


def _resnet1d_count(classes=10, w=16):
    """Independent count: 5-tap stem, 3 basic blocks of width w, two 1x1 projection shortcuts (stages 2
    and 3 halve the length), BN (2 params per channel), linear head on the pooled w channels."""
    stem = 5 * w + 2 * w
    block = 2 * (3 * w * w + 2 * w)
    projection = w * w + 2 * w
    return stem + 3 * block + 2 * projection + w * classes + classes


@pytest.mark.parametrize(
    "name,classes,expected",
    [
        ("resnet20", 10, _resnet20_count()),
        ("vgg16", 10, 14_728_266),  # VGG-16-BN for CIFAR with one 512->10 linear layer (OpenLTH)
        ("resnet18", 100, 11_220_132),  # CIFAR stem ResNet-18 (Kuang Liu's pytorch-cifar count)
        ("resnet50", 1000, 25_557_032),  # torchvision ResNet-50
        ("mlp", 10, 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10),
        ("cnn1d", 10, 5 * 32 + 2 * 3 * 32 * 32 + 3 * 64 + 320 * 10 + 10),
        ("resnet1d", 10, _resnet1d_count()),
    ],
)
def test_parameter_counts(name, classes, expected):
    model = build_model(name, classes)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_resnet1d_shapes_and_prunable_weights():
    """The documented architecture: 5,658 parameters, (N, 10) logits from (N, 40) signals, the three
    stages at length 20, 10 and 5; every conv (stem, blocks, both 1x1 shortcuts) and the head are prunable."""
    model = build_model("resnet1d", 10, seed=0)
    assert _resnet1d_count() == 5_658
    shapes = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape[1:])))
    assert model(torch.randn(3, 40)).shape == (3, 10)
    assert shapes == [(16, 20), (16, 10), (16, 5)]
    assert prunable_names(model) == [
        "conv.weight",
        "blocks.0.conv1.weight",
        "blocks.0.conv2.weight",
        "blocks.1.conv1.weight",
        "blocks.1.conv2.weight",
        "blocks.1.shortcut.0.weight",
        "blocks.2.conv1.weight",
        "blocks.2.conv2.weight",
        "blocks.2.shortcut.0.weight",
        "fc.weight",
    ]
    assert sum(p.numel() for p in build_model("resnet1d", 7, width=8).parameters()) == _resnet1d_count(7, 8)


def test_mnist1d_resnet1d_recipe_is_the_cnn_recipe_but_the_model():
    cnn, res = get_recipe("mnist1d-cnn"), get_recipe("mnist1d-resnet1d")
    assert (res.data, res.train, res.prune) == (cnn.data, cnn.train, cnn.prune)
    assert (res.model.name, cnn.model.name) == ("resnet1d", "cnn1d")
    assert res.validate() is res


def test_same_seed_same_init():
    a, b = build_model("cnn1d", 10, seed=7), build_model("cnn1d", 10, seed=7)
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model 'resnet21'.*resnet20"):
        build_model("resnet21", 10)


def test_unknown_recipe_and_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        build_recipe("mnist1d-cnn", overrides=["train.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="Did you mean 'train.lr'"):
        apply_overrides(get_recipe("mnist1d-cnn"), {"train": {"lrr": 0.1}})
    bad = tmp_path / "c.yaml"
    bad.write_text("model:\n  nam: mlp\n")
    with pytest.raises(ConfigError, match="model.nam"):
        build_recipe("mnist1d-cnn", bad)


def test_wrong_types_and_ranges():
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        build_recipe("mnist1d-cnn", overrides=["train.steps=ten"])
    with pytest.raises(ConfigError, match="prune.fraction must be in"):
        build_recipe("mnist1d-cnn", overrides=["prune.fraction=1.5"])
    with pytest.raises(ConfigError, match="rewind_step"):
        build_recipe("mnist1d-cnn", overrides=["prune.rewind_step=5000"])


def test_overrides_from_file_and_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.02\n  milestones: [10, 20]\nprune.levels: 4\n")
    r = build_recipe("mnist1d-mlp", f, ["train.lr=0.03", "data.root=null", "train.nesterov=true"])
    assert (r.train.lr, r.train.milestones, r.prune.levels, r.data.root, r.train.nesterov) == (
        0.03,
        [10, 20],
        4,
        None,
        True,
    )
    assert RECIPES["mnist1d-mlp"].train.lr == 0.1  # presets are not mutated
    assert parse_overrides(["train.milestones=[1, 2]"]) == {"train.milestones": [1, 2]}
    assert "train.lr" in valid_keys() and "prune.ignore" in valid_keys()
    assert r.hash() != get_recipe("mnist1d-mlp").hash()


def test_paper_recipes():
    r20 = get_recipe("resnet20-cifar10").train
    assert (r20.batch_size, r20.steps, r20.milestones, r20.weight_decay) == (128, 62_400, [31_200, 46_800], 1e-4)
    r18 = get_recipe("resnet18-cifar100").train
    assert r18.nesterov and r18.gamma == 0.2 and r18.milestones == [23_400, 46_800, 62_400]
    assert get_recipe("vgg16-cifar10").prune.ignore == ["fc.weight"]
    r50 = get_recipe("resnet50-imagenet").train
    assert r50.warmup_steps == 5 * 1251 and r50.steps == 90 * 1251
