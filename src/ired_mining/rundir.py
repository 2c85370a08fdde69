"""The run directory: its layout, its metrics, its final state and the record of what ran it.

This module is the one owner of that contract. Training writes through it; evaluation (checkpoints/,
eval/), the sweep's job table, the report and scripts/bench.py (the CPU's name) read through it.
A run directory holds:

    .hydra/config.yaml, overrides.yaml, hydra.yaml   the composed config, written by the run itself
                    once it may go on here (hydra.output_subdir is null), so a refused re-run
                    leaves the record of the run that is there as it was
    train.log       everything printed, with times
    metrics.jsonl   one line per evaluation, appended; a torn last line (a kill mid-append) is skipped
    metrics.json    the final state, written atomically: finished, or failed with its error line
    checkpoints/    step_*.pt (checkpoint.py)
    eval/           ired-eval's results
    train.lock      held by the one ired-train writing here (runlock.py); readers ignore it

A directory with .hydra/ and no metrics.json is incomplete: killed, timed out, or still running.

Layers of the package, lowest first. A module imports only modules of its own layer or below, so
nothing imports upwards (tests/test_layers.py reads this table and checks every import, lazy ones
included; a new module gets a line here):

    ground      data, model, checkpoint, stats, rundir, expansion, jobs_record, slurm_queue, preemption, interrupt, runlock, failpoints, logs, choices
    numerics    diffusion
    strategies  mining
    settings    schema, checks, compose, backend
    library     evaluate, sweep, report, graphed, trackers, memory
    commands    callbacks, eval_cli
    top         train, entry

torch and checkpoint.py (which imports torch) are imported inside the functions that need them:
writing, listing an incomplete run's checkpoints, naming the device. So the report and the sweep's
table load without torch, and run wherever run directories were copied to.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

FINISHED, FAILED, INCOMPLETE = "finished", "failed", "incomplete"


@dataclass(frozen=True)
class FinalState:
    """How a run ended, as its directory tells it."""

    status: str  # finished | failed | incomplete
    error: str = ""  # one line; "" for a finished run
    summary: dict = field(default_factory=dict)  # metrics.json as written (empty if none or unreadable)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------ paths

    @property
    def hydra_dir(self) -> Path:
        return self.path / ".hydra"

    @property
    def config_yaml(self) -> Path:
        return self.hydra_dir / "config.yaml"

    @property
    def overrides_yaml(self) -> Path:
        return self.hydra_dir / "overrides.yaml"

    @property
    def hydra_yaml(self) -> Path:
        return self.hydra_dir / "hydra.yaml"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics(self) -> Path:
        """metrics.jsonl: one line per evaluation."""
        return self.path / "metrics.jsonl"

    @property
    def final(self) -> Path:
        """metrics.json: the final state."""
        return self.path / "metrics.json"

    @property
    def lock(self) -> Path:
        """train.lock: the one writer's lock (runlock.py)."""
        return self.path / "train.lock"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def write_record(self, config: str, hydra: str, overrides: str) -> None:
        """.hydra/: the composed config, Hydra's own config and the shell overrides (yaml texts),
        each written then renamed, so that a reader never sees half a record."""
        from ired_mining.checkpoint import atomic_write_text

        self.hydra_dir.mkdir(parents=True, exist_ok=True)
        for path, text in ((self.config_yaml, config), (self.hydra_yaml, hydra), (self.overrides_yaml, overrides)):
            atomic_write_text(path, text)

    def recorded_config(self):
        """.hydra/config.yaml as written (an OmegaConf DictConfig, LATER_KEYS filled in), or None if there is none."""
        from omegaconf import OmegaConf

        if not self.config_yaml.is_file():
            return None
        return OmegaConf.create(backfill(OmegaConf.to_container(OmegaConf.load(self.config_yaml))))

    def started(self) -> bool:
        """Hydra composed a config here: the job ran, at least until its first line."""
        return self.hydra_dir.is_dir()

    # ------------------------------------------------------------ metrics.jsonl

    def append_metrics(self, record: dict) -> None:
        """Append one line, fsynced. A write that fails (a full disk) is cut back to the lines
        before it and raises WriteFailed, so no partial line is left behind."""
        from ired_mining import failpoints
        from ired_mining.checkpoint import write_failure

        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, line[: len(line) // 2])
                failpoints.hit("metrics-line")
                _write_all(fd, line[len(line) // 2 :])
                os.fsync(fd)
            except OSError as err:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise write_failure(self.metrics, err, len(line)) from None
        finally:
            os.close(fd)

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics)

    def truncate_metrics(self, step: int) -> None:
        """Keep the lines up to `step` (a resumed run writes the later ones again), and drop a
        last line torn by a kill in the middle of its append."""
        from ired_mining.checkpoint import atomic_write_text

        if self.metrics.exists():
            kept = [rec for rec in self.read_metrics() if rec["step"] <= step]
            atomic_write_text(self.metrics, "".join(json.dumps(rec) + "\n" for rec in kept))

    # ------------------------------------------------------------ metrics.json

    def write_final(self, status: str, **summary) -> dict:
        """Write the final state atomically (a reader sees the whole file or none); return it."""
        from ired_mining.checkpoint import atomic_write_json

        if status not in (FINISHED, FAILED):
            raise ValueError(f"a final state is {FINISHED} or {FAILED}, not {status}")
        record = {"status": status, **summary}
        atomic_write_json(self.final, record)
        return record

    def final_state(self) -> FinalState | None:
        """Finished, failed (with its error line) or incomplete; None if the run never started."""
        if self.final.is_file():
            try:
                summary = json.loads(self.final.read_text())
            except ValueError:
                summary = None
            if not isinstance(summary, dict):
                return FinalState(FAILED, f"{self.final} holds no readable final state")
            if summary.get("status") == FINISHED:
                return FinalState(FINISHED, "", summary)
            return FinalState(
                FAILED, str(summary.get("error") or f"{self.final} holds no readable final state"), summary
            )
        if self.started():
            from ired_mining.checkpoint import list_checkpoints

            kept = list_checkpoints(self.checkpoints)
            where = f"last checkpoint {kept[-1].name}" if kept else "no checkpoint"
            return FinalState(
                INCOMPLETE, f"no final state ({where}): killed, timed out, or still running; see {self.train_log}"
            )
        return None


# ================================================================ configs of older runs

# Keys added after runs had been recorded without them, each with the value those runs used: the one
# owner of that value (the yaml's value is a new run's default, which may move on). A run read back
# gets them filled in (`backfill`: ired-eval, the report, a resume's comparison), so no reader keeps a
# default of its own, and a run's fingerprint leaves them out at these values
# (train.compat_fingerprint), so that older runs still resume and a report does not take their
# absence for a setting that varies.
LATER_KEYS: dict[str, object] = {
    "sampler.backtrack": 1.0,
    "model.depth": 3,
    "optim.schedule": "constant",
    "optim.min_lr": 0.0,
}


def backfill(cfg: dict) -> dict:
    """A run's config (a plain dict, as read from its yaml) with every missing LATER_KEYS entry set
    to the value the run used; the argument is changed and returned."""
    for key, value in LATER_KEYS.items():
        group, name = key.split(".")
        if isinstance(cfg.get(group), dict):
            cfg[group].setdefault(name, value)
    return cfg


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested config (a plain dict) as dotted key → value, depth first in the
    config's order; an empty mapping has no leaf. The one walk that the report's settings, a grid's
    factors and the trackers' hyperparameters each write their own values from."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_all(fd: int, data: bytes) -> None:
    # A regular file takes all of a write or, once the disk fills up during it, a part of it.
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file, [] if there is none; a torn last line (a job killed
    mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


# ================================================================ what ran the job


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Environment:
    """What ran a job, recorded in metrics.json for the report: versions, device, threads, host."""

    python: str
    torch: str
    hydra: str
    device: str
    device_name: str  # the GPU's name, or the CPU's model
    threads: int
    host: str

    @classmethod
    def of(cls, device) -> Environment:
        import torch

        device = torch.device(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        return cls(
            python=platform.python_version(),
            torch=torch.__version__,
            hydra=installed_version("hydra-core"),
            device=str(device),
            device_name=name,
            threads=torch.get_num_threads(),
            host=platform.node(),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def installed_version(dist: str) -> str:
    """The version of an installed distribution, or "not installed"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
