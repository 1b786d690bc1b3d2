#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install the package with
# its test tools. Idempotent: a second run only checks that everything is installed.
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
.venv/bin/pip install -q -e ".[test]"
echo "environment ready: $(pwd)/.venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
