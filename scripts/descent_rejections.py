"""How often the miner's energy-descent steps are rejected, step by step, for trained runs.

    python scripts/descent_rejections.py RUN_DIR [RUN_DIR ...] [--corruption 3,0.5] [--steps 5] [--json OUT]

A step is rejected when it would raise the energy; the sample then stays where it was. Backtracking
(`mining.backtrack` < 1) only changes a sample's steps after one of its steps was rejected, so where
no step is rejected it changes nothing. This measures it with each run's EMA weights at its newest
checkpoint, on a fixed batch of training problems (levels, noise: seed 0), starting the negatives as
the adversarial miner does (z = √ᾱ_t y + c √(1−ᾱ_t) ε') and descending with the spec's rule.

Step k's rejections are read off `Diffusion.descend` itself: with the spec's rule a descent of k
steps continues a descent of k − 1, so a sample whose answer did not move at step k was rejected
there (or its accepted step moved nothing, which counts the same: it made no progress).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ired_mining.data import spd_batch
from ired_mining.evaluate import open_run


def mining_starts(diffusion, cfg, corruption: float, size: int, seed: int):
    """A fixed batch of training problems and where the adversarial miner starts on them: (x, t, z)
    with z = √ᾱ_t y + c √(1−ᾱ_t) ε'. Levels and noise are drawn from `seed` in this order."""
    g = torch.Generator().manual_seed(seed)
    problems = spd_batch(cfg.dataset.n, size, cfg.dataset.lam, generator=g)
    t = torch.randint(0, diffusion.num_steps, (size,), generator=g)
    eps = torch.randn(problems.y.shape, generator=g)
    return problems.x, t, diffusion.noise(problems.y, t, eps, eps_scale=corruption)


def rejected_per_step(model, diffusion, cfg, corruption: float, steps: int, size: int, seed: int) -> list[float]:
    """Fraction of samples whose step k (1 … steps) left them where they were."""
    x, t, start = mining_starts(diffusion, cfg, corruption, size, seed)
    energy = model.bind_levels(x, model.conditioning(diffusion.levels), t).detached()
    path = [diffusion.descend(energy, start, t, k)[0] for k in range(steps + 1)]
    return [(path[k] == path[k - 1]).all(dim=-1).float().mean().item() for k in range(1, steps + 1)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of ired-train")
    parser.add_argument("--corruption", default="3,0.5", help="starting corruptions c, comma-separated")
    parser.add_argument("--steps", type=int, default=5, help="descent steps (default: %(default)s)")
    parser.add_argument("--size", type=int, default=2048, help="problems in the batch (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    corruptions = [float(c) for c in args.corruption.split(",")]

    rows = []
    for run in args.runs:
        loaded = open_run(run, ["hardware.device=cpu"])  # the EMA weights, once per run
        rows += [
            {
                "run": run,
                "corruption": c,
                "rejected": rejected_per_step(
                    loaded.model, loaded.diffusion, loaded.cfg, c, args.steps, args.size, seed=0
                ),
            }
            for c in corruptions
        ]
    table = Table(title="Rejected descent steps (fraction of samples), EMA weights")
    for col in ["run", "corruption", *(f"step {k}" for k in range(1, args.steps + 1))]:
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=col == "run")
    for r in rows:
        table.add_row(Path(r["run"]).name, f"{r['corruption']:g}", *(f"{v:.3f}" for v in r["rejected"]))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "seed": 0, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
