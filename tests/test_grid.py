"""The mining grid: multiplicity corrections against independent computations, the report of a
grid on synthetic run directories with known numbers, and a tiny real grid through the CLI."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import mpmath
import pytest

from ired_mining.report import write_report
from ired_mining.stats import bonferroni_level, holm, mean_interval, t_quantile, welch_p_value

from conftest import TINY, finished_summary, read_json, run_cli

T975_DF4 = 2.7764451051977987  # t_{0.975} with 4 degrees of freedom, from a printed table


# ================================================================ statistics


def t_two_sided_p_by_integration(t: float, df: float) -> float:
    """2 ∫_{|t|}^∞ of Student's t density, by numerical quadrature (no incomplete beta function)."""
    c = mpmath.gamma((df + 1) / 2) / (mpmath.sqrt(df * mpmath.pi) * mpmath.gamma(df / 2))
    return float(2 * mpmath.quad(lambda x: c * (1 + x**2 / df) ** (-(df + 1) / 2), [abs(t), mpmath.inf]))


@pytest.mark.parametrize(
    "treat, base",
    [
        ([0.010, 0.011, 0.0105], [0.012, 0.0125, 0.013]),
        ([0.02, 0.03, 0.025, 0.028], [0.021, 0.022, 0.020]),
        ([1.0, 1.5], [1.2, 1.1, 1.3, 1.25, 1.15]),
    ],
)
def test_welch_p_value_matches_numerical_integration(treat, base):
    lt, lb = [math.log(v) for v in treat], [math.log(v) for v in base]
    va, vb = statistics.variance(lt) / len(lt), statistics.variance(lb) / len(lb)
    t = (statistics.fmean(lt) - statistics.fmean(lb)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(lt) - 1) + vb**2 / (len(lb) - 1))
    assert welch_p_value(treat, base) == pytest.approx(t_two_sided_p_by_integration(t, df), rel=1e-7)


def test_welch_p_value_closed_form_at_two_degrees_of_freedom():
    # Proportional seeds, n = 2 each: equal log variances, df = 2, and P(|T| > t) = 1 − t/√(t² + 2).
    base, treat = [1.0, 2.0], [1.5, 3.0]
    lt, lb = [math.log(v) for v in treat], [math.log(v) for v in base]
    t = (statistics.fmean(lt) - statistics.fmean(lb)) / math.sqrt(2 * statistics.variance(lb) / 2)
    assert welch_p_value(treat, base) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-10)


def holm_rejections_by_hand(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as its paper states it: go through the p-values from the smallest, reject
    while p_(k) ≤ α / (m − k + 1), stop at the first that is not."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_values_reject_exactly_what_holm_s_procedure_rejects():
    rng = random.Random(4)
    for _ in range(200):
        p = [rng.random() ** 3 for _ in range(rng.randint(1, 12))]
        adjusted = holm(p)
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == holm_rejections_by_hand(p, alpha)


def test_holm_on_a_worked_example_and_undefined_tests():
    # m = 4: 0.005·4 = 0.02; 0.01·3 = 0.03; 0.03·2 = 0.06; max(0.04·1, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.02, math.nan, 0.5])  # NaN is not a test: m = 2
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)


def test_bonferroni_level_and_the_mean_interval():
    assert bonferroni_level(16) == pytest.approx(1 - 0.05 / 16)
    values = [0.010, 0.012, 0.011, 0.013, 0.009]
    lo, hi = mean_interval(values)
    half = T975_DF4 * statistics.stdev(values) / math.sqrt(5)
    assert (lo, hi) == (pytest.approx(statistics.fmean(values) - half), pytest.approx(statistics.fmean(values) + half))


# ================================================================ a synthetic grid

SPLITS = {"in_dist": 0.5, "harder": 0.1}
ZERO = {"in_dist": 0.0208, "harder": 0.255}
MINING = {
    "none": {"name": "none", "weight": 0.0},
    "adversarial": {
        "name": "adversarial",
        "weight": 0.5,
        "steps": 2,
        "step_scale": 1.0,
        "corruption": 3.0,
        "backtrack": 1.0,
    },
}


def write_point(
    root: Path,
    name: str,
    strategy: str,
    seed: int,
    final: float,
    options: dict | None = None,
    hidden: int = 512,
    dist: float | None = None,
    seconds: float = 10.0,
    steps: int = 1000,
) -> None:
    """A finished run directory of one grid point (options: the mining keys it changes)."""
    d = root / f"+grid={name},seed={seed}"
    (d / ".hydra").mkdir(parents=True)
    mining = MINING[strategy] | (options or {})
    config = {
        "seed": seed,
        "mining": mining,
        "model": {"hidden": hidden},
        "train": {"steps": steps},
        "dataset": {"n": 8},
        "eval": {"splits": SPLITS},
        "hardware": {"device": "cpu"},
    }
    (d / ".hydra" / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    (d / ".hydra" / "overrides.yaml").write_text(f"- +grid={name}\n- seed={seed}\n")
    rows = []
    for k in range(1, 11):
        row = {"step": steps * k // 10, "train_seconds": seconds * k / 10}
        for split in SPLITS:
            scale = 1 if split == "in_dist" else 10
            row[f"{split}/mse"] = scale * final * (1 + (10 - k) / 5)
            row[f"{split}/zero_mse"], row[f"{split}/exact_mse"] = ZERO[split], 1e-14
        if dist is not None:
            row["neg/dist"], row["neg/gap"] = dist * (1 + (10 - k) / 10), 5.0 * k
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "metrics.json").write_text(json.dumps(finished_summary(strategy, seed, steps, seconds, rows[-1])))


NONE = [0.0100, 0.0102, 0.0098]
# name: strategy, options, model width, factor on none's values, negatives' distance
POINTS = {
    "none": ("none", {}, 512, 1.0, None),
    "none_h1024": ("none", {}, 1024, 0.95, None),
    "adversarial": ("adversarial", {}, 512, 1.01, 0.8),
    "c0.5_k1": ("adversarial", {"corruption": 0.5, "steps": 1}, 512, 0.6, 0.1),  # 40 % lower: clears
    "c0.5_k2": ("adversarial", {"corruption": 0.5}, 512, 0.7, 0.12),
    "c3_k1": ("adversarial", {"steps": 1, "corruption": 3}, 512, 1.05, 0.7),  # 3, not 3.0: the same value
    "w2": ("adversarial", {"weight": 2.0}, 512, 1.2, 0.9),
}


def make_grid(root: Path, points=POINTS) -> Path:
    root.mkdir(parents=True)
    for name, (strategy, options, hidden, factor, dist) in points.items():
        for seed, v in enumerate(NONE):
            # the seeds' spread differs a little between points, so Welch's df are not all alike
            write_point(
                root, name, strategy, seed, factor * v * (1 + 0.01 * seed * (factor != 1.0)), options, hidden, dist
            )
    return root


def welch_by_hand(treat, base, level):
    lt, lb = [math.log(v) for v in treat], [math.log(v) for v in base]
    va, vb = statistics.variance(lt) / len(lt), statistics.variance(lb) / len(lb)
    df = (va + vb) ** 2 / (va**2 / (len(lt) - 1) + vb**2 / (len(lb) - 1))
    d, half = statistics.fmean(lt) - statistics.fmean(lb), t_quantile(0.5 + level / 2, df) * math.sqrt(va + vb)
    return math.expm1(d), math.expm1(d - half), math.expm1(d + half)


def test_grid_report_labels_corrects_and_judges_the_best_configuration(tmp_path):
    sweep = make_grid(tmp_path / "grid")
    summary = write_report(sweep).read_text()
    a = read_json(sweep / "summary.json")
    g = a["grid"]
    labels = {p["label"] for p in g["points"]}
    assert labels == {
        "none",
        "none model.hidden=1024",
        "adversarial",
        "adversarial corruption=0.5 steps=1",
        "adversarial corruption=0.5",
        "adversarial steps=1",
        "adversarial weight=2",
    }
    assert set(g["factors"]) >= {"mining.name", "mining.corruption", "mining.steps", "mining.weight", "model.hidden"}
    m = len(POINTS) - 1
    assert g["comparisons"] == {"in_dist": m, "harder": m}

    # each comparison's simultaneous interval and Holm p against a computation by hand
    by_label = {p["label"]: p for p in g["points"]}
    values = {lab: p["mse"]["in_dist"]["values"] for lab, p in by_label.items()}
    raw = {lab: welch_p_value(values[lab], values["none"]) for lab in labels - {"none"}}
    ranked = sorted(raw, key=raw.get)
    for lab in labels - {"none"}:
        change = by_label[lab]["change"]["in_dist"]
        point, lo, hi = welch_by_hand(values[lab], values["none"], 1 - 0.05 / m)
        assert change["simultaneous"]["point"] == pytest.approx(point, rel=1e-9)
        assert (change["simultaneous"]["lo"], change["simultaneous"]["hi"]) == (
            pytest.approx(lo, rel=1e-7),
            pytest.approx(hi, rel=1e-7),
        )
        k = ranked.index(lab)
        by_hand = max(min(1.0, (m - j) * raw[ranked[j]]) for j in range(k + 1))
        assert change["p_holm"] == pytest.approx(by_hand, rel=1e-9)
        assert change["simultaneous"]["lo"] < change["welch"]["lo"]  # wider than the uncorrected one

    # the best configuration and the verdict on it, from its simultaneous interval
    assert g["best"] == "adversarial corruption=0.5 steps=1"
    assert a["verdict"]["outcome"] == "clears"
    assert "`adversarial corruption=0.5 steps=1`" in summary and "Bonferroni" in summary and "Holm" in summary
    # the negatives' distance and gap are the last training window's; none has none
    assert by_label["adversarial corruption=0.5 steps=1"]["neg_dist"]["mean"] == pytest.approx(0.1)
    assert by_label["adversarial"]["neg_gap"]["mean"] == pytest.approx(50.0)
    assert by_label["none"]["neg_dist"]["n"] == 0
    # MSE interval: the t interval of the mean
    lo, hi = by_label["none"]["mse_interval"]["in_dist"]
    t975_df2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student's t quantile at 2 df, in closed form
    half = t975_df2 * statistics.stdev(NONE) / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(statistics.fmean(NONE) - half), pytest.approx(statistics.fmean(NONE) + half))

    # the 2-D grid: corruption × steps, the centre and three corners
    assert g["map"]["x"] == "mining.corruption" and g["map"]["y"] == "mining.steps"
    assert g["map"]["x_values"] == [0.5, 3] and g["map"]["y_values"] == [1, 2]
    assert g["map"]["cells"] == [
        ["adversarial corruption=0.5 steps=1", "adversarial steps=1"],
        ["adversarial corruption=0.5", "adversarial"],
    ]
    for name in ("grid_heatmap.png", "mse_vs_negative_distance.png", "learning_curves.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## The grid" in summary and "grid_heatmap.png" in summary
    # the settings that define the grid are not warned about
    assert not any("differ between runs" in w for w in a["warnings"])


def test_a_grid_whose_best_is_not_better_does_not_clear(tmp_path):
    points = {k: v for k, v in POINTS.items() if k in ("none", "adversarial", "c3_k1", "w2")}
    sweep = make_grid(tmp_path / "grid", points)
    write_report(sweep)
    a = read_json(sweep / "summary.json")
    assert a["grid"]["best"] == "adversarial"
    assert a["verdict"]["outcome"] == "does not clear"
    assert a["grid"]["map"] is None  # no two factors with two values each besides the reference


def grey_pixels(png: Path) -> int:
    """Pixels of the heatmap's missing-cell grey (#bdbdbd), which no part of a full grid's plot uses."""
    import matplotlib.image

    rgb = (matplotlib.image.imread(png)[..., :3] * 255).round().astype(int)
    return int((abs(rgb - 0xBD).max(axis=-1) <= 2).sum())


def test_a_missing_cell_of_the_heatmap_is_grey_not_the_white_of_zero(tmp_path):
    full = make_grid(tmp_path / "full")
    write_report(full)
    # Without the corner corruption 0.5 × 1 step the map is weight × model width, two of its six cells empty.
    gap = make_grid(tmp_path / "gap", {k: v for k, v in POINTS.items() if k != "c0.5_k1"})
    write_report(gap)
    assert all(c is not None for row in read_json(full / "summary.json")["grid"]["map"]["cells"] for c in row)
    assert sum(c is None for row in read_json(gap / "summary.json")["grid"]["map"]["cells"] for c in row) == 2
    assert grey_pixels(full / "grid_heatmap.png") < 1_000  # a few anti-aliased edges at most
    # Two panels (one per split), each empty cell a sixth of a panel: ~10^5 grey pixels.
    assert grey_pixels(gap / "grid_heatmap.png") > 50_000


def test_a_three_strategy_sweep_is_not_a_grid(tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    for seed, v in enumerate(NONE):
        write_point(root, "none", "none", seed, v)
        write_point(root, "adversarial", "adversarial", seed, 0.9 * v, dist=0.5)
    write_report(root)
    a = read_json(root / "summary.json")
    assert "grid" not in a and a["strategies"] == ["none", "adversarial"]
    assert not (root / "grid_heatmap.png").exists()


# ================================================================ a tiny real grid through the CLI


@pytest.mark.slow
def test_tiny_real_grid_through_the_cli(tmp_path):
    sweep = tmp_path / "grid"
    run_cli(
        "ired-train",
        "-m",
        "experiment=mining_grid",
        "+grid=none,adversarial,c0.5_k1,c0.5_k2,c3_k1,c3_k2_bt",
        "seed=0,1",
        *TINY,
        "train.steps=10",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=True,
    )
    assert len(list(sweep.glob("+grid=*"))) == 12
    summary = (sweep / "summary.md").read_text()
    a = read_json(sweep / "summary.json")
    labels = {p["label"] for p in a["grid"]["points"]}
    assert labels == {
        "none",
        "adversarial",
        "adversarial corruption=0.5 steps=1",
        "adversarial corruption=0.5",
        "adversarial steps=1",
        "adversarial backtrack=0.5",
    }
    assert a["grid"]["comparisons"]["in_dist"] == 5
    assert a["grid"]["map"]["x"] == "mining.corruption" and a["grid"]["map"]["y"] == "mining.steps"
    # c3_k1 writes corruption 3, the default 3.0: one column, every cell filled
    assert a["grid"]["map"]["x_values"] == [0.5, 3] and a["grid"]["map"]["y_values"] == [1, 2]
    assert all(cell is not None for row in a["grid"]["map"]["cells"] for cell in row)
    for p in a["grid"]["points"]:
        assert p["n"] == 2 and (p["neg_dist"]["n"] == 2) == (p["strategy"] == "adversarial")
    # the report's final MSE is each run's own metrics.json
    run = next(sweep.glob("+grid=c0.5_k1,*seed=1*"))
    point = next(p for p in a["grid"]["points"] if p["label"] == "adversarial corruption=0.5 steps=1")
    assert read_json(run / "metrics.json")["in_dist/mse"] in point["mse"]["in_dist"]["values"]
    assert "## The grid" in summary and a["verdict"]["outcome"] in ("clears", "does not clear", "inconclusive")
    for name in ("grid_heatmap.png", "mse_vs_negative_distance.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_grid_point_is_one_line(tmp_path):
    proc = run_cli(
        "ired-train",
        "-m",
        "experiment=mining_grid",
        "+grid=bogus",
        "seed=0",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'g'}",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "ired-train: error: grid: no option 'bogus'; choose one of: adversarial,"
    )


def test_a_strategy_run_with_other_options_than_its_defaults_is_labelled_by_them(tmp_path):
    # Only two configurations and two strategies, but adversarial is not the spec's: say so.
    points = {k: v for k, v in POINTS.items() if k in ("none", "c0.5_k1")}
    sweep = make_grid(tmp_path / "grid", points)
    write_report(sweep)
    a = read_json(sweep / "summary.json")
    assert [p["label"] for p in a["grid"]["points"]] == ["none", "adversarial corruption=0.5 steps=1"]
    assert a["strategies"] == ["none", "adversarial corruption=0.5 steps=1"]


def test_a_larger_none_is_a_control_never_the_verdicts_candidate(tmp_path):
    """`none` with a larger model beating every mining setting says nothing about mining: it is
    compared and corrected for like the rest, and the verdict goes to the best mining configuration."""
    points = {k: v for k, v in POINTS.items() if k in ("none", "adversarial", "c3_k1", "w2")}
    points["none_h1024"] = ("none", {}, 1024, 0.5, None)  # 50 % lower than none: would clear
    sweep = make_grid(tmp_path / "grid", points)
    summary = write_report(sweep).read_text()
    a = read_json(sweep / "summary.json")
    by_label = {p["label"]: p for p in a["grid"]["points"]}
    control = by_label["none model.hidden=1024"]["change"]["in_dist"]["simultaneous"]
    assert control["hi"] < -0.2  # on its own it would clear the criterion
    assert a["grid"]["comparisons"]["in_dist"] == 4  # and it counts among the corrected comparisons
    assert a["grid"]["best"] == "adversarial"
    assert a["verdict"]["outcome"] == "does not clear"
    assert "best of the 3 mining configurations, `adversarial`" in summary
