"""ired-report: statistics checked against independent computations on synthetic sweeps with known
numbers, failed and missing runs listed, and a real tiny sweep reported end to end, plots included."""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import struct
from pathlib import Path

import numpy as np
import pytest

from ired_mining.report import write_report
from ired_mining.stats import t_quantile

from conftest import TINY, finished_summary, read_json, run_cli

# t_{0.975} for 4 degrees of freedom, from a printed table of Student's t (to 16 digits).
T975_DF4 = 2.7764451051977987
STRATEGIES = ("none", "random", "adversarial")
ZERO = {"in_dist": 0.0208, "harder": 0.255}


# ================================================================ a synthetic sweep

MULTIRUN_YAML = """\
hydra:
  sweep:
    dir: {dir}
    subdir: ${{hydra.job.override_dirname}}
  launcher:
    _target_: hydra._internal.core_plugins.basic_launcher.BasicLauncher
  sweeper:
    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper
    max_batch_size: null
    params:
      mining: {strategies}
      seed: {seeds}
  overrides:
    hydra:
    - hydra.mode=MULTIRUN
    task:
    - experiment=mining_sweep
  job:
    config:
      override_dirname:
        kv_sep: '='
        item_sep: ','
        exclude_keys: [experiment, hardware]
mining:
  name: adversarial
seed: 0
"""


def write_run(
    root: Path,
    strategy: str,
    seed: int,
    final: dict[str, float] | None,
    seconds: float,
    steps: int = 1000,
    status: str = "finished",
    mine_ms: float = 0.0,
) -> Path:
    """A run directory as ired-train leaves it. The learning curve falls linearly to `final` over ten
    evaluations at evenly spaced steps and seconds. final=None: started, never finished."""
    d = root / f"mining={strategy},seed={seed}"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nmining:\n  name: {strategy}\ntrain:\n  steps: {steps}\ndataset:\n  n: 20\n"
        "eval:\n  splits:\n    in_dist: 0.5\n    harder: 0.1\nhardware:\n  device: cpu\n"
    )
    (d / ".hydra" / "overrides.yaml").write_text(f"- mining={strategy}\n- seed={seed}\n")
    lines = []
    for k in range(1, 11):
        row = {"step": steps * k // 10, "train_seconds": seconds * k / 10, "mine_ms": mine_ms}
        for split in ZERO:
            row[f"{split}/mse"] = final[split] * (1 + (10 - k) / 5) if final else 1.0
            row[f"{split}/zero_mse"], row[f"{split}/exact_mse"] = ZERO[split], 1e-14
        lines.append(row)
    if final is None:
        lines = lines[:4]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if status == "finished":
        (d / "metrics.json").write_text(json.dumps(finished_summary(strategy, seed, steps, seconds, lines[-1])))
    elif status == "failed":
        (d / "metrics.json").write_text(json.dumps({"status": "failed", "error": "loss became non-finite at step 7"}))
    return d


def make_sweep(
    root: Path,
    finals: dict[str, list[float]],
    seconds: dict[str, list[float]] | None = None,
    harder_factor: float = 10.0,
    mine_ms: dict[str, float] | None = None,
) -> Path:
    """A finished sweep: finals[strategy][i] is seed i's final in-distribution MSE."""
    seeds = max(len(v) for v in finals.values())
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text(
        MULTIRUN_YAML.format(dir=root, strategies=",".join(finals), seeds=",".join(map(str, range(seeds))))
    )
    for strategy, values in finals.items():
        for seed, v in enumerate(values):
            secs = (seconds or {}).get(strategy, [10.0] * len(values))[seed]
            write_run(
                root,
                strategy,
                seed,
                {"in_dist": v, "harder": v * harder_factor},
                secs,
                mine_ms=(mine_ms or {}).get(strategy, 0.0),
            )
    return root


# ================================================================ independent reference computations


def welch_log_by_hand(treat: list[float], base: list[float], t_crit: float) -> tuple[float, float, float]:
    """Relative change (ratio of geometric means − 1) and its Welch interval, with plain Python floats."""
    lt, lb = [math.log(v) for v in treat], [math.log(v) for v in base]
    mt, mb = sum(lt) / len(lt), sum(lb) / len(lb)
    vt = sum((x - mt) ** 2 for x in lt) / (len(lt) - 1)
    vb = sum((x - mb) ** 2 for x in lb) / (len(lb) - 1)
    se = math.sqrt(vt / len(lt) + vb / len(lb))
    d = mt - mb
    return math.exp(d) - 1, math.exp(d - t_crit * se) - 1, math.exp(d + t_crit * se) - 1


def welch_df_by_hand(treat: list[float], base: list[float]) -> float:
    a, b = np.log(treat), np.log(base)
    sa, sb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    return (sa + sb) ** 2 / (sa**2 / (len(a) - 1) + sb**2 / (len(b) - 1))


def t_quantile_by_integration(p: float, df: float) -> float:
    """Student's t quantile from the density integrated numerically on a fine grid (no special functions)."""
    x = np.linspace(0, 60, 2_000_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))])
    return float(np.interp(p, cdf, x))


def expected_verdict(lo: float, hi: float) -> str:
    return "clears" if hi <= -0.2 else "does not clear" if lo > -0.2 else "inconclusive"


def exact_bootstrap_quantiles(treat: list[float], base: list[float], qs: list[float]) -> list[float]:
    """Quantiles of the exact bootstrap distribution of mean(treat*)/mean(base*) − 1: every resample of
    each group enumerated, each equally likely."""
    mt = [sum(c) / len(c) for c in itertools.product(treat, repeat=len(treat))]
    mb = [sum(c) / len(c) for c in itertools.product(base, repeat=len(base))]
    ratios = np.sort(np.array([a / b - 1 for a in mt for b in mb]))
    return [float(ratios[min(int(q * len(ratios)), len(ratios) - 1)]) for q in qs]


# ================================================================ the t quantile


@pytest.mark.parametrize("p", [0.975, 0.9, 0.6])
def test_t_quantile_matches_closed_forms(p):
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert t_quantile(p, 1e7) == pytest.approx(statistics.NormalDist().inv_cdf(p), rel=1e-6)
    assert t_quantile(1 - p, 3.3) == -t_quantile(p, 3.3)


@pytest.mark.parametrize("df", [2.5, 4.0, 7.31])
def test_t_quantile_matches_numerical_integration(df):
    assert t_quantile(0.975, df) == pytest.approx(t_quantile_by_integration(0.975, df), abs=1e-6)


def test_t_quantile_table_value():
    assert t_quantile(0.975, 4) == pytest.approx(T975_DF4, rel=1e-13)


# ================================================================ the report on known numbers

NONE = [0.040, 0.050, 0.060]


@pytest.mark.parametrize(
    "factor, spread, verdict",
    [
        (0.4, NONE, "clears"),  # 60 % lower, interval well below −20 %
        (0.97, [0.050, 0.051, 0.052], "does not clear"),  # 3 % lower, tight: the interval never reaches −20 %
        (0.8, NONE, "inconclusive"),  # 20 % lower with this spread: straddles
    ],
)
def test_verdict_and_interval_against_hand_computation(tmp_path, factor, spread, verdict):
    # Proportional seeds give equal log variances, so Welch's df is exactly 2(n − 1) = 4 and the
    # table value applies.
    adversarial = [factor * v for v in spread]
    sweep = make_sweep(
        tmp_path / "sweep", {"none": spread, "random": [0.045, 0.050, 0.055], "adversarial": adversarial}
    )
    summary = write_report(sweep)
    a = read_json(sweep / "summary.json")

    point, lo, hi = welch_log_by_hand(adversarial, spread, T975_DF4)
    assert expected_verdict(lo, hi) == verdict  # the scenario is what its name says
    change = a["final"]["splits"]["in_dist"]["change"]["adversarial"]["welch"]
    assert change["point"] == pytest.approx(factor - 1, rel=1e-12)
    assert change["point"] == pytest.approx(point, rel=1e-12)
    assert change["df"] == pytest.approx(4.0, rel=1e-9)
    assert (change["lo"], change["hi"]) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert a["verdict"]["outcome"] == verdict
    text = summary.read_text()
    assert f"**Verdict: {verdict}.**" in text
    assert f"{100 * lo:+.1f} % to {100 * hi:+.1f} %" in text  # the interval is stated with the verdict


def test_means_intervals_and_ratios_against_independent_computation(tmp_path):
    finals = {"none": NONE, "random": [0.030, 0.052, 0.049], "adversarial": [0.012, 0.020, 0.016]}
    seconds = {"none": [9.0, 10.0, 11.0], "random": [12.0, 12.0, 12.0], "adversarial": [19.0, 20.0, 24.0]}
    mine = {"none": 0.0, "random": 0.5, "adversarial": 4.0}
    sweep = make_sweep(tmp_path / "sweep", finals, seconds, mine_ms=mine)
    summary = write_report(sweep).read_text()
    a = read_json(sweep / "summary.json")

    for split, scale in (("in_dist", 1.0), ("harder", 10.0)):
        part = a["final"]["splits"][split]
        for name, values in finals.items():
            values = [v * scale for v in values]
            st = part["stats"][name]
            assert st["n"] == 3
            assert st["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert st["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
            if split == "in_dist":
                assert f"{st['mean']:.4g} ± {st['std']:.2g}" in summary
        for name in ("random", "adversarial"):
            treat, base = [v * scale for v in finals[name]], [v * scale for v in NONE]
            welch = part["change"][name]["welch"]
            # Unequal variances: the df is fractional and the quantile comes from numerical integration.
            df = welch_df_by_hand(treat, base)
            assert welch["df"] == pytest.approx(df, rel=1e-9)
            point, lo, hi = welch_log_by_hand(treat, base, t_quantile_by_integration(0.975, df))
            assert (welch["point"], welch["lo"], welch["hi"]) == (
                pytest.approx(point, rel=1e-12),
                pytest.approx(lo, abs=1e-5),
                pytest.approx(hi, abs=1e-5),
            )
            boot = part["change"][name]["bootstrap"]
            assert boot["point"] == pytest.approx(sum(treat) / sum(base) - 1, rel=1e-12)
            q = exact_bootstrap_quantiles(treat, base, [0.01, 0.04, 0.96, 0.99])
            assert q[0] <= boot["lo"] <= q[1] and q[2] <= boot["hi"] <= q[3]

    timing = a["final"]["timing"]
    for name in finals:
        per_step = [s / 1000 for s in seconds[name]]
        assert timing[name]["seconds_per_step"]["mean"] == pytest.approx(statistics.fmean(per_step), rel=1e-12)
        assert timing[name]["mine_ms"]["mean"] == pytest.approx(mine[name], rel=1e-12)
        assert timing[name]["mining_share"] == pytest.approx(mine[name] / 1e3 / statistics.fmean(per_step), rel=1e-12)

    # Zero predictor and exact solver rows, and plain statements about the floor.
    assert a["references"]["in_dist"]["zero_mse"] == ZERO["in_dist"]
    assert a["references"]["harder"]["exact_mse"] == 1e-14
    for split, scale in (("in_dist", 1.0), ("harder", 10.0)):
        for name, values in finals.items():
            stated = f"`{name}` does not beat the zero predictor on {split}"
            above = statistics.fmean(values) * scale >= ZERO[split]
            assert any(stated in line for line in a["floor"]) == above
            assert (stated in summary) == above
    assert len(a["floor"]) == 4  # none and random on in_dist, none and random on harder

    # Equal wall-clock: the fastest strategy (none, mean 10 s); each run at its last evaluation ≤ 10 s.
    et = a["equal_time"]
    assert et["fastest"] == "none" and et["limit"] == pytest.approx(10.0)
    for name, values in finals.items():
        reached = []
        for v, secs in zip(values, seconds[name]):
            ks = [k for k in range(1, 11) if secs * k / 10 <= 10.0 + 1e-9]
            reached.append(v * (1 + (10 - ks[-1]) / 5))
        assert et["splits"]["in_dist"]["stats"][name]["mean"] == pytest.approx(statistics.fmean(reached), rel=1e-12)
    assert a["equal_steps"]["all_final"] and a["equal_steps"]["limit"] == 1000
    assert "## Equal wall-clock" in summary and "## Equal steps" in summary

    with open(sweep / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["status"] for r in rows} == {"finished"}
    none0 = next(r for r in rows if r["strategy"] == "none" and r["seed"] == "0")
    assert float(none0["in_dist/mse"]) == pytest.approx(NONE[0])


def test_failed_incomplete_and_missing_runs_are_listed_and_statistics_use_the_rest(tmp_path):
    sweep = make_sweep(
        tmp_path / "sweep", {"none": NONE, "random": [0.05, 0.05, 0.05], "adversarial": [0.02, 0.03, 0.025]}
    )
    # adversarial seed 1 failed, none seed 2 was killed mid-run, random seed 0 never started.
    for name in ("mining=adversarial,seed=1", "mining=none,seed=2", "mining=random,seed=0"):
        for f in sorted((sweep / name).rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        (sweep / name).rmdir()
    write_run(sweep, "adversarial", 1, None, 5.0, status="failed")
    write_run(sweep, "none", 2, None, 5.0, status="incomplete")

    summary = write_report(sweep).read_text()
    a = read_json(sweep / "summary.json")
    problems = {(p["strategy"], p["seed"]): p for p in a["problems"]}
    assert problems[("adversarial", 1)]["status"] == "failed"
    assert "non-finite at step 7" in problems[("adversarial", 1)]["detail"]
    assert problems[("none", 2)]["status"] == "incomplete"
    assert problems[("random", 0)]["status"] == "missing"
    assert len(problems) == 3
    for p in problems.values():
        assert f"| {p['status']} |" in summary
    assert "non-finite at step 7" in summary

    stats = a["final"]["splits"]["in_dist"]["stats"]
    assert stats["none"]["n"] == 2 and stats["none"]["mean"] == pytest.approx(statistics.fmean(NONE[:2]))
    assert stats["adversarial"]["n"] == 2 and stats["adversarial"]["mean"] == pytest.approx(0.0225)
    assert stats["random"]["n"] == 2
    point, lo, hi = welch_log_by_hand(
        [0.02, 0.025], NONE[:2], t_quantile_by_integration(0.975, welch_df_by_hand([0.02, 0.025], NONE[:2]))
    )
    assert a["verdict"]["welch"]["lo"] == pytest.approx(lo, abs=1e-5)
    assert a["verdict"]["outcome"] == expected_verdict(lo, hi)
    assert a["n_runs"] == {"finished": 6, "total": 9}

    with open(sweep / "runs.csv") as f:
        statuses = sorted(r["status"] for r in csv.DictReader(f))
    assert statuses == [
        "failed",
        "finished",
        "finished",
        "finished",
        "finished",
        "finished",
        "finished",
        "incomplete",
        "missing",
    ]


def test_verdict_needs_two_seeds_of_each(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", {"none": [0.05], "adversarial": [0.01]})
    write_report(sweep)
    a = read_json(sweep / "summary.json")
    assert a["verdict"]["outcome"] == "inconclusive"
    assert "cannot be judged" in a["verdict"]["text"]


def test_equal_steps_when_runs_trained_for_different_lengths(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", {"none": NONE[:2], "adversarial": [0.02, 0.03]})
    d = sweep / "mining=adversarial,seed=1"
    for f in sorted(d.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    d.rmdir()
    write_run(sweep, "adversarial", 1, {"in_dist": 0.03, "harder": 0.3}, 10.0, steps=500)
    write_report(sweep)
    eq = read_json(sweep / "summary.json")["equal_steps"]
    assert eq["limit"] == 500 and not eq["all_final"]
    # Runs of 1000 steps are taken at their evaluation of step 500 (k = 5 of 10): final × (1 + 5/5).
    expected = statistics.fmean([NONE[0] * 2, NONE[1] * 2])
    assert eq["splits"]["in_dist"]["stats"]["none"]["mean"] == pytest.approx(expected, rel=1e-12)


# ================================================================ the command line


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_bad_directory_is_one_line(tmp_path):
    for target in (tmp_path / "nope", tmp_path):
        proc = run_cli("ired-report", str(target))
        assert proc.returncode != 0
        assert proc.stderr.startswith("ired-report: error:") and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_real_tiny_sweep_end_to_end(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "ired-train",
        "-m",
        "mining=none,random,adversarial",
        "seed=0,1",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=True,
    )
    run_dir = next(sweep.glob("*mining=adversarial*seed=0*"))
    run_cli("ired-eval", str(run_dir), "--scaling", "--inner-steps", "0,2,5", check=True)

    proc = run_cli("ired-report", str(sweep), check=True)
    assert "verdict:" in proc.stdout and "zero predictor" in proc.stdout
    summary = (sweep / "summary.md").read_text()
    for heading in (
        "**Verdict:",
        "## Final test MSE",
        "## Equal steps",
        "## Equal wall-clock",
        "## Time per step",
        "## Learning curves",
        "## Test-time compute",
        "## Failed and missing runs",
        "## How this was made",
        "zero predictor",
        "exact solver",
        "ired-train -m mining=none,random,adversarial seed=0,1",
        "torch ",
        "hydra-core ",
    ):
        assert heading in summary, heading
    a = read_json(sweep / "summary.json")
    assert a["n_runs"] == {"finished": 6, "total": 6} and a["problems"] == []
    assert [a["final"]["splits"]["in_dist"]["stats"][s]["n"] for s in STRATEGIES] == [2, 2, 2]
    # The report's final MSE is each run's metrics.json, untouched.
    for s in STRATEGIES:
        values = [read_json(d / "metrics.json")["in_dist/mse"] for d in sorted(sweep.glob(f"*mining={s},*"))]
        assert a["final"]["splits"]["in_dist"]["stats"][s]["values"] == values
    assert a["scaling"]["strategies"]["adversarial"]["inner_steps"] == [0, 2, 5]
    with open(sweep / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 6

    import matplotlib.image

    for name, size in (("learning_curves.png", (1200, 800)), ("scaling.png", (1200, 450))):
        path = sweep / name
        assert png_size(path) == size
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[:2] == size[::-1] and pixels.std() > 0.01  # decodes, and is not blank
