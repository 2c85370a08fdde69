"""The benchmark (scripts/bench.py) and its yardstick (scripts/yardstick.py): the product's lean hot
paths compute the same numbers as the straightforward version of the method, and the benchmark
writes the records issue 6 asks for."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ired_mining.data import Problems, spd_batch
from ired_mining.diffusion import Diffusion, cosine_schedule
from ired_mining.mining import MiningBatch, build_strategy
from ired_mining.model import EnergyMLP
from ired_mining.train import compile_ahead, compiled, loss_terms, train_step

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import yardstick  # noqa: E402
from ties import TieWatch  # noqa: E402

CFG = OmegaConf.create({"mining": {"weight": 0.5}, "train": {"grad_clip": 1.0}, "hardware": {"compile": False}})


def _twins(dtype, n=3, hidden=16, time_dim=8):
    torch.manual_seed(0)
    model = EnergyMLP(n, hidden, time_dim).to(dtype)
    return model, copy.deepcopy(model)


@pytest.fixture
def float64_default():
    """Noise drawn in float64 too, so that nothing but the order of operations separates the two."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _diffusion(dtype):
    """The schedule's columns in `dtype` (the product keeps them in float32 whatever the model's dtype)."""
    diffusion = Diffusion(cosine_schedule(10))
    for name in ("sqrt_ac", "sqrt_1m_ac", "step_size"):
        setattr(diffusion, name, getattr(diffusion, name).to(dtype))
    return diffusion


def _one_step_each(name, dtype, n, hidden, time_dim, batch):
    """One training step of product and yardstick from the same weights, data, levels and noise."""
    product, plain = _twins(dtype, n, hidden, time_dim)
    diffusion = _diffusion(dtype)
    p = spd_batch(n, batch, 0.5, torch.Generator().manual_seed(1))
    x, y = p.x.to(dtype), p.y.to(dtype)
    strategy = build_strategy(name)
    a = train_step(
        product,
        diffusion,
        strategy,
        torch.optim.Adam(product.parameters(), lr=1e-3),
        Problems(x, y),
        CFG,
        torch.Generator().manual_seed(2),
    )
    b = yardstick.plain_train_step(
        plain,
        diffusion,
        strategy,
        torch.optim.Adam(plain.parameters(), lr=1e-3),
        x,
        y,
        CFG.mining.weight,
        CFG.train.grad_clip,
        torch.Generator().manual_seed(2),
    )
    return a, b, product, plain


@pytest.mark.parametrize("name", ["none", "random", "adversarial"])
def test_training_step_agrees_with_the_yardstick_in_float64(name, float64_default):
    a, b, product, plain = _one_step_each(name, torch.float64, n=3, hidden=16, time_dim=8, batch=16)
    for key in ("loss/mse", "loss/energy", "loss/total", "grad_norm"):
        if key in b:
            torch.testing.assert_close(a[key].detach(), b[key].detach(), rtol=1e-10, atol=0)
    assert ("loss/energy" in a) == ("loss/energy" in b)
    for p, q in zip(product.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


# Only strategies without an accept/reject decision: adversarial mining's float32 path is compared
# below, sample by sample (a near-tie may flip a decision), and its whole step in float64 above.
@pytest.mark.parametrize("name", ["none", "random"])
def test_training_step_agrees_with_the_yardstick_to_float32_rounding(name):
    a, b, product, plain = _one_step_each(name, torch.float32, n=4, hidden=32, time_dim=16, batch=64)
    for key in ("loss/mse", "loss/energy", "loss/total"):
        if key in b:
            torch.testing.assert_close(a[key].detach(), b[key].detach(), rtol=1e-5, atol=0)
    assert ("loss/energy" in a) == ("loss/energy" in b)
    for p, q in zip(product.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def assert_equal_but_for_near_ties(ours, plain, closest, tol, share=0.1, tie=1e-5):
    """float32 results of two implementations through energy descent's accept test: every sample
    agrees to `tol`, except at most `share` of them, and each of those went through a decision whose
    two energies were within `tie` (relative) of each other, where rounding may decide either way."""
    differs = (ours - plain).abs().amax(dim=1) > tol
    assert differs.float().mean() <= share, f"{int(differs.sum())} of {len(differs)} samples differ"
    assert (closest[differs] <= tie).all(), closest[differs]


def test_sampler_agrees_with_the_yardstick_in_float64(float64_default):
    model, _ = _twins(torch.float64)
    diffusion = _diffusion(torch.float64)
    x = spd_batch(3, 8, 0.5, torch.Generator().manual_seed(0)).x.to(torch.float64)
    ours = diffusion.sample(model, x, 5, torch.Generator().manual_seed(1))
    plain = yardstick.plain_sample(model, diffusion, x, 5, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, plain, rtol=1e-10, atol=1e-10)


# 10 levels × 6 gradient steps amplify rounding: float32 agrees to 1e-3 where one step agrees to 1e-5.
def test_sampler_agrees_with_the_yardstick_in_float32_but_for_near_ties(float64_default):
    model, _ = _twins(torch.float32)
    diffusion = TieWatch(_diffusion(torch.float32))
    x = spd_batch(3, 64, 0.5, torch.Generator().manual_seed(0)).x.to(torch.float32)
    ours = diffusion.sample(model, x, 5, torch.Generator().manual_seed(1))
    plain = yardstick.plain_sample(model, diffusion, x, 5, torch.Generator().manual_seed(1))
    assert_equal_but_for_near_ties(ours, plain, diffusion.closest, tol=1e-3)


def test_adversarial_negatives_agree_with_the_yardstick_in_float32_but_for_near_ties():
    """Mining's float32 path (the loss terms on given negatives are compared above, with random)."""
    model, _ = _twins(torch.float32, n=4, hidden=32, time_dim=16)
    diffusion, strategy = TieWatch(_diffusion(torch.float32)), build_strategy("adversarial")
    g = torch.Generator().manual_seed(1)
    p = spd_batch(4, 256, 0.5, g)
    t = torch.randint(0, 10, (256,), generator=g)
    eps_pair = torch.randn(p.y.shape, generator=g)
    energy = model.bind_levels(p.x, model.conditioning(diffusion.levels), t).detached()
    ours = strategy.negatives(diffusion, MiningBatch(energy, p.y, t, eps_pair, torch.Generator()))
    with torch.no_grad():
        plain = yardstick.plain_negatives(model, diffusion, strategy, p.x, p.y, t, eps_pair, torch.Generator())
    assert_equal_but_for_near_ties(ours, plain, diffusion.closest, tol=1e-4)


def test_bound_energy_matches_the_plain_energy_and_its_autograd_gradient():
    model, _ = _twins(torch.float64)
    x, y = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    t = torch.tensor([0, 1, 4, 4, 8, 9])
    cond = model.conditioning(torch.arange(10))[t]
    e, grad = model.energy_and_grad(x, y, cond)
    e_ref, grad_ref = yardstick.plain_grad(model, x, y, t)
    torch.testing.assert_close(e, e_ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-14)
    # and the gradient's own derivative in the weights (what the denoising loss backpropagates)
    _, g = model.energy_and_grad(x, y, cond, create_graph=True)
    ours = torch.autograd.grad(g.square().sum(), list(model.parameters()))
    _, g_ref = yardstick.plain_grad(model, x, y, t, create_graph=True)
    ref = torch.autograd.grad(g_ref.square().sum(), list(model.parameters()))
    for u, v in zip(ours, ref):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-13)


def test_yardstick_items_are_spd_problems_with_their_inverses():
    x, y = next(iter(yardstick.item_loader(5, 0.5, batch=8, steps=1)))
    a, inv = x.double().view(-1, 5, 5), y.double().view(-1, 5, 5)
    torch.testing.assert_close(a, a.transpose(1, 2))
    assert (torch.linalg.eigvalsh(a) > 0.5 - 1e-5).all()
    torch.testing.assert_close(a @ inv, torch.eye(5, dtype=torch.float64).expand_as(a), atol=1e-4, rtol=0)


def result_cpu_name(path: Path) -> str:
    return json.loads(path.read_text())["machine"]["cpu"]


def test_bench_tiny_writes_the_records(tmp_path):
    out, txt = tmp_path / "bench.json", tmp_path / "bench" / "bench.txt"
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "--tiny", "--device", "cpu", "--json", str(out), "--txt", str(txt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "% of matmul" in txt.read_text() and result_cpu_name(out) in txt.read_text()
    result = json.loads(out.read_text())
    every = [r for r in result["records"] if r["kind"] == "train"]
    for r in every:
        for key in ("steps_per_s", "flops_per_step", "flops_per_s", "matmul_flops_per_s"):
            assert r[key] > 0, (r, key)
    train = [r for r in every if r["precision"] == "32"]  # the bf16-mixed rows: test_bench_tiny_times_bf16_beside_fp32
    assert {(r["strategy"], r["batch"]) for r in train} == {
        (s, b) for s in ("none", "random", "adversarial") for b in (16, 64)
    }
    (sampler,) = [r for r in result["records"] if r["kind"] == "sampler" and r["precision"] == "32"]
    assert sampler["matrices_per_s"] > 0 and sampler["flops_per_s"] > 0 and sampler["speedup_vs_yardstick"] > 0
    assert result["agreement"]["train"]["grad_rel_diff"] < 1e-4
    # the adversarial step is also timed compiled (hardware.compile) in the same rounds: the same FLOPs
    compiled = [r for r in train if r["compile"]]  # fp32
    assert [(r["strategy"], r["batch"]) for r in compiled] == [("adversarial", 16), ("adversarial", 64)]
    for r in compiled:
        eager = next(
            e for e in train if (e["strategy"], e["batch"], e["compile"]) == ("adversarial", r["batch"], False)
        )
        assert r["flops_per_step"] == eager["flops_per_step"] and r["steps_per_s"] > 0
    assert "speedup_vs_yardstick" in compiled[1] and "speedup_vs_yardstick" not in compiled[0]
    assert len([t for t in result["targets"] if t["name"].startswith("training FLOP/s")]) == 4
    # at the largest batch the limit is also timed in the same rounds as the steps
    for r in (r for r in train if r["strategy"] == "adversarial" and r["batch"] == 64):
        assert r["fraction_of_matmul_same_rounds"] == pytest.approx(
            r["flops_per_s"] / r["matmul_flops_per_s_same_rounds"]
        )
        assert r["matmul_flops_per_s_same_rounds"] > 0
    # where the time of the adversarial step at the largest batch goes: its matmuls are a part of it
    (profiled,) = [r for r in train if "breakdown" in r]
    assert (profiled["strategy"], profiled["batch"], profiled["compile"]) == ("adversarial", 64, False)
    parts = profiled["breakdown"]["ms_per_step"]
    assert set(parts) == {"matmul", "random numbers", "data linalg", "other", "outside ops"} and parts["matmul"] > 0
    # Within the one profiled window (the step's rate is timed in other rounds, so a busy host could
    # make either side of a cross-window comparison the larger): the matmuls take part of the step.
    b = profiled["breakdown"]
    assert 0 < b["ms_per_step"]["matmul"] <= b["profiled_step_ms"]
    assert b["matmul_flops_per_s_in_step"] == pytest.approx(
        profiled["flops_per_step"] / (b["ms_per_step"]["matmul"] / 1e3)
    )
    assert "% of matmul" in proc.stdout
    check_bf16_rows(result, txt.read_text())


def check_bf16_rows(result: dict, txt: str) -> None:
    """Issue 20: every strategy and batch, and the sampler, also in bf16-mixed, each with its speed
    over its fp32 twin's from the same rounds, the bf16 limit beside the fp32 one, and the targets."""
    records = result["records"]
    fp32 = {(r["kind"], r["strategy"], r["batch"], r.get("compile")): r for r in records if r.get("precision") == "32"}
    bf16 = [r for r in records if r.get("precision") == "bf16-mixed"]
    assert {(r["strategy"], r["batch"], r["compile"]) for r in bf16 if r["kind"] == "train"} == {
        (s, b, False) for s in ("none", "random", "adversarial") for b in (16, 64)
    } | {("adversarial", b, True) for b in (16, 64)}
    assert [r["kind"] for r in bf16].count("sampler") == 1
    for r in bf16:
        twin = fp32[(r["kind"], r["strategy"], r["batch"], r.get("compile"))]
        assert r["speedup_vs_fp32"] == pytest.approx(
            twin.get("step_ms", 0) / r["step_ms"] if "step_ms" in r else r["matrices_per_s"] / twin["matrices_per_s"]
        )
        assert r["matmul_flops_per_s"] == result["matmul"]["bf16_flops_per_s"] > 0
    names = [t["name"] for t in result["targets"] if t["name"].startswith("bf16-mixed / fp32")]
    assert names == [
        "bf16-mixed / fp32 speed (adversarial, batch 64, compiled+bf16)",
        "bf16-mixed / fp32 speed (adversarial, batch 64, eager+bf16)",
        "bf16-mixed / fp32 speed (adversarial, batch 16, compiled+bf16)",
        "bf16-mixed / fp32 speed (adversarial, batch 16, eager+bf16)",
        "bf16-mixed / fp32 speed (sampler, batch 16)",
    ]
    assert "bf16-mixed / fp32 speed, timed in the same rounds:" in txt and "× fp32" in txt
    # one step from the same weights and data: bf16 moves the losses by bf16 rounding, not more
    a = result["agreement"]["train_bf16_vs_fp32"]
    assert 0 < a["loss/mse_rel_diff"] < 0.05 and 0 < a["grad_rel_diff"] < 0.2
    # The sampler's is recorded, not bounded: on this untrained model a near-tie of the accept test
    # that rounds the other way moves a sample by a whole descent step (1.3 seen), rounding or not.
    assert math.isfinite(result["agreement"]["sampler_bf16_vs_fp32_rms_diff"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy,options", [("none", {}), ("random", {}), ("random", {"source": "gaussian"}), ("adversarial", {})]
)
def test_compiled_mining_and_loss_terms_match_eager(strategy, options):
    """hardware.compile. Mining: the eager negatives, drawing the same numbers from the run's
    generator (an accept/reject test of energy descent may flip where two energies tie to rounding,
    so a few samples may differ). Loss terms, on the same negatives: eager to float32 rounding,
    values and gradients."""
    torch.manual_seed(0)
    model, diffusion, miner = EnergyMLP(4, 32, 16), Diffusion(cosine_schedule(10)), build_strategy(strategy, **options)
    g = torch.Generator().manual_seed(1)
    p = spd_batch(4, 64, 0.5, g)
    t = torch.randint(0, 10, (64,), generator=g)
    eps, eps_pair = torch.randn(p.y.shape, generator=g), torch.randn(p.y.shape, generator=g)
    bound = lambda: model.bind_levels(p.x, model.conditioning(diffusion.levels), t)  # noqa: E731

    negatives, states = [], []
    for fn in (type(miner).negatives, compiled(type(miner).negatives)):
        run_generator = torch.Generator().manual_seed(5)
        negatives.append(fn(miner, diffusion, MiningBatch(bound().detached(), p.y, t, eps_pair, run_generator)))
        states.append(run_generator.get_state())
    assert torch.equal(*states)
    eager_neg, compiled_neg = negatives
    if eager_neg is None:
        assert compiled_neg is None
    else:
        same = torch.isclose(compiled_neg, eager_neg, rtol=1e-4, atol=1e-5).all(dim=1)
        assert same.float().mean() >= 0.95, f"{int((~same).sum())} of 64 negatives differ"

    results = []
    for fn in (loss_terms, compiled(loss_terms)):
        model.zero_grad(set_to_none=True)
        loss, stats = fn(bound(), diffusion, p.y, t, eps, eps_pair, eager_neg, 0.5)
        loss.backward()
        results.append((stats | {"loss": loss}, [q.grad.clone() for q in model.parameters()]))
    (eager, g_eager), (comp, g_comp) = results
    assert eager.keys() == comp.keys()
    for key in eager:
        torch.testing.assert_close(comp[key].detach(), eager[key].detach(), rtol=1e-5, atol=1e-7)
    for u, v in zip(g_comp, g_eager):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compiling_ahead_changes_nothing():
    """compile_ahead (hardware.compile: compiling before the training clock starts) leaves the
    weights, their gradients and the run's generator as they were, and a step after it is the step
    that would have come without it."""
    cfg = OmegaConf.create(
        {
            "mining": {"weight": 0.5},
            "train": {"grad_clip": 1.0, "batch_size": 32},
            "dataset": {"n": 4, "lam": 0.5},
            "hardware": {"compile": True},
        }
    )
    steps = []
    for ahead in (False, True):
        torch.manual_seed(0)
        model, diffusion = EnergyMLP(4, 32, 16), Diffusion(cosine_schedule(10))
        strategy, generator = build_strategy("adversarial"), torch.Generator().manual_seed(2)
        before = copy.deepcopy(model.state_dict())
        if ahead:
            assert compile_ahead(model, diffusion, strategy, cfg, torch.device("cpu")) > 0
            assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
            assert all(q.grad is None for q in model.parameters())
            assert torch.equal(generator.get_state(), torch.Generator().manual_seed(2).get_state())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        problems = spd_batch(4, 32, 0.5, generator)
        train_step(model, diffusion, strategy, optimizer, problems, cfg, generator)
        steps.append(model.state_dict())
    for k in steps[0]:
        assert torch.equal(steps[0][k], steps[1][k]), k


def _gpu_result() -> dict:
    """The shape of a GPU run's result (what bench.run returns on CUDA), with made-up rates: eager,
    compiled, graphed and graphed+compiled steps of each strategy, the sampler and the data."""
    records = []
    for strategy in ("none", "random", "adversarial"):
        for batch in (256, 2048):
            for compile_on, graph in ((False, False), (True, False), (False, True), (True, True)):
                rate = 100.0 * (1 + compile_on) * (1 + 4 * graph)
                r = {
                    "kind": "train",
                    "strategy": strategy,
                    "batch": batch,
                    "compile": compile_on,
                    "graph": graph,
                    "flops_per_step": 6.4e10,
                    "steps_per_s": rate,
                    "step_ms": 1e3 / rate,
                    "flops_per_s": 6.4e10 * rate,
                    "fraction_of_matmul": 0.1,
                    "peak_mem_mib": None,
                }
                if strategy == "adversarial" and batch == 2048:
                    r |= {"speedup_vs_yardstick": rate / 50, "yardstick_steps_per_s": 50.0}
                records.append(r)
    records.append(
        {
            "kind": "sampler",
            "strategy": "sampler",
            "batch": 256,
            "matrices_per_s": 60_000.0,
            "flops_per_call": 6e10,
            "flops_per_s": 1e13,
            "fraction_of_matmul": 0.03,
            "speedup_vs_yardstick": 2.0,
            "peak_mem_mib": 900.0,
        }
    )
    records.append(
        {
            "kind": "data",
            "strategy": "data",
            "batch": 2048,
            "matrices_per_s": 1e6,
            "flops_per_call": 3e7,
            "flops_per_s": 1e10,
            "fraction_of_matmul": 0.0,
            "speedup_vs_yardstick": 100.0,
        }
    )
    machine = {
        "device": "cuda",
        "torch": "2.11.0+cu130",
        "threads": 16,
        "omp": {},
        "cpu": "AMD EPYC",
        "cores": 16,
        "gpu": "NVIDIA H100 80GB HBM3",
        "tf32": True,
        "load_avg_start": (1.0, 1.0, 1.0),
        "load_avg_end": (1.0, 1.0, 1.0),
        "memory_at_start_mib": 500.0,
    }
    return {
        "machine": machine,
        "matmul": {"flops_per_s": 3.2e14},
        "records": records,
        "agreement": {"train": {"grad_rel_diff": 1e-6}, "sampler_max_abs_diff": 1e-6},
    }


def test_gpu_report_names_the_gpu_and_issue_11s_targets(tmp_path):
    """The GPU branch of the report, which no GPU has run yet: issue 11's targets for every mode at
    batch 2048 (adversarial ≥ 1,000 steps/s, none ≥ 1,500, the sampler ≥ 50,000 matrices/s), and the
    GPU's name and the modes in the printed table and in --txt."""
    import bench

    result = _gpu_result()
    result["targets"] = bench.targets(result["records"], torch.device("cuda"))
    by_name = {t["name"]: t for t in result["targets"]}
    graphed = by_name["training steps/s (adversarial, batch 2048, graphed+compiled, the bar 500)"]
    assert graphed["value"] == 1000.0 and graphed["target"] == 1000.0 and graphed["met"]
    eager_none = by_name["training steps/s (none, batch 2048, eager)"]
    assert eager_none["target"] == 1500.0 and not eager_none["met"]
    assert by_name["sampler matrices/s (batch 256)"]["met"]
    assert len([n for n in by_name if n.startswith("training steps/s")]) == 8
    assert not [n for n in by_name if n.startswith("training FLOP/s")]  # the CPU's fraction targets
    txt = tmp_path / "gpu.txt"
    bench.print_report(result, txt)
    text = txt.read_text()
    assert "NVIDIA H100 80GB HBM3" in text and "TF32" in text and "graphed+compiled" in text
