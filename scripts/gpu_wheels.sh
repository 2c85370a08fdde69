#!/usr/bin/env bash
# Prepare, on a machine with a package index, the wheels scripts/gpu_check.sh installs on a GPU machine
# that has no network: everything ired-mining needs that such a machine lacks. Written to wheels/
# (git-ignored); carry that folder to the GPU machine with the working tree.
#
#   bash scripts/gpu_wheels.sh                    # then, on the GPU machine: bash scripts/gpu_check.sh
#
# The GPU machine this is made for has Python 3.12, torch (CUDA), numpy, einops, rich, matplotlib,
# mpmath and pytest; it lacks Hydra, OmegaConf, their ANTLR runtime, submitit and its launcher plugin.
# Versions are those of this checkout's .venv, so both machines run the same libraries.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
TARGET_PY=${TARGET_PY:-3.12}   # the GPU machine's Python, for the one compiled wheel (PyYAML)
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

rm -rf wheels
mkdir -p wheels
pure=(hydra-core omegaconf submitit hydra-submitit-launcher cloudpickle)
pins=()
for pkg in "${pure[@]}"; do pins+=("$pkg==$(version "$pkg")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: -d wheels "${pins[@]}"
# PyYAML (OmegaConf reads YAML with it) is compiled: the wheel for the GPU machine's Python and CPU.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d wheels "PyYAML==$(version PyYAML)"
# The ANTLR runtime Hydra pins has no wheel upstream, only a source archive: build one (pure Python).
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w wheels "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
# The project itself, from this working tree (gpu_check.sh runs the tree's src/ first on the path, so
# this wheel is checked only for what an installed copy must carry: its configs).
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w wheels .
ls -1 wheels
