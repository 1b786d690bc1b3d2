#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install what the README's two
# commands need: the package with its workflow, SLURM and test extras. Idempotent: a second run only
# checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch/torchvision first, pinned to the releases this project is tested with (a CUDA build on x86_64).
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
# The executor plugin is a package of its own in this repository, installed from here (no extra names
# it, so pip never looks for it on PyPI).
.venv/bin/pip install -q -e plugins/snakemake-executor-plugin-submitit
.venv/bin/pip install -q -e ".[workflow,slurm,test]"
echo "environment ready: $(pwd)/.venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
