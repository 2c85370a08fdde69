#!/usr/bin/env bash
# Set up ired-mining on a fresh machine: a virtual environment in .venv with the package (editable)
# and its test tools. With --slurm, also install and start the one-node SLURM cluster the SLURM
# tests use (needs root: apt-get, munge, slurmctld, slurmd).
#
#   bash scripts/setup.sh            # then: .venv/bin/ired-train experiment=pilot
#   bash scripts/setup.sh --slurm    # then: .venv/bin/python -m pytest
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first, pinned: its CPU wheel is on this machine's disk. An unpinned torch would pull a
# multi-GB CUDA build; the project's own requirement is a range that 2.13.0 satisfies.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,trackers]"   # trackers: TensorBoard, W&B (logger=...)

if [ "${1:-}" = "--slurm" ]; then
    bash scripts/slurm_local.sh start
fi
echo "ired-mining is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
