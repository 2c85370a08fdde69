"""Reading runs: every job of a sweep (or every run directory below a folder) as a RunRecord.

A run directory is read through ired_mining.rundir; which jobs a sweep asked for, and the state of
each, come from ired_mining.sweep, so the report and the end-of-sweep table agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ired_mining.rundir import FINISHED, RunDir, backfill
from ired_mining.sweep import MISSING, JobState, SweepError, job_states


class ReportError(RuntimeError):
    """Input the report cannot use; the message is one line for the user."""


@dataclass
class RunRecord:
    """One job of a sweep as its files tell it. status: one of sweep.STATES."""

    name: str
    strategy: str
    seed: int | None
    status: str
    path: Path | None = None
    error: str = ""
    final: dict = field(default_factory=dict)  # metrics.json: step, timings, "<split>/<metric>", env
    curve: list[dict] = field(default_factory=list)  # metrics.jsonl: one record per evaluation
    config: dict = field(default_factory=dict)  # .hydra/config.yaml, unresolved
    overrides: list[str] = field(default_factory=list)
    scaling: dict[str, dict] = field(default_factory=dict)  # ired-eval --scaling, by variant: read_scaling

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def load_yaml(path: Path) -> dict | list:
    # Unresolved: the files keep Hydra's interpolations (${now:...}), which need Hydra to resolve.
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def read_scaling(eval_dir: Path) -> dict[str, dict]:
    """The run's ired-eval --scaling curves by variant: "" for eval/scaling.json (the run's own
    sampler), "sampler.backtrack=0.5" for eval/scaling-sampler.backtrack=0.5.json, and so on."""
    out = {}
    for path in sorted(eval_dir.glob("scaling*.json")):
        variant = path.stem.removeprefix("scaling")
        if variant and not variant.startswith("-"):
            continue  # not ired-eval's: scaling<something>.json
        try:
            out[variant.removeprefix("-")] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ReportError(f"{path} cannot be read ({err}); run ired-eval --scaling again or remove it") from None
    return out


def read_run(run_dir: Path, root: Path) -> RunRecord:
    """A run directory (one holding .hydra/config.yaml) as a RunRecord."""
    run = RunDir(run_dir)
    cfg = backfill(load_yaml(run.config_yaml))
    state = run.final_state()  # never None: the run started
    return RunRecord(
        name=str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        strategy=str(cfg.get("mining", {}).get("name", "?")),
        seed=cfg.get("seed"),
        status=state.status,
        path=run_dir,
        error=state.error,
        final=state.summary,
        curve=run.read_metrics(),
        config=cfg,
        overrides=list(load_yaml(run.overrides_yaml)) if run.overrides_yaml.exists() else [],
        scaling=read_scaling(run.eval_dir),
    )


def find_runs(sweep_dir: Path) -> list[RunRecord]:
    """Every run directory at or below `sweep_dir`, in a stable order."""
    configs = sorted(p for p in sweep_dir.rglob("config.yaml") if p.parent.name == ".hydra")
    return [read_run(p.parent.parent, sweep_dir) for p in configs]


def _override_value(overrides: list[str], key: str) -> str | None:
    for item in overrides:
        k, sep, value = item.partition("=")
        if sep and k.lstrip("+~") == key:
            return value
    return None


def from_job_state(state: JobState, root: Path, defaults: dict) -> RunRecord:
    """A job of sweep.job_states as a RunRecord: read from its directory when it has one, named
    from its overrides when it never started."""
    if RunDir(state.dir).config_yaml.is_file():
        record = read_run(state.dir, root)
    else:
        overrides = list(state.overrides)
        seed = _override_value(overrides, "seed")
        record = RunRecord(
            name=state.dir.name,
            path=None,
            overrides=overrides,
            status=MISSING,
            strategy=_override_value(overrides, "mining") or defaults["strategy"],
            seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else defaults["seed"],
        )
    # The sweep module's reading of the state wins: it is the same one the end-of-sweep table shows.
    record.status, record.error = state.state, state.error or record.error
    return record


def collect(sweep_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Every job the sweep asked for (sweep.job_states: finished, failed, incomplete or missing) plus
    any other run directory found below `sweep_dir`; and notes on what could not be checked."""
    # The sweep module expands the sweep the way Hydra does; it needs a multirun.yaml.
    if not (sweep_dir / "multirun.yaml").is_file():
        return find_runs(sweep_dir), []
    try:
        states = job_states(sweep_dir)
    except SweepError as err:
        return find_runs(sweep_dir), [
            f"the sweep's jobs could not be expanded ({err}); jobs that never started cannot be listed"
        ]
    multirun = load_yaml(sweep_dir / "multirun.yaml")
    defaults = {"strategy": str(multirun.get("mining", {}).get("name", "?")), "seed": multirun.get("seed")}
    runs = [from_job_state(state, sweep_dir, defaults) for state in states]
    known = {r.path.resolve() for r in runs if r.path is not None}
    extra = [r for r in find_runs(sweep_dir) if r.path.resolve() not in known]
    notes = (
        [
            f"{len(extra)} run director{'y' if len(extra) == 1 else 'ies'} below {sweep_dir} "
            "not part of the sweep's definition; included"
        ]
        if extra
        else []
    )
    return runs + extra, notes
