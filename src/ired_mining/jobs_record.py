"""The record of a sweep's jobs as Hydra expanded them: <sweep dir>/jobs.expected.json.

Written once per launch by ired-train's sweeper (hydra_plugins/ired_sweeper), before any job starts;
read by ired_mining.sweep.expected_jobs. It holds the sweep's definition (the shell's task overrides
and hydra.sweeper.params, as multirun.yaml has them) and, for each job, Hydra's job number, its
overrides and its run directory relative to the sweep dir:

    {"version": 1, "task_overrides": [...], "params": {...},
     "jobs": [{"num": 0, "overrides": ["mining=none", "seed=0"], "subdir": "mining=none,seed=0"}, ...]}

A re-launch into the same sweep dir writes it again, and writes it before Hydra rewrites
multirun.yaml: both always describe the same launch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RECORD = "jobs.expected.json"
VERSION = 1


@dataclass(frozen=True)
class RecordedJob:
    num: int                    # Hydra's job number
    overrides: tuple[str, ...]  # the job's overrides as Hydra spells them
    subdir: str                 # its run directory, relative to the sweep dir


@dataclass(frozen=True)
class JobsRecord:
    task_overrides: list[str]   # the shell's overrides of the launch (multirun.yaml: hydra.overrides.task)
    params: dict[str, str]      # hydra.sweeper.params of the launch
    jobs: list[RecordedJob]


def write_record(sweep_dir: Path, jobs: list[list[str]], subdirs: list[str], task_overrides: list[str],
                 params: dict) -> None:
    from ired_mining.checkpoint import atomic_write_json

    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep_dir / RECORD, {
        "version": VERSION, "task_overrides": [str(o) for o in task_overrides],
        "params": {str(k): str(v) for k, v in params.items()},
        "jobs": [{"num": num, "overrides": list(overrides), "subdir": subdir}
                 for num, (overrides, subdir) in enumerate(zip(jobs, subdirs))]})


def read_record(sweep_dir: Path) -> JobsRecord | None:
    """The record in `sweep_dir`, or None if there is none (a sweep launched without the recording
    sweeper). Raises ValueError, one line, if it cannot be read."""
    path = Path(sweep_dir) / RECORD
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != VERSION:
            raise ValueError(f"version {raw.get('version')!r}, this ired-mining reads version {VERSION}")
        jobs = [RecordedJob(int(j["num"]), tuple(str(o) for o in j["overrides"]), str(j["subdir"]))
                for j in raw["jobs"]]
        return JobsRecord([str(o) for o in raw["task_overrides"]], {str(k): str(v) for k, v in raw["params"].items()},
                          jobs)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} cannot be read: {err}") from err


def matches(record: JobsRecord, task_overrides: list, params: dict) -> bool:
    """Whether the record was written by the launch that multirun.yaml describes (a later launch into
    the same dir with another sweeper would rewrite multirun.yaml alone)."""
    return (record.task_overrides == [str(o) for o in task_overrides]
            and record.params == {str(k): str(v) for k, v in params.items()})
