"""The results of the analysis as named records: each one's fields, in the order declared, are its
keys in summary.json (`Analysis.to_json()`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ired_mining.report.provenance import Provenance
from ired_mining.stats import Interval, mean_std

if TYPE_CHECKING:  # plan.py builds on these records
    from ired_mining.report.plan import Registered


@dataclass
class Stat:
    """One quantity over a strategy's seeds."""

    mean: float
    std: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """Mean, standard deviation and count of the finite values (stats.mean_std), and all of them."""
        mean, std, n = mean_std(values)
        return cls(mean, std, n, [float(v) for v in values])


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
    mining_share: float  # mining's share of a training step
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
    all_final: bool  # every run trained exactly `limit` steps: the final table is this one


@dataclass
class EqualTime(AtLimit):
    fastest: str  # the strategy whose mean training time is the limit


@dataclass
class ScalingCurve:
    """MSE against the sampler's inner steps, one Spread per step count and split, for one
    configuration under one evaluation variant ("" for the run's own sampler settings)."""

    configuration: str
    variant: str  # ired-eval's overrides, e.g. sampler.backtrack=0.5
    inner_steps: list[int]
    n: int
    splits: dict[str, list[Spread]]


@dataclass
class Scaling:
    strategies: dict[str, ScalingCurve]  # by `configuration` or `configuration · variant`
    settings: list[dict]  # the distinct evaluation settings the runs' scaling used, each variant's own overrides aside


@dataclass
class Verdict:
    outcome: str  # clears | does not clear | inconclusive
    welch: Interval | None
    bootstrap: Interval | None
    n: list[int]  # seeds of the treatment and of the baseline
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


# ================================================================ a grid of configurations


@dataclass
class GridChange:
    """One configuration's change against the baseline on one split, corrected for multiplicity."""

    welch: Interval  # 95 % Welch interval, uncorrected
    simultaneous: Interval  # Bonferroni: level 1 − 0.05/m, m the comparisons on this split
    p: float  # Welch's two-sided p-value (H0: no change)
    p_holm: float  # Holm-adjusted over the m comparisons on this split


@dataclass
class GridPoint:
    """One configuration: its runs (over seeds) and what varies in it."""

    label: str
    strategy: str
    settings: dict[str, str]  # every factor of the grid: key → value (JSON text) in this configuration
    n: int
    mse: dict[str, Stat]
    mse_interval: dict[str, list[float]]  # 95 % t interval of the mean MSE, per split
    change: dict[str, GridChange]  # absent for the baseline
    neg_dist: Stat  # RMS distance of the negatives to the truth, last training window
    neg_gap: Stat  # E⁻ − E⁺, last training window
    ms_per_step: Stat
    equal_time_mse: dict[str, Stat]


@dataclass
class GridMap:
    """A 2-D grid: configurations that differ from the reference only in two factors."""

    x: str
    y: str
    x_values: list[str]
    y_values: list[str]
    cells: list[list[str | None]]  # [y][x]: the configuration's label (None: not in the sweep)


@dataclass
class Grid:
    factors: list[str]  # config keys that vary between configurations (seed excluded)
    reference: dict[str, str]  # the value each factor has unless a configuration says otherwise
    comparisons: dict[str, int]  # split → m, comparisons with a defined test
    level: float  # family-wise level of the simultaneous intervals
    points: list[GridPoint]
    best: str | None  # lowest point estimate on the primary split among the compared ones with negatives
    map: GridMap | None


@dataclass
class Analysis:
    sweep_dir: str
    splits: list[str]
    strategies: list[str]  # finished strategies, baseline first
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
    scaling: Scaling | None  # None until ired-eval --scaling has run
    problems: list[Problem]
    provenance: Provenance
    grid: Grid | None = None  # None unless settings besides the strategy vary
    registered: Registered | None = None  # the plan's hypotheses, judged (None without a plan.yaml)
    regressor: dict[str, Stat] | None = None  # the feed-forward baseline's MSE per split, where the sweep has it

    def to_json(self) -> dict:
        out = asdict(self)
        for key in (
            "equal_steps",
            "equal_time",
            "grid",
            "registered",
            "regressor",
        ):  # absent, not null, when no run finished / no grid
            if out[key] is None:
                del out[key]
        return out
