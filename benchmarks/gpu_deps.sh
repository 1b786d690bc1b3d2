#!/usr/bin/env bash
# The pure-Python packages that benchmarks/gpu_check.py needs beside a GPU machine's own torch, unpacked
# into .gpu-deps/ (git-ignored; about 6 MB): pytest and its dependencies, tqdm and PyYAML (its pure-Python
# form, so it imports on any Python 3). Run where PyPI is reachable; then carry .gpu-deps/ to the GPU
# machine with the working tree and run there:
#     PYTHONPATH=src:.gpu-deps python3 benchmarks/gpu_check.py
# Versions: those of this checkout's .venv where it has them (bash setup.sh), else the latest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
pins=()
for name in pytest pluggy iniconfig packaging pygments tqdm pyyaml exceptiongroup tomli; do
    version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    pins+=("$name${version:+==$version}")
done
rm -rf .gpu-deps && mkdir -p .gpu-deps/_dl
wheels=("${pins[@]}")
unset 'wheels[6]'  # pyyaml: from its source archive below (its wheels are per Python version)
# pure wheels only (py3-none-any), whatever Python the GPU machine has
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform any --implementation py --python-version 3.10 \
    --dest .gpu-deps/_dl "${wheels[@]}"
"$PY" -m pip download -q --no-deps --no-binary=:all: --dest .gpu-deps/_dl "${pins[6]}"
for wheel in .gpu-deps/_dl/*.whl; do "$PY" -m zipfile -e "$wheel" .gpu-deps/; done
tar -xzf .gpu-deps/_dl/[Pp]y[Yy][Aa][Mm][Ll]-*.tar.gz -C .gpu-deps/_dl
cp -r .gpu-deps/_dl/[Pp]y[Yy][Aa][Mm][Ll]-*/lib/yaml .gpu-deps/yaml
rm -rf .gpu-deps/_dl
echo "wrote .gpu-deps/ ($(du -sh .gpu-deps | cut -f1)): ${pins[*]}"
