"""The grid's plots: a heatmap of the change against the baseline over its 2-D grid, and MSE
against the negatives' distance to the truth. PNG files, matplotlib's Agg backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ired_mining.report.plots import PLOT_DPI, _pyplot, legend_below, line_styles
from ired_mining.report.results import Grid

HEATMAP_SIZE = (11, 4.5)  # inches: 1100 × 450 px, one panel per split
DISTANCE_SIZE = (12, 7)  # inches: 1200 × 700 px, one panel per split above the legend
MISSING_GREY = "#bdbdbd"  # a cell of the 2-D grid with no finished run (or no finite change)


def plot_heatmap(grid: Grid, splits: list[str], baseline: str, path: Path) -> None:
    """Change of mean-log MSE against the baseline (%) for each cell of the 2-D grid. Diverging
    colours centred on 0: blue is better than the baseline. A cell not in the sweep is grey, labelled
    `no runs` (`n/a`: runs, but no change to show); the baseline's own cell is 0 %, labelled `baseline`."""
    plt = _pyplot()
    g = grid.map
    points = {p.label: p for p in grid.points}
    fig, axes = plt.subplots(1, len(splits), figsize=HEATMAP_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for ax, split in zip(axes[0], splits):
        values = np.full((len(g.y_values), len(g.x_values)), np.nan)
        notes = {}  # what a cell without a change shows instead
        for iy, row in enumerate(g.cells):
            for ix, label in enumerate(row):
                change = points[label].change.get(split) if label else None
                if change is not None and math.isfinite(change.welch.point):
                    values[iy, ix] = 100 * change.welch.point
                elif label == baseline:
                    values[iy, ix], notes[iy, ix] = 0.0, "baseline"  # 0 % by definition
                else:
                    notes[iy, ix] = "no runs" if label is None else "n/a"
        span = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        # A missing cell in grey and said so: the colour map paints NaN white, the colour of 0 %.
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad=MISSING_GREY)
        image = ax.imshow(values, cmap=cmap, vmin=-span, vmax=span, origin="lower", aspect="auto")
        for iy in range(values.shape[0]):
            for ix in range(values.shape[1]):
                if (iy, ix) in notes:
                    ax.text(ix, iy, notes[iy, ix], ha="center", va="center", fontsize=9, color="dimgrey")
                else:
                    dark = abs(values[iy, ix]) > span / 2  # white text on the saturated cells
                    ax.text(
                        ix,
                        iy,
                        f"{values[iy, ix]:+.1f} %",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if dark else "black",
                    )
        ax.set_xticks(range(len(g.x_values)), [str(v) for v in g.x_values])
        ax.set_yticks(range(len(g.y_values)), [str(v) for v in g.y_values])
        ax.set_xlabel(g.x)
        ax.set_ylabel(g.y)
        ax.set_title(f"{split}: MSE change vs `{baseline}` (%)")
        fig.colorbar(image, ax=ax, label="% (ratio of geometric means − 1)")
    fig.savefig(path)
    plt.close(fig)


def plot_distance(grid: Grid, splits: list[str], baseline: str, path: Path) -> None:
    """Each configuration with negatives: its change in final MSE against the baseline (%, bars: the
    simultaneous 95 % interval) against the mean RMS distance of its negatives to the truth at the
    end of training (bars: std over seeds). One colour and marker per configuration, named in one
    legend below both panels: in a grid most points sit close together, where labels would collide."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(splits), figsize=DISTANCE_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    points = [p for p in grid.points if math.isfinite(p.neg_dist.mean) and p.change]
    styles = line_styles([p.label for p in grid.points])  # as in the learning curves
    for ax, split in zip(axes[0], splits):
        for p in points:
            change = p.change.get(split)
            if change is None or not math.isfinite(change.welch.point):
                continue
            sim = change.simultaneous
            yerr = [[100 * (sim.point - sim.lo)], [100 * (sim.hi - sim.point)]] if sim.defined else None
            ax.errorbar(
                p.neg_dist.mean,
                100 * change.welch.point,
                yerr=yerr,
                xerr=p.neg_dist.std if math.isfinite(p.neg_dist.std) else None,
                fmt=styles[p.label][1],
                color=styles[p.label][0],
                ms=7,
                capsize=2,
                label=p.label,
            )
        ax.axhline(0, color="tab:blue", lw=1, label=f"{baseline} (no negatives)")
        ax.set_xlabel("RMS distance of the negatives to the truth (end of training)")
        ax.set_ylabel(f"{split} MSE change vs `{baseline}` (%)")
        ax.set_title(f"{split}: final MSE vs the negatives' distance")
        ax.grid(alpha=0.3)
    legend_below(fig, axes[0][0])
    fig.savefig(path)
    plt.close(fig)
