"""ired-eval: a trained run evaluated again reproduces its final metrics exactly, takes evaluation
overrides, measures MSE against test-time inner steps, and turns bad input into one line."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
import torch

from ired_mining.checkpoint import list_checkpoints

from conftest import TINY, read_json, run_cli

SPLIT_KEYS = ("mse", "zero_mse", "exact_mse", "residual")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished TINY run (adversarial: the sampler and the miner both exercised)."""
    root = tmp_path_factory.mktemp("eval")
    run = root / "run"
    run_cli("ired-train", *TINY, "mining=adversarial", f"hydra.run.dir={run}", cwd=root, check=True)
    return run


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def test_reproduces_final_metrics_exactly(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    proc = run_cli("ired-eval", str(run), check=True)
    out = read_json(run / "eval" / "default.json")
    final = read_json(run / "metrics.json")
    for split in ("in_dist", "harder"):
        for key in SPLIT_KEYS:
            assert out["metrics"][f"{split}/{key}"] == final[f"{split}/{key}"], f"{split}/{key}"
    assert out["step"] == final["step"] and out["strategy"] == "adversarial"
    assert out["settings"]["sampler.inner_steps"] == 5 and out["settings"]["eval.size"] == 32
    assert "default.json" in proc.stdout


def test_overrides_pick_split_and_sampler(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    run_cli("ired-eval", str(run), "sampler.inner_steps=0", "dataset.split=harder", check=True)
    out = read_json(run / "eval" / "dataset.split=harder,sampler.inner_steps=0.json")
    final = read_json(run / "metrics.json")
    assert set(out["metrics"]) == {f"harder/{k}" for k in SPLIT_KEYS}
    assert out["settings"]["sampler.inner_steps"] == 0
    # Evaluated alone, the harder split keeps its matrices: the same zero-predictor and exact-solver MSE.
    assert out["metrics"]["harder/zero_mse"] == final["harder/zero_mse"]
    assert out["metrics"]["harder/exact_mse"] == final["harder/exact_mse"]

    run_cli("ired-eval", str(run), "eval.splits.mid=0.25", "dataset.split=mid", "eval.size=16", check=True)
    out = read_json(run / "eval" / "dataset.split=mid,eval.size=16,eval.splits.mid=0.25.json")
    assert out["settings"]["splits"] == {"mid": 0.25} and out["settings"]["eval.size"] == 16
    assert set(out["metrics"]) == {f"mid/{k}" for k in SPLIT_KEYS}


def test_scaling_writes_json_and_png(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    run_cli("ired-eval", str(run), "--scaling", "--inner-steps", "5,0,2", check=True)
    out = read_json(run / "eval" / "scaling.json")
    final = read_json(run / "metrics.json")
    assert out["inner_steps"] == [0, 2, 5] and [r["inner_steps"] for r in out["results"]] == [0, 2, 5]
    # At the run's own inner-step count the scaling curve passes through its final metrics.
    at5 = out["results"][2]
    assert at5["in_dist/mse"] == final["in_dist/mse"] and at5["harder/mse"] == final["harder/mse"]
    data = (run / "eval" / "scaling.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1200, 450)


def test_overrides_go_before_or_after_the_options(run_dir, tmp_path):
    """`RUN --scaling sampler.backtrack=0.5` is the same evaluation as `RUN sampler.backtrack=0.5 --scaling`."""
    after, before = copy_run(run_dir, tmp_path / "after"), copy_run(run_dir, tmp_path / "before")
    run_cli("ired-eval", str(after), "--scaling", "sampler.backtrack=0.5", "--inner-steps", "0,2", check=True)
    run_cli("ired-eval", str(before), "sampler.backtrack=0.5", "--scaling", "--inner-steps", "0,2", check=True)
    got, want = (read_json(r / "eval" / "scaling-sampler.backtrack=0.5.json") for r in (after, before))
    assert got["settings"]["sampler.backtrack"] == 0.5 and got["results"][1]["inner_steps"] == 2
    assert [r["in_dist/mse"] for r in got["results"]] == [r["in_dist/mse"] for r in want["results"]]


def test_open_run_in_python(run_dir):
    from ired_mining.evaluate import open_run

    run = open_run(run_dir)
    model, diffusion, cfg = run.model, run.diffusion, run.cfg
    x = torch.eye(cfg.dataset.n).flatten()[None].repeat(3, 1) * 2  # A = 2I, so A⁻¹ = I/2
    y_hat = diffusion.sample(model, x, cfg.sampler.inner_steps)
    assert y_hat.shape == (3, cfg.dataset.n**2) and torch.isfinite(y_hat).all()
    assert not model.training and cfg.mining.name == "adversarial"


def one_line_error(returncode: int, stderr: str) -> str:
    assert returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ired-eval: error:"), stderr
    return lines[0]


def cli_error(*args: str) -> str:
    proc = run_cli("ired-eval", *args)
    return one_line_error(proc.returncode, proc.stderr)


def test_bad_input_is_one_line_from_the_installed_script(run_dir, tmp_path):
    assert "does not exist" in cli_error(str(tmp_path / "nope"))
    run = copy_run(run_dir, tmp_path)
    newest = list_checkpoints(run / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    assert "unreadable" in cli_error(str(run))
    assert not (run / "eval").exists()  # nothing half-written


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "no checkpoint"),
        (("sampler.bogus=1",), "sampler.bogus: not a key of sampler; its keys: inner_steps, step_scale, backtrack"),
        (("bogus.key=1",), "bogus.key: not a key of this run's config; ired-eval accepts eval.*, sampler.*"),
        (("model.hidden=64",), "cannot change at evaluation"),
        (("dataset.split=nope",), "not a split"),
        (("sampler.inner_steps=-1",), "sampler.inner_steps=-1 is invalid"),
        (("--scaling", "--inner-steps", "a,b"), "--inner-steps=a,b"),
    ],
)
def test_bad_input_is_one_line(run_dir, tmp_path, capsys, args, message):
    from ired_mining.eval_cli import main

    target = str(tmp_path) if message == "no checkpoint" else str(run_dir)
    with pytest.raises(SystemExit) as exit_info:
        main([target, *args])
    assert message in one_line_error(exit_info.value.code, capsys.readouterr().err)
