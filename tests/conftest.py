"""Shared helpers: run the installed console scripts as a user would, on tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

# Small enough for seconds per run on a 2-core CPU; every test that trains starts from these.
TINY = [
    "dataset.n=4",
    "model.hidden=32",
    "model.time_dim=16",
    "train.batch_size=32",
    "train.steps=20",
    "train.log_every=5",
    "train.eval_every=10",
    "checkpoint.every=10",
    "eval.size=32",
    "eval.batch_size=32",
    "hardware=cpu",
]


def run_cli(
    script: str, *args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run an installed console script (ired-train, ired-eval, ired-report) in a subprocess."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "120", **(env or {})}
    proc = subprocess.run(
        [str(BIN / script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def finished_summary(strategy: str, seed: int, steps: int, seconds: float, last: dict) -> dict:
    """The metrics.json of a finished fake run (the report tests' runs) whose last metrics.jsonl line is
    `last`: its evaluation's values, as a run copies them, without the negatives' statistics."""
    return {
        "status": "finished",
        "strategy": strategy,
        "seed": seed,
        "step": steps,
        "train_seconds": seconds,
        "seconds_per_step": seconds / steps,
        **{k: v for k, v in last.items() if "/" in k and not k.startswith("neg/")},
    }


@pytest.fixture
def tiny():
    return list(TINY)
