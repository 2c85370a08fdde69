"""A registered plan: the hypotheses a confirmatory study named before its runs, judged as named.

A search (a grid) pays for looking at many configurations with a correction over all of them; a
study that named its candidate in advance pays only for the comparisons it registered. The plan is
`plan.yaml` in the sweep directory (or `ired-report --plan FILE`), committed before the runs:

    threshold: -0.20          # the criterion: at least 20 % lower MSE
    level: 0.95               # simultaneous coverage over every hypothesis below
    correction: bonferroni    # over all of them, run or not
    min_seeds: 3
    hypotheses:
      - {id: H1, role: primary, split: in_dist,
         candidate: {mining.name: adversarial, mining.corruption: 0.5, mining.steps: 5},
         baseline: {mining.name: none}}

A configuration is the set of config keys a run must match (dotted, as in its .hydra/config.yaml);
runs of the feed-forward regressor (model=regressor) are a reference row of the report, never an
arm. Everything else a report shows beside the plan is exploratory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ired_mining.report.records import ReportError, RunRecord
from ired_mining.report.results import Stat
from ired_mining.stats import (
    CLEARS,
    FALLS_SHORT,
    UNDEFINED,
    Interval,
    bonferroni_level,
    mean_std,
    verdict,
    welch_relative_change,
)

PLAN_FILE = "plan.yaml"
CORRECTIONS = ("bonferroni",)  # the one a plan may name: valid for any dependence between comparisons
HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"
OUTCOME = {CLEARS: HOLDS, FALLS_SHORT: DOES_NOT_HOLD}  # the stats module's verdict in the plan's words


@dataclass(frozen=True)
class Hypothesis:
    id: str
    role: str  # primary | secondary
    split: str
    candidate: dict[str, object]  # config key → value a candidate run has
    baseline: dict[str, object]
    question: str = ""


@dataclass(frozen=True)
class Plan:
    path: str
    threshold: float
    level: float
    correction: str
    min_seeds: int
    hypotheses: list[Hypothesis]

    @property
    def each_level(self) -> float:
        """The level of each hypothesis' interval, so that all of them cover together at `level`."""
        return bonferroni_level(len(self.hypotheses), self.level)

    @property
    def primary(self) -> Hypothesis:
        return next(h for h in self.hypotheses if h.role == "primary")


@dataclass
class HypothesisResult:
    id: str
    role: str
    question: str
    split: str
    candidate: str  # the configuration, as `key=value …`
    baseline: str
    candidate_mse: Stat
    baseline_mse: Stat
    interval: Interval  # simultaneous (Bonferroni) Welch interval of the relative change
    outcome: str  # holds | does not hold | inconclusive | not run
    steps: list[int] = field(default_factory=list)  # the lengths of the runs compared


@dataclass
class Registered:
    plan: str  # the plan's path
    threshold: float
    level: float
    each_level: float
    correction: str
    min_seeds: int
    results: list[HypothesisResult]

    @property
    def primary(self) -> HypothesisResult:
        return next(r for r in self.results if r.role == "primary")


# ================================================================ reading a plan


def _plan_error(path: Path, what: str) -> ReportError:
    return ReportError(f"plan {path}: {what}")


def load_plan(path: Path | str) -> Plan:
    """The plan in `path`; one line naming what is wrong if it is not a plan."""
    path = Path(path)
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # a missing file or bad yaml: whatever the loader says, in one line
        raise _plan_error(path, str(err).splitlines()[0]) from None
    if not isinstance(raw, dict) or not raw.get("hypotheses"):
        raise _plan_error(path, "it lists no hypotheses")
    correction = raw.get("correction", "bonferroni")
    if correction not in CORRECTIONS:
        raise _plan_error(path, f"correction={correction!r}; the one supported is {', '.join(CORRECTIONS)}")
    hypotheses = []
    for i, h in enumerate(raw["hypotheses"]):
        missing = [k for k in ("id", "role", "split", "candidate", "baseline") if k not in h]
        if missing:
            raise _plan_error(path, f"hypothesis {i + 1} lacks {', '.join(missing)}")
        if h["role"] not in ("primary", "secondary"):
            raise _plan_error(path, f"hypothesis {h['id']}: role={h['role']!r}; it must be primary or secondary")
        hypotheses.append(
            Hypothesis(
                str(h["id"]), h["role"], h["split"], dict(h["candidate"]), dict(h["baseline"]), h.get("question", "")
            )
        )
    if sum(h.role == "primary" for h in hypotheses) != 1:
        raise _plan_error(path, "it must name exactly one primary hypothesis")
    level = float(raw.get("level", 0.95))
    if not 0 < level < 1:
        raise _plan_error(path, f"level={level}; it must lie in (0, 1)")
    return Plan(
        str(path), float(raw.get("threshold", -0.20)), level, correction, int(raw.get("min_seeds", 2)), hypotheses
    )


def find_plan(sweep_dir: Path, explicit: Path | str | None = None) -> Plan | None:
    """`explicit`, else the sweep directory's plan.yaml, else None (a report with no plan)."""
    if explicit is not None:
        return load_plan(explicit)
    path = Path(sweep_dir) / PLAN_FILE
    return load_plan(path) if path.is_file() else None


# ================================================================ judging it


def _json_value(v) -> str:
    """A value as the grid's flat configs write it (a whole float as an integer)."""
    v = int(v) if isinstance(v, float) and v.is_integer() else v
    return json.dumps(v, sort_keys=True)


def matches(run: RunRecord, setting: dict[str, object]) -> bool:
    from ired_mining.report.grid import flat_config

    flat = flat_config(run.config)
    return all(flat.get(key) == _json_value(value) for key, value in setting.items())


def describe(setting: dict[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def judge_hypothesis(h: Hypothesis, plan: Plan, finished: list[RunRecord]) -> HypothesisResult:
    key = f"{h.split}/mse"
    arms = [[r for r in finished if matches(r, setting) and key in r.final] for setting in (h.candidate, h.baseline)]
    values = [[float(r.final[key]) for r in arm] for arm in arms]
    stats = [Stat(*mean_std(v), values=v) for v in values]
    steps = sorted({int(r.final.get("step", 0)) for arm in arms for r in arm})
    if min(len(v) for v in values) < max(plan.min_seeds, 2):  # Welch needs two of each at least
        interval, outcome = UNDEFINED, NOT_RUN
    else:
        interval = welch_relative_change(values[0], values[1], plan.each_level)
        outcome = OUTCOME.get(verdict(interval, plan.threshold), INCONCLUSIVE)
    return HypothesisResult(
        h.id,
        h.role,
        h.question,
        h.split,
        describe(h.candidate),
        describe(h.baseline),
        stats[0],
        stats[1],
        interval,
        outcome,
        steps,
    )


def judge_plan(plan: Plan, finished: list[RunRecord]) -> Registered:
    return Registered(
        plan.path,
        plan.threshold,
        plan.level,
        plan.each_level,
        plan.correction,
        max(plan.min_seeds, 2),
        [judge_hypothesis(h, plan, finished) for h in plan.hypotheses],
    )


def plan_warnings(reg: Registered) -> list[str]:
    """Comparisons whose runs are of different lengths: the plan fixes one length for all."""
    return [
        f"{r.id}: its runs trained for different numbers of steps ({', '.join(map(str, r.steps))})"
        for r in reg.results
        if len(r.steps) > 1
    ]


def sentence(r: HypothesisResult, reg: Registered) -> str:
    """The verdict on one hypothesis in words."""
    if r.outcome == NOT_RUN:
        return (
            f"{r.id} ({r.role}) was not run: it needs ≥ {reg.min_seeds} finished seeds of each arm "
            f"({r.candidate_mse.n} and {r.baseline_mse.n} finished)."
        )
    iv = r.interval
    where = {
        HOLDS: "the whole interval lies at or below",
        DOES_NOT_HOLD: "the whole interval lies above",
        INCONCLUSIVE: "the interval straddles",
    }[r.outcome]
    return (
        f"{r.id} ({r.role}, {r.split}) {r.outcome}: `{r.candidate}` differs from `{r.baseline}` by "
        f"{100 * iv.point:+.1f} % (ratio of geometric means, {r.candidate_mse.n} vs {r.baseline_mse.n} seeds; "
        f"simultaneous {100 * reg.level:.0f} % interval over the plan's {len(reg.results)} hypotheses, "
        f"each a {100 * reg.each_level:.2f} % Welch interval: {100 * iv.lo:+.1f} % to {100 * iv.hi:+.1f} %); "
        f"{where} {100 * reg.threshold:+.0f} %."
    )
