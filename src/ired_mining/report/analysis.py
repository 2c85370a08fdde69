"""Analysis: statistics per strategy over seeds, comparisons against the baseline, and the verdict.

Every result is a named record of results.py; summary.json is `Analysis.to_json()`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ired_mining.report.grid import Labelling, analyse_grid, is_grid, label_runs
from ired_mining.report.plan import DOES_NOT_HOLD, HOLDS, Plan, Registered, judge_plan, plan_warnings, sentence
from ired_mining.report.provenance import provenance
from ired_mining.report.records import RunRecord
from ired_mining.report.results import (
    Analysis,
    Change,
    EqualSteps,
    EqualTime,
    Final,
    Grid,
    Problem,
    Reached,
    Reference,
    RunCount,
    Scaling,
    ScalingCurve,
    SplitResult,
    Spread,
    Stat,
    Timing,
    Verdict,
)
from ired_mining.rundir import flatten
from ired_mining.stats import (
    CLEARS,
    FALLS_SHORT,
    INCONCLUSIVE,
    bonferroni_level,
    bootstrap_relative_change,
    verdict,
    welch_relative_change,
)

BASELINE = "none"  # the strategy every other one is compared with
TREATMENT = "adversarial"  # the strategy the success criterion is about
CRITERION = -0.20  # relative change the treatment must reach: ≥ 20 % lower MSE
PRIMARY_SPLIT = "in_dist"  # the criterion's "test MSE"


# ================================================================ statistics per group


def strategy_order(names) -> list[str]:
    """The baseline first, then the other strategies in the registry's order (mining.STRATEGIES),
    then anything else alphabetically."""
    from ired_mining.mining import STRATEGIES  # here, not at the top: importing the report loads no torch

    known = [BASELINE, *(s for s in STRATEGIES if s != BASELINE)]
    return [n for n in known if n in names] + sorted(n for n in names if n not in known)


def splits_of(runs: list[RunRecord]) -> list[str]:
    """Evaluation splits in the order the configs list them."""
    for r in runs:
        splits = r.config.get("eval", {}).get("splits")
        if splits:
            return list(splits)
    return sorted({k.split("/")[0] for r in runs for k in r.final if k.endswith("/zero_mse")})


def value_at(curve: list[dict], key: str, axis: str, limit: float) -> tuple[float, dict | None]:
    """`key` at the last evaluation whose `axis` (step or train_seconds) is ≤ limit; nan if none."""
    before = [row for row in curve if row.get(axis, math.inf) <= limit + 1e-9 and key in row]
    return (float(before[-1][key]), before[-1]) if before else (math.nan, None)


def mining_ms(curve: list[dict]) -> float:
    """Mean mining time per step over a run: each metrics line holds the mean since the previous
    evaluation, so the lines are weighted by the steps they cover."""
    total, steps, previous = 0.0, 0, 0
    for row in curve:
        if "mine_ms" in row:
            covered = row["step"] - previous
            total, steps = total + row["mine_ms"] * covered, steps + covered
        previous = row["step"]
    return total / steps if steps else math.nan


def spread(values: list[float]) -> Spread:
    st = Stat.of(values)
    return Spread(st.mean, st.std, st.n, st.values, min(values, default=math.nan), max(values, default=math.nan))


def compare(values: dict[str, list[float]], baseline: str = BASELINE) -> dict[str, Change]:
    """Relative change of every strategy's values against the baseline's, both intervals."""
    if baseline not in values:
        return {}
    base = values[baseline]
    return {
        name: Change(welch_relative_change(v, base), bootstrap_relative_change(v, base))
        for name, v in values.items()
        if name != baseline
    }


def split_result(values: dict[str, list[float]]) -> SplitResult:
    return SplitResult({name: Stat.of(v) for name, v in values.items()}, compare(values))


def analyse_final(groups: dict[str, list[RunRecord]], splits: list[str]) -> Final:
    """Final MSE per strategy and split, the changes vs the baseline, time per step and mining cost."""
    out = {
        split: split_result(
            {name: [float(r.final.get(f"{split}/mse", math.nan)) for r in runs] for name, runs in groups.items()}
        )
        for split in splits
    }
    timing = {}
    for name, runs in groups.items():
        per_step = Stat.of([r.final.get("seconds_per_step", math.nan) for r in runs])
        mine = Stat.of([mining_ms(r.curve) for r in runs])
        timing[name] = Timing(
            per_step,
            mine,
            mine.mean / 1e3 / per_step.mean if per_step.mean else math.nan,
            Stat.of([r.final.get("train_seconds", math.nan) for r in runs]),
        )
    return Final(out, timing)


def analyse_at(groups: dict[str, list[RunRecord]], splits: list[str], axis: str, limit: float):
    """MSE each run had reached at `limit` on `axis` (last evaluation at or before it): the
    splits' results and how far each strategy had got."""
    reached = {}
    for name, runs in groups.items():
        rows = [value_at(r.curve, f"{splits[0]}/mse", axis, limit)[1] for r in runs]
        reached[name] = Reached(
            Stat.of([row["step"] if row else math.nan for row in rows]),
            Stat.of([row["train_seconds"] if row else math.nan for row in rows]),
        )
    out = {
        split: split_result(
            {name: [value_at(r.curve, f"{split}/mse", axis, limit)[0] for r in runs] for name, runs in groups.items()}
        )
        for split in splits
    }
    return out, reached


def equal_steps(groups: dict[str, list[RunRecord]], splits: list[str], finished: list[RunRecord]) -> EqualSteps:
    """MSE at the step count of the shortest finished run."""
    common = min(r.final.get("step", 0) for r in finished)
    out, reached = analyse_at(groups, splits, "step", common)
    return EqualSteps(common, "step", out, reached, all(r.final.get("step") == common for r in finished))


def equal_time(groups: dict[str, list[RunRecord]], splits: list[str], timing: dict[str, Timing]) -> EqualTime:
    """MSE at the mean training time of the fastest strategy."""
    fastest = min(groups, key=lambda n: timing[n].train_seconds.mean)
    limit = timing[fastest].train_seconds.mean
    out, reached = analyse_at(groups, splits, "train_seconds", limit)
    return EqualTime(limit, "train_seconds", out, reached, fastest)


def references(finished: list[RunRecord], splits: list[str]) -> tuple[dict[str, Reference], list[str]]:
    """Zero-predictor and exact-solver MSE per split; a warning if runs disagree (then their
    evaluation sets differ and the runs are not comparable)."""
    refs, warnings = {}, []
    for split in splits:
        median = {}
        for kind in ("zero_mse", "exact_mse"):
            values = [r.final[f"{split}/{kind}"] for r in finished if f"{split}/{kind}" in r.final]
            median[kind] = float(np.median(values)) if values else math.nan
            if kind == "zero_mse" and values and max(values) - min(values) > 1e-6 * max(abs(max(values)), 1e-12):
                warnings.append(
                    f"the zero-predictor MSE on {split} differs between runs ({min(values):.4g} to "
                    f"{max(values):.4g}): their evaluation sets are not the same"
                )
        refs[split] = Reference(**median)
    return refs, warnings


def varying_settings(finished: list[RunRecord]) -> list[str]:
    """Config values other than the strategy and seed that differ between runs: the protocol says
    everything else is equal, so each one found is a warning."""
    # Hardware and the study's own factors may differ; the mining group's options belong to the strategy.
    seen: dict[str, set] = {}
    for r in finished:
        for key, value in flatten(r.config).items():
            if key != "seed" and not key.startswith(("mining.", "hardware.")):
                seen.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return sorted(k for k, v in seen.items() if len(v) > 1)


def analyse_scaling(groups: dict[str, list[RunRecord]], splits: list[str]) -> Scaling | None:
    """Mean, min and max MSE over seeds per configuration, evaluation variant and inner-step count,
    from the runs' ired-eval --scaling files (records.read_scaling). A variant's curve is named
    `configuration · variant`, e.g. `adversarial · sampler.backtrack=0.5`."""
    out = {}
    for name, runs in groups.items():
        for variant in sorted({v for r in runs for v in r.scaling}):  # "" (the plain curve) first
            payloads = [r.scaling[variant] for r in runs if variant in r.scaling]
            steps = sorted({row["inner_steps"] for p in payloads for row in p["results"]})
            out[f"{name} · {variant}" if variant else name] = ScalingCurve(
                name,
                variant,
                steps,
                len(payloads),
                {
                    split: [
                        spread(
                            [
                                row[f"{split}/mse"]
                                for p in payloads
                                for row in p["results"]
                                if row["inner_steps"] == k and f"{split}/mse" in row
                            ]
                        )
                        for k in steps
                    ]
                    for split in splits
                },
            )
    if not out:
        return None
    # The variants differ in what they override by design; any other difference deserves a warning.
    payloads = [p for runs in groups.values() for r in runs for p in r.scaling.values()]
    varied = {o.partition("=")[0].lstrip("+~") for p in payloads for o in p.get("overrides", [])}
    settings = {
        json.dumps({k: v for k, v in p.get("settings", {}).items() if k not in varied}, sort_keys=True)
        for p in payloads
    }
    return Scaling(out, [json.loads(s) for s in sorted(settings)])


# ================================================================ the verdict


def pct(x: float, sign: bool = True, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.{digits}f} %" if sign else f"{100 * x:.{digits}f} %"


def judge(final: Final, treatment: str = TREATMENT) -> Verdict:
    """The verdict on the success criterion for `treatment` against the baseline, from the primary
    split's Welch interval."""
    primary = final.splits.get(PRIMARY_SPLIT, SplitResult({}, {}))
    change = primary.change.get(treatment)
    n_t, n_b = (primary.stats[s].n if s in primary.stats else 0 for s in (treatment, BASELINE))
    if change is None or not change.welch.defined:
        return Verdict(
            INCONCLUSIVE,
            None,
            None,
            [n_t, n_b],
            f"cannot be judged: it needs ≥ 2 finished seeds of both `{treatment}` and `{BASELINE}` "
            f"(there are {n_t} and {n_b}).",
        )
    welch, boot = change.welch, change.bootstrap
    outcome = verdict(welch, CRITERION)
    reason = {
        CLEARS: f"the whole interval lies at or below {pct(CRITERION)}: the criterion is met.",
        FALLS_SHORT: f"the whole interval lies above {pct(CRITERION)}: the criterion is not met.",
        INCONCLUSIVE: f"the interval straddles {pct(CRITERION)}: these seeds neither confirm nor rule "
        f"out the criterion (more seeds narrow the interval).",
    }[outcome]
    text = (
        f"in distribution, `{treatment}`'s test MSE differs from `{BASELINE}`'s by {pct(welch.point)} "
        f"(ratio of geometric means, {n_t} vs {n_b} seeds; 95 % Welch interval {pct(welch.lo)} to "
        f"{pct(welch.hi)}, {welch.df:.1f} df). The criterion is ≥ {pct(-CRITERION, sign=False, digits=0)} lower; "
        f"{reason} Bootstrap of the ratio of means: {pct(boot.point)} [{pct(boot.lo)}, {pct(boot.hi)}]."
    )
    return Verdict(outcome, welch, boot, [n_t, n_b], text)


def judge_grid(grid: Grid, final: Final) -> Verdict:
    """The verdict on the criterion for the grid's best mining configuration (lowest point estimate
    in distribution among those with negatives), from its Bonferroni simultaneous interval: picked by
    looking at all of them, its interval still covers, because all of them cover together."""
    primary = final.splits.get(PRIMARY_SPLIT, SplitResult({}, {}))
    best = grid.best
    point = next((p for p in grid.points if p.label == best), None)
    if point is None or PRIMARY_SPLIT not in point.change:
        n_b = primary.stats[BASELINE].n if BASELINE in primary.stats else 0
        return Verdict(
            INCONCLUSIVE,
            None,
            None,
            [0, n_b],
            f"cannot be judged: it needs ≥ 2 finished seeds of `{BASELINE}` and of some "
            f"configuration with negatives (`{BASELINE}` has {n_b}).",
        )
    change, m = point.change[PRIMARY_SPLIT], grid.comparisons[PRIMARY_SPLIT]
    sim, n = change.simultaneous, [point.n, primary.stats[BASELINE].n]
    outcome = verdict(sim, CRITERION)
    reason = {
        CLEARS: f"the whole simultaneous interval lies at or below {pct(CRITERION)}: the criterion is met.",
        FALLS_SHORT: f"the whole simultaneous interval lies above {pct(CRITERION)}: no mining "
        f"configuration of this grid meets the criterion.",
        INCONCLUSIVE: f"the simultaneous interval straddles {pct(CRITERION)}: these seeds neither confirm "
        f"nor rule out the criterion (more seeds narrow the interval).",
    }[outcome]
    k = sum(p.strategy != BASELINE for p in grid.points)
    which = f"the best of the {k} mining configurations" if k > 1 else "the one mining configuration"
    text = (
        f"in distribution, {which}, `{best}`, differs from `{BASELINE}` by "
        f"{pct(sim.point)} (ratio of geometric means, {n[0]} vs {n[1]} seeds; simultaneous 95 % interval "
        f"over the {m} comparisons with `{BASELINE}` (Bonferroni, each at {100 * bonferroni_level(m):.2f} %) "
        f"{pct(sim.lo)} to {pct(sim.hi)}; Holm-adjusted p = {change.p_holm:.3g}). The criterion is "
        f"≥ {pct(-CRITERION, sign=False, digits=0)} lower; {reason}"
    )
    boot = primary.change[best].bootstrap if best in primary.change else None
    return Verdict(outcome, sim, boot, n, text)


def configurations(finished: list[RunRecord]) -> tuple[dict[str, list[RunRecord]], Labelling | None]:
    """The finished runs grouped, baseline first: by strategy, or, when other settings vary too
    (a grid), by configuration label; with the grid's labelling (None if not a grid)."""
    labelling = label_runs(finished)
    grid = is_grid(labelling.labels, finished)
    key = (lambda r: labelling.labels[r.name]) if grid else (lambda r: r.strategy)  # noqa: E731
    order = strategy_order({key(r) for r in finished})
    return {name: [r for r in finished if key(r) == name] for name in order}, labelling if grid else None


def floor_statements(final: Final, refs: dict[str, Reference]) -> list[str]:
    """One plain sentence per strategy and split that does not beat the zero predictor."""
    lines = []
    for split, part in final.splits.items():
        zero = refs[split].zero_mse
        for name, st in part.stats.items():
            if st.n == 0 or not math.isfinite(zero):
                continue
            beating = sum(v < zero for v in st.values if math.isfinite(v))
            if not st.mean < zero:
                lines.append(
                    f"`{name}` does not beat the zero predictor on {split}: mean MSE {st.mean:.4g} "
                    f"against {zero:.4g} for predicting all zeros ({beating} of {st.n} seeds beat it)."
                )
    return lines


# ================================================================ everything


def is_regressor_run(run: RunRecord) -> bool:
    """A run of the feed-forward baseline (model=regressor): a reference row, not a configuration."""
    return run.config.get("model", {}).get("name") == "regressor"


def regressor_reference(runs: list[RunRecord], splits: list[str]) -> dict[str, Stat] | None:
    """The feed-forward baseline's final MSE per split over its finished seeds; None if the sweep has none."""
    if not runs:
        return None
    return {s: Stat.of([r.final.get(f"{s}/mse", math.nan) for r in runs]) for s in splits}


def registered_verdict(reg: Registered) -> Verdict:
    """The report's verdict when a plan is registered: its primary hypothesis, judged as planned."""
    r = reg.primary
    outcome = {HOLDS: CLEARS, DOES_NOT_HOLD: FALLS_SHORT}.get(r.outcome, INCONCLUSIVE)
    text = "the registered primary hypothesis: " + sentence(r, reg)
    return Verdict(
        outcome, r.interval if r.interval.defined else None, None, [r.candidate_mse.n, r.baseline_mse.n], text
    )


def pick_candidate(strategies: list[str], asked: str | None) -> str:
    """The strategy the verdict is about: the one asked for; else the study's (adversarial) where the
    sweep has it; else the sweep's one strategy besides the baseline, so that a sweep of a new
    strategy against `none` is judged without a flag."""
    if asked:
        return asked
    others = [s for s in strategies if s != BASELINE]
    return TREATMENT if TREATMENT in others or len(others) != 1 else others[0]


def analyse(
    sweep_dir: Path, runs: list[RunRecord], notes: list[str], plan: Plan | None = None, candidate: str | None = None
) -> Analysis:
    everything = [r for r in runs if r.finished]
    regressors = [r for r in everything if is_regressor_run(r)]
    finished = [r for r in everything if not is_regressor_run(r)]
    groups, labelling = configurations(finished)
    order = list(groups)
    splits = splits_of(finished or runs)
    refs, warnings = references(finished, splits)
    varying = varying_settings(finished)
    if varying and labelling is None:  # in a grid the settings that vary are the point
        warnings.append("settings other than strategy and seed differ between runs: " + ", ".join(varying))
    for r in finished:
        for split in splits:
            v = r.final.get(f"{split}/mse", math.nan)
            if not math.isfinite(v):
                warnings.append(f"{r.name}: {split}/mse is {v}; left out of that split's statistics")
    final = analyse_final(groups, splits)
    at_equal_time = equal_time(groups, splits, final.timing) if finished else None
    treatment = pick_candidate(order, candidate)
    registered = judge_plan(plan, finished) if plan else None  # the regressor is a reference, never an arm
    if registered:
        warnings += plan_warnings(registered)
    grid = None
    if labelling is not None:
        grid = analyse_grid(
            groups,
            labelling.settings,
            labelling.factors,
            labelling.reference,
            splits,
            BASELINE,
            PRIMARY_SPLIT,
            final,
            at_equal_time,
        )
    return Analysis(
        sweep_dir=str(sweep_dir),
        splits=splits,
        strategies=order,
        baseline=BASELINE,
        treatment=treatment,
        criterion=CRITERION,
        primary_split=PRIMARY_SPLIT,
        n_runs=RunCount(len(everything), len(runs)),
        references=refs,
        final=final,
        warnings=notes + warnings,
        verdict=(
            registered_verdict(registered)
            if registered
            else judge_grid(grid, final)
            if grid
            else judge(final, treatment)
        ),
        floor=floor_statements(final, refs),
        equal_steps=equal_steps(groups, splits, finished) if finished else None,
        equal_time=at_equal_time,
        scaling=analyse_scaling(groups, splits),
        problems=[Problem(r.name, r.strategy, r.seed, r.status, r.error) for r in runs if not r.finished],
        provenance=provenance(sweep_dir, runs),
        grid=grid,
        registered=registered,
        regressor=regressor_reference(regressors, splits),
    )
