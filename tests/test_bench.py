"""benchmarks/bench.py, the script beside the package: it imports, runs, and counts the paper
configuration's trainings in this repository's config/paper.yaml from any working directory."""

import argparse
import ast
import importlib.util
import re
import subprocess
import sys
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


GPU_CHECK = BENCH.parent / "gpu_check.py"


def test_gpu_check_counts_every_paper_training(bench):
    """The projection's counts, per architecture and experiment, recomputed from protocol §3's design in
    config/paper.yaml: ResNet-20 adds up to the benchmark's 2,520 trainings."""
    import yaml

    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    cfg = yaml.safe_load(check.PAPER_CONFIG.read_text())
    archs = {a["name"]: a for a in cfg["architectures"]}
    r20 = check.paper_trainings(cfg, archs["resnet20"], 62_400)
    runs, t_sum = 4 * 2, 4 * (0 + 1000)  # 4 seeds x rewind steps 0 and 1000
    assert r20 == {
        "IMP pretraining": (runs, t_sum, 1),
        "IMP levels": (21 * runs, 21 * (8 * 62_400 - t_sum), 1),
        "E3 perturbation": (5 * 2 * 21 * runs, 5 * 2 * 21 * (8 * 62_400 - t_sum), 8),
        "E6 pruning ratio": (4 * 3 * 7 * runs, 4 * 3 * 7 * (8 * 62_400 - t_sum), 8),
    }
    n, steps, _ = bench.paper_trainings(argparse.Namespace(trainings=None), 62_400)
    assert (n, steps) == (
        sum(v[0] for k, v in r20.items() if k != "IMP pretraining"),
        sum(v[1] for k, v in r20.items() if k != "IMP pretraining"),
    )
    r50 = check.paper_trainings(cfg, archs["resnet50"], 1000)  # ImageNet: IMP only (E3/E6 are CIFAR-only)
    assert set(r50) == {"IMP pretraining", "IMP levels"} and r50["IMP levels"][0] == 19 * runs


def test_gpu_check_runs_in_its_reduced_cpu_mode(tmp_path):
    """The GPU check command end to end in its CPU smoke mode (so it cannot rot where no GPU is), started as
    on the GPU machine, and importing nothing that machine lacks (snakemake, netCDF, xarray, mnist1d...)."""
    probe = (
        "import runpy, sys; sys.argv = ['gpu_check.py', '--reduced']; "
        f"runpy.run_path({str(GPU_CHECK)!r}, run_name='__main__'); "
        "print('MODULES', sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for heading in ("device and versions", "tests/test_gpu.py", "benchmark ratio", "training rates", "projected GPU"):
        assert f"== {heading}" in text, text[-3000:]
    assert "7 skipped" in text  # every GPU test, skipped on this CPU
    assert re.search(r"resnet20 IMP: training.train, 1 model\s+\d+\.\d s", text)
    assert re.search(r"resnet20 IMP levels\s+168 trainings\s+10\.4 M steps\s+K=1\s+\d+\.\d GPU-h", text)
    modules = set(ast.literal_eval(text.split("MODULES ", 1)[1].strip()))
    assert not modules & {"xarray", "netCDF4", "snakemake", "mnist1d", "submitit", "scipy", "matplotlib", "jsonschema"}
