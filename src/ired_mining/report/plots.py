"""Plots: learning curves over seeds, and MSE against the sampler's inner steps (the report's and
ired-eval's). PNG files only, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ired_mining.report.records import RunRecord
from ired_mining.report.results import Reference, Scaling

PLOT_DPI = 100
CURVES_SIZE = (12, 8)  # inches: 1200 × 800 px learning-curve figure
SCALING_SIZE = (12, 4.5)  # inches: 1200 × 450 px scaling figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a cluster node without a display
    import matplotlib.pyplot as plt

    return plt


# The strategies' colours, in the registry's order (mining.STRATEGIES: none, random, adversarial);
# any other line takes matplotlib's cycle.
STRATEGY_COLOURS = ("tab:blue", "tab:orange", "tab:red")


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
    from ired_mining.mining import STRATEGIES  # here, not at the top: importing the report loads no torch

    return dict(zip(STRATEGIES, STRATEGY_COLOURS)).get(name, f"C{(index + 3) % 10}")


FEW_LINES = 5  # up to this many configurations: a legend in each panel, matplotlib's colours
MARKERS = "osD^v<>pP*Xh"  # beyond: tab20's colours with these markers tell up to 20 apart


def line_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per configuration: the strategies' own colours for a few; for a grid's many,
    20 colours and a marker each, so that no two lines look alike."""
    if len(names) <= FEW_LINES:
        return {name: (colour(name, i), "o") for i, name in enumerate(names)}
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"]
    return {name: (matplotlib.colors.to_hex(tab20(i % 20)), MARKERS[i % len(MARKERS)]) for i, name in enumerate(names)}


def legend_below(fig, ax, ncols: int = 3) -> None:
    """One legend for the whole figure, under its panels (`ax`'s lines name them all)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def band_over_seeds(
    runs: list[RunRecord], key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    return (
        steps,
        secs,
        np.array([v.mean() for v in vals]),
        np.array([v.min() for v in vals]),
        np.array([v.max() for v in vals]),
    )


def plot_learning_curves(
    groups: dict[str, list[RunRecord]], splits: list[str], refs: dict[str, Reference], path: Path
) -> None:
    plt = _pyplot()
    styles = line_styles(list(groups))
    many = len(groups) > FEW_LINES  # a grid: one legend under the panels rather than over the curves
    size = (CURVES_SIZE[0], CURVES_SIZE[1] + 0.25 * math.ceil((len(groups) + 1) / 3) + 0.5) if many else CURVES_SIZE
    fig, axes = plt.subplots(len(splits), 2, figsize=size, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for row, split in enumerate(splits):
        for col, (xlabel, use_seconds) in enumerate((("optimiser step", False), ("training seconds", True))):
            ax = axes[row, col]
            for name, runs in groups.items():
                steps, secs, mean, lo, hi = band_over_seeds(runs, f"{split}/mse")
                if len(steps) == 0:
                    continue
                x = secs if use_seconds else steps
                line_colour, marker = styles[name]
                ax.plot(
                    x,
                    mean,
                    color=line_colour,
                    marker=marker,
                    ms=3 if not many else 4,
                    label=f"{name} ({len(runs)} seeds)",
                )
                ax.fill_between(x, lo, hi, color=line_colour, alpha=0.2, linewidth=0)
            finish_panel(ax, split, refs[split].zero_mse, xlabel, f"{split}: MSE vs {xlabel}", legend=not many)
    if many:
        legend_below(fig, axes[0, 0])
    fig.savefig(path)
    plt.close(fig)


def finish_panel(ax, split: str, zero: float, xlabel: str, title: str, legend: bool = True) -> None:
    """The parts every MSE panel shares: the zero predictor's line, log axis, labels, grid, legend."""
    if math.isfinite(zero):
        ax.axhline(zero, color="black", ls="--", lw=1, label="zero predictor")
    log_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{split} MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if legend:
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
    style: str = "-"  # matplotlib line style: a configuration's evaluation variants are dashed


def scaling_figure(lines: dict[str, list[Line]], zero: dict[str, float], path: Path) -> None:
    """MSE against the sampler's inner steps, one panel per split (the report's and ired-eval's)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(lines), figsize=SCALING_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for ax, (split, split_lines) in zip(axes[0], lines.items()):
        for line in split_lines:
            ax.plot(line.steps, line.mean, color=line.colour, ls=line.style, marker="o", label=line.label)
            if line.lo is not None:
                ax.fill_between(line.steps, line.lo, line.hi, color=line.colour, alpha=0.2, linewidth=0)
        finish_panel(
            ax,
            split,
            zero[split],
            "inner energy-descent steps per level (test time)",
            f"{split}: MSE vs test-time inner steps",
        )
        ax.set_xticks(sorted({k for line in split_lines for k in line.steps}))
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(scaling: Scaling, splits: list[str], refs: dict[str, Reference], path: Path) -> None:
    """One colour per configuration; its evaluation variants (sampler.backtrack=0.5, ...) dashed."""
    styles = line_styles(list(dict.fromkeys(c.configuration for c in scaling.strategies.values())))
    lines = {
        split: [
            Line(
                f"{name} ({curve.n} runs)",
                styles[curve.configuration][0],
                curve.inner_steps,
                *([getattr(p, k) for p in curve.splits[split]] for k in ("mean", "min", "max")),
                style="--" if curve.variant else "-",
            )
            for name, curve in scaling.strategies.items()
        ]
        for split in splits
    }
    scaling_figure(lines, {split: refs[split].zero_mse for split in splits}, path)
