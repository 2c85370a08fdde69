"""hardware.cuda_graph on a CPU: the static-buffer step (what a GPU records as a CUDA graph and replays)
run eagerly gives the run the ordinary loop gives, and the capture-safe data route gives today's
matrices. The same checks under real graphs are in test_cuda.py."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module

from ired_mining.checkpoint import checkpoint_path
from ired_mining.data import inverse_by_triangular_solve, spd_batch
from ired_mining.graphed import next_visit
from ired_mining.train import Run, TrainingDiverged

from conftest import TINY, read_json, run_cli

# Tens of steps, an EMA update every 3 after a warm-up of 4, visits at 5, 7 and 10 steps.
SETTINGS = [o for o in TINY if not o.startswith(("train.steps", "train.eval_every", "checkpoint.every"))] + [
    "train.steps=40",
    "train.eval_every=10",
    "checkpoint.every=7",
    "ema.every=3",
    "ema.warmup=4",
]


def make_run(tmp_path, name, *overrides):
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*SETTINGS, *overrides])
    return Run(cfg, tmp_path / name)


def metrics(run) -> list[dict]:
    """metrics.jsonl without what is timed or what the graphed step cannot time (mine_ms)."""
    drop = ("train_seconds", "mine_ms")
    return [{k: v for k, v in rec.items() if k not in drop} for rec in run.rundir.read_metrics()]


def assert_same_state(a, b, exact: bool, rtol=0.0, atol=0.0):
    check = torch.equal if exact else (lambda p, q: torch.allclose(p, q, rtol=rtol, atol=atol))
    for name, (p, q) in {"model": (a.model, b.model), "ema": (a.ema, b.ema)}.items():
        for (k, v), (_, w) in zip(p.state_dict().items(), q.state_dict().items()):
            assert check(v.float(), w.float()), f"{name}.{k} differs"
    for s, t in zip(a.optimizer.state.values(), b.optimizer.state.values()):
        for k in s:
            assert check(s[k].float(), t[k].float()), f"optimizer {k} differs"


# ================================================================ the data route a graph can record


@pytest.mark.parametrize("lam", [0.5, 0.1])
def test_capture_safe_inverse_equals_cholesky_inverse_in_float64(lam):
    problems = spd_batch(20, 512, lam, torch.Generator().manual_seed(3))
    a = problems.x.view(-1, 20, 20).double()
    low = torch.linalg.cholesky(a)
    safe, today = inverse_by_triangular_solve(low), torch.cholesky_inverse(low)
    # Relative to each matrix's largest entry: entries that cancel to near zero differ relatively more.
    scale = today.abs().amax(dim=(-2, -1), keepdim=True)
    assert ((safe - today).abs() / scale).max() < 1e-12
    # Both are inverses: an independent check, not one route against the other alone.
    eye = torch.eye(20, dtype=torch.float64).expand_as(a)
    torch.testing.assert_close(a @ safe, eye, rtol=0, atol=1e-9)


@pytest.mark.parametrize("lam", [0.5, 0.1])
def test_capture_safe_spd_batch_gives_the_same_matrices_to_float32_rounding(lam):
    today = spd_batch(20, 2048, lam, torch.Generator().manual_seed(4))
    safe = spd_batch(20, 2048, lam, torch.Generator().manual_seed(4), capture_safe=True)
    assert torch.equal(today.x, safe.x)
    # At most one float32 rounding step apart: two float64 values within ~1e-13 of each other round to
    # the same float32 or to neighbours.
    ulps = (today.y.view(torch.int32).long() - safe.y.view(torch.int32).long()).abs()
    assert ulps.max() <= 1


# ================================================================ the static step against the loop


def test_next_visit_is_the_first_log_eval_or_checkpoint_step():
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        cfg = compose("config", overrides=SETTINGS)
    visits, step = [], 0
    while step < cfg.train.steps:
        step = next_visit(step, cfg)
        visits.append(step)
    assert visits == [5, 7, 10, 14, 15, 20, 21, 25, 28, 30, 35, 40]


def test_static_step_gives_the_loop_bit_for_bit(tmp_path):
    """Losses and running sums (metrics.jsonl), weights, EMA (incl. its update count) and Adam's state
    after 40 steps with 12 EMA updates; the data drawn eagerly into the static buffers."""
    eager = make_run(tmp_path, "eager")
    static = make_run(tmp_path, "static", "hardware.cuda_graph=true", "hardware.cuda_graph_data=false")
    eager.fit(), static.fit()
    assert metrics(static) == metrics(eager)
    assert len(metrics(eager)) == 4 and "loss/energy" in metrics(eager)[0]
    assert int(static.ema.n_averaged) == int(eager.ema.n_averaged) == 40 // 3
    assert_same_state(static, eager, exact=True)
    assert torch.equal(static.generator.get_state(), eager.generator.get_state())


def test_static_step_with_the_data_drawn_by_the_capture_safe_route(tmp_path):
    """The route a graph records gives the same run to float32 rounding."""
    eager = make_run(tmp_path, "eager")
    static = make_run(tmp_path, "static", "hardware.cuda_graph=true")
    eager.fit(), static.fit()
    for a, b in zip(metrics(static), metrics(eager)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    assert_same_state(static, eager, exact=False, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("graph", [False, True])
def test_nan_guard_names_the_first_bad_step(tmp_path, graph):
    """A weight set to NaN after step 13: step 14 is the first bad one, found at the visit of step 14
    (a checkpoint) in both loops; the loop never runs past that visit."""
    run = make_run(tmp_path, "run", f"hardware.cuda_graph={str(graph).lower()}")
    run.cfg.train.steps = 13
    run.fit()
    with torch.no_grad():
        run.model.fc4.weight[0, 0] = float("nan")
    run.cfg.train.steps = 40
    with pytest.raises(TrainingDiverged, match="non-finite at step 14;"):
        run.fit()
    assert run.step == 14


def test_static_step_resumes_exactly(tmp_path):
    """Killed after step 25 with its checkpoint lost: a new Run resumes from step 21 (mid-way between
    evaluations, so running sums in the checkpoint) and goes on to 40: the same weights, EMA, optimiser
    state and metrics as 40 steps without a break, bit for bit."""
    whole = make_run(tmp_path, "whole", "hardware.cuda_graph=true")
    whole.fit()
    first = make_run(tmp_path, "split", "hardware.cuda_graph=true")
    first.cfg.train.steps = 25
    first.fit()
    checkpoint_path(first.ckpt_dir, 25).unlink()
    second = make_run(tmp_path, "split", "hardware.cuda_graph=true")
    assert second.resume() and second.step == 21 and second.running.count == 1
    second.fit()
    assert second.step == 40
    assert metrics(second) == metrics(whole)
    assert_same_state(second, whole, exact=True)


@pytest.mark.slow
def test_ired_train_with_cuda_graph_on_a_cpu_matches_the_eager_run(tmp_path):
    """Through the installed console script and real Hydra: the switch on a CPU gives the same final
    metrics as the ordinary loop, bit for bit."""
    common = [o for o in TINY if not o.startswith("hardware=")] + ["hardware=cpu"]
    run_cli("ired-train", *common, f"hydra.run.dir={tmp_path / 'eager'}", check=True)
    run_cli(
        "ired-train",
        *common,
        "hardware.cuda_graph=true",
        "hardware.cuda_graph_data=false",
        f"hydra.run.dir={tmp_path / 'static'}",
        check=True,
    )
    drop = ("train_seconds", "seconds_per_step", "env")
    a, b = (read_json(tmp_path / d / "metrics.json") for d in ("eager", "static"))
    assert a["status"] == b["status"] == "finished"
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
