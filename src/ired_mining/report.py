"""ired-report: turn a sweep directory into the study's answer (experiment.md, "The report").

    ired-report multirun/2026-11-26/10-00-00     # the directory the sweep printed
    ired-report outputs/2026-11-26/09-00-00      # a single run works too

Writes next to the runs: summary.md (tables, verdict, commands, versions, hardware), summary.json (the
same numbers for programs), runs.csv (one row per run, failed and missing ones included),
learning_curves.png and, where `ired-eval RUN --scaling` has been run, scaling.png. Prints the main table.

It only reads files and imports nothing that trains, so it runs wherever the run directories were
copied to, without torch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ired_mining.stats import (CLEARS, FALLS_SHORT, INCONCLUSIVE, Interval, bootstrap_relative_change,
                               mean_std, verdict, welch_relative_change)

BASELINE = "none"           # the strategy every other one is compared with
TREATMENT = "adversarial"   # the strategy the success criterion is about
CRITERION = -0.20           # relative change the treatment must reach: ≥ 20 % lower MSE
PRIMARY_SPLIT = "in_dist"   # the criterion's "test MSE"
PLOT_DPI = 100
CURVES_SIZE = (12, 8)       # inches: 1200 × 800 px learning-curve figure
SCALING_SIZE = (12, 4.5)    # inches: 1200 × 450 px scaling figure


class ReportError(RuntimeError):
    """Input the report cannot use; the message is one line for the user."""


# ================================================================ reading runs

@dataclass
class RunRecord:
    """One job of a sweep as its files tell it. status: finished | failed | incomplete | missing."""

    name: str
    strategy: str
    seed: int | None
    status: str
    path: Path | None = None
    error: str = ""
    final: dict = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    scaling: dict | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def _load_yaml(path: Path) -> dict | list:
    # Unresolved: the files keep Hydra's interpolations (${now:...}), which need Hydra to resolve.
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def read_jsonl(path: Path) -> list[dict]:
    """The lines of metrics.jsonl; a torn last line (a job killed mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_run(run_dir: Path, root: Path) -> RunRecord:
    """A run directory (one holding .hydra/config.yaml) as a RunRecord."""
    cfg = _load_yaml(run_dir / ".hydra" / "config.yaml")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    record = RunRecord(
        name=str(run_dir.relative_to(root)) if run_dir != root else run_dir.name,
        strategy=str(cfg.get("mining", {}).get("name", "?")),
        seed=cfg.get("seed"),
        status="incomplete",
        path=run_dir,
        config=cfg,
        overrides=list(_load_yaml(overrides_file)) if overrides_file.exists() else [],
        curve=read_jsonl(run_dir / "metrics.jsonl"),
    )
    final_file = run_dir / "metrics.json"
    if final_file.exists():
        try:
            record.final = json.loads(final_file.read_text())
            record.status = record.final.get("status", "failed")
            record.error = record.final.get("error", "")
        except json.JSONDecodeError:
            record.status, record.error = "failed", "metrics.json is not valid JSON"
    else:
        last = record.curve[-1]["step"] if record.curve else 0
        record.error = f"no metrics.json (still running, or killed); last evaluation at step {last}"
    scaling_file = run_dir / "eval" / "scaling.json"
    if scaling_file.exists():
        record.scaling = json.loads(scaling_file.read_text())
    return record


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


def from_job_state(state: dict, root: Path, defaults: dict) -> RunRecord:
    """A job of sweep.job_states as a RunRecord: read from its directory when it has one, named
    from its overrides when it never started."""
    path = Path(state["dir"])
    if (path / ".hydra" / "config.yaml").is_file():
        record = read_run(path, root)
    else:
        seed = _override_value(state["overrides"], "seed")
        record = RunRecord(name=path.name, path=None, overrides=list(state["overrides"]), status="missing",
                           strategy=_override_value(state["overrides"], "mining") or defaults["strategy"],
                           seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else defaults["seed"])
    # The sweep module's reading of the state wins: it is the same one the end-of-sweep table shows.
    record.status, record.error = state["state"], state["error"] or record.error
    return record


def collect(sweep_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """Every job the sweep asked for (sweep.job_states: finished, failed, incomplete or missing) plus
    any other run directory found below `sweep_dir`; and notes on what could not be checked."""
    try:
        # The sweep module expands the sweep the way Hydra does; it needs a multirun.yaml.
        from ired_mining.sweep import SweepError, job_states
    except ImportError:
        return find_runs(sweep_dir), ["ired_mining.sweep is not installed: jobs that never started cannot be listed"]
    if not (sweep_dir / "multirun.yaml").is_file():
        return find_runs(sweep_dir), []
    try:
        states = job_states(sweep_dir)
    except SweepError as err:
        return find_runs(sweep_dir), [f"the sweep's jobs could not be expanded ({err}); jobs that never "
                                      "started cannot be listed"]
    multirun = _load_yaml(sweep_dir / "multirun.yaml")
    defaults = {"strategy": str(multirun.get("mining", {}).get("name", "?")), "seed": multirun.get("seed")}
    runs = [from_job_state(state, sweep_dir, defaults) for state in states]
    known = {r.path.resolve() for r in runs if r.path is not None}
    extra = [r for r in find_runs(sweep_dir) if r.path.resolve() not in known]
    notes = [f"{len(extra)} run director{'y' if len(extra) == 1 else 'ies'} below {sweep_dir} "
             "not part of the sweep's definition; included" ] if extra else []
    return runs + extra, notes


# ================================================================ analysis

def strategy_order(names) -> list[str]:
    """The baseline first, then the study's order, then anything else alphabetically."""
    known = [BASELINE, "random", TREATMENT]
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def splits_of(runs: list[RunRecord]) -> list[str]:
    """Evaluation splits in the order the configs list them."""
    for r in runs:
        splits = r.config.get("eval", {}).get("splits")
        if splits:
            return list(splits)
    return sorted({k.split("/")[0] for r in runs for k in r.final if k.endswith("/zero_mse")})


def value_at(curve: list[dict], key: str, axis: str, limit: float) -> tuple[float, dict | None]:
    """`key` at the last evaluation whose `axis` (step or train_seconds) is ≤ limit; nan if none."""
    before = [row for row in curve if row.get(axis, math.inf) <= limit + 1e-9 and key in row]
    return (float(before[-1][key]), before[-1]) if before else (math.nan, None)


def mining_ms(curve: list[dict]) -> float:
    """Mean mining time per step over a run: each metrics line holds the mean since the previous
    evaluation, so the lines are weighted by the steps they cover."""
    total, steps, previous = 0.0, 0, 0
    for row in curve:
        if "mine_ms" in row:
            covered = row["step"] - previous
            total, steps = total + row["mine_ms"] * covered, steps + covered
        previous = row["step"]
    return total / steps if steps else math.nan


def summarise(values: list[float]) -> dict:
    mean, std, n = mean_std(values)
    return {"mean": mean, "std": std, "n": n, "values": [float(v) for v in values]}


def compare(values: dict[str, list[float]], baseline: str = BASELINE) -> dict[str, dict]:
    """Relative change of every strategy's values against the baseline's, both intervals."""
    if baseline not in values:
        return {}
    base = values[baseline]
    return {name: {"welch": welch_relative_change(v, base).__dict__,
                   "bootstrap": bootstrap_relative_change(v, base).__dict__}
            for name, v in values.items() if name != baseline}


def final_values(runs: list[RunRecord], split: str) -> list[float]:
    return [float(r.final.get(f"{split}/mse", math.nan)) for r in runs]


def analyse_final(groups: dict[str, list[RunRecord]], splits: list[str]) -> dict:
    """Final MSE per strategy and split, the changes vs the baseline, time per step and mining cost."""
    out = {}
    for split in splits:
        values = {name: final_values(runs, split) for name, runs in groups.items()}
        out[split] = {"stats": {name: summarise(v) for name, v in values.items()}, "change": compare(values)}
    timing = {}
    for name, runs in groups.items():
        per_step = summarise([r.final.get("seconds_per_step", math.nan) for r in runs])
        mine = summarise([mining_ms(r.curve) for r in runs])
        timing[name] = {"seconds_per_step": per_step, "mine_ms": mine,
                        "mining_share": mine["mean"] / 1e3 / per_step["mean"] if per_step["mean"] else math.nan,
                        "train_seconds": summarise([r.final.get("train_seconds", math.nan) for r in runs])}
    return {"splits": out, "timing": timing}


def analyse_at(groups: dict[str, list[RunRecord]], splits: list[str], axis: str, limit: float) -> dict:
    """MSE each run had reached at `limit` on `axis` (last evaluation at or before it)."""
    out = {"limit": limit, "axis": axis, "splits": {}, "reached": {}}
    for name, runs in groups.items():
        rows = [value_at(r.curve, f"{splits[0]}/mse", axis, limit)[1] for r in runs]
        out["reached"][name] = {"step": summarise([row["step"] if row else math.nan for row in rows]),
                                "train_seconds": summarise([row["train_seconds"] if row else math.nan
                                                            for row in rows])}
    for split in splits:
        values = {name: [value_at(r.curve, f"{split}/mse", axis, limit)[0] for r in runs]
                  for name, runs in groups.items()}
        out["splits"][split] = {"stats": {name: summarise(v) for name, v in values.items()},
                                "change": compare(values)}
    return out


def references(finished: list[RunRecord], splits: list[str]) -> tuple[dict, list[str]]:
    """Zero-predictor and exact-solver MSE per split; a warning if runs disagree (then their
    evaluation sets differ and the runs are not comparable)."""
    refs, warnings = {}, []
    for split in splits:
        refs[split] = {}
        for kind in ("zero_mse", "exact_mse"):
            values = [r.final[f"{split}/{kind}"] for r in finished if f"{split}/{kind}" in r.final]
            refs[split][kind] = float(np.median(values)) if values else math.nan
            if kind == "zero_mse" and values and max(values) - min(values) > 1e-6 * max(abs(max(values)), 1e-12):
                warnings.append(f"the zero-predictor MSE on {split} differs between runs ({min(values):.4g} to "
                                f"{max(values):.4g}): their evaluation sets are not the same")
    return refs, warnings


def varying_settings(finished: list[RunRecord]) -> list[str]:
    """Config values other than the strategy and seed that differ between runs: the protocol says
    everything else is equal, so each one found is a warning."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", json.dumps(v, sort_keys=True)
    # Hardware and the study's own factors may differ; the mining group's options belong to the strategy.
    seen: dict[str, set] = {}
    for r in finished:
        for key, value in flat(r.config):
            if key != "seed" and not key.startswith(("mining.", "hardware.")):
                seen.setdefault(key, set()).add(value)
    return sorted(k for k, v in seen.items() if len(v) > 1)


def analyse_scaling(groups: dict[str, list[RunRecord]], splits: list[str]) -> dict | None:
    """Mean, min and max MSE over seeds per strategy and inner-step count, from eval/scaling.json."""
    out, settings = {}, set()
    for name, runs in groups.items():
        with_scaling = [r for r in runs if r.scaling]
        if not with_scaling:
            continue
        steps = sorted({row["inner_steps"] for r in with_scaling for row in r.scaling["results"]})
        out[name] = {"inner_steps": steps, "n": len(with_scaling), "splits": {}}
        for r in with_scaling:
            settings.add(json.dumps(r.scaling.get("settings", {}), sort_keys=True))
        for split in splits:
            per_step = []
            for k in steps:
                vals = [row[f"{split}/mse"] for r in with_scaling for row in r.scaling["results"]
                        if row["inner_steps"] == k and f"{split}/mse" in row]
                per_step.append(summarise(vals) | {"min": min(vals, default=math.nan),
                                                  "max": max(vals, default=math.nan)})
            out[name]["splits"][split] = per_step
    if not out:
        return None
    return {"strategies": out, "settings": [json.loads(s) for s in sorted(settings)]}


def judge(final: dict) -> dict:
    """The verdict on the success criterion, from the primary split's Welch interval."""
    change = final["splits"].get(PRIMARY_SPLIT, {}).get("change", {}).get(TREATMENT)
    stats = final["splits"].get(PRIMARY_SPLIT, {}).get("stats", {})
    n_t, n_b = stats.get(TREATMENT, {}).get("n", 0), stats.get(BASELINE, {}).get("n", 0)
    if change is None or not Interval(**change["welch"]).defined:
        return {"outcome": INCONCLUSIVE, "welch": None, "bootstrap": None, "n": [n_t, n_b],
                "text": f"cannot be judged: it needs ≥ 2 finished seeds of both `{TREATMENT}` and `{BASELINE}` "
                        f"(there are {n_t} and {n_b})."}
    welch, boot = Interval(**change["welch"]), Interval(**change["bootstrap"])
    outcome = verdict(welch, CRITERION)
    reason = {CLEARS: f"the whole interval lies at or below {pct(CRITERION)}: the criterion is met.",
              FALLS_SHORT: f"the whole interval lies above {pct(CRITERION)}: the criterion is not met.",
              INCONCLUSIVE: f"the interval straddles {pct(CRITERION)}: these seeds neither confirm nor rule "
                            f"out the criterion (more seeds narrow the interval)."}[outcome]
    text = (f"in distribution, `{TREATMENT}`'s test MSE differs from `{BASELINE}`'s by {pct(welch.point)} "
            f"(ratio of geometric means, {n_t} vs {n_b} seeds; 95 % Welch interval {pct(welch.lo)} to "
            f"{pct(welch.hi)}, {welch.df:.1f} df). The criterion is ≥ {pct(-CRITERION, sign=False, digits=0)} lower; "
            f"{reason} Bootstrap of the ratio of means: {pct(boot.point)} [{pct(boot.lo)}, {pct(boot.hi)}].")
    return {"outcome": outcome, "welch": welch.__dict__, "bootstrap": boot.__dict__, "n": [n_t, n_b], "text": text}


def floor_statements(final: dict, refs: dict) -> list[str]:
    """One plain sentence per strategy and split that does not beat the zero predictor."""
    lines = []
    for split, part in final["splits"].items():
        zero = refs[split]["zero_mse"]
        for name, st in part["stats"].items():
            if st["n"] == 0 or not math.isfinite(zero):
                continue
            beating = sum(v < zero for v in st["values"] if math.isfinite(v))
            if not st["mean"] < zero:
                lines.append(f"`{name}` does not beat the zero predictor on {split}: mean MSE {st['mean']:.4g} "
                             f"against {zero:.4g} for predicting all zeros ({beating} of {st['n']} seeds beat it).")
    return lines


def analyse(sweep_dir: Path, runs: list[RunRecord], notes: list[str]) -> dict:
    finished = [r for r in runs if r.finished]
    order = strategy_order({r.strategy for r in finished})
    groups = {name: [r for r in finished if r.strategy == name] for name in order}
    splits = splits_of(finished or runs)
    refs, warnings = references(finished, splits)
    varying = varying_settings(finished)
    if varying:
        warnings.append("settings other than strategy and seed differ between runs: " + ", ".join(varying))
    for r in finished:
        for split in splits:
            v = r.final.get(f"{split}/mse", math.nan)
            if not math.isfinite(v):
                warnings.append(f"{r.name}: {split}/mse is {v}; left out of that split's statistics")
    final = analyse_final(groups, splits)
    out = {"sweep_dir": str(sweep_dir), "splits": splits, "strategies": order, "baseline": BASELINE,
           "treatment": TREATMENT, "criterion": CRITERION, "primary_split": PRIMARY_SPLIT,
           "n_runs": {"finished": len(finished), "total": len(runs)},
           "references": refs, "final": final, "warnings": notes + warnings}
    out["verdict"] = judge(final)
    out["floor"] = floor_statements(final, refs)
    if finished:
        common_step = min(r.final.get("step", 0) for r in finished)
        out["equal_steps"] = analyse_at(groups, splits, "step", common_step)
        out["equal_steps"]["all_final"] = all(r.final.get("step") == common_step for r in finished)
        timing = final["timing"]
        fastest = min(groups, key=lambda n: timing[n]["train_seconds"]["mean"])
        out["equal_time"] = analyse_at(groups, splits, "train_seconds", timing[fastest]["train_seconds"]["mean"])
        out["equal_time"]["fastest"] = fastest
    out["scaling"] = analyse_scaling(groups, splits)
    out["problems"] = [{"run": r.name, "strategy": r.strategy, "seed": r.seed, "status": r.status,
                        "detail": r.error} for r in runs if not r.finished]
    out["provenance"] = provenance(sweep_dir, runs)
    return out


# ================================================================ provenance

def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(sweep_dir: Path, runs: list[RunRecord]) -> dict:
    """The commands that made the runs, the versions and the hardware, as far as the files say."""
    commands, launcher, cwd = [], "", ""
    multirun = sweep_dir / "multirun.yaml"
    if multirun.exists():
        hydra_cfg = _load_yaml(multirun).get("hydra", {})
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
        hydra_yaml = r.path / ".hydra" / "hydra.yaml"
        if hydra_yaml.exists():
            runtime = _load_yaml(hydra_yaml).get("hydra", {}).get("runtime", {})
            hydra_versions.add(str(runtime.get("version", "?")))
            cwd = cwd or str(runtime.get("cwd", ""))
        if isinstance(r.final.get("env"), dict):  # recorded by ired-train when it records its environment
            run_env.append(json.dumps(r.final["env"], sort_keys=True))
    devices = sorted({str(r.config.get("hardware", {}).get("device", "?")) for r in runs if r.config})
    return {
        "commands": commands,
        "cwd": cwd,
        "launcher": launcher,
        "runs_hydra": sorted(hydra_versions),
        "runs_env": [json.loads(e) for e in sorted(set(run_env))],
        "devices_configured": devices,
        "report_env": {"python": platform.python_version(), "torch": _version("torch"),
                       "hydra-core": _version("hydra-core"), "omegaconf": _version("omegaconf"),
                       "numpy": _version("numpy"), "ired-mining": _version("ired-mining")},
        "report_machine": {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count()},
    }


# ================================================================ formatting

def pct(x: float, sign: bool = True, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.{digits}f} %" if sign else f"{100 * x:.{digits}f} %"


def fmt_stat(st: dict) -> str:
    if not st or st["n"] == 0:
        return "—"
    if st["n"] == 1:
        return f"{st['mean']:.4g} (1 seed)"
    return f"{st['mean']:.4g} ± {st['std']:.2g}"


def fmt_change(change: dict | None, method: str = "welch") -> str:
    if not change:
        return "—"
    iv = Interval(**change[method])
    if not iv.defined:
        return "n/a (< 2 seeds)"
    return f"{pct(iv.point)} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main_rows(a: dict, part: dict, with_timing: bool) -> list[list[str]]:
    """One row per strategy: seeds, mean ± std and change vs the baseline per split, timing."""
    rows = []
    for name in a["strategies"]:
        row = [f"`{name}`", str(part["splits"][a["splits"][0]]["stats"][name]["n"])]
        for split in a["splits"]:
            row += [fmt_stat(part["splits"][split]["stats"][name]),
                    "baseline" if name == a["baseline"] else fmt_change(part["splits"][split]["change"].get(name))]
        if with_timing:
            t = a["final"]["timing"][name]
            row += [f"{t['seconds_per_step']['mean'] * 1e3:.3g}",
                    f"{t['mine_ms']['mean']:.3g} ({pct(t['mining_share'], sign=False)})"]
        rows.append(row)
    return rows


def reference_rows(a: dict, width: int) -> list[list[str]]:
    rows = []
    for label, kind in (("zero predictor", "zero_mse"), ("exact solver (LAPACK)", "exact_mse")):
        row = [label, "—"]
        for split in a["splits"]:
            row += [f"{a['references'][split][kind]:.4g}", ""]
        rows.append(row + [""] * (width - len(row)))
    return rows


def main_header(a: dict, with_timing: bool) -> list[str]:
    header = ["strategy", "seeds"]
    for split in a["splits"]:
        header += [f"{split} MSE (mean ± std)", f"{split} vs `{a['baseline']}` (%) [95 % CI]"]
    return header + (["ms / step", "mining ms / step (share)"] if with_timing else [])


def render_markdown(a: dict, plots: dict[str, str]) -> str:
    """summary.md: the verdict first, then the tables, plots, problems and provenance."""
    md = [f"# IRED negative-mining study: report of `{a['sweep_dir']}`", ""]
    md += [f"**Verdict: {a['verdict']['outcome']}.** " + a["verdict"]["text"][0].upper() + a["verdict"]["text"][1:], ""]
    md += [f"{a['n_runs']['finished']} of {a['n_runs']['total']} runs finished"
           + (f"; {len(a['problems'])} failed or missing, listed under *Failed and missing runs*." if a["problems"] else "."), ""]
    if a["floor"]:
        md += ["**Against the trivial floor:**", ""] + [f"- {line}" for line in a["floor"]] + [""]
    if not a["strategies"]:
        md += ["No run finished: there are no statistics to show.", ""]
    else:
        md += render_tables(a, plots)
    md += render_problems(a) + render_provenance(a) + render_method(a)
    return "\n".join(md) + "\n"


def render_tables(a: dict, plots: dict[str, str]) -> list[str]:
    md = ["## Final test MSE", "",
          "EMA-model sampler MSE at the end of training, mean ± std over seeds; change against "
          f"`{a['baseline']}` as the ratio of geometric means − 1 with a 95 % Welch interval (see *Statistics*).", ""]
    header = main_header(a, with_timing=True)
    md += [_table(header, main_rows(a, a["final"], True) + reference_rows(a, len(header))), ""]
    eq = a["equal_steps"]
    md += ["## Equal steps", ""]
    if eq["all_final"]:
        md += [f"Every finished run trained for {eq['limit']} steps: the table above is the equal-steps comparison.", ""]
    else:
        md += [f"Runs trained for different numbers of steps; MSE at the last evaluation at or before step "
               f"{eq['limit']} (the shortest finished run):", "", _table(main_header(a, False), main_rows(a, eq, False)), ""]
    et = a["equal_time"]
    md += ["## Equal wall-clock", "",
           f"MSE each run had reached after {et['limit']:.4g} s of training (excluding evaluation), the mean "
           f"training time of the fastest strategy, `{et['fastest']}`: the last evaluation at or before that "
           f"time, not an interpolation (a strategy is credited only with what it had actually reached).", "",
           _table(main_header(a, False) + ["steps reached"],
                  [row + [fmt_stat(et["reached"][name]["step"])] for row, name in
                   zip(main_rows(a, et, False), a["strategies"])]), ""]
    t = a["final"]["timing"]
    md += ["## Time per step", "", _table(
        ["strategy", "ms / step", f"vs `{a['baseline']}`", "mining ms / step", "share of the step", "training s"],
        [[f"`{n}`", fmt_stat({k: v * 1e3 if k in ("mean", "std") else v for k, v in t[n]["seconds_per_step"].items()}),
          (f"× {t[n]['seconds_per_step']['mean'] / t[a['baseline']]['seconds_per_step']['mean']:.2f}"
           if a["baseline"] in t else "—"),
          fmt_stat(t[n]["mine_ms"]), pct(t[n]["mining_share"], sign=False), fmt_stat(t[n]["train_seconds"])]
         for n in a["strategies"]]), ""]
    md += render_bootstrap(a)
    md += ["## Learning curves", "", f"![learning curves]({plots['curves']})", "",
           "Sampler MSE of the EMA model on the fixed sets; lines are means over seeds, bands the range over "
           "seeds; the dashed line is the zero predictor (the exact solver, ~1e-14, is off the scale).", ""]
    md += render_scaling(a, plots)
    return md


def render_bootstrap(a: dict) -> list[str]:
    rows = []
    for name in a["strategies"]:
        if name == a["baseline"]:
            continue
        rows.append([f"`{name}`"] + [fmt_change(a["final"]["splits"][s]["change"].get(name), "bootstrap")
                                     for s in a["splits"]])
    if not rows:
        return []
    return ["## Relative change by bootstrap", "",
            f"Ratio of arithmetic means − 1 against `{a['baseline']}`, 95 % percentile bootstrap over seeds "
            "(10,000 resamples, seed 0). With few seeds this interval is narrower than it should be; the "
            "verdict uses Welch's.", "", _table(["strategy"] + [f"{s} [95 % CI]" for s in a["splits"]], rows), ""]


def render_scaling(a: dict, plots: dict[str, str]) -> list[str]:
    md = ["## Test-time compute: MSE vs the sampler's inner steps", ""]
    sc = a["scaling"]
    if not sc:
        return md + ["Not measured: run `ired-eval RUN_DIR --scaling` on the run directories, then this report again.", ""]
    header = ["strategy", "runs", "inner steps"] + [f"{s} MSE" for s in a["splits"]]
    rows = []
    for name, st in sc["strategies"].items():
        for i, k in enumerate(st["inner_steps"]):
            rows.append([f"`{name}`", str(st["n"]), str(k)] + [fmt_stat(st["splits"][s][i]) for s in a["splits"]])
    md += [_table(header, rows), "", f"![scaling]({plots['scaling']})", ""]
    if len(sc["settings"]) > 1:
        md += ["Warning: the runs' scaling evaluations used different settings: "
               + "; ".join(json.dumps(s) for s in sc["settings"]), ""]
    return md


def render_problems(a: dict) -> list[str]:
    md = ["## Failed and missing runs", ""]
    if a["problems"]:
        md += [_table(["run", "strategy", "seed", "status", "detail"],
                      [[f"`{p['run']}`", str(p["strategy"]), str(p["seed"]), p["status"], p["detail"].replace("|", "\\|")]
                       for p in a["problems"]]), "",
               "These runs are not in the statistics above; every statistic uses the finished runs only.", ""]
    else:
        md += ["None: every run the sweep asked for finished.", ""]
    if a["warnings"]:
        md += ["**Warnings:**", ""] + [f"- {w}" for w in a["warnings"]] + [""]
    return md


def render_provenance(a: dict) -> list[str]:
    p = a["provenance"]
    md = ["## How this was made", "", "Command" + (f" (run from `{p['cwd']}`)" if p["cwd"] else "") + ":", "", "```"]
    md += p["commands"] or ["(not recorded)"]
    md += ["```", "", f"- Hydra of the runs: {', '.join(p['runs_hydra']) or 'not recorded'}; "
           f"launcher: `{p['launcher'] or 'single run'}`; device setting: {', '.join(p['devices_configured'])}"]
    if p["runs_env"]:
        md += [f"- Runs' environment: {json.dumps(e)}" for e in p["runs_env"]]
    else:
        md += ["- The runs did not record their own versions or device; the versions below are those of the "
               "machine that wrote this report."]
    env = p["report_env"]
    md += ["- This report: " + ", ".join(f"{k} {v}" for k, v in env.items()),
           f"- Report machine: {p['report_machine']['cpu']}, {p['report_machine']['cores']} cores, "
           f"{p['report_machine']['platform']}", ""]
    return md


def render_method(a: dict) -> list[str]:
    return ["## Statistics", "",
            "- Unit of replication: the seed (initialisation and training stream); the evaluation sets are the "
            "same matrices for every run.",
            "- Change vs the baseline: exp(mean log MSE − mean log MSE of the baseline) − 1, with Welch's t "
            "interval on the log scale (unequal variances, Welch–Satterthwaite degrees of freedom, exact t "
            "quantile). The verdict uses this interval: *clears* if its upper end is at or below "
            f"{pct(a['criterion'])}, *does not clear* if its lower end is above it, *inconclusive* otherwise.",
            "- Bootstrap: ratio of arithmetic means, percentile interval, each strategy's seeds resampled with "
            "replacement; shown as a check.",
            "- Equal wall-clock: training seconds exclude evaluation and checkpoints; timings of runs that shared "
            "a machine concurrently are not comparable.", ""]


# ================================================================ files

CSV_FIRST = ["run", "strategy", "seed", "status", "error", "step", "train_seconds", "seconds_per_step", "mine_ms"]


def write_csv(runs: list[RunRecord], path: Path) -> None:
    metric_keys = sorted({k for r in runs for k in r.final if "/" in k and not k.startswith(("loss/", "neg/"))})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIRST + metric_keys + ["overrides"])
        for r in sorted(runs, key=lambda r: (strategy_order({r.strategy, BASELINE}).index(r.strategy), r.strategy,
                                             r.seed if r.seed is not None else -1)):
            writer.writerow([r.name, r.strategy, r.seed, r.status, r.error, r.final.get("step", ""),
                             r.final.get("train_seconds", ""), r.final.get("seconds_per_step", ""),
                             mining_ms(r.curve) if r.curve else "", *(r.final.get(k, "") for k in metric_keys),
                             " ".join(r.overrides)])


def _json_safe(obj):
    """NaN and infinity as null: summary.json stays valid JSON for any reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# ================================================================ plots

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: works on a cluster node without a display
    import matplotlib.pyplot as plt
    return plt


COLOURS = {BASELINE: "tab:blue", "random": "tab:orange", TREATMENT: "tab:red"}


def log_axis(ax) -> None:
    """A log y-axis labelled 0.02, 0.3, 4 rather than 2×10⁻², with minor labels only where the
    axis spans too few decades for the major ones to say anything (LogFormatter decides which)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def colour(name: str, index: int) -> str:
    return COLOURS.get(name, f"C{(index + 3) % 10}")


def band_over_seeds(runs: list[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluation step: the step, mean train seconds, mean, min and max of `key` over seeds."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        for row in r.curve:
            if key in row and math.isfinite(row[key]):
                by_step.setdefault(row["step"], []).append((row["train_seconds"], row[key]))
    steps = np.array(sorted(by_step), dtype=float)
    cols = [np.array([[s, v] for s, v in by_step[int(k)]]) for k in steps]
    secs = np.array([c[:, 0].mean() for c in cols])
    vals = [c[:, 1] for c in cols]
    return steps, secs, np.array([v.mean() for v in vals]), np.array([v.min() for v in vals]), np.array([v.max() for v in vals])


def plot_learning_curves(groups: dict[str, list[RunRecord]], splits: list[str], refs: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(len(splits), 2, figsize=CURVES_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for row, split in enumerate(splits):
        for col, (xlabel, use_seconds) in enumerate((("optimiser step", False), ("training seconds", True))):
            ax = axes[row, col]
            for i, (name, runs) in enumerate(groups.items()):
                steps, secs, mean, lo, hi = band_over_seeds(runs, f"{split}/mse")
                if len(steps) == 0:
                    continue
                x = secs if use_seconds else steps
                ax.plot(x, mean, color=colour(name, i), marker="o", ms=3, label=f"{name} ({len(runs)} seeds)")
                ax.fill_between(x, lo, hi, color=colour(name, i), alpha=0.2, linewidth=0)
            finish_panel(ax, split, refs[split]["zero_mse"], xlabel, f"{split}: MSE vs {xlabel}")
    fig.savefig(path)
    plt.close(fig)


def finish_panel(ax, split: str, zero: float, xlabel: str, title: str) -> None:
    """The parts every MSE panel shares: the zero predictor's line, log axis, labels, grid, legend."""
    if math.isfinite(zero):
        ax.axhline(zero, color="black", ls="--", lw=1, label="zero predictor")
    log_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{split} MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


@dataclass
class Line:
    """One curve of a scaling plot: MSE against inner steps, with an optional band over seeds."""

    label: str
    colour: str
    steps: list[int]
    mean: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None


def scaling_figure(lines: dict[str, list[Line]], zero: dict[str, float], path: Path) -> None:
    """MSE against the sampler's inner steps, one panel per split (the report's and ired-eval's)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(lines), figsize=SCALING_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for ax, (split, split_lines) in zip(axes[0], lines.items()):
        for line in split_lines:
            ax.plot(line.steps, line.mean, color=line.colour, marker="o", label=line.label)
            if line.lo is not None:
                ax.fill_between(line.steps, line.lo, line.hi, color=line.colour, alpha=0.2, linewidth=0)
        finish_panel(ax, split, zero[split], "inner energy-descent steps per level (test time)",
                     f"{split}: MSE vs test-time inner steps")
        ax.set_xticks(sorted({k for line in split_lines for k in line.steps}))
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(scaling: dict, splits: list[str], refs: dict, path: Path) -> None:
    lines = {split: [Line(f"{name} ({st['n']} runs)", colour(name, i), st["inner_steps"],
                          *([p[k] for p in st["splits"][split]] for k in ("mean", "min", "max")))
                     for i, (name, st) in enumerate(scaling["strategies"].items())]
             for split in splits}
    scaling_figure(lines, {split: refs[split]["zero_mse"] for split in splits}, path)


# ================================================================ entry points

def write_report(sweep_dir: Path | str, console=None) -> Path:
    """Write summary.md, summary.json, runs.csv and the plots into `sweep_dir`; return summary.md's path.

    With a rich Console, also print the main table and the verdict there.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory")
    runs, notes = collect(sweep_dir)
    if not runs:
        raise ReportError(f"no runs under {sweep_dir} (no .hydra/config.yaml below it, no multirun.yaml)")
    a = analyse(sweep_dir, runs, notes)
    finished = [r for r in runs if r.finished]
    groups = {name: [r for r in finished if r.strategy == name] for name in a["strategies"]}
    plots = {"curves": "learning_curves.png", "scaling": "scaling.png"}
    if finished:
        plot_learning_curves(groups, a["splits"], a["references"], sweep_dir / plots["curves"])
    if a["scaling"]:
        plot_scaling(a["scaling"], a["splits"], a["references"], sweep_dir / plots["scaling"])
    write_csv(runs, sweep_dir / "runs.csv")
    (sweep_dir / "summary.json").write_text(json.dumps(_json_safe(a), indent=2) + "\n")
    summary = sweep_dir / "summary.md"
    summary.write_text(render_markdown(a, plots))
    if console is not None:
        print_table(a, console)
        console.print(f"report: [bold]{summary}[/bold]")
    return summary


def print_table(a: dict, console) -> None:
    """The main table in a terminal, narrowed to fit 80 columns; timing follows on one line."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    if not a["strategies"]:
        console.print(f"[red]no run finished[/] ({a['n_runs']['total']} runs found)")

    def change(c: dict | None) -> str:
        iv = Interval(**c["welch"]) if c else None
        return f"{100 * iv.point:+.0f} [{100 * iv.lo:+.0f}, {100 * iv.hi:+.0f}]" if iv and iv.defined else "n/a"

    table = Table(title=f"final test MSE · {a['n_runs']['finished']} of {a['n_runs']['total']} runs finished · "
                        f"change vs {a['baseline']} in % [95 % CI]",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("strategy (seeds)", no_wrap=True)
    for split in a["splits"]:
        table.add_column(f"{split} MSE", justify="right", no_wrap=True)
        table.add_column(f"vs {a['baseline']}, %", justify="right", no_wrap=True)
    for name in a["strategies"]:
        row = [f"{name} ({a['final']['splits'][a['splits'][0]]['stats'][name]['n']})"]
        for split in a["splits"]:
            part = a["final"]["splits"][split]
            row += [fmt_stat(part["stats"][name]), "baseline" if name == a["baseline"] else change(part["change"].get(name))]
        table.add_row(*row)
    for label, kind in (("zero predictor", "zero_mse"), ("exact solver", "exact_mse")):
        cells = [f"{a['references'][s][kind]:.4g}" for s in a["splits"]]
        table.add_row(label, *(c for cell in cells for c in (cell, "")), style="dim")
    if a["strategies"]:
        console.print(table)
    timing = a["final"]["timing"]
    if timing:
        console.print("ms per step: " + ", ".join(
            f"{n} {timing[n]['seconds_per_step']['mean'] * 1e3:.3g} (mining {pct(timing[n]['mining_share'], sign=False, digits=0)})"
            for n in a["strategies"]))
    style = {CLEARS: "green", FALLS_SHORT: "red"}.get(a["verdict"]["outcome"], "yellow")
    console.print(f"[bold {style}]verdict: {a['verdict']['outcome']}[/] — "
                  + escape(a["verdict"]["text"].replace("`", "")))
    for line in a["floor"]:
        console.print(f"[yellow]{escape(line.replace('`', ''))}[/]")
    for p in a["problems"]:
        console.print(f"[red]{p['status']}[/]: {escape(p['run'])} — {escape(p['detail'])}")


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: ired-report SWEEP_DIR   (a multirun directory, or one run directory)",
              file=sys.stderr if len(args) != 1 else sys.stdout)
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    try:
        write_report(args[0], console=Console())
    except ReportError as err:
        print(f"ired-report: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
