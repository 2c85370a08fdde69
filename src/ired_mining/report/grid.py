"""A grid of configurations: runs grouped by every setting that varies (not only the strategy),
each group labelled by its settings that differ from the reference, and compared with the baseline
with corrections for multiplicity (stats.py says which and why).

A configuration is the set of runs whose configs agree on everything but the seed and the hardware.
A sweep whose configurations are just its strategies (none, random, adversarial) is not a grid, and
its report is the strategies' report alone.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from importlib.resources import files

from omegaconf import OmegaConf

from ired_mining.report.records import RunRecord
from ired_mining.report.results import AtLimit, Final, Grid, GridChange, GridMap, GridPoint, Stat
from ired_mining.rundir import flatten
from ired_mining.stats import UNDEFINED, bonferroni_level, holm, mean_interval, welch_p_value, welch_relative_change

IGNORED = ("seed", "hardware.")  # never a factor: the replicate and where it ran
STRATEGY_KEY = "mining.name"


# ================================================================ configurations and their labels


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    """Every leaf of a config as dotted key → JSON text; a whole float is written as an integer, so
    that `corruption: 3` in one file and `3.0` in another are the same setting."""
    return {
        k: json.dumps(int(v) if isinstance(v, float) and v.is_integer() else v, sort_keys=True)
        for k, v in flatten(config, prefix).items()
    }


def strategy_defaults(strategy: str) -> dict[str, str]:
    """The mining group's own defaults for a strategy, as flat_config writes them: its schema (the
    strategy's dataclass, schema.py) under its yaml (conf/mining/<name>.yaml), as Hydra composes them."""
    # Imported here: the schema reads the strategy classes (torch), which only a grid's labels need,
    # so reading runs and a plain strategies report stay free of torch.
    from ired_mining.schema import MINING_SCHEMAS

    path = files("ired_mining") / "conf" / "mining" / f"{strategy}.yaml"
    if strategy not in MINING_SCHEMAS or not path.is_file():
        return {}
    own = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(str(path))).items() if k != "defaults"}
    merged = OmegaConf.merge(OmegaConf.structured(MINING_SCHEMAS[strategy]), own)
    return flat_config({"mining": OmegaConf.to_container(merged)})


def factors_of(runs: list[RunRecord]) -> tuple[list[str], dict[str, str]]:
    """The keys that vary between runs (seed and hardware aside) and each one's reference value:
    a mining option's is its strategy's default; any other key's is its most common value."""
    flats = [flat_config(r.config) for r in runs]
    keys = sorted({k for f in flats for k in f if not k.startswith(IGNORED)})
    # A key only some strategies have (mining.steps) varies with the strategy, not on its own.
    factors = [k for k in keys if len({f[k] for f in flats if k in f}) > 1]
    reference = {k: Counter(f[k] for f in flats if k in f).most_common(1)[0][0] for k in factors}
    return factors, reference


@dataclass(frozen=True)
class Labelling:
    """The runs of a sweep labelled by configuration (label_runs); values are JSON texts (flat_config)."""

    labels: dict[str, str]  # run name → its configuration's label
    settings: dict[str, dict[str, str]]  # label → its factors' values
    factors: list[str]  # the keys that vary between runs (seed and hardware aside)
    reference: dict[str, str]  # each factor's reference value


def label_runs(runs: list[RunRecord]) -> Labelling:
    """Each run's configuration label, and what the labels are made of (Labelling).

    The label is the strategy, then each of its mining options that differs from the strategy's
    default (without the `mining.` prefix), then each other factor whose value differs from the
    reference: e.g. `adversarial corruption=0.5 steps=1`, `none model.hidden=1024`. A run of the
    strategy's defaults is labelled by the strategy alone.
    """
    factors, reference = factors_of(runs)
    defaults = {s: strategy_defaults(s) for s in {r.strategy for r in runs}}
    labels, settings = {}, {}
    for r in runs:
        flat = flat_config(r.config)
        own = {k: flat[k] for k in factors if k in flat}
        changed = {
            k: v
            for k, v in flat.items()  # a mining option counts even if the whole sweep changed it
            if k.startswith("mining.") and k in defaults[r.strategy] and v != defaults[r.strategy][k]
        }
        changed |= {k: v for k, v in own.items() if not k.startswith("mining.") and v != reference[k]}
        parts = [r.strategy] + [f"{k.removeprefix('mining.')}={json.loads(v)}" for k, v in sorted(changed.items())]
        labels[r.name] = " ".join(parts)
        settings[labels[r.name]] = own
    return Labelling(labels, settings, factors, reference)


def is_grid(labels: dict[str, str], runs: list[RunRecord]) -> bool:
    """Something besides the strategy varies, or a strategy runs with other options than its own
    defaults: then a strategy's name alone would not say what ran."""
    return len(set(labels.values())) > len({r.strategy for r in runs}) or any(
        labels[r.name] != r.strategy for r in runs
    )


# ================================================================ statistics per configuration


def last_value(curve: list[dict], key: str) -> float:
    """`key` in the last metrics line that has it (the mean over the last stretch of training)."""
    rows = [row[key] for row in curve if key in row and row[key] is not None]
    return float(rows[-1]) if rows else math.nan


def corrected_changes(
    groups: dict[str, list[RunRecord]], baseline: str, split: str, level: float = 0.95
) -> tuple[dict[str, GridChange], int]:
    """Each configuration's change against the baseline on `split`: Welch's interval, the
    Bonferroni simultaneous interval and the Holm-adjusted p-value over the m defined comparisons."""
    if baseline not in groups:
        return {}, 0
    values = {name: [r.final.get(f"{split}/mse", math.nan) for r in runs] for name, runs in groups.items()}
    others = [n for n in groups if n != baseline]
    p = {n: welch_p_value(values[n], values[baseline]) for n in others}
    m = sum(math.isfinite(v) for v in p.values())
    adjusted = dict(zip(others, holm([p[n] for n in others])))
    simultaneous = bonferroni_level(m, level)
    return {
        n: GridChange(
            welch_relative_change(values[n], values[baseline], level),
            welch_relative_change(values[n], values[baseline], simultaneous) if m else UNDEFINED,
            p[n],
            adjusted[n],
        )
        for n in others
    }, m


def axis_order(values: set[str]) -> list[str]:
    """An axis's values (JSON text) in numeric order; anything not a number after them, by its text."""

    def key(v: str):
        x = json.loads(v)
        return (0, x, v) if isinstance(x, (int, float)) and not isinstance(x, bool) else (1, 0, v)

    return sorted(values, key=key)


def grid_map(settings: dict[str, dict[str, str]], factors: list[str], reference: dict[str, str]) -> GridMap | None:
    """The largest 2-D grid in the sweep: two factors, and the configurations that differ from the
    reference in those two only (≥ 2 values on each axis, and some cell off both axes, so that two
    one-factor axes alone are not taken for a grid). None if there is none."""
    best = None
    candidates = [k for k in factors if k != STRATEGY_KEY]
    for i, x in enumerate(candidates):
        for y in candidates[i + 1 :]:
            cells = {}
            for label, own in settings.items():
                if (
                    x in own
                    and y in own
                    and all(own.get(k, reference[k]) == reference[k] for k in candidates if k not in (x, y))
                ):
                    cells[(own[x], own[y])] = label
            xs, ys = {c[0] for c in cells}, {c[1] for c in cells}
            crossed = any(cx != reference[x] and cy != reference[y] for cx, cy in cells)  # not two 1-D axes
            if crossed and len(xs) >= 2 and len(ys) >= 2 and (best is None or len(cells) > len(best[2])):
                best = (x, y, cells)
    if best is None:
        return None
    x, y, cells = best
    xs, ys = axis_order({c[0] for c in cells}), axis_order({c[1] for c in cells})
    return GridMap(
        x,
        y,
        [json.loads(v) for v in xs],
        [json.loads(v) for v in ys],
        [[cells.get((vx, vy)) for vx in xs] for vy in ys],
    )


def analyse_grid(
    groups: dict[str, list[RunRecord]],
    settings: dict[str, dict[str, str]],
    factors: list[str],
    reference: dict[str, str],
    splits: list[str],
    baseline: str,
    primary: str,
    final: Final,
    equal_time: AtLimit | None,
) -> Grid:
    changes, m = {}, {}
    for split in splits:
        changes[split], m[split] = corrected_changes(groups, baseline, split)
    points = []
    for name, runs in groups.items():
        mse = {s: final.splits[s].stats[name] for s in splits}
        points.append(
            GridPoint(
                label=name,
                strategy=runs[0].strategy,
                settings={k: json.loads(v) for k, v in settings[name].items()},
                n=len(runs),
                mse=mse,
                mse_interval={s: list(mean_interval(mse[s].values)) for s in splits},
                change={s: changes[s][name] for s in splits if name in changes[s]},
                neg_dist=Stat.of([last_value(r.curve, "neg/dist") for r in runs]),
                neg_gap=Stat.of([last_value(r.curve, "neg/gap") for r in runs]),
                ms_per_step=Stat.of([1e3 * r.final.get("seconds_per_step", math.nan) for r in runs]),
                equal_time_mse={s: equal_time.splits[s].stats[name] for s in splits} if equal_time else {},
            )
        )
    # The verdict's candidates are the configurations that mine negatives: the study asks whether
    # mining helps, and the baseline's strategy with other settings (a larger model) is a control,
    # compared and corrected for like every configuration but never crowned.
    mining = {p.label for p in points if p.strategy != baseline}  # the baseline is a strategy, unchanged
    compared = {n: c for n, c in changes.get(primary, {}).items() if c.simultaneous.defined and n in mining}
    best = min(compared, key=lambda n: compared[n].simultaneous.point) if compared else None
    return Grid(
        factors,
        {k: json.loads(v) for k, v in reference.items()},
        m,
        0.95,
        points,
        best,
        grid_map(settings, factors, reference),
    )
