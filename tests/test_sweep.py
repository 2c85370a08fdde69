"""Multiruns on this machine: the job list from the sweep definition, a failing job among finished
ones, the end-of-sweep table, re-launching into the same sweep directory, and submitit_local."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import TINY, read_json, read_jsonl, run_cli
from ired_mining.callbacks import shield_submitit_requeue
from ired_mining.sweep import SweepError, expected_jobs, job_states

# TINY without its hardware choice, so a test can pick its own.
TINY_ANY_HARDWARE = [a for a in TINY if not a.startswith("hardware=")]


def test_expected_jobs_raise_one_line_for_a_directory_that_is_no_sweep(tmp_path):
    with pytest.raises(SweepError, match="holds no multirun.yaml"):
        expected_jobs(tmp_path)


@pytest.mark.slow
def test_failing_job_leaves_the_others_and_a_relaunch_finds_every_job(tmp_path):
    """The study's grid preset (strategies from hydra.sweeper.params, seed from the shell) crossed with
    a valid and an invalid learning rate: 3 jobs finish, 3 fail with their error line, the exit code
    says so. Then one finished job is lost and another interrupted, and the same command re-launched
    into the same directory runs only what is not done."""
    sweep = tmp_path / "sweep"
    cmd = ["-m", *TINY, "experiment=mining_sweep", "seed=0", "optim.lr=1e-4,-1", f"hydra.sweep.dir={sweep}"]
    proc = run_cli("ired-train", *cmd, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr

    states = job_states(sweep)
    assert len(states) == 6  # mining (from the preset) × optim.lr; seed=0 from the shell replaces the preset's
    by_state = {s: [j for j in states if j["state"] == s] for s in ("finished", "failed")}
    assert {j["metrics"]["strategy"] for j in by_state["finished"]} == {"none", "random", "adversarial"}
    assert all("optim.lr=0.0001" in j["overrides"] for j in by_state["finished"])  # as Hydra spells it
    assert len(by_state["failed"]) == 3
    # the schema types optim.lr as a float, so the error names -1 as -1.0
    assert all(j["error"] == "optim.lr=-1.0 is invalid; it must be a number > 0" for j in by_state["failed"])
    for job in by_state["finished"]:
        assert read_json(f"{job['dir']}/metrics.json")["step"] == 20
        assert "mining=" in job["dir"] and "seed=0" in job["dir"]  # named from the overrides
    # The end table is printed and written; it names the failures with their error.
    assert "3 finished, 3 failed, 0 incomplete, 0 missing" in re.sub(r"\s+", " ", proc.stdout)
    table = (sweep / "jobs.md").read_text()
    assert table.count("| failed |") == 3 and "optim.lr=-1.0 is invalid" in table
    assert len(read_json(sweep / "jobs.json")) == 6

    # Lose one finished job, interrupt another after its first checkpoint; the table sees both.
    lost, cut, kept = by_state["finished"]
    shutil.rmtree(lost["dir"])
    (sweep / cut["dir"] / "metrics.json").unlink()
    (sweep / cut["dir"] / "checkpoints" / "step_000000020.pt").unlink()
    states_now = {j["num"]: j["state"] for j in job_states(sweep)}
    assert states_now[lost["num"]] == "missing" and states_now[cut["num"]] == "incomplete"
    rerun = run_cli("python", "-m", "ired_mining.sweep", str(sweep), cwd=tmp_path)
    assert rerun.returncode == 1 and "missing" in rerun.stdout and "incomplete" in rerun.stdout

    kept_before = (sweep / kept["dir"] / "metrics.json").read_text()
    proc = run_cli("ired-train", *cmd, cwd=tmp_path)
    assert proc.returncode == 1  # the invalid learning rate fails again
    after = {j["num"]: j for j in job_states(sweep)}
    assert [after[j["num"]]["state"] for j in (lost, cut, kept)] == ["finished"] * 3
    assert (sweep / kept["dir"] / "metrics.json").read_text() == kept_before  # left as it was
    assert "already holds a finished run" in (sweep / kept["dir"] / "train.log").read_text()
    assert "resumed from step 10" in (sweep / cut["dir"] / "train.log").read_text()
    finals = {k: v for k, v in after[cut["num"]]["metrics"].items() if "/" in k}
    assert finals == {k: v for k, v in cut["metrics"].items() if "/" in k}  # same metrics as before the cut
    assert [r["step"] for r in read_jsonl(sweep / cut["dir"] / "metrics.jsonl")] == [10, 20]


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    """3 strategies × 2 seeds, each job a separate process started by submitit on this machine."""
    sweep = tmp_path / "sweep"
    run_cli("ired-train", "-m", *TINY_ANY_HARDWARE, "mining=none,random,adversarial", "seed=0,1",
            "hardware=submitit_local", "hardware.device=cpu", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
            check=True)
    states = job_states(sweep)
    assert [j["state"] for j in states] == ["finished"] * 6
    assert {(j["metrics"]["strategy"], j["metrics"]["seed"]) for j in states} == {
        (m, s) for m in ("none", "random", "adversarial") for s in (0, 1)}
    for job in states:
        # submitit ran it: its log is under .submitit/<job id>/, and says the job completed.
        log = sweep / ".submitit" / job["job_id"] / f"{job['job_id']}_0_log.out"
        assert "Job completed successfully" in log.read_text()
        assert [r["step"] for r in read_jsonl(f"{job['dir']}/metrics.jsonl")] == [10, 20]


def test_a_child_of_the_requeue_handler_survives_the_requeues_sigterm():
    """What submitit's USR2 handler does (run `scontrol requeue`, which makes SLURM SIGTERM the job's
    processes) with a child that SIGTERMs itself: shielded, it lives, and SIGTERM is handled as before."""
    children = []

    def submitit_like(signum, frame):
        children.append(subprocess.run(["sh", "-c", "kill -TERM $$; echo survived"], capture_output=True, text=True))

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGUSR2, submitit_like)
        shield_submitit_requeue()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert children and children[0].stdout.strip() == "survived"
        assert signal.getsignal(signal.SIGTERM) == saved[signal.SIGTERM]
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
