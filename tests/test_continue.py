"""A finished run continued to a larger train.steps, the cosine learning-rate schedule, and older
runs (recorded before model.depth and optim.schedule existed) that must still resume."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ired_mining.checkpoint import fingerprint, list_checkpoints
from ired_mining.train import compat_fingerprint, learning_rate

from conftest import TINY, read_json, read_jsonl, run_cli

REPO = Path(__file__).resolve().parents[1]
BASE = [a for a in TINY if not a.startswith("train.steps")] + ["mining=adversarial"]


def train(run_dir: Path, steps: int, *extra: str, check: bool = True):
    return run_cli(
        "ired-train", *BASE, f"train.steps={steps}", *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, check=check
    )


TIMINGS = ("train_seconds", "mine_ms")  # clocks, not results


def without_time(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMINGS} for line in lines]


def assert_same_run(a: Path, b: Path) -> None:
    assert without_time(read_jsonl(a / "metrics.jsonl")) == without_time(read_jsonl(b / "metrics.jsonl"))
    fa, fb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert fa["status"] == fb["status"] == "finished" and fa["step"] == fb["step"]
    assert {k: v for k, v in fa.items() if "/" in k} == {k: v for k, v in fb.items() if "/" in k}  # bit for bit
    assert fa["in_dist/mse"] == fb["in_dist/mse"]


def test_a_finished_run_continued_to_more_steps_ends_where_a_longer_run_does(tmp_path):
    short, longer = tmp_path / "short", tmp_path / "long"
    train(short, 20)
    assert read_json(short / "metrics.json")["step"] == 20
    proc = train(short, 40)
    assert "continuing the finished run" in proc.stdout + proc.stderr
    train(longer, 40)
    assert_same_run(short, longer)
    steps = [line["step"] for line in read_jsonl(short / "metrics.jsonl")]
    assert steps == [10, 20, 30, 40]  # the first run's lines kept, the new ones appended, none twice


def test_a_shorter_or_equal_length_leaves_a_finished_run_as_it_is(tmp_path):
    run = tmp_path / "run"
    train(run, 20)
    before = (run / "metrics.json").read_bytes(), (run / "metrics.jsonl").read_bytes()
    for steps in (20, 10):
        proc = train(run, steps)
        assert "already holds a finished run" in proc.stdout + proc.stderr
    assert ((run / "metrics.json").read_bytes(), (run / "metrics.jsonl").read_bytes()) == before


def test_cosine_rate_closed_form():
    cfg = OmegaConf.create({"optim": {"lr": 1e-3, "min_lr": 1e-5, "schedule": "cosine"}, "train": {"steps": 100}})
    assert learning_rate(cfg, 0) == pytest.approx(1e-3, rel=1e-15)
    assert learning_rate(cfg, 50) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-15)
    assert learning_rate(cfg, 100) == pytest.approx(1e-5, rel=1e-15)
    assert learning_rate(cfg, 25) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (2 + 2**0.5) / 4, rel=1e-14)
    constant = OmegaConf.merge(cfg, {"optim": {"schedule": "constant"}})
    assert learning_rate(constant, 77) == 1e-3


def test_cosine_run_sets_each_rate_and_resumes_exactly(tmp_path):
    run, rewound = tmp_path / "run", tmp_path / "rewound"
    schedule = ["optim.schedule=cosine", "optim.lr=1e-3", "optim.min_lr=1e-5"]
    train(run, 20, *schedule)
    state = torch.load(list_checkpoints(run / "checkpoints")[-1], weights_only=False)
    last = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 19 / 20))  # the rate of step 20 (0-based 19)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last, rel=1e-12)
    # Rewound to its step-10 checkpoint, as a kill after it would leave it, and run again: same end.
    shutil.copytree(run, rewound)
    for ckpt in list_checkpoints(rewound / "checkpoints"):
        if int(ckpt.stem.split("_")[-1]) > 10:
            ckpt.unlink()
    (rewound / "metrics.json").unlink()
    proc = train(rewound, 20, *schedule)
    assert "resumed from step 10" in proc.stdout + proc.stderr
    assert_same_run(rewound, run)


def test_a_cosine_run_cannot_be_continued_to_another_length(tmp_path):
    run = tmp_path / "run"
    train(run, 20, "optim.schedule=cosine")
    before = (run / "metrics.json").read_bytes()
    proc = train(run, 40, "optim.schedule=cosine", check=False)
    assert proc.returncode == 2 and "train.steps is 40 here, 20 there" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (run / "metrics.json").read_bytes() == before


def test_runs_recorded_before_the_later_keys_keep_their_fingerprint():
    """A run's checkpoint holds the fingerprint of its config as it was recorded; the committed
    grid's runs predate model.depth and optim.schedule. Their fingerprint, computed as it was then
    (groups, seed, batch size, clip), must equal today's of the same config with the keys' values."""
    recorded = next((REPO / "results" / "cpu_grid" / "sweep").glob("*/.hydra/config.yaml"))
    old = OmegaConf.load(recorded)
    assert "depth" not in old.model and "schedule" not in old.optim
    then = {
        k: OmegaConf.to_container(old[k], resolve=True)
        for k in ("model", "diffusion", "dataset", "mining", "optim", "ema")
    }
    then |= {"seed": old.seed, "batch_size": old.train.batch_size, "grad_clip": old.train.grad_clip}
    now = OmegaConf.merge(old, {"model": {"depth": 3}, "optim": {"schedule": "constant", "min_lr": 0.0}})
    assert compat_fingerprint(now) == fingerprint(then)
    deeper = OmegaConf.merge(now, {"model": {"depth": 4}})
    assert compat_fingerprint(deeper) != fingerprint(then)
