"""Learning curves of named runs on one figure, and their MSE at chosen steps as a markdown table:
the evidence for or against each explanation of a plateau.

    python scripts/plateau_curves.py --out results/cpu20/plateau/curves \
        "none (study, seed 200)=results/cpu20/sweep/+grid=none,seed=200" \
        "regressor=results/cpu20/plateau/+plateau=regressor,seed=300" ...

Each argument is LABEL=RUN_DIR (a run directory of ired-train). Writes OUT.png and OUT.md, and
prints the table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ired_mining.report.plots import _pyplot, log_axis
from ired_mining.rundir import RunDir

SPLITS = ("in_dist", "harder")


def read(spec: str) -> tuple[str, list[dict]]:
    label, sep, path = spec.partition("=")  # run directories have = in their names; labels may not
    if not sep or not label:
        raise SystemExit(f"plateau_curves: {spec!r} is not LABEL=RUN_DIR")
    curve = RunDir(Path(path)).read_metrics()
    if not curve:
        raise SystemExit(f"plateau_curves: no metrics.jsonl lines in {path}")
    return label, curve


def at(curve: list[dict], key: str, step: int) -> float:
    rows = [r for r in curve if r["step"] == step and key in r]
    return rows[-1][key] if rows else math.nan


def table(runs: list[tuple[str, list[dict]]], steps: list[int], split: str) -> str:
    zero = runs[0][1][-1][f"{split}/zero_mse"]
    head = ["run"] + [f"{s:,}" for s in steps] + ["its last 2,000 steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, curve in runs:
        last = curve[-1]["step"]
        fall = at(curve, f"{split}/mse", last) / at(curve, f"{split}/mse", last - 2000) - 1
        values = [at(curve, f"{split}/mse", s) for s in steps]
        cells = ["—" if math.isnan(v) else f"{v:.4g}" for v in values]  # the run stopped earlier
        lines.append("| " + " | ".join([label, *cells, f"{100 * fall:+.1f} %"]) + " |")
    lines.append("| zero predictor | " + " | ".join(f"{zero:.4g}" for _ in steps) + " | |")
    return "\n".join(lines)


def plot(runs: list[tuple[str, list[dict]]], out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(13, 5))
    for ax, split in zip(axes, SPLITS):
        for i, (label, curve) in enumerate(runs):
            rows = [r for r in curve if f"{split}/mse" in r]
            ax.plot(
                [r["step"] for r in rows],
                [r[f"{split}/mse"] for r in rows],
                marker="o",
                ms=3,
                color=f"C{i % 10}",
                label=label,
            )
        ax.axhline(runs[0][1][-1][f"{split}/zero_mse"], color="black", ls="--", lw=1, label="zero predictor")
        log_axis(ax)
        ax.set_title(f"{split}: EMA-model MSE (sampler; the regressor's forward pass)")
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--out", required=True, help="path without suffix: OUT.png and OUT.md are written")
    parser.add_argument("--steps", default="2000,4000,6000,8000,10000", help="steps of the table's columns")
    args = parser.parse_args()
    runs = [read(spec) for spec in args.runs]
    steps = [int(s) for s in args.steps.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, out.with_suffix(".png"))
    text = "\n\n".join(f"### {split}: MSE by step\n\n{table(runs, steps, split)}" for split in SPLITS)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
