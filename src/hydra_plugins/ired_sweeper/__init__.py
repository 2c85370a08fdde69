"""The `recording` sweeper of ired-train: Hydra's basic sweeper that writes down the jobs it expanded.

Selected in ired_mining's conf/config.yaml (`override hydra/sweeper: recording`); it accepts what the
basic sweeper accepts (`hydra.sweeper.params`, `max_batch_size`). Hydra finds it because it lives in
the `hydra_plugins` namespace package, like every third-party Hydra plugin (submitit's launcher too).

Why: the end-of-sweep table, `python -m ired_mining.sweep DIR` and ired-report must list every job the
sweep defined, including those that never started. Only the launching Hydra can expand `glob(...)` (it
needs the config loader) or `shuffle(...)` (random), so the jobs are recorded at the one point where
Hydra has split the sweep and nothing is written or launched yet: each job's number, overrides and run
directory, as the launchers will name it, in <sweep dir>/jobs.expected.json (ired_mining.jobs_record).
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf, open_dict


@dataclass
class RecordingSweeperConf:
    _target_: str = "hydra_plugins.ired_sweeper.RecordingSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="recording", node=RecordingSweeperConf, provider="ired_mining")


class RecordingSweeper(BasicSweeper):
    # BasicSweeper.sweep calls self.split_arguments once, after ordering and parsing the arguments
    # with the config loader and before it saves multirun.yaml and launches: the hook where the whole
    # expansion is known and nothing is on disk yet. (A staticmethod there; an instance method here, to
    # reach the config loader; only sweep() calls it.) The split itself is ired_mining.expansion's,
    # the one every other reader of a sweep's jobs uses.
    def split_arguments(self, overrides: List[Override], max_batch_size: Optional[int]) -> List[List[List[str]]]:
        from ired_mining import expansion
        from ired_mining.slurm_queue import detached

        if refusal := expansion.not_a_list_of_values(overrides):
            # Hydra's own refusal is a traceback: say it in one line (the house promise: one line on
            # stderr, exit 2), before anything is written. ired-train's check usually says it first.
            print(f"ired-train: error: {refusal}", file=sys.stderr)
            raise SystemExit(2)
        self._refuse_while_queued()
        if detached(self.config):
            # Batches exist to wait between them; a detached sweep waits for nothing, so its jobs go
            # out as one array (hydra.launcher.array_parallelism still bounds how many run at once).
            max_batch_size = None
        batches = expansion.batches(overrides, max_batch_size)
        jobs = [list(job) for batch in batches for job in batch]
        named = self._named(jobs)
        subdirs = [self._subdir(num, overrides) for num, overrides in enumerate(named)]
        self._refuse_unmakeable(subdirs)
        self._record(jobs, subdirs)
        it = iter(named)  # the same jobs, each with its directory name, in the launchers' batches
        return [[next(it) for _ in batch] for batch in batches]

    def _named(self, jobs: List[List[str]]) -> List[List[str]]:
        """Each job with `hydra.sweep.subdir='NAME'` added, NAME its short default name
        (jobs_record.job_names), where the sweep keeps config.yaml's default subdir; a subdir the user
        set is left to resolve as they wrote it."""
        from ired_mining.jobs_record import job_names, named_by_the_sweeper

        assert self.config is not None
        if not named_by_the_sweeper(self.config):
            return jobs
        exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        # Quoted, so that Hydra reads the name as one string; job_names leaves no quote, $ or \ in it.
        return [job + [f"hydra.sweep.subdir='{name}'"] for job, name in zip(jobs, job_names(jobs, exclude))]

    def _refuse_unmakeable(self, subdirs: List[str]) -> None:
        """A job directory its filesystem cannot make (a name over 255 bytes) stops the sweep here, in
        one line, before anything is written or launched, rather than as an OSError in the launcher."""
        from ired_mining.jobs_record import unmakeable

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        for num, subdir in enumerate(subdirs):
            if why := unmakeable(sweep_dir / subdir):
                print(
                    f"ired-train: error: hydra.sweep.subdir: job {num}'s directory cannot be made: {why}; "
                    f"name the jobs shorter (e.g. hydra.sweep.subdir='job_${{hydra.job.num}}') or give "
                    f"a shorter hydra.sweep.dir",
                    file=sys.stderr,
                )
                raise SystemExit(2)

    def _refuse_while_queued(self) -> None:
        """A sweep dir whose SLURM jobs (recorded by the launcher, ired_mining.slurm_queue) are still
        queued or running is left alone: a second launch would run its jobs twice at once and
        rewrite the record they are listed by. Where no squeue answers, the queue is unknown."""
        from ired_mining.slurm_queue import still_queued

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            queued = still_queued(sweep_dir)
        except ValueError as err:
            print(f"ired-train: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if queued:
            ids = ", ".join(f"{q.slurm_id} {q.sweep_state}" for q in queued[:5]) + (", ..." if len(queued) > 5 else "")
            print(
                f"ired-train: error: {sweep_dir} still has {len(queued)} SLURM jobs queued or running ({ids}); "
                f"launch into it again once they are over (watch: ired-sweep {sweep_dir}), or cancel them: "
                f"scancel {' '.join(sorted({q.slurm_id.partition('_')[0] for q in queued}))}",
                file=sys.stderr,
            )
            raise SystemExit(2)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        # Every job was already composed by _record, before anything was written: a job that does not
        # compose stops the sweep there, as Hydra's own check would, and leaves an earlier launch's
        # record and multirun.yaml as they were.
        pass

    def _record(self, jobs: List[List[str]], subdirs: List[str]) -> None:
        from ired_mining.jobs_record import write_record

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        # The definition as multirun.yaml (this same config, saved next) will hold it, unresolved.
        task = OmegaConf.to_container(self.config.hydra.overrides.task, resolve=False)
        params = OmegaConf.to_container(self.config.hydra.sweeper.params or OmegaConf.create({}), resolve=False)
        write_record(sweep_dir, jobs, subdirs, task_overrides=task, params=params)

    def _subdir(self, num: int, overrides: List[str]) -> str:
        """The job's run directory below the sweep dir, composed and resolved as the launchers do it
        (Hydra's run_job): hydra.sweep.subdir with this job's override_dirname and number."""
        cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=overrides)
        with open_dict(cfg):
            # The basic launcher's id; submitit's is the SLURM/local job id, known only once the job
            # runs, so a subdir made of hydra.job.id is recorded as the basic launcher would name it.
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        hydra_cfg = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the subdir, as run_job does
        try:
            return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        finally:
            HydraConfig.instance().cfg = hydra_cfg
