"""A multirun's jobs and how each one ended.

    ired-sweep multirun/2026-01-01/12-00-00     # the table of job states, at any time
    python -m ired_mining.sweep multirun/2026-01-01/12-00-00     # the same

The jobs are those Hydra itself expanded at launch: ired-train's sweeper records each job's number,
overrides and run directory in <sweep dir>/jobs.expected.json before any job starts (jobs_record.py),
so every form the basic sweeper accepts (value lists, range, glob, choice, sort, shuffle, presets that
set hydra.sweeper.params, and their mixtures) is listed as it ran. A job that never started is
therefore listed as missing, never silently absent. A sweep dir without that record (launched before
it existed, or with another sweeper) is expanded again from its multirun.yaml (ired_mining.expansion,
the one expansion the sweeper and compose use too), which works for every form but glob.

A job's state is read from its run directory (through ired_mining.rundir):
    finished    metrics.json says finished
    failed      metrics.json says failed; its error line is kept
    incomplete  the job started (.hydra/ exists) but wrote no final state: killed, timed out, or
                still running
    missing     no run directory

While a SLURM job of the sweep is in the queue (its id recorded by the launcher, ired_mining.slurm_queue;
read with squeue where there is one), the status command shows the queue's word instead:
    running     SLURM runs it
    pending     waiting to start
    requeued    ran, and waits to run again (a time limit, a pre-emption): it resumes from its checkpoint
The end-of-sweep table (jobs.md, jobs.json) is made once no job is queued, from the directories alone.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from ired_mining.rundir import FAILED, FINISHED, INCOMPLETE, RunDir
from ired_mining.slurm_queue import Queued, queue, read_launches, slurm_ids

MISSING = "missing"  # no run directory: the one state a sweep adds to those of a run (rundir)
STATES = (FINISHED, FAILED, INCOMPLETE, MISSING)
QUEUE_STATES = ("running", "pending", "requeued")  # only while the job is in SLURM's queue


class SweepError(ValueError):
    """A directory that cannot be read as a sweep; the message is one line for the user."""


@dataclass(frozen=True)
class Job:
    num: int  # Hydra's job number (also the task index of a submitit job array)
    overrides: tuple[str, ...]  # the job's task overrides, e.g. ("mining=none", "seed=0")
    dir: Path  # its run directory


# ================================================================ the sweep's jobs


def expected_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job the sweep in `sweep_dir` defines, in Hydra's job order."""
    from ired_mining.jobs_record import RECORD, matches, read_record

    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        raise SweepError(f"{sweep_dir} is not a sweep directory: it holds no multirun.yaml")
    cfg = OmegaConf.load(path)
    params = OmegaConf.to_container(
        OmegaConf.select(cfg, "hydra.sweeper.params") or OmegaConf.create({}), resolve=False
    )
    task = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)
    try:
        record = read_record(sweep_dir)
    except ValueError as err:
        raise SweepError(str(err)) from err
    if record is not None and matches(record, task, params):
        return [Job(j.num, j.overrides, sweep_dir / j.subdir) for j in record.jobs]
    try:
        return _expanded_again(sweep_dir, cfg, params, task)
    except SweepError as err:
        why = "is not from its launch" if record is not None else "is not there"
        raise SweepError(f"{err} ({sweep_dir / RECORD}, the jobs Hydra expanded, {why})") from err


def _expanded_again(sweep_dir: Path, cfg, params: dict, task: list) -> list[Job]:
    """The jobs of multirun.yaml, expanded again outside the launch (ired_mining.expansion): for
    sweep dirs without a record. Without Hydra's config loader, glob(...) cannot be expanded."""
    # A Hydra internal, pinned by hydra-core<1.4; imported here so that reading states stays light.
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.errors import HydraException

    from ired_mining import expansion
    from ired_mining.jobs_record import job_names, named_by_the_sweeper

    naming = cfg.hydra.job.config.override_dirname
    try:
        expanded = expansion.jobs(expansion.parse(expansion.arguments(params, task)))
        # ired-train's sweeper names jobs itself where the subdir is config.yaml's default.
        sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
        own_names = "ired_sweeper" in sweeper and named_by_the_sweeper(cfg)
        names = job_names(expanded, list(naming.exclude_keys)) if own_names else None
        jobs = []
        for num, overrides in enumerate(expanded):
            dirname = get_overrides_dirname(
                expansion.parse(overrides), list(naming.exclude_keys), naming.item_sep, naming.kv_sep
            )
            subdir = names[num] if names else _subdir(cfg, dirname, num)
            jobs.append(Job(num, tuple(overrides), sweep_dir / subdir))
    except HydraException as err:
        raise SweepError(f"cannot expand the sweep of {sweep_dir / 'multirun.yaml'}: {err}") from err
    return jobs


def _subdir(cfg, override_dirname: str, num: int) -> str:
    """hydra.sweep.subdir of one job: the override string unless the user configured another name."""
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir", "")
    if raw == "${hydra.job.override_dirname}":
        return override_dirname
    job_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    job_cfg.hydra.job.override_dirname = override_dirname
    job_cfg.hydra.job.num = num
    try:
        return str(job_cfg.hydra.sweep.subdir)
    except Exception as err:  # e.g. a resolver that only exists inside a running Hydra app
        raise SweepError(
            f"cannot tell the job directories: hydra.sweep.subdir={raw} does not resolve outside the sweep ({err})"
        ) from err


# ================================================================ their states


@dataclass(frozen=True)
class InQueue:
    """A job that SLURM still holds, as the status command shows it."""

    queued: Queued  # squeue's line of it
    evaluated_step: int | None  # the step of the latest evaluation in its metrics.jsonl, or None

    def to_json(self) -> dict:
        q = self.queued
        return {
            "id": q.slurm_id,
            "state": q.state,
            "restarts": q.restarts,
            "reason": q.reason,
            "evaluated_step": self.evaluated_step,
        }


@dataclass(frozen=True)
class JobState:
    """One job and how it stands: the record behind a line of the job table and of jobs.json."""

    num: int  # Hydra's job number
    overrides: tuple[str, ...]  # the job's task overrides
    dir: Path  # its run directory
    job_id: str  # the launcher's (SLURM's) id of the job that last ran there, "" if none ran
    state: str  # one of STATES, or of QUEUE_STATES while SLURM holds the job (with_queue)
    error: str  # one line; "" for a finished job
    metrics: dict  # the run's metrics.json (empty unless the job wrote one)
    slurm: InQueue | None = None  # while SLURM holds the job (with_queue)

    @property
    def name(self) -> str:
        return " ".join(self.overrides)

    def to_json(self) -> dict:
        """The job as jobs.json holds it."""
        out = {
            "num": self.num,
            "name": self.name,
            "overrides": list(self.overrides),
            "dir": str(self.dir),
            "job_id": self.job_id,
            "state": self.state,
            "error": self.error,
            "metrics": self.metrics,
        }
        return out | ({"slurm": self.slurm.to_json()} if self.slurm is not None else {})


def job_state(job: Job) -> JobState:
    """One job's state, as its run directory tells it."""
    final = RunDir(job.dir).final_state()
    state, error, metrics = (final.status, final.error, final.summary) if final else (MISSING, "", {})
    return JobState(job.num, job.overrides, job.dir, launcher_job_id(job.dir), state, error, metrics)


def launcher_job_id(job_dir: Path) -> str:
    """The launcher's id of the job that last ran in `job_dir` (with SLURM: ARRAYID_TASK), or ""."""
    hydra_yaml = RunDir(job_dir).hydra_yaml
    if not hydra_yaml.is_file():
        return ""
    return str(OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.job.id", default="") or "")


def job_states(sweep_dir: str | Path) -> list[JobState]:
    """The state of every job the sweep in `sweep_dir` defines."""
    return [job_state(job) for job in expected_jobs(sweep_dir)]


def with_queue(states: list[JobState], sweep_dir: str | Path) -> tuple[list[JobState], list[Queued] | None]:
    """The states with those of jobs still in SLURM's queue replaced by the queue's (running,
    pending, requeued, with their `slurm`), and the sweep's follow-up jobs still queued. The
    follow-ups are None when the queue cannot be read; then the states are returned as they are.
    Raises ValueError, one line, for an unreadable slurm_jobs.json."""
    launches = read_launches(sweep_dir)
    listed = queue([i for launch in launches for i in launch.ids()])
    if listed is None:
        return states, None
    ids = slurm_ids(sweep_dir)
    out = []
    for s in states:
        q = listed.get(ids.get(s.num, ""))
        if q is not None and q.sweep_state is not None:
            evaluated = [r["step"] for r in RunDir(s.dir).read_metrics()]  # how far it got so far
            in_queue = InQueue(q, evaluated[-1] if evaluated else None)
            s = replace(s, state=q.sweep_state, error="", metrics={}, slurm=in_queue)
        out.append(s)
    follow_ups = [
        listed[launch.follow_up_id]
        for launch in launches
        if launch.follow_up_id in listed and listed[launch.follow_up_id].sweep_state is not None
    ]
    return out, follow_ups


def unfinished(states: list[JobState]) -> list[JobState]:
    return [s for s in states if s.state != FINISHED]


# ================================================================ the table


def varying_overrides(states: list[JobState]) -> list[str]:
    """Each job's overrides less those every job shares: what tells the jobs apart."""
    common = set.intersection(*(set(s.overrides) for s in states)) if len(states) > 1 else set()
    return [" ".join(o for o in s.overrides if o not in common) or "(no overrides)" for s in states]


def _result(state: JobState) -> str:
    m = state.metrics
    if state.slurm is not None:
        q, step = state.slurm.queued, state.slurm.evaluated_step
        return (
            f"SLURM {q.slurm_id} {q.state.lower()}"
            + (f", requeued {q.restarts}×" if q.restarts else "")
            + (f" ({q.reason})" if q.reason not in ("", "None") else "")
            + (f", evaluated at step {step}" if step is not None else "")
        )
    if state.state == FINISHED and "in_dist/mse" in m:
        return f"{m.get('step', '?')} steps, in_dist MSE {m['in_dist/mse']:.4g}"
    return state.error


def counts(states: list[JobState]) -> str:
    """Every state of a run directory, and those of the queue that some job is in."""
    shown = list(STATES) + [k for k in QUEUE_STATES if any(s.state == k for s in states)]
    return ", ".join(f"{sum(s.state == k for s in states)} {k}" for k in shown)


def print_table(states: list[JobState], sweep_dir: str | Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {
        FINISHED: "green",
        FAILED: "red",
        INCOMPLETE: "yellow",
        MISSING: "red",
        "running": "blue",
        "pending": "cyan",
        "requeued": "magenta",
    }
    table = Table(title=f"jobs of {sweep_dir}: {counts(states)}")
    for col in ("#", "job", "state", "result / error"):
        table.add_column(col, justify="right" if col == "#" else "left", overflow="fold")
    for s, name in zip(states, varying_overrides(states)):
        table.add_row(str(s.num), escape(name), f"[{colour[s.state]}]{s.state}[/]", escape(_result(s)))
    Console().print(table)


def markdown_table(states: list[JobState], sweep_dir: str | Path) -> str:
    lines = [
        f"# Jobs of {sweep_dir}",
        "",
        counts(states),
        "",
        "| # | job | state | result / error | directory |",
        "|---|---|---|---|---|",
    ]
    for s, name in zip(states, varying_overrides(states)):
        cells = [str(s.num), name, s.state, _result(s), s.dir.name or "."]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(states: list[JobState], sweep_dir: str | Path) -> None:
    """jobs.md (for people) and jobs.json (for programs) in the sweep directory."""
    from ired_mining.checkpoint import atomic_write_json, atomic_write_text

    sweep_dir = Path(sweep_dir)
    atomic_write_text(sweep_dir / "jobs.md", markdown_table(states, sweep_dir))
    atomic_write_json(sweep_dir / "jobs.json", [s.to_json() for s in states])


def main(argv: list[str] | None = None) -> int:
    """ired-sweep DIR: the table of job states, with SLURM's queue where there is one. Once no job
    of the sweep is queued, it also writes jobs.md and jobs.json (as the end of the sweep does).
    Exit 0 when every job finished, 1 otherwise, 2 for a directory that is no sweep."""
    args = sys.argv[1:] if argv is None else argv
    prog = "ired-sweep" if Path(sys.argv[0]).name == "ired-sweep" else "ired_mining.sweep"
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: ired-sweep SWEEP_DIR   (or python -m ired_mining.sweep SWEEP_DIR)", file=sys.stderr)
        return 2
    try:
        states, follow_ups = with_queue(job_states(args[0]), args[0])
    except ValueError as err:  # SweepError, or slurm_jobs.json unreadable
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    print_table(states, args[0])
    for q in follow_ups or []:
        print(
            f"the table and the report: SLURM job {q.slurm_id}, {q.state.lower()}"
            + (f" ({q.reason})" if q.reason not in ("", "None") else "")
        )
    if not follow_ups and not any(s.state in QUEUE_STATES for s in states):
        write_tables(states, args[0])
    return 1 if unfinished(states) else 0


if __name__ == "__main__":
    sys.exit(main())
