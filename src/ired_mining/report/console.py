"""The report in a terminal: the main table (the same model as summary.md's), timing, the verdict,
and every run that did not finish."""

from __future__ import annotations

from ired_mining.report.analysis import pct
from ired_mining.report.results import Analysis
from ired_mining.report.table import main_table, to_rich
from ired_mining.stats import CLEARS, FALLS_SHORT


def print_report(a: Analysis, console) -> None:
    from rich.markup import escape

    if not a.strategies:
        console.print(f"[red]no run finished[/] ({a.n_runs.total} runs found)")
    else:
        title = (
            f"final test MSE · {a.n_runs.finished} of {a.n_runs.total} runs finished · "
            f"change vs {a.baseline} in % [95 % CI]"
        )
        table = to_rich(main_table(a, with_timing=False), title)
        console.print(table)
        if (needed := console.measure(table).maximum) > console.width:  # rich cuts no_wrap cells to fit
            console.print(
                f"[yellow]this table needs {needed} columns and has {console.width}: cells are cut; "
                "the full table is in summary.md[/]"
            )
    if a.final.timing:
        parts = []
        for n in a.strategies:
            t = a.final.timing[n]
            parts.append(
                f"{n} {t.seconds_per_step.mean * 1e3:.3g} (mining {pct(t.mining_share, sign=False, digits=0)})"
            )
        console.print("ms per step: " + ", ".join(parts))
    style = {CLEARS: "green", FALLS_SHORT: "red"}.get(a.verdict.outcome, "yellow")
    console.print(f"[bold {style}]verdict: {a.verdict.outcome}[/] — " + escape(a.verdict.text.replace("`", "")))
    if a.registered:
        from ired_mining.report.plan import sentence

        for r in a.registered.results:
            if r.role != "primary":
                console.print("  " + escape(sentence(r, a.registered).replace("`", "").replace("**", "")))
    for line in a.floor:
        console.print(f"[yellow]{escape(line.replace('`', ''))}[/]")
    for p in a.problems:
        console.print(f"[red]{p.status}[/]: {escape(p.run)} — {escape(p.detail)}")
