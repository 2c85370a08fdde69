"""Multiruns on this machine: every form of sweep the basic sweeper accepts, its jobs listed as Hydra
ran them (jobs.expected.json, jobs.json, jobs.md, the report), a failing and a missing job among
finished ones, re-launching into the same sweep directory, and submitit_local."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ired_mining.callbacks import shield_submitit_requeue
from ired_mining.slurm_queue import Launch, Queued, record_launch
from ired_mining.sweep import SweepError, expected_jobs, job_states

from conftest import TINY, read_json, read_jsonl, run_cli

# TINY without its hardware choice, so a test can pick its own.
TINY_ANY_HARDWARE = [a for a in TINY if not a.startswith("hardware=")]
# TINY cut to 4 steps: these sweeps test the job list, not training.
QUICK = [a for a in TINY if not a.startswith(("train.steps=", "train.eval_every=", "checkpoint.every="))] + [
    "train.steps=4",
    "train.eval_every=4",
    "checkpoint.every=4",
]
RECORD = "jobs.expected.json"

# Each form of sweep the basic sweeper accepts: the shell's sweep arguments, and the overrides that
# tell its jobs apart, in Hydra's job order (glob lists a group's options sorted; params of a preset
# come before the shell's arguments).
FORMS = {
    "list": (["mining=none,random"], [["mining=none"], ["mining=random"]]),
    "range": (["seed=range(1,3)"], [["seed=1"], ["seed=2"]]),
    "glob": (["mining=glob(*)"], [["mining=adversarial"], ["mining=none"], ["mining=random"]]),
    "choice": (["mining=choice(random,none)"], [["mining=random"], ["mining=none"]]),
    "sort": (["seed=sort(1,3,2,reverse=true)"], [["seed=3"], ["seed=2"], ["seed=1"]]),
    "tag": (["seed=tag(seeds,range(2))"], [["seed=0"], ["seed=1"]]),
    "preset": (["experiment=mining_sweep", "seed=0"], [["mining=none"], ["mining=random"], ["mining=adversarial"]]),
    "own subdir": (
        ["mining=none,random", "hydra.sweep.subdir=job_${hydra.job.num}"],
        [["mining=none"], ["mining=random"]],
    ),
}


def assert_jobs_as_hydra_ran_them(sweep: Path, jobs: list[dict]) -> None:
    """jobs (jobs.json's list) names exactly the run directories Hydra made, each with the number and
    overrides Hydra gave that job (read back from what Hydra wrote in it), and jobs.md a row for each."""
    assert [j["num"] for j in jobs] == list(range(len(jobs)))
    assert {Path(j["dir"]) for j in jobs} == {p.parent for p in sweep.glob("*/.hydra")}
    for job in jobs:
        hydra = OmegaConf.load(Path(job["dir"]) / ".hydra" / "hydra.yaml").hydra
        assert hydra.job.num == job["num"]
        assert Path(hydra.runtime.output_dir) == Path(job["dir"]).resolve()
        assert list(OmegaConf.load(Path(job["dir"]) / ".hydra" / "overrides.yaml")) == job["overrides"]
    table = (sweep / "jobs.md").read_text()
    assert all(f"| {Path(j['dir']).name} |" in table for j in jobs)


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_each_sweep_form_lists_its_jobs_as_hydra_ran_them(tmp_path, form):
    sweep_args, expected = FORMS[form]
    sweep = tmp_path / "sweep"
    shell = [*QUICK, *sweep_args, f"hydra.sweep.dir={sweep}"]
    proc = run_cli("ired-train", "-m", *shell, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = read_json(sweep / "jobs.json")
    assert [[o for o in j["overrides"] if o not in shell] for j in jobs] == expected
    assert [j["state"] for j in jobs] == ["finished"] * len(expected)
    assert_jobs_as_hydra_ran_them(sweep, jobs)
    if form == "own subdir":
        assert [Path(j["dir"]).name for j in jobs] == ["job_0", "job_1"]
    else:  # named by the overrides that tell the jobs apart: none of QUICK's shared settings, no hardware
        assert [Path(j["dir"]).name for j in jobs] == [",".join(sorted(varying)) for varying in expected]
    assert f"{len(expected)} finished, 0 failed" in re.sub(r"\s+", " ", proc.stdout)
    assert (sweep / "summary.md").is_file()
    # The sweep ends saying where its report is and what it concluded, each on one line.
    verdict = read_json(sweep / "summary.json")["verdict"]
    assert f"report: {sweep / 'summary.md'}" in proc.stdout + proc.stderr
    assert f"verdict: {verdict['outcome']}: " in proc.stdout + proc.stderr

    # A sweep dir without the record (an older ired-train's) is expanded again from multirun.yaml:
    # the same jobs, but for glob, which only the launching Hydra can expand.
    (sweep / RECORD).rename(tmp_path / RECORD)
    if form == "glob":
        with pytest.raises(SweepError, match=f"ConfigLoader.*{RECORD}.*is not there"):
            expected_jobs(sweep)
    else:
        assert [str(j.dir) for j in expected_jobs(sweep)] == [j["dir"] for j in jobs]


@pytest.mark.slow
def test_shuffled_sweep_keeps_hydras_job_numbers(tmp_path):
    """shuffle() orders the jobs at random: the list is Hydra's own, not a second expansion."""
    sweep = tmp_path / "sweep"
    run_cli("ired-train", "-m", *QUICK, "seed=shuffle(range(4))", f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=True)
    jobs = read_json(sweep / "jobs.json")
    assert sorted(o for j in jobs for o in j["overrides"] if o.startswith("seed=")) == [f"seed={i}" for i in range(4)]
    assert_jobs_as_hydra_ran_them(sweep, jobs)


def test_job_names_are_what_tells_the_jobs_apart():
    from ired_mining.jobs_record import NAME_LIMIT, job_names

    shared = ["train.steps=500", "eval.size=64", "hardware=cpu"]
    jobs = [shared + [f"mining={m}", f"seed={s}"] for m in ("none", "random") for s in (0, 1)]
    assert job_names(jobs, ["hardware"]) == [
        "mining=none,seed=0",
        "mining=none,seed=1",
        "mining=random,seed=0",
        "mining=random,seed=1",
    ]
    # One job: nothing varies, so its own overrides name it (hardware apart), sorted as Hydra sorts them.
    assert job_names([shared + ["+grid=c1_k2"]], ["hardware"]) == ["+grid=c1_k2,eval.size=64,train.steps=500"]
    # Fifteen long overrides: cut, and a hash of the whole keeps two such jobs apart.
    many = [f"model.option_number_{i}=value_{i}" for i in range(15)]
    names = job_names([many + ["seed=0"], many + ["seed=1"]], [])
    assert names == ["seed=0", "seed=1"]
    one, other = job_names([many + ["seed=0"]], []), job_names([many + ["seed=1"]], [])
    assert len(one[0]) == NAME_LIMIT == len(other[0]) and one[0][:80] == other[0][:80] and one != other
    # The same overrides twice (seed=0,0) still get two directories; odd characters become _.
    assert job_names([["seed=0"], ["seed=0"]], []) == ["seed=0", "seed=0-1"]
    assert job_names([["eval.splits={mid:0.25}"]], []) == ["eval.splits=_mid_0.25_"]


def test_a_job_directory_too_long_to_make_is_one_line_before_anything_is_written(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "ired-train",
        "-m",
        *QUICK,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweep.subdir={'y' * name_max}_${{hydra.job.num}}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "ired-train: error: hydra.sweep.subdir: job 0's directory "
        f"cannot be made: its name {'y' * 60}… is {name_max + 2} bytes"
    )
    assert not sweep.exists()


def test_an_interval_is_refused_in_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("ired-train", "-m", *QUICK, "optim.lr=interval(1e-4,1e-3)", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("ired-train: error: optim.lr=interval(1e-4,1e-3): ")
    assert "Traceback" not in proc.stdout
    assert not sweep.exists()


def test_expected_jobs_raise_one_line_for_a_directory_that_is_no_sweep(tmp_path):
    with pytest.raises(SweepError, match="holds no multirun.yaml"):
        expected_jobs(tmp_path)


@pytest.mark.slow
def test_mixed_sweep_with_a_failing_and_a_missing_job_and_a_relaunch(tmp_path):
    """The study's grid preset (its hydra.sweeper.params) with a glob, a range and a choice from the
    shell that replace and extend it: of the 8 jobs, those with a valid learning rate finish, the 4 with
    lr=-1 fail with their error line, and the exit code says so. Then one finished job is lost and
    another interrupted: the table sees them missing and incomplete, and the same command re-launched
    into the same directory runs only what is not done, under the same record."""
    sweep = tmp_path / "sweep"
    cmd = [
        "-m",
        *TINY,
        "experiment=mining_sweep",
        "mining=glob(*,exclude=adversarial)",
        "seed=range(2)",
        "optim.lr=choice(1e-4,-1)",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli("ired-train", *cmd, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr

    states = read_json(sweep / "jobs.json")
    # The preset's keys first (mining, seed: their values from the shell), then the shell's own.
    assert [j["overrides"][:2] + j["overrides"][-1:] for j in states] == [
        [f"mining={m}", f"seed={s}", f"optim.lr={lr}"]
        for m in ("none", "random")
        for s in (0, 1)
        for lr in ("0.0001", "-1")
    ]  # as Hydra spells the values
    assert_jobs_as_hydra_ran_them(sweep, states)
    by_state = {s: [j for j in states if j["state"] == s] for s in ("finished", "failed")}
    assert [j["num"] for j in by_state["finished"]] == [0, 2, 4, 6]
    assert {(j["metrics"]["strategy"], j["metrics"]["seed"]) for j in by_state["finished"]} == {
        (m, s) for m in ("none", "random") for s in (0, 1)
    }
    assert [j["num"] for j in by_state["failed"]] == [1, 3, 5, 7]
    # the schema types optim.lr as a float, so the error names -1 as -1.0
    assert all(j["error"] == "optim.lr=-1.0 is invalid; it must be a number > 0" for j in by_state["failed"])
    for job in by_state["finished"]:
        assert read_json(f"{job['dir']}/metrics.json")["step"] == 20
    # The end table is printed and written; it names the failures with their error; the report is written.
    assert "4 finished, 4 failed, 0 incomplete, 0 missing" in re.sub(r"\s+", " ", proc.stdout)
    table = (sweep / "jobs.md").read_text()
    assert table.count("| failed |") == 4 and "optim.lr=-1.0 is invalid" in table
    assert (sweep / "summary.md").is_file()
    record = (sweep / RECORD).read_text()

    # Lose one finished job, interrupt another after its first checkpoint; the table sees both.
    lost, cut, kept, _ = by_state["finished"]
    shutil.rmtree(lost["dir"])
    (sweep / cut["dir"] / "metrics.json").unlink()
    (sweep / cut["dir"] / "checkpoints" / "step_000000020.pt").unlink()
    rerun = run_cli("python", "-m", "ired_mining.sweep", str(sweep), cwd=tmp_path)
    assert rerun.returncode == 1
    assert "2 finished, 4 failed, 1 incomplete, 1 missing" in re.sub(r"\s+", " ", rerun.stdout)
    states_now = {j["num"]: j["state"] for j in read_json(sweep / "jobs.json")}
    assert states_now[lost["num"]] == "missing" and states_now[cut["num"]] == "incomplete"
    assert {j.num: j.state for j in job_states(sweep)} == states_now  # what ired-report reads

    kept_before = (sweep / kept["dir"] / "metrics.json").read_text()
    proc = run_cli("ired-train", *cmd, cwd=tmp_path)
    assert proc.returncode == 1  # the invalid learning rate fails again
    assert (sweep / RECORD).read_text() == record  # the same launch, the same record
    after = {j.num: j for j in job_states(sweep)}
    assert [after[j["num"]].state for j in (lost, cut, kept)] == ["finished"] * 3
    assert (sweep / kept["dir"] / "metrics.json").read_text() == kept_before  # left as it was
    assert "already holds a finished run" in (sweep / kept["dir"] / "train.log").read_text()
    assert "resumed from step 10" in (sweep / cut["dir"] / "train.log").read_text()
    finals = {k: v for k, v in after[cut["num"]].metrics.items() if "/" in k}
    assert finals == {k: v for k, v in cut["metrics"].items() if "/" in k}  # same metrics as before the cut
    assert [r["step"] for r in read_jsonl(sweep / cut["dir"] / "metrics.jsonl")] == [10, 20]

    # A record from another launch than multirun.yaml's (a later one with hydra/sweeper=basic) is not
    # used; without a usable record, a glob sweep cannot be expanded again: one line, naming the record.
    stale = read_json(sweep / RECORD)
    stale["task_overrides"] = stale["task_overrides"][:-1]
    (sweep / RECORD).write_text(json.dumps(stale))
    for why in ("is not from its launch", "is not there"):
        rerun = run_cli("python", "-m", "ired_mining.sweep", str(sweep), cwd=tmp_path)
        assert rerun.returncode == 2 and len(rerun.stderr.strip().splitlines()) == 1, rerun.stderr
        assert rerun.stderr.startswith("ired_mining.sweep: error: ")
        assert f"{RECORD}, the jobs Hydra expanded, {why}" in rerun.stderr
        (sweep / RECORD).unlink(missing_ok=True)


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    """Every strategy (a glob) × 2 seeds (a range), each job a separate process started by submitit on
    this machine; the end table and the report list them as Hydra expanded them."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "ired-train",
        "-m",
        *TINY_ANY_HARDWARE,
        "mining=glob(*)",
        "seed=range(2)",
        "hardware=submitit_local",
        "hardware.device=cpu",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=True,
    )
    assert "6 finished, 0 failed, 0 incomplete, 0 missing" in re.sub(r"\s+", " ", proc.stdout)
    states = read_json(sweep / "jobs.json")
    assert [[o for o in j["overrides"] if o.startswith(("mining=", "seed="))] for j in states] == [
        [f"mining={m}", f"seed={s}"] for m in ("adversarial", "none", "random") for s in (0, 1)
    ]
    assert [j["state"] for j in states] == ["finished"] * 6
    assert_jobs_as_hydra_ran_them(sweep, states)
    assert (sweep / "summary.md").is_file()
    assert {(j["metrics"]["strategy"], j["metrics"]["seed"]) for j in states} == {
        (m, s) for m in ("none", "random", "adversarial") for s in (0, 1)
    }
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


# ---------------------------------------------------------------- hardware.wait, ired-sweep


def test_wait_is_a_key_of_the_slurm_choices_that_reaches_their_launcher(tmp_path):
    proc = run_cli(
        "ired-train", "hardware=slurm_cpu", "hardware.wait=false", "--cfg", "all", "--resolve", cwd=tmp_path, check=True
    )
    launcher = OmegaConf.create(proc.stdout).hydra.launcher
    assert launcher._target_ == "hydra_plugins.ired_launcher.IredSlurmLauncher" and launcher.wait is False
    default = run_cli("ired-train", "hardware=slurm_gpu", "--cfg", "all", "--resolve", cwd=tmp_path, check=True)
    assert OmegaConf.create(default.stdout).hydra.launcher.wait is True  # waiting stays the default
    for args, named in (
        (["hardware=cpu", "hardware.wait=false"], "hardware.wait: not a key of hardware"),
        (["hardware=slurm_cpu", "hardware.wait=soon"], "hardware.wait: got 'soon'"),
    ):
        bad = run_cli("ired-train", *args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()], bad.stderr
        assert bad.stderr.startswith(f"ired-train: error: {named}"), bad.stderr


@pytest.mark.parametrize(
    "state,restarts,shown",
    [
        ("PENDING", 0, "pending"),
        ("PENDING", 2, "requeued"),
        ("REQUEUE_HOLD", 1, "requeued"),
        ("REQUEUED", 1, "requeued"),
        ("RUNNING", 0, "running"),
        ("RUNNING", 1, "running"),
        ("COMPLETING", 0, None),
        ("CANCELLED", 0, None),
    ],
)
def test_a_queued_jobs_state_in_the_sweeps_words(state, restarts, shown):
    """A job pending after a restart is one SLURM requeued; a job on its way out is left to its run directory."""
    assert Queued("7_1", state, restarts, "None").sweep_state == shown


@pytest.mark.slow
def test_ired_sweep_reads_a_sweep_and_says_a_bad_one_in_one_line(tmp_path):
    not_a_sweep = run_cli("ired-sweep", str(tmp_path), cwd=tmp_path)
    assert not_a_sweep.returncode == 2 and not_a_sweep.stderr.startswith("ired-sweep: error: ")
    assert len(not_a_sweep.stderr.strip().splitlines()) == 1

    sweep = tmp_path / "sweep"
    run_cli("ired-train", "-m", *QUICK, "mining=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=True)
    (sweep / "jobs.md").unlink()
    # Submitted long ago: SLURM (where there is one) no longer lists the array, so its directory tells.
    record_launch(sweep, Launch("999999", (0,), "1000000"))
    status = run_cli("ired-sweep", str(sweep), cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "1 finished, 0 failed, 0 incomplete, 0 missing" in re.sub(r"\s+", " ", status.stdout)
    assert [j["state"] for j in read_json(sweep / "jobs.json")] == ["finished"] and (sweep / "jobs.md").is_file()

    (sweep / "slurm_jobs.json").write_text('{"version": 1, "launches": [{"nums": [0]}]}')
    broken = run_cli("ired-sweep", str(sweep), cwd=tmp_path)
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert broken.stderr.startswith(f"ired-sweep: error: {sweep / 'slurm_jobs.json'} cannot be read: ")
