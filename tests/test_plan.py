"""ired-report with a registered plan: it judges the named hypotheses with the named correction,
numbers checked against a hand computation, labels the rest exploratory, shows the regressor as a
reference, and refuses a malformed plan in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from test_report import t_quantile_by_integration, welch_df_by_hand, welch_log_by_hand

from conftest import read_json, run_cli

ZERO = {"in_dist": 0.0208, "harder": 0.255}
CANDIDATE = {"mining.name": "adversarial", "mining.corruption": 0.5, "mining.steps": 5}
BASELINE = {"mining.name": "none"}


def write_run(root: Path, name: str, config: dict, final: dict[str, float], steps: int = 1000) -> None:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    config = {
        "seed": 0,
        "train": {"steps": steps},
        "model": {"name": "mlp", "hidden": 512},
        "eval": {"splits": {"in_dist": 0.5, "harder": 0.1}},
        "hardware": {"device": "cpu"},
    } | config
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    row = {"step": steps, "train_seconds": 10.0}
    for split, v in final.items():
        row |= {f"{split}/mse": v, f"{split}/zero_mse": ZERO[split], f"{split}/exact_mse": 1e-14}
    (d / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "status": "finished",
                "strategy": config["mining"]["name"],
                "seed": config["seed"],
                "step": steps,
                "train_seconds": 10.0,
                "seconds_per_step": 0.01,
                **{k: v for k, v in row.items() if "/" in k},
            }
        )
    )


CAND_MSE = [0.0070, 0.0074, 0.0071]
BASE_MSE = [0.0097, 0.0098, 0.00965]
REGRESSOR_MSE = [0.0090, 0.0092]


def make_study(root: Path) -> Path:
    for seed, (c, b) in enumerate(zip(CAND_MSE, BASE_MSE)):
        write_run(
            root,
            f"cand,seed={seed}",
            {"seed": seed, "mining": {"name": "adversarial", "corruption": 0.5, "steps": 5}},
            {"in_dist": c, "harder": 10 * c},
        )
        write_run(
            root,
            f"none,seed={seed}",
            {"seed": seed, "mining": {"name": "none"}},
            {"in_dist": b, "harder": 10 * b * 1.01},
        )
    for seed, v in enumerate(REGRESSOR_MSE):  # mining none too: a reference, never the baseline arm
        write_run(
            root,
            f"regressor,seed={seed}",
            {"seed": seed, "mining": {"name": "none"}, "model": {"name": "regressor", "hidden": 512}},
            {"in_dist": v, "harder": 0.2},
        )
    plan = {
        "threshold": -0.20,
        "level": 0.95,
        "correction": "bonferroni",
        "min_seeds": 3,
        "hypotheses": [
            {"id": "H1", "role": "primary", "split": "in_dist", "candidate": CANDIDATE, "baseline": BASELINE},
            {"id": "H2", "role": "secondary", "split": "harder", "candidate": CANDIDATE, "baseline": BASELINE},
            {
                "id": "H3",
                "role": "secondary",
                "split": "in_dist",
                "candidate": CANDIDATE | {"model.hidden": 1024},
                "baseline": BASELINE | {"model.hidden": 1024},
            },
        ],
    }
    (root / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return root


def test_registered_hypotheses_are_judged_with_the_plans_correction(tmp_path):
    sweep = make_study(tmp_path / "study")
    proc = run_cli("ired-report", str(sweep), check=True)
    reg = read_json(sweep / "summary.json")["registered"]
    assert reg["each_level"] == pytest.approx(1 - 0.05 / 3)  # m = 3 hypotheses, run or not
    h1, h2, h3 = reg["results"]
    # H1 by hand: Welch on log MSE at the Bonferroni level, t quantile by numerical integration.
    df = welch_df_by_hand(CAND_MSE, BASE_MSE)
    point, lo, hi = welch_log_by_hand(CAND_MSE, BASE_MSE, t_quantile_by_integration(1 - 0.05 / 3 / 2, df))
    assert h1["interval"]["point"] == pytest.approx(point, rel=1e-9)
    assert h1["interval"]["lo"] == pytest.approx(lo, rel=1e-4) and h1["interval"]["hi"] == pytest.approx(hi, rel=1e-4)
    assert h1["outcome"] == ("holds" if hi <= -0.20 else "does not hold" if lo > -0.20 else "inconclusive")
    assert h1["baseline_mse"]["n"] == 3  # the regressors, mining none as well, are not in the arm
    harder = welch_log_by_hand(
        [10 * c for c in CAND_MSE],
        [10.1 * b for b in BASE_MSE],
        t_quantile_by_integration(1 - 0.05 / 3 / 2, welch_df_by_hand(CAND_MSE, BASE_MSE)),
    )
    assert h2["interval"]["point"] == pytest.approx(harder[0], rel=1e-9)
    assert h3["outcome"] == "not run" and h3["candidate_mse"]["n"] == 0
    md = (sweep / "summary.md").read_text()
    assert md.index("## Registered hypotheses (confirmatory)") < md.index("## Final test MSE")
    assert "Everything below is **exploratory**" in md
    assert (
        f"**Verdict: {'clears' if hi <= -0.2 else 'does not clear' if lo > -0.2 else 'inconclusive'}.** "
        "The registered primary hypothesis: H1" in md
    )
    # the regressor: a reference row beside the zero predictor, with its mean over seeds
    row = next(line for line in md.splitlines() if line.startswith("| feed-forward regressor"))
    assert f"{sum(REGRESSOR_MSE) / 2:.4g}" in row
    out = " ".join(proc.stdout.split())  # the console wraps long lines
    assert "registered primary hypothesis: H1 (primary, in_dist)" in out
    assert "H2 (secondary, harder)" in out and "H3 (secondary) was not run: it needs ≥ 3 finished seeds" in out


def test_without_a_plan_the_report_is_unchanged(tmp_path):
    sweep = make_study(tmp_path / "study")
    (sweep / "plan.yaml").unlink()
    run_cli("ired-report", str(sweep), check=True)
    summary = read_json(sweep / "summary.json")
    assert "registered" not in summary and "Registered hypotheses" not in (sweep / "summary.md").read_text()


def test_an_explicit_plan_file_is_read(tmp_path):
    sweep = make_study(tmp_path / "study")
    plan = tmp_path / "elsewhere.yaml"
    (sweep / "plan.yaml").rename(plan)
    run_cli("ired-report", str(sweep), "--plan", str(plan), check=True)
    assert read_json(sweep / "summary.json")["registered"]["plan"] == str(plan)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["hypotheses"][1].update(role="primary"), "exactly one primary hypothesis"),
        (lambda p: p.update(correction="holm"), "correction='holm'; the one supported is bonferroni"),
        (lambda p: p["hypotheses"][0].pop("baseline"), "hypothesis 1 lacks baseline"),
    ],
)
def test_a_malformed_plan_is_one_line(tmp_path, edit, message):
    sweep = make_study(tmp_path / "study")
    plan = yaml.safe_load((sweep / "plan.yaml").read_text())
    edit(plan)
    (sweep / "plan.yaml").write_text(yaml.safe_dump(plan))
    proc = run_cli("ired-report", str(sweep))
    assert proc.returncode == 1 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (sweep / "summary.md").exists()


def test_the_committed_registration_is_a_valid_plan():
    from ired_mining.report.plan import load_plan

    plan = load_plan(Path(__file__).resolve().parents[1] / "results" / "cpu20" / "sweep" / "plan.yaml")
    assert plan.primary.id == "H1" and len(plan.hypotheses) == 4 and math.isclose(plan.each_level, 0.9875)


# ================================================================ a verdict on any strategy


def test_a_new_strategy_against_none_is_judged_without_a_flag_and_any_with_one(tmp_path):
    from test_report import make_sweep

    new = make_sweep(tmp_path / "new", {"none": [0.0097, 0.0098, 0.0096], "nearby": [0.0060, 0.0062, 0.0061]})
    run_cli("ired-report", str(new), check=True)
    summary = read_json(new / "summary.json")
    assert summary["treatment"] == "nearby" and summary["verdict"]["outcome"] == "clears"
    assert "`nearby`'s test MSE differs from `none`'s" in (new / "summary.md").read_text()
    three = make_sweep(
        tmp_path / "three",
        {"none": [0.0097, 0.0098, 0.0096], "random": [0.02, 0.021, 0.019], "nearby": [0.0060, 0.0062, 0.0061]},
    )
    run_cli("ired-report", str(three), check=True)  # two candidates and no adversarial: nothing to pick
    assert read_json(three / "summary.json")["verdict"]["outcome"] == "inconclusive"
    run_cli("ired-report", str(three), "--candidate", "random", check=True)
    assert read_json(three / "summary.json")["verdict"]["outcome"] == "does not clear"
    proc = run_cli("ired-report", str(three), "--candidate", "nearb")
    assert (
        proc.returncode == 1
        and "--candidate nearb: no run of it" in proc.stderr
        and "nearby, none, random" in proc.stderr
    )
