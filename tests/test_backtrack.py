"""Backtracking energy descent (`sampler.backtrack`, `mining.backtrack`) against independent
computations: a closed-form quadratic energy followed by hand, float64 energies recomputed by the
model's plain forward, and the spec's loop kept here verbatim for the default path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from ired_mining.data import spd_batch
from ired_mining.diffusion import Diffusion, cosine_schedule
from ired_mining.evaluate import open_run
from ired_mining.mining import AdversarialNegatives, MiningBatch
from ired_mining.model import EnergyMLP

from conftest import run_cli

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


class Quadratic:
    """E(y) = ½ Σ a·y² per sample, a > 0 one curvature per sample: descent's step s is accepted
    exactly when s·a ≤ 2 (then y ← (1 − s·a) y), so the whole trajectory is known in closed form."""

    def __init__(self, a: torch.Tensor):
        self.a = a[:, None]

    def energy(self, y):
        return 0.5 * (self.a * y.square()).sum(-1)

    def energy_and_grad(self, y):
        return self.energy(y), self.a * y


def by_hand(a: float, y: float, s: float, shrink: float, steps: int) -> tuple[float, list[float]]:
    """The backtracking rule on one scalar sample, in Python floats: the final y and each step's size."""
    sizes = []
    for _ in range(steps):
        sizes.append(s)
        if s * a <= 2:
            y = (1 - s * a) * y
        else:
            s *= shrink
    return y, sizes


def _model(n=3, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return EnergyMLP(n, 16, 8).to(dtype)


def _problem(model, diffusion, b=64, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = spd_batch(model.n, b, 0.5, g)
    t = torch.randint(0, diffusion.num_steps, (b,), generator=g)
    eps = torch.randn(p.y.shape, generator=g)
    cond = model.conditioning(diffusion.levels)[t]
    x, y, eps = p.x.to(dtype), p.y.to(dtype), eps.to(dtype)
    return model.bind(x, cond).detached(), x, cond, y, t, eps


# ---------------------------------------------------------------- the rule, in closed form


@pytest.mark.parametrize("shrink", [1.0, 0.5, 0.3])
def test_every_step_of_the_descent_follows_the_rule_by_hand(shrink):
    """The product's own trajectory, after each number of steps, against the rule followed by hand
    on each scalar sample (shrink 1 is the spec's default: a rejected sample never moves again)."""
    diffusion = Diffusion(cosine_schedule(10), clamp=1e9)  # no clamp: the closed form holds
    a = torch.tensor([0.5, 3.0, 9.0, 40.0, 200.0], dtype=torch.float64)
    y0 = torch.ones(5, 1, dtype=torch.float64)
    scale, level = 4.0, 9
    s0 = scale * diffusion.step_size[level].item()
    for steps in range(13):
        y, _ = diffusion.descend(Quadratic(a), y0, level, steps, scale, backtrack=shrink)
        for i in range(5):
            # float32 step sizes (the diffusion's), float64 by hand: near 0 the error is absolute
            want = by_hand(a[i].item(), 1.0, s0, shrink, steps)[0]
            assert y[i, 0].item() == pytest.approx(want, rel=1e-5, abs=1e-9), (steps, i)
    # the stiff samples are rejected at first; only smaller steps move them
    assert (s0 * a[2:] > 2).all()
    moved = y[2:, 0] != 1.0
    assert moved.all() if shrink < 1 else not moved.any()


def test_without_backtracking_a_rejected_sample_never_moves():
    diffusion = Diffusion(cosine_schedule(10), clamp=1e9)
    a = torch.tensor([0.5, 40.0], dtype=torch.float64)
    y0 = torch.ones(2, 1, dtype=torch.float64)
    y, _ = diffusion.descend(Quadratic(a), y0, 9, 50, 4.0)
    assert y[1, 0].item() == 1.0  # rejected at once, retried with the same step 50 times
    assert abs(y[0, 0].item()) < 1.0


# ---------------------------------------------------------------- the real energy, float64


@pytest.mark.parametrize("shrink", [1.0, 0.5])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_energy_never_rises_along_the_descent(shrink, scale):
    model = _model()
    diffusion = Diffusion(cosine_schedule(10))
    energy, x, cond, y, t, eps = _problem(model, diffusion)
    start = diffusion.noise(y, t, eps, eps_scale=3.0)
    with torch.no_grad():  # each prefix of the descent, its energy by the model's plain forward
        energies = torch.stack(
            [model.energy(x, diffusion.descend(energy, start, t, k, scale, shrink)[0], cond) for k in range(0, 13)]
        )
    assert (energies[1:] <= energies[:-1]).all()
    assert (energies[-1] < energies[0]).any()


def test_with_backtracking_more_steps_never_leave_a_sample_worse_and_help_where_the_spec_stalls():
    model = _model(seed=3)
    diffusion = Diffusion(cosine_schedule(10), clamp=1e9)  # no clamp: an unmoved sample was rejected
    energy, x, cond, y, t, eps = _problem(model, diffusion, b=64, seed=1)
    start = diffusion.noise(y, t, eps, eps_scale=3.0)
    scale = 5000.0  # an untrained energy is nearly linear: only very long steps overshoot and are rejected
    with torch.no_grad():
        e = {
            (k, shrink): model.energy(x, diffusion.descend(energy, start, t, k, scale, shrink)[0], cond)
            for k in (2, 5, 20, 40)
            for shrink in (1.0, 0.5)
        }
    for fewer, more in [(2, 5), (5, 20), (20, 40)]:
        assert (e[more, 0.5] <= e[fewer, 0.5]).all()
    assert (e[40, 0.5] < e[20, 0.5]).any()
    # the spec's descent: a sample rejected once never moves again; backtracking moves it on
    with torch.no_grad():
        ys = [diffusion.descend(energy, start, t, k, scale)[0] for k in range(0, 21)]
    stalled = torch.zeros(len(start), dtype=torch.bool)
    for k in range(20):
        same = (ys[k + 1] == ys[k]).all(dim=1)
        assert same[stalled].all()
        stalled |= same
    assert stalled.sum() > 0
    assert torch.equal(e[20, 1.0][stalled], e[40, 1.0][stalled])
    assert (e[40, 0.5][stalled] < e[40, 1.0][stalled]).float().mean() > 0.5


# ---------------------------------------------------------------- the default is the spec


def reference_descent(model, x, cond, y, step, bound, steps):
    """The spec's rule in float64 from the model's plain forward and autograd (not BoundEnergy):
    a step y − η∇E, clamped, taken where it does not raise the energy."""
    for _ in range(steps):
        y_ = y.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model.energy(x, y_, cond).sum(), y_)
        cand = torch.clamp(y - step * grad, -bound, bound)
        with torch.no_grad():
            accept = model.energy(x, cand, cond) <= model.energy(x, y, cond)
        y = torch.where(accept[:, None], cand, y).detach()
    return y


def test_the_default_descent_is_the_spec_rule_against_a_float64_reference():
    model = _model()
    diffusion = Diffusion(cosine_schedule(10))
    energy, x, cond, y, t, eps = _problem(model, diffusion)
    start = diffusion.noise(y, t, eps, eps_scale=3.0)
    for steps, scale in [(0, 1.0), (1, 1.0), (2, 1.0), (7, 3.0)]:
        ours, e = diffusion.descend(energy, start, t, steps, scale)
        step, bound = scale * diffusion.step_size[t].double(), diffusion.clamp * diffusion.sqrt_ac[t].double()
        want = reference_descent(model, x, cond, start, step, bound, steps)
        # float64 rounding of two ways to the gradient, over 7 steps: ~1e-8; one decision taken the
        # other way would move a sample by a whole step (~1e-2)
        assert torch.allclose(ours, want, rtol=1e-6, atol=1e-8), steps
        with torch.no_grad():
            assert torch.allclose(e, model.energy(x, ours, cond), rtol=1e-9, atol=1e-12)


def test_the_sampler_uses_its_diffusion_s_backtracking_unless_told():
    model = _model(dtype=torch.float32)
    x = spd_batch(3, 16, 0.5, torch.Generator().manual_seed(0)).x
    plain, halving = Diffusion(cosine_schedule(10)), Diffusion(cosine_schedule(10), sample_backtrack=0.5)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    a = plain.sample(model, x, 5, gen(), 5000.0)
    assert torch.equal(a, plain.sample(model, x, 5, gen(), 5000.0, backtrack=1.0))
    b = halving.sample(model, x, 5, gen(), 5000.0)
    assert torch.equal(b, plain.sample(model, x, 5, gen(), 5000.0, backtrack=0.5))
    assert not torch.equal(a, b)


def test_the_miner_with_backtracking_moves_negatives_the_spec_leaves_at_the_start():
    model = _model(dtype=torch.float64)
    diffusion = Diffusion(cosine_schedule(10))
    energy, x, cond, y, t, eps = _problem(model, diffusion)
    batch = MiningBatch(energy, y, t, eps, torch.Generator().manual_seed(0))
    assert AdversarialNegatives().backtrack == 1.0  # the spec by default
    spec = AdversarialNegatives(steps=6, step_scale=5000.0).negatives(diffusion, batch)
    back = AdversarialNegatives(steps=6, step_scale=5000.0, backtrack=0.5).negatives(diffusion, batch)
    start = AdversarialNegatives(steps=0).negatives(diffusion, batch)
    to_y = lambda neg: diffusion.sqrt_ac[t] * neg  # noqa: E731  (negatives come in answer space)
    with torch.no_grad():
        e_spec, e_back = model.energy(x, to_y(spec), cond), model.energy(x, to_y(back), cond)
    stuck = (spec == start).all(dim=1)
    assert stuck.sum() > 0  # such long steps are rejected by the spec's descent
    assert (e_back[stuck] < e_spec[stuck]).any()


# ---------------------------------------------------------------- the config keys


@pytest.mark.parametrize("arg", ["mining.backtrack=0", "sampler.backtrack=1.5"])
def test_a_backtracking_factor_out_of_range_is_one_line(arg, tiny, tmp_path):
    proc = run_cli("ired-train", *tiny, arg, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ired-train: error:")
    assert arg.split("=")[0] in lines[0] and "(0, 1]" in lines[0]
    assert "Traceback" not in proc.stderr


def test_ired_eval_scaling_with_backtracking_sits_beside_the_plain_curve(tiny, tmp_path):
    run = tmp_path / "run"
    run_cli("ired-train", *tiny, f"hydra.run.dir={run}", check=True)
    run_cli("ired-eval", str(run), "--scaling", "--inner-steps", "0,5", check=True)
    plain = (run / "eval" / "scaling.json").read_text()
    run_cli("ired-eval", str(run), "sampler.backtrack=0.5", "--scaling", "--inner-steps", "0,5", check=True)
    variant = json.loads((run / "eval" / "scaling-sampler.backtrack=0.5.json").read_text())
    assert (run / "eval" / "scaling.json").read_text() == plain  # the report's curve is untouched
    assert variant["settings"]["sampler.backtrack"] == 0.5
    assert json.loads(plain)["settings"]["sampler.backtrack"] == 1.0
    # no inner steps, no descent: backtracking cannot change anything there
    assert variant["results"][0]["in_dist/mse"] == json.loads(plain)["results"][0]["in_dist/mse"]

    # The report reads both curves: the variant beside the plain one, each its run's own numbers,
    # and no warning that the evaluations differ (they differ in the variant's override alone).
    run_cli("ired-report", str(tmp_path), check=True)
    curves = json.loads((tmp_path / "summary.json").read_text())["scaling"]
    plain_rows = json.loads(plain)["results"]
    for name, rows in (("adversarial", plain_rows), ("adversarial · sampler.backtrack=0.5", variant["results"])):
        curve = curves["strategies"][name]
        assert curve["inner_steps"] == [0, 5] and curve["n"] == 1
        assert [p["mean"] for p in curve["splits"]["in_dist"]] == [r["in_dist/mse"] for r in rows]
    assert len(curves["settings"]) == 1
    summary = (tmp_path / "summary.md").read_text()
    assert "`sampler.backtrack=0.5`" in summary and "different settings" not in summary


def test_descent_rejections_script_counts_what_an_independent_descent_rejects(tiny, tmp_path):
    """scripts/descent_rejections.py reads step k's rejections off Diffusion.descend (a sample that did
    not move); the yardstick's descent, written out with its own energy, counts E(candidate) > E(y)."""
    sys.path.insert(0, str(SCRIPTS))
    import descent_rejections
    import yardstick

    run = tmp_path / "run"
    run_cli("ired-train", *tiny, f"hydra.run.dir={run}", check=True)
    size, steps, corruption = 512, 4, 3.0
    loaded = open_run(run, ["hardware.device=cpu"])
    model, diffusion, cfg = loaded.model, loaded.diffusion, loaded.cfg
    rates = descent_rejections.rejected_per_step(model, diffusion, cfg, corruption, steps, size, seed=0)

    x, t, y = descent_rejections.mining_starts(diffusion, cfg, corruption, size, seed=0)  # the same start
    step, bound = diffusion.step_size[t], diffusion.clamp * diffusion.sqrt_ac[t]  # (batch, 1)
    near = torch.zeros(size, dtype=torch.bool)  # samples that went through a decision within rounding
    expected = []
    with torch.no_grad():
        for _ in range(steps):
            e, grad = yardstick.plain_grad(model, x, y, t)
            cand = torch.clamp(y - step * grad, -bound, bound)
            e_new = yardstick.plain_energy(model, x, cand, t)
            near |= (e_new - e).abs() <= 1e-6 * e.abs()
            accept = e_new <= e
            expected.append(1 - accept.float().mean().item())
            y = torch.where(accept[:, None], cand, y)
    assert max(expected) > 0.05, expected  # there are rejections to count
    for got, want in zip(rates, expected):
        assert abs(got - want) <= near.float().mean().item() + 1e-9, (rates, expected)
