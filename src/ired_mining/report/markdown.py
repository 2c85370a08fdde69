"""Rendering summary.md: the verdict first, then the tables, plots, problems, provenance and method."""

from __future__ import annotations

import json
from dataclasses import replace

from ired_mining.report.analysis import pct
from ired_mining.report.results import Analysis
from ired_mining.report.table import fmt_change, fmt_stat, main_table, md_table, to_markdown


def render_markdown(a: Analysis, plots: dict[str, str]) -> str:
    v = a.verdict
    md = [f"# IRED negative-mining study: report of `{a.sweep_dir}`", ""]
    md += [f"**Verdict: {v.outcome}.** " + v.text[0].upper() + v.text[1:], ""]
    if a.registered:
        md += render_registered(a)
    md += [
        f"{a.n_runs.finished} of {a.n_runs.total} runs finished"
        + (f"; {len(a.problems)} failed or missing, listed under *Failed and missing runs*." if a.problems else "."),
        "",
    ]
    if a.floor:
        md += ["**Against the trivial floor:**", ""] + [f"- {line}" for line in a.floor] + [""]
    if not a.strategies:
        md += ["No run finished: there are no statistics to show.", ""]
    else:
        md += render_tables(a, plots)
    md += render_problems(a) + render_provenance(a) + render_method(a)
    return "\n".join(md) + "\n"


def render_registered(a: Analysis) -> list[str]:
    """The plan's hypotheses, judged as registered: the confirmatory part of the report."""
    from ired_mining.report.plan import sentence

    reg = a.registered
    md = [
        "## Registered hypotheses (confirmatory)",
        "",
        f"Judged as the plan `{reg.plan}` registered them before the runs: relative change of the final MSE "
        f"(ratio of geometric means − 1), {reg.correction.capitalize()} over its {len(reg.results)} hypotheses, "
        f"so each interval is a {100 * reg.each_level:.2f} % Welch interval and all of them cover together at "
        f"{100 * reg.level:.0f} %; a hypothesis holds when its whole interval lies at or below "
        f"{pct(reg.threshold, digits=0)}.",
        "",
    ]
    rows = []
    for r in reg.results:
        iv = r.interval
        change = f"{pct(iv.point)} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]" if iv.defined else "—"
        rows.append(
            [
                r.id,
                r.role,
                r.split,
                f"`{r.candidate}`",
                fmt_stat(r.candidate_mse),
                f"`{r.baseline}`",
                fmt_stat(r.baseline_mse),
                change,
                f"**{r.outcome}**",
            ]
        )
    md += [
        md_table(
            [
                "id",
                "role",
                "split",
                "candidate",
                "candidate MSE",
                "baseline",
                "baseline MSE",
                "change [simultaneous CI]",
                "outcome",
            ],
            rows,
        ),
        "",
    ]
    md += [f"- {sentence(r, reg)}" for r in reg.results] + [""]
    md += [
        "Everything below is **exploratory**: comparisons the plan did not name, with their own intervals "
        "(and, in a grid, their own correction), which confirm nothing.",
        "",
    ]
    return md


def render_tables(a: Analysis, plots: dict[str, str]) -> list[str]:
    md = [
        "## Final test MSE",
        "",
        "EMA-model sampler MSE at the end of training, mean ± std over seeds; change against "
        f"`{a.baseline}` as the ratio of geometric means − 1 with a 95 % Welch interval (see *Statistics*).",
        "",
    ]
    md += [to_markdown(main_table(a)), ""]
    if a.grid:
        from ired_mining.report.grid_markdown import render_grid

        md += render_grid(a, plots)
    eq = a.equal_steps
    md += ["## Equal steps", ""]
    if eq.all_final:
        md += [f"Every finished run trained for {eq.limit} steps: the table above is the equal-steps comparison.", ""]
    else:
        md += [
            f"Runs trained for different numbers of steps; MSE at the last evaluation at or before step "
            f"{eq.limit} (the shortest finished run):",
            "",
            to_markdown(main_table(a, eq, with_timing=False, with_references=False)),
            "",
        ]
    et = a.equal_time
    md += [
        "## Equal wall-clock",
        "",
        f"MSE each run had reached after {et.limit:.4g} s of training (excluding evaluation), the mean "
        f"training time of the fastest strategy, `{et.fastest}`: the last evaluation at or before that "
        f"time, not an interpolation (a strategy is credited only with what it had actually reached).",
        "",
        to_markdown(main_table(a, et, with_timing=False, with_references=False, with_reached=True)),
        "",
    ]
    md += render_timing(a)
    md += render_bootstrap(a)
    md += [
        "## Learning curves",
        "",
        f"![learning curves]({plots['curves']})",
        "",
        "Sampler MSE of the EMA model on the fixed sets; lines are means over seeds, bands the range over "
        "seeds; the dashed line is the zero predictor (the exact solver, ~1e-14, is off the scale).",
        "",
    ]
    md += render_scaling(a, plots)
    return md


def render_timing(a: Analysis) -> list[str]:
    t = a.final.timing
    base = t.get(a.baseline)
    rows = []
    for n in a.strategies:
        per_step = t[n].seconds_per_step
        rows.append(
            [
                f"`{n}`",
                fmt_stat(replace(per_step, mean=per_step.mean * 1e3, std=per_step.std * 1e3)),
                f"× {per_step.mean / base.seconds_per_step.mean:.2f}" if base else "—",
                fmt_stat(t[n].mine_ms),
                pct(t[n].mining_share, sign=False),
                fmt_stat(t[n].train_seconds),
            ]
        )
    return [
        "## Time per step",
        "",
        md_table(
            ["strategy", "ms / step", f"vs `{a.baseline}`", "mining ms / step", "share of the step", "training s"], rows
        ),
        "",
    ]


def render_bootstrap(a: Analysis) -> list[str]:
    rows = [
        [f"`{name}`"] + [fmt_change(a.final.splits[s].change.get(name), "bootstrap") for s in a.splits]
        for name in a.strategies
        if name != a.baseline
    ]
    if not rows:
        return []
    return [
        "## Relative change by bootstrap",
        "",
        f"Ratio of arithmetic means − 1 against `{a.baseline}`, 95 % percentile bootstrap over seeds "
        "(10,000 resamples, seed 0). With few seeds this interval is narrower than it should be; the "
        "verdict uses Welch's.",
        "",
        md_table(["strategy"] + [f"{s} [95 % CI]" for s in a.splits], rows),
        "",
    ]


def render_scaling(a: Analysis, plots: dict[str, str]) -> list[str]:
    md = ["## Test-time compute: MSE vs the sampler's inner steps", ""]
    sc = a.scaling
    if not sc:
        return md + [
            "Not measured: run `ired-eval RUN_DIR --scaling` on the run directories, then this report again.",
            "",
        ]
    header = ["configuration", "sampler", "runs", "inner steps"] + [f"{s} MSE" for s in a.splits]
    rows = [
        [f"`{curve.configuration}`", f"`{curve.variant}`" if curve.variant else "the run's own", str(curve.n), str(k)]
        + [fmt_stat(curve.splits[s][i]) for s in a.splits]
        for curve in sc.strategies.values()
        for i, k in enumerate(curve.inner_steps)
    ]
    md += [md_table(header, rows), ""]
    if any(curve.variant for curve in sc.strategies.values()):
        md += [
            "A sampler other than the run's own is an `ired-eval RUN KEY=VALUE --scaling` evaluation "
            "(eval/scaling-KEY=VALUE.json); it is dashed in the plot.",
            "",
        ]
    md += [f"![scaling]({plots['scaling']})", ""]
    if len(sc.settings) > 1:
        md += [
            "Warning: the runs' scaling evaluations used different settings: "
            + "; ".join(json.dumps(s) for s in sc.settings),
            "",
        ]
    return md


def render_problems(a: Analysis) -> list[str]:
    md = ["## Failed and missing runs", ""]
    if a.problems:
        md += [
            md_table(
                ["run", "strategy", "seed", "status", "detail"],
                [
                    [f"`{p.run}`", str(p.strategy), str(p.seed), p.status, p.detail.replace("|", "\\|")]
                    for p in a.problems
                ],
            ),
            "",
            "These runs are not in the statistics above; every statistic uses the finished runs only.",
            "",
        ]
    else:
        md += ["None: every run the sweep asked for finished.", ""]
    if a.warnings:
        md += ["**Warnings:**", ""] + [f"- {w}" for w in a.warnings] + [""]
    return md


def render_provenance(a: Analysis) -> list[str]:
    p = a.provenance
    md = ["## How this was made", "", "Command" + (f" (run from `{p.cwd}`)" if p.cwd else "") + ":", "", "```"]
    md += p.commands or ["(not recorded)"]
    md += [
        "```",
        "",
        f"- Hydra of the runs: {', '.join(p.runs_hydra) or 'not recorded'}; "
        f"launcher: `{p.launcher or 'single run'}`; device setting: {', '.join(p.devices_configured)}",
    ]
    if p.runs_env:
        md += [f"- Runs' environment: {json.dumps(e)}" for e in p.runs_env]
    else:
        md += [
            "- The runs did not record their own versions or device; the versions below are those of the "
            "machine that wrote this report."
        ]
    m = p.report_machine
    md += [
        "- This report: " + ", ".join(f"{k} {v}" for k, v in p.report_env.items()),
        f"- Report machine: {m['cpu']}, {m['cores']} cores, {m['platform']}",
        "",
    ]
    return md


def render_method(a: Analysis) -> list[str]:
    return [
        "## Statistics",
        "",
        "- Unit of replication: the seed (initialisation and training stream); the evaluation sets are the "
        "same matrices for every run.",
        "- Change vs the baseline: exp(mean log MSE − mean log MSE of the baseline) − 1, with Welch's t "
        "interval on the log scale (unequal variances, Welch–Satterthwaite degrees of freedom, exact t "
        "quantile). The verdict uses this interval: *clears* if its upper end is at or below "
        f"{pct(a.criterion)}, *does not clear* if its lower end is above it, *inconclusive* otherwise.",
        "- Bootstrap: ratio of arithmetic means, percentile interval, each strategy's seeds resampled with "
        "replacement; shown as a check.",
        "- Equal wall-clock: training seconds exclude evaluation and checkpoints; timings of runs that shared "
        "a machine concurrently are not comparable.",
        "",
    ]
