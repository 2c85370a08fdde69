"""`ired_submitit_slurm`: Hydra's submitit SLURM launcher that records its array and can return at once.

Selected by hardware=slurm_gpu and hardware=slurm_cpu. It takes every key of submitit's SLURM
launcher plus `wait` (hardware.wait):

    wait: true    as submitit's launcher: submit the sweep as one job array, wait for every job, and
                  hand the results to the sweeper; ired-train then prints the table and writes the report
    wait: false   submit the array, then one small follow-up job with --dependency=afterany:<array>
                  that writes the table (jobs.md, jobs.json) and the report on the cluster, print one
                  line per array and return: ired-train exits 0 within seconds

afterany waits for every task of the array to end; a task that SLURM requeues (a time limit through
submitit, a pre-emption) is pending again, not ended, so the follow-up waits for it too. Either way
the array's id (and the follow-up's) goes to <sweep dir>/slurm_jobs.json as soon as SLURM has it
(ired_mining.slurm_queue): the sweeper reads it to refuse a re-launch while those jobs are queued.

Hydra's maintainers keep their launcher waiting because a sweeper expects every job's result; this
project's sweeper (hydra_plugins/ired_sweeper) asks nothing of a detached job's result, so the
launcher returns a placeholder per job (`{"status": "submitted", "slurm_id": ...}`).
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# The follow-up job reads run directories and draws a few plots: one CPU, a little memory, minutes.
FOLLOW_UP = {"cpus_per_task": 1, "mem_gb": 4, "timeout_min": 60}


@dataclass
class IredSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.ired_launcher.IredSlurmLauncher"
    wait: bool = True


ConfigStore.instance().store(
    group="hydra/launcher", name="ired_submitit_slurm", node=IredSlurmQueueConf(), provider="ired_mining"
)


class IredSlurmLauncher(SlurmLauncher):
    def __init__(self, wait: bool = True, **params: Any) -> None:
        super().__init__(**params)  # submitit's keys only: the base hands every one to the executor
        self.wait = wait

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # The base class's launch, split where it submits and waits, so that the array's id can be
        # recorded in between and the wait left out. Its `self` is what each array task runs
        # (SlurmLauncher.__call__), unchanged.
        from ired_mining.slurm_queue import Launch, record_launch

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = self._executor(self.params)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        for num, overrides in zip(nums, job_overrides):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
        job_params = [
            (list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state())
            for num, overrides in zip(nums, job_overrides)
        ]
        jobs = executor.map_array(self, *zip(*job_params))
        array_id = jobs[0].job_id.partition("_")[0]
        if self.wait:
            record_launch(sweep_dir, Launch(array_id, tuple(nums), None))
            return [j.results()[0] for j in jobs]
        try:
            follow_up = self._submit_follow_up(array_id, sweep_dir)
        except Exception as err:  # sbatch's refusal (submitit raises its own types and plain ones)
            record_launch(sweep_dir, Launch(array_id, tuple(nums), None))  # the array runs regardless
            print(
                f"ired-train: error: SLURM array {array_id} is submitted into {sweep_dir}, but its follow-up job "
                f"was refused ({type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''});"
                f" once the array ends: ired-sweep {sweep_dir} && ired-report {sweep_dir}",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        record_launch(sweep_dir, Launch(array_id, tuple(nums), follow_up))
        print(
            f"ired-train: submitted {len(jobs)} jobs as SLURM array {array_id} into {sweep_dir}; job {follow_up} "
            f"writes the table and the report once they end; watch: ired-sweep {sweep_dir} "
            f"(or squeue -j {array_id},{follow_up})",
            flush=True,
        )
        return [
            JobReturn(
                overrides=list(overrides),
                status=JobStatus.COMPLETED,
                _return_value={"status": "submitted", "slurm_id": job.job_id},
            )
            for overrides, job in zip(job_overrides, jobs)
        ]

    def _executor(self, params: dict) -> Any:
        """submitit's SLURM executor with the launcher's keys, as the base class's launch builds it."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=params["submitit_folder"], slurm_max_num_timeout=params.get("max_num_timeout", 0)
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys}
        )
        return executor

    def _submit_follow_up(self, array_id: str, sweep_dir: Path) -> str:
        """The job that ends the sweep on the cluster once every task of the array has ended: where
        the sweep's jobs may run (partition, account, qos, setup, the user's sbatch options), on one
        CPU and no GPU."""
        from ired_mining.callbacks import end_of_sweep

        keep = {"submitit_folder", "partition", "account", "qos", "setup", "stderr_to_stdout"}
        params = {k: v for k, v in self.params.items() if k in keep}
        extra = dict(self.params.get("additional_parameters") or {})
        # The sweep's job name, so that `scancel --name=NAME` stops the follow-up with the array.
        params.update(
            FOLLOW_UP,
            name=self.params.get("name", "ired-train"),
            additional_parameters={**extra, "dependency": f"afterany:{array_id}"},
        )
        job = self._executor(params).submit(end_of_sweep, str(sweep_dir))
        return str(job.job_id)


__all__: List[str] = ["IredSlurmLauncher", "IredSlurmQueueConf"]
