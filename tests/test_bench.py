"""benchmarks/bench.py, the script beside the package: it imports, runs, and counts the paper
configuration's trainings in this repository's config/paper.yaml from any working directory."""

import argparse
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_count_from_the_repository_config_wherever_run(bench, tmp_path, monkeypatch):
    """The documented count (docs/performance.md): 2,520 ResNet-20 trainings, 156 M optimizer steps."""
    monkeypatch.chdir(tmp_path)
    assert bench.PAPER_CONFIG == BENCH.parents[1] / "config" / "paper.yaml"
    n, steps, note = bench.paper_trainings(argparse.Namespace(trainings=None), 62_400)
    assert (n, steps) == (2520, 155_988_000)
    assert note.startswith(f"from {bench.PAPER_CONFIG}: resnet20, 4 seeds x 2 rewind steps")


def test_embedded_benchmark_runs(bench, capsys):
    bench.main(
        [
            "embedded",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--ks",
            "2",
            "--threads-list",
            "1",
            "--recipes",
            "mnist1d-mlp",
            "--backends",
            "stacked",
        ]
    )
    out = capsys.readouterr().out
    assert "training.train (K=1)" in out and "train_many stacked K=2" in out
