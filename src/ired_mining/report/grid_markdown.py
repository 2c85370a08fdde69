"""The grid's part of summary.md: every configuration against the baseline, corrected for
multiplicity, with the negatives' distance and gap, time per step and equal-wall-clock MSE."""

from __future__ import annotations

import math

from ired_mining.report.analysis import pct
from ired_mining.report.results import Analysis, GridChange, Stat
from ired_mining.report.table import md_table
from ired_mining.stats import bonferroni_level


def fmt_mean_ci(st: Stat, interval: list[float]) -> str:
    if st.n == 0:
        return "—"
    if not all(math.isfinite(v) for v in interval):
        return f"{st.mean:.4g} ({st.n} seed{'s' if st.n != 1 else ''})"
    return f"{st.mean:.4g} [{interval[0]:.4g}, {interval[1]:.4g}]"


def fmt_corrected(change: GridChange | None) -> str:
    if change is None:
        return "baseline"
    iv = change.simultaneous
    if not iv.defined:
        return "n/a (< 2 seeds)"
    return f"{pct(iv.point)} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if math.isfinite(p) else "—"


def fmt_plain(st: Stat, digits: str = ".3g") -> str:
    return f"{st.mean:{digits}}" if st.n and math.isfinite(st.mean) else "—"


def render_grid(a: Analysis, plots: dict[str, str]) -> list[str]:
    g = a.grid
    m = g.comparisons.get(a.primary_split, 0)
    ref = ", ".join(f"{k}={v}" for k, v in g.reference.items() if k != "mining.name")
    md = [
        "## The grid: every configuration against `none`",
        "",
        f"{len(g.points)} configurations; a label is the strategy and each setting that differs from the "
        f"reference (a mining option: from its strategy's default; another setting: from its most common "
        f"value: {ref or 'none'}). MSE: mean over seeds [95 % t interval of the mean]. Change against "
        f"`{a.baseline}`: ratio of geometric means − 1 with a **simultaneous 95 % interval** (Bonferroni over "
        f"the {m} comparisons with `{a.baseline}` on each split: each interval at "
        f"{100 * bonferroni_level(m):.2f} %); Holm: Welch's two-sided p-value adjusted by Holm's step-down "
        "method over the same comparisons (H0: no change). Negatives: RMS distance to the truth and energy "
        "gap E⁻ − E⁺ in the last stretch of training. Equal wall-clock: MSE reached by "
        f"{a.equal_time.limit:.4g} s of training (`{a.equal_time.fastest}`'s mean).",
        "",
    ]
    if g.best:
        about = (
            "the verdict above is the registered plan's, not about it"
            if a.registered
            else "the verdict above is about it"
        )
        md += [
            f"Best mining configuration in distribution: `{g.best}` ({about}; a "
            f"configuration of `{a.baseline}` with other settings, such as a larger model, is a control: "
            "compared and corrected for, never the verdict's candidate).",
            "",
        ]
    header = ["configuration", "seeds"]
    for s in a.splits:
        header += [f"{s} MSE [95 % CI]", f"{s} vs `{a.baseline}` [simultaneous 95 %]", "Holm p"]
    header += ["neg. distance", "neg. gap", "ms / step"] + [f"{s} MSE at equal wall-clock" for s in a.splits]
    rows = []
    for p in g.points:
        row = [f"`{p.label}`", str(p.n)]
        for s in a.splits:
            change = p.change.get(s)
            row += [
                fmt_mean_ci(p.mse[s], p.mse_interval[s]),
                fmt_corrected(change),
                fmt_p(change.p_holm) if change else "",
            ]
        row += [fmt_plain(p.neg_dist), fmt_plain(p.neg_gap), fmt_plain(p.ms_per_step)]
        row += [fmt_plain(p.equal_time_mse[s], ".4g") if s in p.equal_time_mse else "—" for s in a.splits]
        rows.append(row)
    md += [md_table(header, rows), ""]
    if g.map:
        md += [
            f"The 2-D grid, {g.map.x} × {g.map.y} (change against `{a.baseline}`, point estimates):",
            "",
            f"![grid heatmap]({plots['heatmap']})",
            "",
        ]
    md += [
        "Final MSE against the distance of the negatives to the truth (configurations with negatives):",
        "",
        f"![MSE vs the negatives' distance]({plots['distance']})",
        "",
    ]
    return md
