"""Sweeps on a real SLURM cluster through the submitit launcher, and SLURM requeue resuming a run.

They need a cluster that answers `sinfo` with a node that fits a 1-CPU, 1-GB job: CI starts one with
`scripts/slurm_local.sh start` (root). Every job of a test carries a job name of its own, and the
test cancels whatever of it is still queued when it ends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ired_mining.sweep import JobState, expected_jobs, job_states, launcher_job_id

from conftest import BIN, TINY, read_json, read_jsonl, run_cli


def _no_cluster_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not installed; `sudo scripts/slurm_local.sh start` installs and starts a local cluster"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no SLURM cluster answers sinfo ({first}); start one with `sudo scripts/slurm_local.sh start`"
    return None


NO_CLUSTER = _no_cluster_reason()
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(NO_CLUSTER is not None, reason=str(NO_CLUSTER))]

TINY_ANY_HARDWARE = [a for a in TINY if not a.startswith("hardware=")]
# slurm_gpu with its GPU count overridden to 0 (the local cluster has none), sized to fit one CPU.
SLURM_GPU0 = [
    "hardware=slurm_gpu",
    "hardware.gpus_per_node=0",
    "hardware.device=cpu",
    "hardware.cpus_per_task=1",
    "hardware.mem_gb=1",
]


@pytest.fixture
def job_name():
    """A SLURM job name for this test alone; its jobs are cancelled when the test ends, passed or not."""
    name = f"ired-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=30)


def slurm_ids_of(states: list[JobState]) -> list[tuple[str, str]]:
    """(array job id, task id) of each job, from the id Hydra saved in its run directory."""
    ids = [re.fullmatch(r"(\d+)_(\d+)", s.job_id) for s in states]
    assert all(ids), [s.job_id for s in states]
    return [m.groups() for m in ids]


def test_sweep_of_strategies_and_seeds_runs_as_slurm_jobs(tmp_path, job_name):
    """Every strategy (a glob) × 2 seeds (a range): the jobs Hydra expanded, one array task each, listed
    at the end as Hydra ran them, with the report."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "ired-train",
        "-m",
        *TINY_ANY_HARDWARE,
        "mining=glob(*)",
        "seed=range(2)",
        *SLURM_GPU0,
        "hardware.partition=gpu",
        "hydra.launcher.timeout_min=10",
        f"hydra.launcher.name={job_name}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=400,
        check=True,
    )
    states = job_states(sweep)
    assert [s.state for s in states] == ["finished"] * 6
    assert [(s.metrics["strategy"], s.metrics["seed"]) for s in states] == [
        (m, seed) for m in ("adversarial", "none", "random") for seed in (0, 1)
    ]
    assert "6 finished, 0 failed, 0 incomplete, 0 missing" in re.sub(r"\s+", " ", proc.stdout)
    assert read_json(sweep / "jobs.json") == [s.to_json() for s in states] and (sweep / "summary.md").is_file()
    for state in states:  # the job's number and directory, as Hydra gave them inside the SLURM job
        hydra = OmegaConf.load(state.dir / ".hydra" / "hydra.yaml").hydra
        assert hydra.job.num == state.num and Path(hydra.runtime.output_dir) == state.dir.resolve()

    # One SLURM job array, one task per job, asked for what the shell said.
    ids = slurm_ids_of(states)
    (array_id,) = {a for a, _ in ids}
    assert sorted(int(t) for _, t in ids) == list(range(6))
    sbatch = (sweep / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    for flag in (
        "--partition=gpu",
        "--time=10",
        "--mem=1GB",
        "--cpus-per-task=1",
        "--gpus-per-node=0",
        f"--job-name={job_name}",
        "--array=0-5",
    ):
        assert flag in sbatch, flag
    for state in states:
        # Each ran inside SLURM (submitit's log names the array task) and wrote where Hydra said.
        log = sweep / ".submitit" / state.job_id / f"{state.job_id}_0_log.out"
        text = log.read_text()
        assert f"JobEnvironment(job_id={state.job_id}," in text and "Job completed successfully" in text
        assert state.dir.parent == sweep
        assert [r["step"] for r in read_jsonl(state.dir / "metrics.jsonl")] == [10, 20]


def test_failing_slurm_job_leaves_the_other_and_is_reported(tmp_path, job_name):
    """A learning rate of 1e30 makes the loss non-finite within a few steps: that job fails, the other
    finishes, the sweep exits 1 after a table that names the failure."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "ired-train",
        "-m",
        *TINY_ANY_HARDWARE,
        "mining=random",
        "optim.lr=1e-4,1e30",
        *SLURM_GPU0,
        f"hydra.launcher.name={job_name}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ok, bad = job_states(sweep)
    assert ok.state == "finished" and ok.metrics["step"] == 20
    assert bad.state == "failed" and "non-finite" in bad.error
    flat = re.sub(r"\s+", " ", proc.stdout)
    assert "1 finished, 1 failed" in flat and "non-finite" in flat
    slurm_ids_of([ok, bad])


# ---------------------------------------------------------------- requeue

# Long enough (~10 s of training at one thread on an idle 2-core machine) to interrupt after the first
# checkpoint, and for the run to be still going when SLURM kills it 5 s after a requeue (the local
# cluster's KillWait; submitit ignores the SIGTERM before it).
LONG = [a for a in TINY_ANY_HARDWARE if not a.startswith(("train.", "checkpoint."))] + [
    "train.steps=1500",
    "train.log_every=50",
    "train.eval_every=500",
    "checkpoint.every=50",
]


def wait_for(what: str, check, timeout: float = 120, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def squeue_state(slurm_id: str) -> str:
    proc = subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def release_after_requeue(slurm_id: str) -> None:
    """A requeued job waits two minutes before it may start again; let it start now."""
    wait_for(f"{slurm_id} to be pending again", lambda: squeue_state(slurm_id) == "PENDING", timeout=60)
    subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "StartTime=now"], check=True, timeout=30)


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "mine_ms")} for r in records]


def start_cli(tmp_path: Path, name: str, *args: str) -> subprocess.Popen:
    """ired-train in the background, its output in tmp_path/<name>.log."""
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [str(BIN / "ired-train"), *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120"},
        )


def test_requeued_jobs_resume_from_their_checkpoint_and_end_like_uninterrupted_runs(tmp_path, job_name):
    """Two jobs, each interrupted once a checkpoint exists: job 0 through submitit's own path (the
    USR2 that SLURM sends signal_delay_s before a time limit: submitit pickles the job and requeues
    it), job 1 by SLURM directly (`scontrol requeue`, what preemption with requeue does). Both resume
    from a checkpoint (never step 0) and end with the metrics of the same runs left alone."""
    sweep, reference = tmp_path / "sweep", tmp_path / "reference"
    procs = {
        "sweep": start_cli(
            tmp_path,
            "sweep",
            "-m",
            *LONG,
            "mining=random",
            "seed=0,1",
            *SLURM_GPU0,
            f"hydra.launcher.name={job_name}",
            f"hydra.sweep.dir={sweep}",
        ),
        # The same two runs, uninterrupted, on this machine with the same thread count, meanwhile.
        "reference": start_cli(
            tmp_path,
            "reference",
            "-m",
            *LONG,
            "mining=random",
            "seed=0,1",
            "hardware=cpu",
            "hardware.threads=1",
            f"hydra.sweep.dir={reference}",
        ),
    }
    try:
        jobs = wait_for("the sweep to start", lambda: (sweep / "multirun.yaml").exists() and expected_jobs(sweep))
        slurm_ids = []
        for job in jobs:
            wait_for(
                f"a checkpoint of job {job.num}", lambda job=job: list((job.dir / "checkpoints").glob("step_*.pt"))
            )
            slurm_ids.append(launcher_job_id(job.dir))
        interrupted_at = [
            len(read_jsonl(j.dir / "metrics.jsonl")) if (j.dir / "metrics.jsonl").exists() else 0 for j in jobs
        ]
        subprocess.run(["scancel", "--signal=USR2", slurm_ids[0]], check=True, timeout=30)
        subprocess.run(["scontrol", "requeue", slurm_ids[1]], check=True, timeout=30)
        for slurm_id in slurm_ids:
            release_after_requeue(slurm_id)
        for name, proc in procs.items():
            assert proc.wait(timeout=300) == 0, (tmp_path / f"{name}.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert interrupted_at == [0, 0], "a job got past its first evaluation before the interruption; lengthen LONG"
    submitit_log = [(sweep / ".submitit" / i / f"{i}_0_log.out").read_text() for i in slurm_ids]
    assert "Caught signal SIGUSR2" in submitit_log[0] and f"Requeued job {slurm_ids[0]}" in submitit_log[0]
    for job, ref, text in zip(jobs, expected_jobs(reference), submitit_log):
        assert text.count("Starting with JobEnvironment") == 2  # ran, was requeued, ran again
        resumed = re.findall(r"resumed from step (\d+)", (job.dir / "train.log").read_text())
        assert len(resumed) == 1 and 0 < int(resumed[0]) < 1500
        final, ref_final = read_json(job.dir / "metrics.json"), read_json(ref.dir / "metrics.json")
        assert final["status"] == "finished" and final["step"] == 1500
        assert {k: v for k, v in final.items() if "/" in k} == {k: v for k, v in ref_final.items() if "/" in k}
        records, ref_records = (without_timings(read_jsonl(d / "metrics.jsonl")) for d in (job.dir, ref.dir))
        assert [r["step"] for r in records] == [500, 1000, 1500]
        assert records == ref_records


# ---------------------------------------------------------------- the time limit's warning signal

# Tiny steps, evaluated only at the end, checkpointed only at the end (checkpoint.every beyond
# train.steps): a checkpoint at any other step can come only from the signal. Long enough to be
# still running when the signal comes (30-60 s after the start: ~3,000-5,000 steps at 80-120 steps/s,
# one thread on a loaded 2-core machine), short enough for the second run to finish in a few minutes.
UNTIL_THE_LIMIT = [a for a in TINY_ANY_HARDWARE if not a.startswith(("train.", "checkpoint."))] + [
    "train.steps=20000",
    "train.log_every=1000",
    "train.eval_every=0",
    "checkpoint.every=1000000",
    "mining=none",
    "seed=0",
]


def test_the_time_limits_signal_checkpoints_the_current_step_and_the_requeued_job_resumes_there(tmp_path, job_name):
    """A job with a 2-minute limit gets USR2 from SLURM signal_delay_s before it (SLURM may send it
    up to a minute early). The run writes a checkpoint at the step it had reached, submitit
    requeues it, and the job comes back (with a longer limit, set while it waits), resumes from
    exactly that step and finishes."""
    sweep = tmp_path / "sweep"
    proc = start_cli(
        tmp_path,
        "sweep",
        "-m",
        *UNTIL_THE_LIMIT,
        *SLURM_GPU0,
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        f"hydra.launcher.name={job_name}",
        f"hydra.sweep.dir={sweep}",
    )
    try:
        (job,) = wait_for("the sweep to start", lambda: (sweep / "multirun.yaml").exists() and expected_jobs(sweep))
        slurm_id = wait_for("the job to start", lambda: (job.dir / ".hydra").exists() and launcher_job_id(job.dir))
        wait_for(
            "the signal's checkpoint",
            lambda: "checkpoint written at step" in (job.dir / "train.log").read_text(),
            timeout=180,
            every=0.5,
        )
        # The job comes back with the same 2-minute limit: give the second run time to finish, and
        # let it start now rather than after SLURM's requeue delay.
        subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "TimeLimit=10"], check=True, timeout=30)
        wait_for(
            "the job to be pending or running again",
            lambda: "resumed from step" in (job.dir / "train.log").read_text() or squeue_state(slurm_id) == "PENDING",
            every=0.5,
        )
        if squeue_state(slurm_id) == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={slurm_id}", "StartTime=now"], check=True, timeout=30)
        assert proc.wait(timeout=480) == 0, (tmp_path / "sweep.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    submitit_log = (sweep / ".submitit" / slurm_id / f"{slurm_id}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in submitit_log and f"Requeued job {slurm_id}" in submitit_log
    assert submitit_log.count("Starting with JobEnvironment") == 2
    train_log = (job.dir / "train.log").read_text()
    (signalled,) = re.findall(r"SIGUSR2: checkpoint written at step (\d+)", train_log)
    assert 0 < int(signalled) < 20000
    assert re.findall(r"resumed from step (\d+)", train_log) == [signalled]
    final = read_json(job.dir / "metrics.json")
    assert final["status"] == "finished" and final["step"] == 20000
    assert [r["step"] for r in read_jsonl(job.dir / "metrics.jsonl")] == [20000]


# ---------------------------------------------------------------- launch and leave (hardware.wait=false)

SUBMITTED = re.compile(
    r"ired-train: submitted (\d+) jobs as SLURM array (\d+) into (\S+); job (\d+) writes the table "
    r"and the report once they end; watch: ired-sweep (\S+) \(or squeue -j \d+,\d+\)"
)


def submitted(stdout: str) -> tuple[int, str, Path, str]:
    """(jobs, array id, sweep dir, follow-up id) of the one line a detached launch prints per array."""
    (match,) = [m for m in map(SUBMITTED.fullmatch, stdout.splitlines()) if m]
    assert match[3] == match[5]
    return int(match[1]), match[2], Path(match[3]), match[4]


# Checkpointed early and often, so a job can be requeued after its first checkpoint (step 25) and still
# have 1,475 steps left: about 10 s of them on an idle 2-core Intel Xeon, minutes on a loaded machine. With
# 300 steps a fast CI machine once finished the run before the requeue reached it, and nothing resumed.
DETACHED = [a for a in TINY_ANY_HARDWARE if not a.startswith(("train.", "checkpoint."))] + [
    "train.steps=1500",
    "train.log_every=250",
    "train.eval_every=750",
    "checkpoint.every=25",
]


def test_a_detached_sweep_returns_and_the_cluster_ends_it_after_its_requeued_job(tmp_path, job_name):
    """hardware.wait=false: ired-train submits the array and a follow-up job, prints one line and exits 0
    while the jobs are queued. A job requeued mid-sweep holds the follow-up (afterany) until it has run
    again; meanwhile ired-sweep shows it requeued and a re-launch into the sweep is refused. Then the
    follow-up, on the cluster, writes the table and the report a waiting launch would have written, and a
    re-launch of the same command skips the finished runs."""
    sweep = tmp_path / "sweep"
    cmd = [
        "-m",
        *DETACHED,
        "mining=random",
        "seed=0,1",
        *SLURM_GPU0,
        "hardware.wait=false",
        f"hydra.launcher.name={job_name}",
        f"hydra.sweep.dir={sweep}",
    ]
    launch = run_cli("ired-train", *cmd, cwd=tmp_path, timeout=600, check=True)
    n_jobs, array_id, where, follow_up = submitted(launch.stdout)
    assert (n_jobs, where) == (2, sweep)
    # It returned with its jobs still to run (each trains for seconds): nothing of the end exists yet.
    assert squeue_state(follow_up) == "PENDING" and not (sweep / "jobs.md").exists()
    follow_up_script = (sweep / ".submitit" / follow_up / f"{follow_up}_submission.sh").read_text()
    assert f"--dependency=afterany:{array_id}\n" in follow_up_script and "--array" not in follow_up_script
    assert f"--job-name={job_name}\n" in follow_up_script  # scancel --name stops it with the array

    jobs = expected_jobs(sweep)
    assert all("wait" not in j.dir.name for j in jobs)  # hardware.wait stays out of the job names
    assert [launcher_job_id_or_recorded(sweep, j.num) for j in jobs] == [f"{array_id}_0", f"{array_id}_1"]
    wait_for(
        "a checkpoint of job 1", lambda: list((jobs[1].dir / "checkpoints").glob("step_*.pt")), timeout=600, every=0.05
    )
    requeued = f"{array_id}_1"
    # Requeued and held (as a pre-emption would requeue it), so that it stays pending however long job 0
    # takes; released below.
    subprocess.run(["scontrol", "requeuehold", requeued], check=True, timeout=30)
    wait_for(f"{requeued} to be pending again", lambda: squeue_state(requeued) == "PENDING", timeout=60)

    # The status command reads the sweep in flight: the requeued job as requeued, from squeue.
    status = run_cli("ired-sweep", str(sweep), cwd=tmp_path)
    assert status.returncode == 1, status.stdout + status.stderr
    flat = re.sub(r"\s+", " ", status.stdout)
    assert re.search(r"│ 1 │ seed=1 │ requeued │ SLURM " + requeued + r" pending, requeued 1×", flat), status.stdout
    assert f"the table and the report: SLURM job {follow_up}, pending (Dependency)" in flat
    assert not (sweep / "jobs.md").exists()  # the status command leaves the end's tables to the end

    # A re-launch while the sweep's jobs are queued is refused in one line, and leaves its records alone.
    records = {name: (sweep / name).read_text() for name in ("jobs.expected.json", "slurm_jobs.json", "multirun.yaml")}
    refused = run_cli("ired-train", *cmd, cwd=tmp_path, timeout=600)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"ired-train: error: {sweep} still has ") and requeued in refused.stderr
    assert {name: (sweep / name).read_text() for name in records} == records

    # Job 0 ends; the follow-up still waits for the requeued job.
    wait_for(
        "job 0 to finish",
        lambda: (jobs[0].dir / "metrics.json").exists() and squeue_state(f"{array_id}_0") == "",
        timeout=600,
        every=0.5,
    )
    assert squeue_state(follow_up) == "PENDING" and squeue_state(requeued) == "PENDING"
    assert not (sweep / "jobs.md").exists()
    subprocess.run(["scontrol", "release", requeued], check=True, timeout=30)
    subprocess.run(["scontrol", "update", f"jobid={requeued}", "StartTime=now"], check=True, timeout=30)
    wait_for("the follow-up job to write the table", lambda: (sweep / "jobs.json").exists(), timeout=1500, every=0.5)
    wait_for("the follow-up job to end", lambda: squeue_state(follow_up) == "", timeout=600, every=0.5)

    states = job_states(sweep)
    assert [s.state for s in states] == ["finished", "finished"]
    assert read_json(sweep / "jobs.json") == [s.to_json() for s in states] and (sweep / "summary.md").is_file()
    assert "2 finished, 0 failed, 0 incomplete, 0 missing" in (sweep / "jobs.md").read_text()
    # The table was written after the requeued job ended, and that job resumed from its checkpoint.
    assert (sweep / "jobs.json").stat().st_mtime >= (jobs[1].dir / "metrics.json").stat().st_mtime
    (resumed,) = re.findall(r"resumed from step (\d+)", (jobs[1].dir / "train.log").read_text())
    assert 0 < int(resumed) < 1500
    follow_up_log = (sweep / ".submitit" / follow_up / f"{follow_up}_0_log.out").read_text()
    assert (
        "2 finished, 0 failed" in re.sub(r"\s+", " ", follow_up_log) and "Job completed successfully" in follow_up_log
    )

    # The same command again, into the finished sweep: accepted, and its finished runs are left alone.
    finals = [(j.dir / "metrics.json").read_text() for j in jobs]
    table_before = (sweep / "jobs.json").stat().st_mtime_ns
    again = run_cli("ired-train", *cmd, cwd=tmp_path, timeout=600, check=True)
    _, second_array, _, second_follow_up = submitted(again.stdout)
    assert second_array != array_id
    wait_for(
        "the second follow-up job to end",
        lambda: (sweep / "jobs.json").stat().st_mtime_ns != table_before and squeue_state(second_follow_up) == "",
        timeout=1500,
        every=0.5,
    )
    assert [(j.dir / "metrics.json").read_text() for j in jobs] == finals
    assert all("already holds a finished run" in (j.dir / "train.log").read_text() for j in jobs)
    assert [s["state"] for s in read_json(sweep / "jobs.json")] == ["finished", "finished"]


def launcher_job_id_or_recorded(sweep: Path, num: int) -> str:
    """A job's SLURM id as the launcher recorded it at submission (slurm_jobs.json)."""
    from ired_mining.slurm_queue import slurm_ids

    return slurm_ids(sweep)[num]
