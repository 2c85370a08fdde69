"""bf16-mixed runs against fp32 runs of the same configurations and seeds (issue 20): the change of
the MSE at every evaluation step both reached, with Welch's 95 % interval on log MSE over seeds
(ired_mining.stats, as the report computes it), and the fp32 seeds' own spread beside it.

    python scripts/precision_accuracy.py results/bf16/grid results/cpu_grid/sweep --json results/bf16/accuracy.json

A configuration is a run's own command-line overrides (`.hydra/overrides.yaml`) without its seed and
without any `hardware` override (the launcher, the threads, `hardware.precision`), so that
`+grid=none seed=0 hardware.precision=bf16-mixed` pairs with `+grid=none seed=0` whatever the two
sweeps named their directories (a sweep names its jobs by the overrides that vary in it). Unfinished
bf16 runs count up to the last evaluation they wrote.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ired_mining.report.records import load_yaml
from ired_mining.rundir import RunDir
from ired_mining.stats import mean_std, welch_relative_change

SPLITS = ("in_dist", "harder")


def configuration(run: Path) -> tuple[str, int] | None:
    """(configuration, seed) of a run directory, or None for a directory that is not a run."""
    overrides = RunDir(run).overrides_yaml
    if not overrides.is_file():
        return None
    parts, seed = [], None
    for item in map(str, load_yaml(overrides) or []):
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key == "seed":
            seed = int(value)
        elif not key.startswith("hardware"):
            parts.append(item)
    return (",".join(sorted(parts)), seed) if seed is not None else None


def curves(sweep: Path) -> dict[str, dict[int, dict[int, dict]]]:
    """configuration → seed → step → that evaluation's metrics (metrics.jsonl)."""
    out: dict = defaultdict(dict)
    for run in sorted(p for p in sweep.iterdir() if p.is_dir()):
        if (key := configuration(run)) is None:
            continue
        lines = RunDir(run).read_metrics()
        if lines:
            out[key[0]][key[1]] = {rec["step"]: rec for rec in lines if f"{SPLITS[0]}/mse" in rec}
    return out


def compare(treatment: Path, baseline: Path) -> list[dict]:
    ours, theirs = curves(treatment), curves(baseline)
    rows = []
    for config in sorted(ours.keys() & theirs.keys()):
        seeds = sorted(ours[config].keys() & theirs[config].keys())
        steps = set.intersection(*(set(ours[config][s]) & set(theirs[config][s]) for s in seeds)) if seeds else set()
        for step in sorted(steps):
            row = {"configuration": config, "step": step, "seeds": seeds}
            for split in SPLITS:
                a = [ours[config][s][step][f"{split}/mse"] for s in seeds]
                b = [theirs[config][s][step][f"{split}/mse"] for s in seeds]
                change = welch_relative_change(a, b)
                mean_b, std_b, _ = mean_std(b)
                mean_a, std_a, _ = mean_std(a)
                row[split] = {
                    "bf16_mse": a,
                    "fp32_mse": b,
                    "bf16_mean": mean_a,
                    "bf16_std": std_a,
                    "fp32_mean": mean_b,
                    "fp32_std": std_b,
                    "fp32_spread_rel": std_b / mean_b,
                    "change": change.point,
                    "lo": change.lo,
                    "hi": change.hi,
                }
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| configuration | step | seeds | split | fp32 MSE (mean ± std) | bf16-mixed MSE | bf16 vs fp32 [95 % Welch] | fp32 seeds' std / mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for split in SPLITS:
            s = r[split]
            lines.append(
                f"| {r['configuration']} | {r['step']} | {len(r['seeds'])} | {split} | "
                f"{s['fp32_mean']:.5f} ± {s['fp32_std']:.5f} | {s['bf16_mean']:.5f} ± {s['bf16_std']:.5f} | "
                f"{100 * s['change']:+.2f} % [{100 * s['lo']:+.2f}, {100 * s['hi']:+.2f}] | "
                f"{100 * s['fp32_spread_rel']:.2f} % |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("treatment", type=Path, help="the bf16-mixed sweep directory")
    parser.add_argument("baseline", type=Path, help="the fp32 sweep directory")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    rows = compare(args.treatment, args.baseline)
    print(markdown(rows), end="")
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
