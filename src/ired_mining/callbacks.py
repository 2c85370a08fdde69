"""Hydra callbacks of ired-train: the end of a multirun (the table of every job's state, then the
study's report), and a guard for submitit's requeue at the start of each SLURM job.

Registered in conf/config.yaml under hydra.callbacks. Hydra calls on_multirun_end in the launching
process once the launcher has the results of all jobs (basic launcher and submitit alike), and
on_job_start inside each job. The jobs listed are those Hydra expanded at launch, as the sweeper
recorded them (hydra_plugins/ired_sweeper, read through sweep.job_states).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ired_mining import preemption
from ired_mining.slurm_queue import detached
from ired_mining.sweep import SweepError, job_states, print_table, unfinished, write_tables

log = logging.getLogger("ired")

# The jobs of the multirun that last ended in this process without finishing (None: no multirun
# ended yet). train.main() turns a non-empty list into a non-zero exit code: the jobs themselves
# return their failure rather than raising, so that one bad job does not stop the sweep.
_last_unfinished: list[str] | None = None


def last_unfinished() -> list[str]:
    return list(_last_unfinished or [])


class SweepSummary(Callback):
    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            shield_submitit_requeue()
            preemption.install()  # checkpoint at the current step before submitit requeues

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global _last_unfinished
        if detached(config):
            # The jobs were only submitted: the cluster's follow-up job ends the sweep (end_of_sweep).
            _last_unfinished = []
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        # Hydra turns an exception in a callback into a warning and exits 0, so a broken summary
        # is recorded as a failure here rather than lost.
        _last_unfinished = [f"the summary of {sweep_dir}"]
        try:
            _last_unfinished = end_of_sweep(sweep_dir)
        except SweepError as err:
            log.error(f"no table of the sweep's jobs: {err}")


def end_of_sweep(sweep_dir: str | Path) -> list[str]:
    """The end of a sweep whose jobs are all over: the table of their states (printed, and written
    to jobs.md and jobs.json), then the report. Returns the jobs that did not finish.

    Called by on_multirun_end in a launching process that waited, and, for a detached SLURM sweep,
    by the follow-up job that the cluster starts once the array has ended (hydra_plugins/ired_launcher).
    """
    sweep_dir = Path(sweep_dir)
    states = job_states(sweep_dir)
    print_table(states, sweep_dir)
    write_tables(states, sweep_dir)
    log.info(f"job states written to {sweep_dir / 'jobs.md'} and jobs.json")
    write_study_report(sweep_dir)
    return [s.name for s in unfinished(states)]


def write_study_report(sweep_dir: Path) -> None:
    """The study's report (ired_mining.report.write_report).

    Its failure is logged, not raised: the runs are done and the report can be re-run by hand.
    """
    from ired_mining.report import write_report  # here: a job's start need not load the report

    try:
        summary = write_report(sweep_dir)
    except Exception as err:
        log.error(f"the study report failed: {type(err).__name__}: {err}; re-run it with: ired-report {sweep_dir}")
        return
    # The sweep's last lines: where its answer is and what it says (summary.json's verdict).
    verdict = json.loads((sweep_dir / "summary.json").read_text()).get("verdict") or {}
    log.info(f"report: {summary}")
    log.info(f"verdict: {verdict.get('outcome', '?')}: {str(verdict.get('text', '')).replace('`', '')}")


def shield_submitit_requeue() -> None:
    """Let submitit's own `scontrol requeue` survive the SIGTERM that the requeue sends the job.

    On the signal SLURM sends before a time limit (USR2), submitit pickles the job and runs
    `scontrol requeue` as a child process. SLURM answers by sending SIGTERM to every process of the
    job, that child included: if it arrives before scontrol exits, submitit raises inside the
    training loop, the job records a failure and returns it, while SLURM restarts it anyway.
    A child inherits an ignored signal, so SIGTERM is ignored while submitit's handler runs (submitit
    ignores it in the job itself anyway; SIGKILL still ends the job KillWait seconds later).
    """
    usr_sig = preemption.time_limit_signal()
    handler = signal.getsignal(usr_sig) if usr_sig is not None else None
    if not callable(handler):
        return

    def shielded(signum, frame):
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            handler(signum, frame)
        finally:
            signal.signal(signal.SIGTERM, previous)

    signal.signal(usr_sig, shielded)
