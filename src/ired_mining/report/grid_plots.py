"""The grid's plots: a heatmap of the change against the baseline over its 2-D grid, and MSE
against the negatives' distance to the truth. PNG files, matplotlib's Agg backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ired_mining.report.plots import PLOT_DPI, _pyplot, log_axis
from ired_mining.report.results import Grid, Reference

HEATMAP_SIZE = (11, 4.5)    # inches: 1100 × 450 px, one panel per split
DISTANCE_SIZE = (12, 5)     # inches: 1200 × 500 px, one panel per split


def plot_heatmap(grid: Grid, splits: list[str], baseline: str, path: Path) -> None:
    """Change of mean-log MSE against the baseline (%) for each cell of the 2-D grid; cells not in
    the sweep are blank. Diverging colours centred on 0: blue is better than the baseline."""
    plt = _pyplot()
    g = grid.map
    points = {p.label: p for p in grid.points}
    fig, axes = plt.subplots(1, len(splits), figsize=HEATMAP_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    for ax, split in zip(axes[0], splits):
        values = np.full((len(g.y_values), len(g.x_values)), np.nan)
        for iy, row in enumerate(g.cells):
            for ix, label in enumerate(row):
                change = points[label].change.get(split) if label else None
                if change is not None and math.isfinite(change.welch.point):
                    values[iy, ix] = 100 * change.welch.point
        span = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-span, vmax=span, origin="lower", aspect="auto")
        for iy in range(values.shape[0]):
            for ix in range(values.shape[1]):
                if math.isfinite(values[iy, ix]):
                    dark = abs(values[iy, ix]) > span / 2  # white text on the saturated cells
                    ax.text(ix, iy, f"{values[iy, ix]:+.1f} %", ha="center", va="center", fontsize=9,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(g.x_values)), [str(v) for v in g.x_values])
        ax.set_yticks(range(len(g.y_values)), [str(v) for v in g.y_values])
        ax.set_xlabel(g.x)
        ax.set_ylabel(g.y)
        ax.set_title(f"{split}: MSE change vs `{baseline}` (%)")
        fig.colorbar(image, ax=ax, label="% (ratio of geometric means − 1)")
    fig.savefig(path)
    plt.close(fig)


def plot_distance(grid: Grid, splits: list[str], baseline: str, refs: dict[str, Reference], path: Path) -> None:
    """Each configuration with negatives: mean final MSE (bars: std over seeds) against the mean RMS
    distance of its negatives to the truth at the end of training; the baseline as a line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(splits), figsize=DISTANCE_SIZE, dpi=PLOT_DPI, squeeze=False, layout="constrained")
    base = next((p for p in grid.points if p.label == baseline), None)
    for ax, split in zip(axes[0], splits):
        for i, p in enumerate(q for q in grid.points if math.isfinite(q.neg_dist.mean)):
            st = p.mse[split]
            ax.errorbar(p.neg_dist.mean, st.mean, yerr=st.std if math.isfinite(st.std) else None,
                        xerr=p.neg_dist.std if math.isfinite(p.neg_dist.std) else None,
                        fmt="o", color=f"C{i % 10}", ms=5, capsize=2)
            ax.annotate(p.label, (p.neg_dist.mean, st.mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if base is not None and math.isfinite(base.mse[split].mean):
            ax.axhline(base.mse[split].mean, color="tab:blue", lw=1, label=f"{baseline} (no negatives)")
        if math.isfinite(refs[split].zero_mse):
            ax.axhline(refs[split].zero_mse, color="black", ls="--", lw=1, label="zero predictor")
        log_axis(ax)
        ax.set_xlabel("RMS distance of the negatives to the truth (end of training)")
        ax.set_ylabel(f"{split} MSE")
        ax.set_title(f"{split}: final MSE vs the negatives' distance")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.savefig(path)
    plt.close(fig)
