"""Provenance: the commands that made the runs, the versions and the hardware, as far as the files say."""

from __future__ import annotations

import json
import os
import platform
import shlex
from dataclasses import dataclass
from pathlib import Path

from ired_mining.report.records import RunRecord, load_yaml
from ired_mining.rundir import RunDir, cpu_model, installed_version


@dataclass
class Provenance:
    commands: list[str]  # the ired-train command line, and the sweep grid of a preset
    cwd: str  # where the command ran
    launcher: str  # Hydra launcher's class ("" for a single run)
    runs_hydra: list[str]  # Hydra versions the runs recorded
    runs_env: list[dict]  # the distinct environments the runs recorded (rundir.Environment)
    devices_configured: list[str]  # hardware.device of the runs' configs
    report_env: dict[str, str]  # versions on the machine that wrote the report
    report_machine: dict  # platform, cpu, cores of that machine


def provenance(sweep_dir: Path, runs: list[RunRecord]) -> Provenance:
    commands, launcher, cwd = [], "", ""
    multirun = sweep_dir / "multirun.yaml"
    if multirun.exists():
        hydra_cfg = load_yaml(multirun).get("hydra", {})
        task = [str(o) for o in hydra_cfg.get("overrides", {}).get("task", [])]
        extra = [str(o) for o in hydra_cfg.get("overrides", {}).get("hydra", []) if o != "hydra.mode=MULTIRUN"]
        commands.append(shlex.join(["ired-train", "-m", *task, *extra]))
        launcher = str(hydra_cfg.get("launcher", {}).get("_target_", ""))
        params = hydra_cfg.get("sweeper", {}).get("params") or {}
        if params:
            commands.append("sweep grid: " + "  ".join(f"{k}={v}" for k, v in params.items()))
    elif runs and runs[0].path is not None:
        commands.append(shlex.join(["ired-train", *runs[0].overrides]))
    hydra_versions, run_env = set(), []
    for r in runs:
        if r.path is None:
            continue
        hydra_yaml = RunDir(r.path).hydra_yaml
        if hydra_yaml.exists():
            runtime = load_yaml(hydra_yaml).get("hydra", {}).get("runtime", {})
            hydra_versions.add(str(runtime.get("version", "?")))
            cwd = cwd or str(runtime.get("cwd", ""))
        if isinstance(r.final.get("env"), dict):  # recorded by ired-train when it records its environment
            run_env.append(json.dumps(r.final["env"], sort_keys=True))
    devices = sorted({str(r.config.get("hardware", {}).get("device", "?")) for r in runs if r.config})
    return Provenance(
        commands=commands,
        cwd=cwd,
        launcher=launcher,
        runs_hydra=sorted(hydra_versions),
        runs_env=[json.loads(e) for e in sorted(set(run_env))],
        devices_configured=devices,
        report_env={
            "python": platform.python_version(),
            "torch": installed_version("torch"),
            "hydra-core": installed_version("hydra-core"),
            "omegaconf": installed_version("omegaconf"),
            "numpy": installed_version("numpy"),
            "ired-mining": installed_version("ired-mining"),
        },
        report_machine={"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count()},
    )
