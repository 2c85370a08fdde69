"""The main table, modelled once: one row per strategy (MSE and change against the baseline per
split, optionally timing) and the reference rows. It is rendered to markdown (summary.md) and to
the console (rich) from the same model; the two differ only in how they write the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ired_mining.report.analysis import pct
from ired_mining.report.results import Analysis, Change, Stat, Timing


@dataclass
class StrategyRow:
    strategy: str
    seeds: int
    mse: list[Stat]  # per split
    change: list[Change | None]  # per split; None where there is no comparison
    is_baseline: bool
    timing: Timing | None = None
    reached: Stat | None = None  # steps reached (the equal wall-clock comparison)


@dataclass
class ReferenceRow:
    label: str
    mse: list[float]  # per split
    detail: str = ""  # said in summary.md only; the console keeps to 80 columns


@dataclass
class MainTable:
    splits: list[str]
    baseline: str
    rows: list[StrategyRow]
    references: list[ReferenceRow]
    with_timing: bool = False
    with_reached: bool = False


def main_table(
    a: Analysis, part=None, with_timing: bool = True, with_references: bool = True, with_reached: bool = False
) -> MainTable:
    """The table of `part` (the final results by default; or an equal-steps or equal-time comparison)."""
    part = part or a.final
    rows = []
    for name in a.strategies:
        rows.append(
            StrategyRow(
                strategy=name,
                seeds=part.splits[a.splits[0]].stats[name].n,
                mse=[part.splits[s].stats[name] for s in a.splits],
                change=[None if name == a.baseline else part.splits[s].change.get(name) for s in a.splits],
                is_baseline=name == a.baseline,
                timing=a.final.timing[name] if with_timing else None,
                reached=part.reached[name].step if with_reached else None,
            )
        )
    refs = [
        ReferenceRow("zero predictor", [a.references[s].zero_mse for s in a.splits]),
        ReferenceRow("exact solver", [a.references[s].exact_mse for s in a.splits], detail="LAPACK"),
    ]
    if a.regressor:  # the feed-forward baseline, where the sweep trained one (model=regressor)
        n = a.regressor[a.splits[0]].n
        refs.append(
            ReferenceRow(
                "feed-forward regressor",
                [a.regressor[s].mean for s in a.splits],
                detail=f"MSE on A⁻¹, mean of {n} seed{'s' * (n != 1)}",
            )
        )
    return MainTable(a.splits, a.baseline, rows, refs if with_references else [], with_timing, with_reached)


# ================================================================ numbers


def fmt_stat(st: Stat | None) -> str:
    if not st or st.n == 0:
        return "—"
    if st.n == 1:
        return f"{st.mean:.4g} (1 seed)"
    return f"{st.mean:.4g} ± {st.std:.2g}"


def fmt_change(change: Change | None, method: str = "welch") -> str:
    if not change:
        return "—"
    iv = getattr(change, method)
    if not iv.defined:
        return "n/a (< 2 seeds)"
    return f"{pct(iv.point)} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ================================================================ markdown


def to_markdown(t: MainTable) -> str:
    header = ["strategy", "seeds"]
    for split in t.splits:
        header += [f"{split} MSE (mean ± std)", f"{split} vs `{t.baseline}` (%) [95 % CI]"]
    header += ["ms / step", "mining ms / step (share)"] if t.with_timing else []
    header += ["steps reached"] if t.with_reached else []
    rows = []
    for r in t.rows:
        row = [f"`{r.strategy}`", str(r.seeds)]
        for st, change in zip(r.mse, r.change):
            row += [fmt_stat(st), "baseline" if r.is_baseline else fmt_change(change)]
        if t.with_timing:
            row += [
                f"{r.timing.seconds_per_step.mean * 1e3:.3g}",
                f"{r.timing.mine_ms.mean:.3g} ({pct(r.timing.mining_share, sign=False)})",
            ]
        if t.with_reached:
            row += [fmt_stat(r.reached)]
        rows.append(row)
    for ref in t.references:
        label = f"{ref.label} ({ref.detail})" if ref.detail else ref.label
        row = [label, "—"] + [c for v in ref.mse for c in (f"{v:.4g}", "")]
        rows.append(row + [""] * (len(header) - len(row)))
    return md_table(header, rows)


# ================================================================ console


def to_rich(t: MainTable, title: str):
    """A rich Table narrowed to fit 80 columns: seeds beside the name, whole percent, no timing."""
    from rich import box
    from rich.table import Table

    def change(c: Change | None) -> str:
        iv = c.welch if c else None
        return f"{100 * iv.point:+.0f} [{100 * iv.lo:+.0f}, {100 * iv.hi:+.0f}]" if iv and iv.defined else "n/a"

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("strategy (seeds)", no_wrap=True)
    for split in t.splits:
        table.add_column(f"{split} MSE", justify="right", no_wrap=True)
        table.add_column(f"vs {t.baseline}, %", justify="right", no_wrap=True)
    for r in t.rows:
        cells = [
            c for st, ch in zip(r.mse, r.change) for c in (fmt_stat(st), "baseline" if r.is_baseline else change(ch))
        ]
        table.add_row(f"{r.strategy} ({r.seeds})", *cells)
    for ref in t.references:
        table.add_row(ref.label, *(c for v in ref.mse for c in (f"{v:.4g}", "")), style="dim")
    return table
