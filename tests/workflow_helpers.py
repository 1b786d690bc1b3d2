"""Helpers of the workflow tests (tests/test_workflow.py, tests/test_faults.py): a copy of the workflow in
a temporary directory, the `snakemake` of this Python environment run there with the local profile and 2
cores, and comparisons of results.  The session's finished run of config/test.yaml is the fixture
`finished` (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from unmasking.foundations.registry import ANALYSES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = list(ANALYSES)
TEST_CONFIG = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
# The tests build the results (not the figures, which tests/test_figures.py covers).
TARGETS = [f"results/test/cnn/{exp}.nc" for exp in ["imp", *EXPERIMENTS]]


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake_cmd(*args: str) -> list[str]:
    """Targets go first: `--configfile` takes every following positional argument as another config file."""
    targets = [a for a in args if str(a).startswith("results/")]
    options = [a for a in args if a not in targets]
    return [
        str(BIN / "snakemake"),
        "--workflow-profile",
        "workflow/profiles/default",
        "--cores",
        "2",
        *targets,
        *options,
    ]


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(*args),
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    return out


def job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a dry run."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def load(path: Path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


def assert_same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    """Same variables, dimensions, coordinates and values (attributes such as creation times aside)."""
    assert set(a.data_vars) == set(b.data_vars)
    assert dict(a.sizes) == dict(b.sizes)
    for name in a.coords:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    for name in a.data_vars:
        assert a[name].dims == b[name].dims, name
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
