"""The results of the analysis as named records: each one's fields, in the order declared, are its
keys in summary.json (`Analysis.to_json()`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ired_mining.report.provenance import Provenance
from ired_mining.stats import Interval


@dataclass
class Stat:
    """One quantity over a strategy's seeds."""

    mean: float
    std: float
    n: int
    values: list[float]


@dataclass
class Spread(Stat):
    """A Stat with its extremes (the band of a plot)."""

    min: float
    max: float


@dataclass
class Change:
    """A strategy's relative change against the baseline, by both intervals."""

    welch: Interval
    bootstrap: Interval


@dataclass
class SplitResult:
    """One split's MSE per strategy, and each strategy's change against the baseline."""

    stats: dict[str, Stat]
    change: dict[str, Change]


@dataclass
class Timing:
    seconds_per_step: Stat
    mine_ms: Stat
    mining_share: float     # mining's share of a training step
    train_seconds: Stat


@dataclass
class Final:
    """The end of training: MSE per split, and time per strategy."""

    splits: dict[str, SplitResult]
    timing: dict[str, Timing]


@dataclass
class Reached:
    """How far a strategy's runs had trained when the comparison took them."""

    step: Stat
    train_seconds: Stat


@dataclass
class AtLimit:
    """MSE each run had reached at `limit` on `axis` (step or train_seconds)."""

    limit: float
    axis: str
    splits: dict[str, SplitResult]
    reached: dict[str, Reached]


@dataclass
class EqualSteps(AtLimit):
    all_final: bool         # every run trained exactly `limit` steps: the final table is this one


@dataclass
class EqualTime(AtLimit):
    fastest: str            # the strategy whose mean training time is the limit


@dataclass
class ScalingCurve:
    """MSE against the sampler's inner steps, one Spread per step count and split."""

    inner_steps: list[int]
    n: int
    splits: dict[str, list[Spread]]


@dataclass
class Scaling:
    strategies: dict[str, ScalingCurve]
    settings: list[dict]    # the distinct evaluation settings the runs' scaling used


@dataclass
class Verdict:
    outcome: str                  # clears | does not clear | inconclusive
    welch: Interval | None
    bootstrap: Interval | None
    n: list[int]                  # seeds of the treatment and of the baseline
    text: str


@dataclass
class Reference:
    """The trivial and the exact answer's MSE on one split."""

    zero_mse: float
    exact_mse: float


@dataclass
class RunCount:
    finished: int
    total: int


@dataclass
class Problem:
    """A run that did not finish."""

    run: str
    strategy: str
    seed: int | None
    status: str
    detail: str


@dataclass
class Analysis:
    sweep_dir: str
    splits: list[str]
    strategies: list[str]         # finished strategies, baseline first
    baseline: str
    treatment: str
    criterion: float
    primary_split: str
    n_runs: RunCount
    references: dict[str, Reference]
    final: Final
    warnings: list[str]
    verdict: Verdict
    floor: list[str]
    equal_steps: EqualSteps | None  # None when no run finished
    equal_time: EqualTime | None
    scaling: Scaling | None         # None until ired-eval --scaling has run
    problems: list[Problem]
    provenance: Provenance

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("equal_steps", "equal_time"):  # absent, not null, when no run finished
            if out[key] is None:
                del out[key]
        return out
