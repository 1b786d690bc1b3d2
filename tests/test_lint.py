"""One linter and formatter for the Python code of the repository: ruff, configured in pyproject.toml
(`[tool.ruff]`). The Snakemake files have theirs (snakefmt, `tests/test_workflow.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    assert RUFF.exists(), f"{RUFF} is missing: install the test extra (bash setup.sh)"
    out = subprocess.run([str(RUFF), *command, "."], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, (
        f"`ruff {' '.join(command)} .` found problems (fix: ruff check --fix . / ruff format .):\n"
        + out.stdout
        + out.stderr
    )
