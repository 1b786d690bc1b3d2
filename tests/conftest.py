"""Shared fixtures: tiny in-memory data sets and recipes that train in well under a second."""

from __future__ import annotations

import os

import pytest
import torch
from workflow_helpers import copy_workflow, ok, snakemake

from unmasking.data.base import TensorData
from unmasking.foundations.hparams import DataHparams, ModelHparams, PruneHparams, Recipe, TrainHparams
from unmasking.foundations.recipes import build_recipe
from unmasking.imp import ImpRun

from slurm_fixtures import slurm_cluster  # noqa: F401  (session fixture: a real single-node SLURM cluster)

torch.set_num_threads(1)
os.environ.setdefault("UNMASKING_DATA", os.path.join(os.path.dirname(__file__), "..", ".cache", "data"))


def make_tensor_data(n_train: int = 200, n_test: int = 100, dim: int = 40, classes: int = 10, seed: int = 0):
    """A learnable synthetic 40-d data set (class-dependent means plus noise)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)

    def split(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return centers[y] + 0.8 * torch.randn(n, dim, generator=g), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return TensorData("synthetic", x_train, y_train, x_test, y_test, classes)


@pytest.fixture
def tiny_data():
    return make_tensor_data()


def teacher_data(n_train: int = 200, n_test: int = 100, classes: int = 3, seed: int = 0) -> TensorData:
    """Random 40-dim signals labelled by a fixed random linear teacher (learnable in a few dozen steps)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(40, classes, generator=g)
    x_train, x_test = torch.randn(n_train, 40, generator=g), torch.randn(n_test, 40, generator=g)
    return TensorData("tiny", x_train, (x_train @ teacher).argmax(1), x_test, (x_test @ teacher).argmax(1), classes)


def tiny_imp_run(
    root, recipe: str = "mnist1d-cnn", width: int = 4, levels: int = 2, data: TensorData | None = None
) -> ImpRun:
    """A finished IMP run (seed 0, 30 steps of batch 20, rewind step 5) of a tiny mnist1d recipe on
    ``data`` (default: :func:`teacher_data`)."""
    hp = build_recipe(
        recipe,
        None,
        [
            f"model.width={width}",
            "train.steps=30",
            "train.milestones=[20]",
            "train.batch_size=20",
            "prune.rewind_step=5",
            f"prune.levels={levels}",
        ],
    )
    run = ImpRun(hp, 0, root, device="cpu", progress=False)
    run.data = data if data is not None else teacher_data()
    run.run(levels)
    return run


def tiny_recipe(model: str = "mlp", steps: int = 30, levels: int = 3, rewind: int = 4) -> Recipe:
    return Recipe(
        name=f"tiny-{model}",
        data=DataHparams(name="mnist1d", augment=False),
        model=ModelHparams(name=model, width=16),
        train=TrainHparams(
            batch_size=20,
            lr=0.05,
            momentum=0.9,
            weight_decay=5e-4,
            steps=steps,
            milestones=[steps // 2],
            gamma=0.1,
            checkpoint_every=7,
            eval_batch_size=500,
        ),
        prune=PruneHparams(fraction=0.2, levels=levels, rewind_step=rewind),
    ).validate()


@pytest.fixture(scope="session")
def data_env(tmp_path_factory) -> dict:
    """A data directory shared by the workflow runs (mnist1d is generated once and cached there)."""
    root = os.environ.get("UNMASKING_DATA") or str(tmp_path_factory.mktemp("data"))
    return {"UNMASKING_DATA": root}


@pytest.fixture(scope="session")
def finished(tmp_path_factory, data_env):
    """An uninterrupted end-to-end run of config/test.yaml (every result, figure and the claims), shared by
    tests/test_workflow.py and tests/test_faults.py; a test that changes files works on a copy
    (:func:`workflow_helpers.copy_finished`)."""
    work = copy_workflow(tmp_path_factory.mktemp("finished"))
    ok(snakemake(work, "--configfile", "config/test.yaml", env=data_env))
    return work
