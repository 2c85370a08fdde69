"""ired-eval: evaluate a trained run's EMA model again, under any evaluation setting.

    ired-eval RUN_DIR                                     # the run's own settings: its metrics.json again
    ired-eval RUN_DIR sampler.inner_steps=20 dataset.split=harder
    ired-eval RUN_DIR eval.size=4096 eval.seed=7          # more matrices; other matrices and sampler noise
    ired-eval RUN_DIR eval.splits.mid=0.25                # a new split: A = 2RRᵀ + 0.25·I
    ired-eval RUN_DIR --scaling                           # MSE for 0, 5, 10, 20 inner steps, every split
    ired-eval RUN_DIR --scaling --inner-steps 0,1,2,5,10,20,40

Results go to RUN_DIR/eval/ as JSON (and scaling.png); `ired-report` picks up eval/scaling.json
and each variant's eval/scaling-KEY=VALUE.json (a dashed curve beside the plain one).
The evaluation itself is the library in evaluate.py.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from pathlib import Path

from ired_mining import expansion
from ired_mining.checkpoint import CheckpointError, atomic_write_json
from ired_mining.evaluate import SPLIT_KEY, EvalError, LoadedRun, open_run, print_summary, run_eval
from ired_mining.report.plots import Line, scaling_figure
from ired_mining.rundir import RunDir

SCALING_STEPS = (0, 5, 10, 20)


def settings(run: LoadedRun, splits: list[str]) -> dict:
    c = run.cfg
    return {
        "eval.size": c.eval.size,
        "eval.seed": c.eval.seed,
        "eval.batch_size": c.eval.batch_size,
        "splits": {k: float(v) for k, v in c.eval.splits.items() if k in splits},
        "sampler.inner_steps": c.sampler.inner_steps,
        "sampler.step_scale": c.sampler.step_scale,
        "sampler.backtrack": c.sampler.backtrack,
        "device": str(next(run.model.parameters()).device),
    }


def record(run: LoadedRun, run_dir: Path, overrides: list[str], splits: list[str]) -> dict:
    """What every ired-eval JSON starts with: which weights, which run, which settings."""
    return {
        "run_dir": str(run_dir.resolve()),
        "checkpoint": run.checkpoint.name,
        "step": run.step,
        "strategy": run.cfg.mining.name,
        "seed": run.cfg.seed,
        "overrides": overrides,
        "settings": settings(run, splits),
    }


def output_name(overrides: list[str]) -> str:
    """eval/<overrides>.json, so evaluations under different settings sit side by side."""
    if not overrides:
        return "default"
    name = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", ",".join(sorted(overrides)))
    return name if len(name) <= 150 else name[:130] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def choose_splits(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split the dataset.split override off the config overrides, read in ired-train's grammar (Hydra's
    override parser: `a,b` and `[a,b]` name two splits); check_splits checks the names."""
    from hydra.core.override_parser.types import ChoiceSweep
    from hydra.errors import OverrideParseException

    chosen, rest = [], []
    for item in overrides:
        try:
            (override,) = expansion.parse([item])
        except OverrideParseException:
            rest.append(item)  # evaluate.apply_overrides says why in one line
            continue
        if override.key_or_group != SPLIT_KEY or override.is_delete():
            rest.append(item)
            continue
        value = override.value()
        names = value.list if isinstance(value, ChoiceSweep) else value if isinstance(value, list) else [value]
        chosen += [str(name) for name in names if str(name)]
    return chosen, rest


def check_splits(chosen: list[str], cfg) -> list[str]:
    available = list(cfg.eval.splits)
    for name in chosen:
        if name not in available:
            raise EvalError(
                f"{SPLIT_KEY}={name} is not a split of this run; choose one of: {', '.join(available)} "
                f"(or add one: eval.splits.NAME=λ)"
            )
    return chosen or available


def scaling(run: LoadedRun, splits: list[str], inner_steps: list[int]) -> list[dict]:
    """MSE (and sampler seconds) on each split for each number of inner energy-descent steps."""
    rows = []
    for k in inner_steps:
        run.cfg.sampler.inner_steps = k
        start = time.perf_counter()
        metrics = run_eval(run, splits)
        rows.append({"inner_steps": k, "seconds": round(time.perf_counter() - start, 3), **metrics})
    return rows


def plot_scaling_run(rows: list[dict], splits: list[str], label: str, path: Path) -> None:
    steps = [r["inner_steps"] for r in rows]
    scaling_figure(
        {s: [Line(label, "tab:red", steps, [r[f"{s}/mse"] for r in rows])] for s in splits},
        {s: rows[0][f"{s}/zero_mse"] for s in splits},
        path,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            print(f"ired-eval: error: {message} (see ired-eval --help)", file=sys.stderr)
            sys.exit(2)

    parser = OneLineParser(
        prog="ired-eval",
        description="Evaluate a trained run's EMA model under any evaluation setting; results go to RUN_DIR/eval/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("run_dir", help="a run directory of ired-train (holds checkpoints/)")
    parser.add_argument("overrides", nargs="*", help="key=value: eval.*, sampler.*, hardware.*, dataset.split")
    parser.add_argument("--scaling", action="store_true", help="MSE against the sampler's inner steps")
    parser.add_argument(
        "--inner-steps",
        default=",".join(map(str, SCALING_STEPS)),
        help="inner steps for --scaling, comma-separated (default: %(default)s)",
    )
    # Intermixed: options and overrides in any order (`RUN --scaling sampler.inner_steps=10`).
    return parser.parse_intermixed_args(argv)


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 0:
        raise EvalError(f"--inner-steps={text} must be comma-separated integers ≥ 0, e.g. 0,5,10,20")
    return sorted(set(steps))


def print_scaling(rows: list[dict], splits: list[str], changed: list[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    # The zero predictor beside each split: a model no better than it has learnt nothing there.
    table = Table(title=" · ".join(["MSE vs test-time inner steps", *changed]))
    for col in ["inner steps", *(c for s in splits for c in (f"{s} MSE", f"{s} zero predictor")), "seconds"]:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["inner_steps"]),
            *(f"{r[f'{s}/{m}']:.4g}" for s in splits for m in ("mse", "zero_mse")),
            f"{r['seconds']:.3g}",
        )
    Console().print(table)


def cli(argv: list[str]) -> None:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    chosen, overrides = choose_splits(args.overrides)
    steps = parse_steps(args.inner_steps) if args.scaling else []
    run = open_run(run_dir, overrides)
    splits = check_splits(chosen, run.cfg)
    out_dir = RunDir(run_dir).eval_dir
    out_dir.mkdir(exist_ok=True)
    if args.scaling:
        out = record(run, run_dir, args.overrides, splits)
        rows = scaling(run, splits, steps)
        # The plain run's curve is scaling.json (the report reads it); a variant, such as
        # sampler.backtrack=0.5, goes beside it under its overrides' name.
        stem = f"scaling-{output_name(overrides)}" if overrides else "scaling"
        atomic_write_json(out_dir / f"{stem}.json", out | {"inner_steps": steps, "results": rows})
        plot_scaling_run(
            rows, splits, f"{run.cfg.mining.name} · seed {run.cfg.seed} · step {run.step}", out_dir / f"{stem}.png"
        )
        print_scaling(rows, splits, overrides)
        print(f"wrote {out_dir / f'{stem}.json'} and {out_dir / f'{stem}.png'}")
        return
    metrics = run_eval(run, splits)
    path = out_dir / f"{output_name(args.overrides)}.json"
    atomic_write_json(path, record(run, run_dir, args.overrides, splits) | {"metrics": metrics})
    print_summary(
        {"strategy": run.cfg.mining.name, "seed": run.cfg.seed, "step": run.step, **metrics},
        run_dir,
        changed=args.overrides,
    )
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: bad input is one line on stderr and a non-zero exit, never a traceback."""
    try:
        cli(sys.argv[1:] if argv is None else argv)
    except (EvalError, CheckpointError) as err:
        print(f"ired-eval: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
