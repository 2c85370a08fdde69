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

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

RECORD = "jobs.expected.json"
VERSION = 1

# hydra.sweep.subdir as config.yaml sets it: the recording sweeper then names each job itself (job_names).
DEFAULT_SUBDIR = "${hydra.job.override_dirname}"
NAME_LIMIT = 100  # characters of a job's name before it is cut and ended by a hash of the whole


@dataclass(frozen=True)
class RecordedJob:
    num: int  # Hydra's job number
    overrides: tuple[str, ...]  # the job's overrides as Hydra spells them
    subdir: str  # its run directory, relative to the sweep dir


@dataclass(frozen=True)
class JobsRecord:
    task_overrides: list[str]  # the shell's overrides of the launch (multirun.yaml: hydra.overrides.task)
    params: dict[str, str]  # hydra.sweeper.params of the launch
    jobs: list[RecordedJob]


def write_record(
    sweep_dir: Path, jobs: list[list[str]], subdirs: list[str], task_overrides: list[str], params: dict
) -> None:
    from ired_mining.checkpoint import atomic_write_json

    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        sweep_dir / RECORD,
        {
            "version": VERSION,
            "task_overrides": [str(o) for o in task_overrides],
            "params": {str(k): str(v) for k, v in params.items()},
            "jobs": [
                {"num": num, "overrides": list(overrides), "subdir": subdir}
                for num, (overrides, subdir) in enumerate(zip(jobs, subdirs))
            ],
        },
    )


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
        jobs = [
            RecordedJob(int(j["num"]), tuple(str(o) for o in j["overrides"]), str(j["subdir"])) for j in raw["jobs"]
        ]
        return JobsRecord(
            [str(o) for o in raw["task_overrides"]], {str(k): str(v) for k, v in raw["params"].items()}, jobs
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} cannot be read: {err}") from err


def matches(record: JobsRecord, task_overrides: list, params: dict) -> bool:
    """Whether the record was written by the launch that multirun.yaml describes (a later launch into
    the same dir with another sweeper would rewrite multirun.yaml alone)."""
    return record.task_overrides == [str(o) for o in task_overrides] and record.params == {
        str(k): str(v) for k, v in params.items()
    }


# ================================================================ the jobs' directory names


def named_by_the_sweeper(config) -> bool:
    """Whether the recording sweeper names this sweep's jobs itself (job_names): where the sweep keeps
    config.yaml's default hydra.sweep.subdir; a subdir the user set is left to resolve as written."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") == DEFAULT_SUBDIR


def override_key(override: str) -> str:
    """`+grid=c1_k2` → grid, `mining@x=none` → mining: the key Hydra's exclude_keys match."""
    return override.lstrip("+~").partition("=")[0].partition("@")[0]


def job_names(jobs: list[list[str]], exclude_keys: list[str]) -> list[str]:
    """The default directory name of each job: its overrides that tell it from the other jobs (a
    setting every job shares, such as train.steps=500, is said once, in multirun.yaml), less those
    that do not change a run (exclude_keys: hardware, presets, trackers), sorted and joined as Hydra
    joins them (`mining=none,seed=0`). A one-job sweep keeps all its overrides. A name over NAME_LIMIT
    is cut and ended by a hash of the whole, so it stays unique; a character a shell or a filesystem
    could trip on becomes `_`."""
    shared = set.intersection(*map(set, jobs)) if len(jobs) > 1 else set()
    names = []
    for num, job in enumerate(jobs):
        kept = [o for o in job if override_key(o) not in exclude_keys]
        name = short_name(",".join(sorted(o for o in kept if o not in shared) or sorted(kept))) or "run"
        names.append(name if name not in names else f"{name}-{num}")  # the same overrides twice (seed=0,0)
    return names


def short_name(text: str, limit: int = NAME_LIMIT) -> str:
    name = re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", text)
    if len(name) <= limit:
        return name
    return name[: limit - 13] + "-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def unmakeable(path: Path) -> str | None:
    """Why a directory at `path` cannot be made on its filesystem (a name or the whole path too
    long for it), or None. Asked of the nearest existing ancestor, since the path is not made yet."""
    existing = Path(os.path.abspath(path))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    name_max, path_max = (_limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096))
    for part in Path(os.path.abspath(path)).parts[1:]:
        if len(os.fsencode(part)) > name_max:
            return f"its name {part[:60]}… is {len(os.fsencode(part))} bytes, and this filesystem allows {name_max}"
    # Room for the files a run writes inside it (checkpoints/step_000000000.pt.tmp…).
    if len(os.fsencode(os.path.abspath(path))) + 64 > path_max:
        return f"its path is {len(os.fsencode(os.path.abspath(path)))} bytes, and this system allows {path_max - 64}"
    return None


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default
