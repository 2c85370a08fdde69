"""write_report: a sweep directory's summary.md, summary.json, runs.csv and plots; and the
`ired-report` command line."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from ired_mining.report.analysis import BASELINE, analyse, configurations, mining_ms, strategy_order
from ired_mining.report.console import print_report
from ired_mining.report.markdown import render_markdown
from ired_mining.report.plan import PLAN_FILE, find_plan
from ired_mining.report.plots import plot_learning_curves, plot_scaling
from ired_mining.report.records import ReportError, RunRecord, collect

PLOTS = {"curves": "learning_curves.png", "scaling": "scaling.png"}
GRID_PLOTS = {"heatmap": "grid_heatmap.png", "distance": "mse_vs_negative_distance.png"}


def write_report(
    sweep_dir: Path | str, console=None, plan: Path | str | None = None, candidate: str | None = None
) -> Path:
    """Write summary.md, summary.json, runs.csv and the plots into `sweep_dir`; return summary.md's path.

    With a rich Console, also print the main table and the verdict there. A registered plan (`plan`,
    else the sweep's plan.yaml) makes the report judge its hypotheses and call the rest exploratory;
    `candidate` names the strategy the verdict judges against `none` (analysis.pick_candidate).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory")
    runs, notes = collect(sweep_dir)
    if not runs:
        raise ReportError(f"no runs under {sweep_dir} (no .hydra/config.yaml below it, no multirun.yaml)")
    if candidate and candidate not in {r.strategy for r in runs}:
        raise ReportError(
            f"--candidate {candidate}: no run of it under {sweep_dir}; its strategies are "
            + ", ".join(sorted({r.strategy for r in runs}))
        )
    a = analyse(sweep_dir, runs, notes, find_plan(sweep_dir, plan), candidate)
    finished = [r for r in runs if r.finished]
    if finished:
        groups, _ = configurations(finished)
        plot_learning_curves(groups, a.splits, a.references, sweep_dir / PLOTS["curves"])
    if a.grid:
        from ired_mining.report.grid_plots import plot_distance, plot_heatmap

        if a.grid.map:
            plot_heatmap(a.grid, a.splits, a.baseline, sweep_dir / GRID_PLOTS["heatmap"])
        plot_distance(a.grid, a.splits, a.baseline, sweep_dir / GRID_PLOTS["distance"])
    if a.scaling:
        plot_scaling(a.scaling, a.splits, a.references, sweep_dir / PLOTS["scaling"])
    write_csv(runs, sweep_dir / "runs.csv")
    (sweep_dir / "summary.json").write_text(json.dumps(json_safe(a.to_json()), indent=2) + "\n")
    summary = sweep_dir / "summary.md"
    summary.write_text(render_markdown(a, PLOTS | GRID_PLOTS))
    if console is not None:
        print_report(a, console)
        console.print(f"report: [bold]{summary}[/bold]", soft_wrap=True)  # a path stays one line to copy
    return summary


CSV_FIRST = ["run", "strategy", "seed", "status", "error", "step", "train_seconds", "seconds_per_step", "mine_ms"]


def write_csv(runs: list[RunRecord], path: Path) -> None:
    """One row per run, failed and missing ones included: its state, timings and final metrics."""
    metric_keys = sorted({k for r in runs for k in r.final if "/" in k and not k.startswith(("loss/", "neg/"))})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIRST + metric_keys + ["overrides"])
        for r in sorted(
            runs,
            key=lambda r: (
                strategy_order({r.strategy, BASELINE}).index(r.strategy),
                r.strategy,
                r.seed if r.seed is not None else -1,
            ),
        ):
            writer.writerow(
                [
                    r.name,
                    r.strategy,
                    r.seed,
                    r.status,
                    r.error,
                    r.final.get("step", ""),
                    r.final.get("train_seconds", ""),
                    r.final.get("seconds_per_step", ""),
                    mining_ms(r.curve) if r.curve else "",
                    *(r.final.get(k, "") for k in metric_keys),
                    " ".join(r.overrides),
                ]
            )


def json_safe(obj):
    """NaN and infinity as null: summary.json stays valid JSON for any reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="ired-report", description="Turn a sweep directory into summary.md, summary.json, runs.csv and plots."
    )
    parser.add_argument("sweep_dir", help="a multirun directory, or one run directory")
    parser.add_argument("--plan", help=f"a registered plan to judge (default: the sweep's {PLAN_FILE}, if any)")
    parser.add_argument(
        "--candidate",
        metavar="STRATEGY",
        help=f"the strategy the verdict judges against {BASELINE} (default: adversarial, or the "
        f"sweep's one other strategy); other baselines: a plan",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    if not console.is_terminal:  # piped: rich would assume 80 columns and cut the table's cells
        console = Console(width=200)
    try:
        write_report(args.sweep_dir, console=console, plan=args.plan, candidate=args.candidate)
    except ReportError as err:
        print(f"ired-report: error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a full or read-only disk: the files written before it stay as they were
        print(
            f"ired-report: error: could not write {err.filename or 'the report'}: {err.strerror or err}",
            file=sys.stderr,
        )
        sys.exit(1)
