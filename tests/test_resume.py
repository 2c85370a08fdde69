"""Runs that survive: exact resume after SIGKILL, refusals that lose nothing, the NaN guard."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, read_json, read_jsonl, run_cli

# Long enough to be killed mid-run, short enough for CI: ~200 steps of a tiny model.
RUN = [
    "dataset.n=4",
    "model.hidden=64",
    "model.time_dim=16",
    "train.batch_size=64",
    "train.steps=200",
    "train.log_every=10",
    "train.eval_every=50",
    "checkpoint.every=20",
    "checkpoint.keep=3",
    "eval.size=64",
    "eval.batch_size=64",
    "hardware=cpu",
    "hardware.threads=1",
    "mining=adversarial",
]

METRIC_KEYS = ["in_dist/mse", "harder/mse", "in_dist/residual", "harder/residual", "loss/mse", "loss/energy"]


def train(run_dir: Path, *extra: str, check: bool = True):
    return run_cli("ired-train", *RUN, *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, check=check)


def kill_after_checkpoint(run_dir: Path, step: int, *extra: str) -> None:
    """Start a run and SIGKILL it as soon as the checkpoint of `step` exists."""
    proc = subprocess.Popen(
        [str(BIN / "ired-train"), *RUN, *extra, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = run_dir / "checkpoints" / f"step_{step:09d}.pt"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists(), (
        f"no {target.name} within 120 s"
        if proc.returncode == -signal.SIGKILL
        else f"the run ended (exit {proc.returncode}) before {target.name} appeared"
    )
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The same run, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    train(run_dir)
    return {"final": read_json(run_dir / "metrics.json"), "lines": read_jsonl(run_dir / "metrics.jsonl")}


def assert_same_result(run_dir: Path, reference: dict) -> None:
    final = read_json(run_dir / "metrics.json")
    assert final["status"] == "finished" and final["step"] == reference["final"]["step"]
    for key in METRIC_KEYS:
        assert final[key] == reference["final"][key], key  # bit for bit
    lines = read_jsonl(run_dir / "metrics.jsonl")
    assert [ln["step"] for ln in lines] == [ln["step"] for ln in reference["lines"]]  # none lost, none doubled
    for got, want in zip(lines, reference["lines"]):
        assert got["in_dist/mse"] == want["in_dist/mse"] and got["loss/mse"] == want["loss/mse"]


def test_sigkill_then_resume_ends_bit_for_bit_like_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 60)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "in_dist/m')  # as a kill in the middle of an append leaves it
    proc = train(run_dir)
    assert "resumed from step" in (run_dir / "train.log").read_text()
    assert_same_result(run_dir, reference)
    # only the newest `keep` checkpoints remain, and no temporary file is left behind
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_000000160.pt", "step_000000180.pt", "step_000000200.pt"], names
    assert proc.returncode == 0


def test_kill_between_final_checkpoint_and_metrics_json_still_finishes(tmp_path, reference):
    run_dir = tmp_path / "run"
    train(run_dir)
    # the state a kill leaves after the last checkpoint was written but before metrics.json was
    (run_dir / "metrics.json").unlink()
    train(run_dir)
    assert_same_result(run_dir, reference)


def record_of(run_dir: Path) -> dict[str, bytes]:
    """The run's .hydra/ record, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted((run_dir / ".hydra").iterdir())}


def test_resume_with_incompatible_config_refuses(tmp_path):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 20)
    before, record = sorted((run_dir / "checkpoints").iterdir()), record_of(run_dir)
    proc = train(run_dir, "mining=random", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds an unfinished run of other settings" in lines[0], proc.stderr
    assert "mining.name is random here, adversarial there" in lines[0]  # the setting that differs, named
    assert sorted((run_dir / "checkpoints").iterdir()) == before
    assert record_of(run_dir) == record and set(record) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert not (run_dir / "metrics.json").exists()  # still unfinished: it resumes with its own settings
    train(run_dir)
    assert "resumed from step 20" in (run_dir / "train.log").read_text()


def test_finished_run_is_never_overwritten(tmp_path, reference):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 20)
    train(run_dir)
    final, lines = (run_dir / "metrics.json").read_bytes(), (run_dir / "metrics.jsonl").read_bytes()
    proc = train(run_dir)
    assert proc.returncode == 0 and "already holds a finished run" in proc.stdout + proc.stderr
    assert (run_dir / "metrics.json").read_bytes() == final
    assert (run_dir / "metrics.jsonl").read_bytes() == lines


def test_a_rerun_with_other_settings_leaves_a_finished_run_and_its_record_alone(tmp_path):
    run_dir, short = tmp_path / "run", "train.steps=40"
    train(run_dir, short)
    final, lines, record = (
        (run_dir / "metrics.json").read_bytes(),
        (run_dir / "metrics.jsonl").read_bytes(),
        record_of(run_dir),
    )
    # Settings that do not shape the run (its evaluation) differ: a note naming them, exit 0.
    proc = train(run_dir, short, "eval.size=32")
    assert proc.returncode == 0 and "eval.size is 32 here, 64 there" in re.sub(r"\s+", " ", proc.stdout + proc.stderr)
    # Another strategy over it: refused in one line naming the setting; its record and report unchanged.
    proc = train(run_dir, short, "mining=none", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "holds a finished run of other settings (mining.name is none here, adversarial there" in proc.stderr
    assert (run_dir / "metrics.json").read_bytes() == final
    assert (run_dir / "metrics.jsonl").read_bytes() == lines
    assert record_of(run_dir) == record
    run_cli("ired-report", str(run_dir), cwd=run_dir.parent, check=True)
    assert [row["strategy"] for row in csv.DictReader(open(run_dir / "runs.csv"))] == ["adversarial"]


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_bad_checkpoint_is_reported_kept_and_fallback_is_opt_in(tmp_path, reference, damage):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 60)
    newest = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, newest)
    damaged = newest.read_bytes()

    proc = train(run_dir, check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and newest.name in err[0] and "checkpoint.fallback=true" in err[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert newest.read_bytes() == damaged  # reported, never overwritten

    train(run_dir, "checkpoint.fallback=true")
    set_aside = newest.with_name(newest.name + ".bad")
    assert set_aside.read_bytes() == damaged  # kept for inspection
    assert_same_result(run_dir, reference)  # resuming from the previous checkpoint is exact too


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 40)
    good = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    # A learning rate of 1e30 in the optimiser's saved state makes the first resumed step diverge.
    state = torch.load(good, weights_only=False)
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = 1e30
    torch.save(state, good)
    good_bytes = good.read_bytes()
    step = state["step"]

    proc = train(run_dir, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0], err
    # the step named is the first bad one: after the checkpoint, before the next check (log_every = 10)
    bad_step = int(re.search(r"at step (\d+)", err[0]).group(1))
    assert step < bad_step <= step + 10
    final = read_json(run_dir / "metrics.json")
    assert final["status"] == "failed" and "non-finite" in final["error"]
    assert sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1] == good
    assert good.read_bytes() == good_bytes
