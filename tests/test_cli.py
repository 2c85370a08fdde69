"""ired-train through the installed console script, as a user meets it."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from conftest import BIN, read_json, read_jsonl, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("strategy", ["none", "random", "adversarial"])
def test_tiny_run_of_each_strategy_writes_finite_metrics(tmp_path, tiny, strategy):
    run_dir = tmp_path / "run"
    proc = run_cli("ired-train", *tiny, f"mining={strategy}", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)
    final = read_json(run_dir / "metrics.json")
    assert final["status"] == "finished" and final["strategy"] == strategy and final["step"] == 20
    for split in ("in_dist", "harder"):
        for key in ("mse", "zero_mse", "exact_mse", "residual"):
            assert math.isfinite(final[f"{split}/{key}"])
    lines = read_jsonl(run_dir / "metrics.jsonl")
    assert [line["step"] for line in lines] == [10, 20]
    assert all(line["train_seconds"] > 0 for line in lines)
    assert ("loss/energy" in lines[-1]) == (strategy != "none")
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "train.log").exists()
    assert list((run_dir / "checkpoints").glob("step_*.pt"))
    assert str(run_dir) in proc.stdout  # the final table names the run directory


def test_shell_overrides_reach_the_saved_config(tmp_path, tiny):
    run_dir = tmp_path / "run"
    run_cli(
        "ired-train",
        *tiny,
        "mining=adversarial",
        "mining.steps=3",
        "optim.lr=3e-4",
        "dataset.n=5",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        check=True,
    )
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["mining"]["steps"] == 3 and cfg["optim"]["lr"] == 3e-4 and cfg["dataset"]["n"] == 5
    assert cfg["mining"]["name"] == "adversarial"


BAD_INPUTS = [
    ("mining=bogus", "mining: no option 'bogus'"),
    ("optim.lr=-0.001", "optim.lr=-0.001"),
    ("dataset.n=0", "dataset.n=0"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.steps=0", "train.steps=0"),
    # rules a type cannot say: a range of a list's items, and a strategy's name against its group's keys
    ("optim.betas=[0.9,1.5]", "optim.betas=[0.9, 1.5]"),
    ("mining.name=random", "mining.name=random"),
    # a group given null: Hydra's own refusal names neither the group nor its options
    ("logger=null", "logger: null is not an option; choose one of: none, tensorboard, wandb"),
]


@pytest.mark.parametrize("override,named", BAD_INPUTS)
def test_bad_input_is_one_clear_line(tmp_path, tiny, override, named):
    proc = run_cli("ired-train", *tiny, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1, proc.stderr
    assert named in err_lines[0] and ("choose one of" in err_lines[0] or "must be" in err_lines[0])
    assert "Traceback" not in proc.stdout + proc.stderr


def test_logger_none_is_the_default_and_can_be_named(tmp_path, tiny):
    run_dir = tmp_path / "run"
    run_cli("ired-train", *tiny, f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)  # no logger= given
    assert (
        yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]["logger"]
        == "none"
    )
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "wandb").exists()
    log = (run_dir / "train.log").read_text()  # the final table and the path, kept with the run's log
    assert "zero predictor" in log and f"run directory: {run_dir}" in log
    # Named, it composes to the same job config as the default (composing is enough: no second run).
    job = {
        name: run_cli("ired-train", *tiny, *extra, "--cfg", "job", cwd=tmp_path, check=True).stdout
        for name, extra in (("default", []), ("named", ["logger=none"]))
    }
    assert job["named"] == job["default"] and "logger:" in job["named"], job
    help_text = run_cli("ired-train", "--help", cwd=tmp_path, check=True).stdout
    assert re.search(r"logger: none, tensorboard, wandb", help_text), help_text


def test_a_run_dir_too_long_to_make_is_one_line_before_anything_is_written(tmp_path, tiny):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")  # 255 on ext4, xfs, tmpfs, overlayfs
    run_dir = tmp_path / "runs" / ("x" * (name_max + 1))
    proc = run_cli("ired-train", *tiny, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        "ired-train: error: hydra.run.dir: the run directory cannot be made: its name "
        f"{'x' * 60}… is {name_max + 1} bytes, and this filesystem allows {name_max}; "
        "choose a shorter one"
    )
    assert list(tmp_path.iterdir()) == []


def test_two_modes_at_once_are_one_clear_line(tmp_path):
    proc = run_cli("ired-train", "-m", "mining=none,random", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 2
    err_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "-m/--multirun and --cfg: choose one" in err_lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_help_lists_groups_and_choices(tmp_path):
    proc = run_cli("ired-train", "--help", cwd=tmp_path, check=True)
    for group, choice in [
        ("mining", "adversarial"),
        ("hardware", "cpu"),
        ("experiment", "pilot"),
        ("model", "mlp"),
        ("diffusion", "cosine"),
        ("dataset", "inverse"),
    ]:
        assert group in proc.stdout and choice in proc.stdout


@pytest.mark.slow
def test_wheel_installed_in_fresh_venv_finds_its_configs(tmp_path, tiny):
    """Build the wheel, install it (without the editable checkout) into a new venv, run it outside the repo."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("ired_mining-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)
    # The dependencies (torch, hydra, ...) come from the test's environment, appended after the new venv's own
    # site-packages; the .pth files there (the editable install of the checkout) are not processed.
    site = next((env_dir / "lib").glob("python*/site-packages"))
    deps = next(BIN.parent.glob("lib/python*/site-packages"))
    (site / "zz_deps.pth").write_text(str(deps) + "\n")
    where = subprocess.run(
        [str(py), "-c", "import ired_mining; print(ired_mining.__file__)"], capture_output=True, text=True, check=True
    ).stdout
    assert str(env_dir) in where, where
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [str(env_dir / "bin" / "ired-train"), *tiny, "train.steps=4", "train.eval_every=4"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    finals = list((work / "outputs").glob("*/*/metrics.json"))
    assert len(finals) == 1 and read_json(finals[0])["status"] == "finished"

    # The sweeper plugin (hydra_plugins/ired_sweeper) comes from the wheel too, and Hydra finds it: a
    # glob sweep ends with its table of jobs.
    where = subprocess.run(
        [str(py), "-c", "import hydra_plugins.ired_sweeper as p; print(p.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where, where
    proc = subprocess.run(
        [
            str(env_dir / "bin" / "ired-train"),
            "-m",
            *tiny,
            "train.steps=4",
            "train.eval_every=4",
            "mining=glob(*,exclude=adversarial)",
            "hydra.sweep.dir=sweep",
        ],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    jobs = read_json(work / "sweep" / "jobs.json")
    assert [(j["metrics"]["strategy"], j["state"]) for j in jobs] == [("none", "finished"), ("random", "finished")]
