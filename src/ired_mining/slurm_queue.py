"""A sweep's SLURM jobs: what was submitted (<sweep dir>/slurm_jobs.json) and what the queue says now.

Written by ired-train's SLURM launcher (hydra_plugins/ired_launcher) the moment it has submitted an
array, before it waits or returns; read by the sweeper (which refuses a re-launch into a sweep dir
whose jobs are still queued or running) and by the status table (ired_mining.sweep). Each launch
appends one entry; a job's SLURM id is the array's id and its task index, the job's position in it:

    {"version": 1, "launches": [{"array_id": "123", "nums": [0, 1, 2], "follow_up_id": "124"}, ...]}

`follow_up_id` is the job that ends a detached sweep (hydra.launcher.wait=false: the table and the
report, run by the cluster once the array is over); null when the launching process waits itself.

The queue is read with `squeue`; where there is none, or it does not answer, the queue is unknown
(None) and callers fall back to what the run directories say.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RECORD = "slurm_jobs.json"
VERSION = 1

# squeue's states of a job that is not over yet, by what they mean for a sweep. Every other state
# squeue may show (COMPLETING, CANCELLED, ...) is a job on its way out: its run directory tells.
RUNNING = {"RUNNING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING", "STAGE_OUT"}
PENDING = {"PENDING"}
REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


@dataclass(frozen=True)
class Launch:
    array_id: str  # SLURM's id of the job array
    nums: tuple[int, ...]  # Hydra's job numbers, in array task order
    follow_up_id: str | None  # the job that writes the table and the report (detached), or None

    def slurm_id(self, num: int) -> str:
        return f"{self.array_id}_{self.nums.index(num)}"

    def ids(self) -> list[str]:
        return [self.array_id] + ([self.follow_up_id] if self.follow_up_id else [])


@dataclass(frozen=True)
class Queued:
    """One job as squeue lists it."""

    slurm_id: str  # ARRAYID_TASK for an array task, the job id otherwise
    state: str  # squeue's state, e.g. PENDING
    restarts: int  # times SLURM requeued it (time limit, pre-emption, scontrol requeue)
    reason: str  # why it is pending, e.g. Dependency, BeginTime; "None" otherwise

    @property
    def sweep_state(self) -> str | None:
        """running, pending or requeued (waiting to run again); None for a job on its way out."""
        if self.state in REQUEUED or (self.state in PENDING and self.restarts > 0):
            return "requeued"
        if self.state in PENDING:
            return "pending"
        return "running" if self.state in RUNNING else None


def detached(config) -> bool:
    """Whether a multirun's launcher returns without waiting (hydra.launcher.wait=false): then the
    cluster's follow-up job, not the launching process, ends the sweep."""
    from omegaconf import OmegaConf

    return OmegaConf.select(config, "hydra.launcher.wait", default=True) is False


# ================================================================ the record


def read_launches(sweep_dir: str | Path) -> list[Launch]:
    """Every launch recorded in `sweep_dir`, oldest first ([] if none). ValueError, one line, if the
    record cannot be read."""
    path = Path(sweep_dir) / RECORD
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != VERSION:
            raise ValueError(f"version {raw.get('version')!r}, this ired-mining reads version {VERSION}")
        return [
            Launch(
                str(x["array_id"]),
                tuple(int(n) for n in x["nums"]),
                None if x.get("follow_up_id") is None else str(x["follow_up_id"]),
            )
            for x in raw["launches"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} cannot be read: {err}") from err


def record_launch(sweep_dir: str | Path, launch: Launch) -> None:
    from ired_mining.checkpoint import atomic_write_json

    launches = read_launches(sweep_dir) + [launch]
    atomic_write_json(
        Path(sweep_dir) / RECORD,
        {
            "version": VERSION,
            "launches": [
                {"array_id": x.array_id, "nums": list(x.nums), "follow_up_id": x.follow_up_id} for x in launches
            ],
        },
    )


def slurm_ids(sweep_dir: str | Path) -> dict[int, str]:
    """Each job number's SLURM id in its latest launch."""
    return {num: launch.slurm_id(num) for launch in read_launches(sweep_dir) for num in launch.nums}


# ================================================================ the queue


def queue(job_ids: list[str]) -> dict[str, Queued] | None:
    """What squeue lists of these jobs (an array's id stands for all its tasks), by SLURM id; None
    where squeue is missing or does not answer, so the queue is unknown."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    fields = ["JobArrayID", "State", "RestartCnt", "Reason"]
    # This user's jobs, filtered here rather than with -j: squeue fails outright on an id it has
    # forgotten, and a finished sweep's ids are all forgotten. -r: one line per array task.
    cmd = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-O", ",".join(f"{f}:|" for f in fields)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        return None
    if proc.returncode != 0:
        return None
    wanted = set(job_ids)
    listed = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 4 or not (cells[0] in wanted or cells[0].partition("_")[0] in wanted):
            continue
        listed[cells[0]] = Queued(cells[0], cells[1], int(cells[2]) if cells[2].isdigit() else 0, cells[3])
    return listed


def still_queued(sweep_dir: str | Path) -> list[Queued] | None:
    """The recorded jobs of `sweep_dir` (array tasks and follow-up jobs) that are not over yet; None
    if the queue cannot be read."""
    ids = [i for launch in read_launches(sweep_dir) for i in launch.ids()]
    listed = queue(ids)
    if listed is None:
        return None
    return [q for q in listed.values() if q.sweep_state is not None]
