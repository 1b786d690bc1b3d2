"""Named recipes (SPEC §5). Each is a :class:`~unmasking.foundations.hparams.Recipe` preset.

The embedded mnist1d recipes are tuned to train in seconds on a laptop CPU; the
others are the paper-scale recipes and need the data sets on disk.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .hparams import (
    ConfigError,
    DataHparams,
    ModelHparams,
    PruneHparams,
    Recipe,
    TrainHparams,
    apply_overrides,
    load_yaml,
    parse_overrides,
)

_IMAGENET_STEPS_PER_EPOCH = 1_281_167 // 1024  # drop_last at batch 1024

_CIFAR_TRAIN = dict(
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    steps=62_400,
    milestones=[31_200, 46_800],
    gamma=0.1,
    eval_every=3_900,
    checkpoint_every=3_900,
)


def _mnist1d_conv(name: str, model: str) -> Recipe:
    """The recipe of the 1-D convolutional nets (CNN, ResNet): one definition, so that their data,
    training and pruning hyperparameters are the same and stay the same; only the model differs."""
    return Recipe(
        name=name,
        data=DataHparams(name="mnist1d", augment=False),
        model=ModelHparams(name=model),
        train=TrainHparams(
            batch_size=100,
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            steps=600,  # 15 epochs: the CNN's dense test error 2.7% (seed 0), matching down to ~10% weights
            milestones=[300, 450],
            gamma=0.1,
            checkpoint_every=150,
        ),
        prune=PruneHparams(fraction=0.2, levels=15, rewind_step=40),
    )


RECIPES: dict[str, Recipe] = {
    "mnist1d-mlp": Recipe(
        name="mnist1d-mlp",
        data=DataHparams(name="mnist1d", augment=False),
        model=ModelHparams(name="mlp"),
        train=TrainHparams(
            batch_size=100,
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            steps=1_200,
            milestones=[600, 900],
            gamma=0.1,
            checkpoint_every=300,
        ),
        prune=PruneHparams(fraction=0.2, levels=20, rewind_step=40),
    ),
    "mnist1d-cnn": _mnist1d_conv("mnist1d-cnn", "cnn1d"),
    "mnist1d-resnet1d": _mnist1d_conv("mnist1d-resnet1d", "resnet1d"),
    "resnet20-cifar10": Recipe(
        name="resnet20-cifar10",
        data=DataHparams(name="cifar10", train_eval_size=10_000),
        model=ModelHparams(name="resnet20"),
        train=TrainHparams(**_CIFAR_TRAIN),
        prune=PruneHparams(fraction=0.2, levels=20, rewind_step=1_000),
    ),
    "vgg16-cifar10": Recipe(
        name="vgg16-cifar10",
        data=DataHparams(name="cifar10", train_eval_size=10_000),
        model=ModelHparams(name="vgg16"),
        train=TrainHparams(**_CIFAR_TRAIN),
        prune=PruneHparams(fraction=0.2, levels=20, rewind_step=1_000, ignore=["fc.weight"]),
    ),
    "resnet18-cifar100": Recipe(
        name="resnet18-cifar100",
        data=DataHparams(name="cifar100", train_eval_size=10_000),
        model=ModelHparams(name="resnet18"),
        train=TrainHparams(
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            steps=78_000,
            milestones=[23_400, 46_800, 62_400],
            gamma=0.2,
            eval_every=3_900,
            checkpoint_every=3_900,
        ),
        prune=PruneHparams(fraction=0.2, levels=20, rewind_step=1_000),
    ),
    "resnet50-imagenet": Recipe(
        name="resnet50-imagenet",
        data=DataHparams(name="imagenet", train_eval_size=50_000, workers=16),
        model=ModelHparams(name="resnet50"),
        train=TrainHparams(
            batch_size=1024,
            lr=0.4,
            momentum=0.9,
            weight_decay=1e-4,
            steps=90 * _IMAGENET_STEPS_PER_EPOCH,
            milestones=[e * _IMAGENET_STEPS_PER_EPOCH for e in (30, 60, 80)],
            gamma=0.1,
            warmup_steps=5 * _IMAGENET_STEPS_PER_EPOCH,
            eval_every=_IMAGENET_STEPS_PER_EPOCH * 5,
            checkpoint_every=_IMAGENET_STEPS_PER_EPOCH // 2,
            eval_batch_size=500,
        ),
        prune=PruneHparams(fraction=0.2, levels=15, rewind_step=5 * _IMAGENET_STEPS_PER_EPOCH),
    ),
}


def get_recipe(name: str) -> Recipe:
    """A fresh copy of the named recipe."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Build a recipe from a dict such as the ``recipe`` field of a saved run."""
    d = dict(d)
    base = get_recipe(d.pop("base")) if "base" in d else Recipe()
    name = d.pop("name", base.name)
    recipe = apply_overrides(base, d)
    recipe.name = name
    return recipe.validate()


def build_recipe(name: str, config_file: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Preset ``name``, then the YAML file's keys, then ``key=value`` overrides, validated."""
    recipe = get_recipe(name)
    if config_file is not None:
        recipe = apply_overrides(recipe, load_yaml(config_file))
    if overrides:
        recipe = apply_overrides(recipe, parse_overrides(overrides))
    return recipe.validate()
