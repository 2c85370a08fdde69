"""hardware.precision=bf16-mixed (issue 20): the bound energy's matmuls in bfloat16, against float64
references with tolerances bf16 can honestly meet; weights, gradients, energies and losses in
float32; and through the installed scripts: training, exact resume, the refusal to resume in another
precision, ired-eval, bad values in one line, and the warning on a CPU without bf16 instructions."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_resume import METRIC_KEYS, RUN, kill_after_checkpoint

from ired_mining import backend
from ired_mining.model import PRECISIONS, EnergyMLP, build_model

from conftest import TINY, read_json, read_jsonl, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import yardstick  # noqa: E402

BF16 = ["hardware.precision=bf16-mixed"]


def _models(n=4, hidden=64, time_dim=16):
    """The same weights three times: a float64 reference, and float32 models computing in fp32 and bf16."""
    torch.manual_seed(0)
    fp32 = EnergyMLP(n, hidden, time_dim)
    bf16 = copy.deepcopy(fp32)
    bf16.compute_dtype = torch.bfloat16
    return copy.deepcopy(fp32).double(), fp32, bf16


def _problem(n=4, batch=32):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, n * n, generator=g), 0.3 * torch.randn(batch, n * n, generator=g)
    return x, y, torch.randint(0, 10, (batch,), generator=g)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_bf16_energy_and_gradient_against_float64_autograd():
    ref, fp32, bf16 = _models()
    x, y, t = _problem()
    e_ref, g_ref = yardstick.plain_grad(ref, x.double(), y.double(), t)  # autograd of the plain forward
    e, g = bf16.bind_levels(x, bf16.conditioning(torch.arange(10)), t).energy_and_grad(y)
    assert e.dtype == g.dtype == torch.float32  # what the accept test compares is float32
    # bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2 %); through four layers a few
    # roundings add up, so 3 % on the energy and the gradient; fp32 is far closer.
    assert rel(e, e_ref.detach()) < 3e-2 and rel(g, g_ref) < 3e-2
    e32, g32 = fp32.bind_levels(x, fp32.conditioning(torch.arange(10)), t).energy_and_grad(y)
    assert rel(e32, e_ref.detach()) < 1e-5 and rel(g32, g_ref) < 1e-5
    # and bf16 did round: a cast that changed nothing would leave it as close as fp32
    assert rel(g, g_ref) > 1e-4


def test_bf16_weight_gradients_of_the_denoising_loss_against_float64():
    """What training backpropagates: ∇_y E differentiated in the weights (written out, not autograd's
    double backward) reaches every float32 parameter, close to the float64 gradient."""
    ref, _, bf16 = _models()
    x, y, t = _problem()
    _, g_ref = yardstick.plain_grad(ref, x.double(), y.double(), t, create_graph=True)
    want = torch.autograd.grad(g_ref.square().sum(), list(ref.parameters()))
    g = bf16.bind_levels(x, bf16.conditioning(torch.arange(10)), t).grad(y, create_graph=True)
    got = torch.autograd.grad(g.square().sum(), list(bf16.parameters()))
    for (name, p), u, v in zip(bf16.named_parameters(), got, want):
        assert u.dtype == p.dtype == torch.float32, name
        # A whole tensor's gradient: 5 % (sums over the batch of bf16 products).
        assert rel(u, v) < 5e-2, (name, rel(u, v))


def test_precision_32_holds_the_parameters_themselves():
    """precision=32 is today's computation: the bound energy holds the parameters, not copies."""
    cfg = OmegaConf.create(
        {
            "model": {"name": "mlp", "hidden": 16, "time_dim": 8, "depth": 3},
            "dataset": {"n": 3},
            "hardware": {"precision": "32"},
        }
    )
    model = build_model(cfg)
    bound = model.bind(torch.randn(2, 9), model.conditioning(torch.arange(1)))
    assert model.compute_dtype is None
    assert bound.weights[0] is model.fc2.weight and bound.w4 is model.fc4.weight and bound.b4 is model.fc4.bias
    cfg.hardware.precision = "bf16-mixed"
    assert build_model(cfg).compute_dtype is torch.bfloat16
    del cfg.hardware.precision  # a config saved before the key existed ran in fp32
    assert build_model(cfg).compute_dtype is None
    assert list(PRECISIONS) == ["32", "bf16-mixed"]


def test_a_cpu_without_bf16_gets_one_warning_line(monkeypatch, caplog):
    cfg = OmegaConf.create({"hardware": {"threads": None, "tf32": False, "precision": "bf16-mixed"}})
    # This machine's own flags cannot show the warning if it has bf16: give it a CPU's flags without.
    monkeypatch.setattr(backend, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    with caplog.at_level(logging.WARNING, logger="ired"):
        backend.configure_backend(cfg, torch.device("cpu"))
    (warning,) = caplog.records
    assert "no bf16 instructions" in warning.getMessage() and "\n" not in warning.getMessage()
    caplog.clear()
    monkeypatch.setattr(backend, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    backend.configure_backend(cfg, torch.device("cpu"))
    cfg.hardware.precision = "32"
    monkeypatch.setattr(backend, "cpu_flags", lambda: {"avx2"})
    backend.configure_backend(cfg, torch.device("cpu"))
    assert not caplog.records


# ---------------------------------------------------------------- through the installed scripts


def test_bf16_run_trains_and_ired_eval_reproduces_it(tmp_path):
    run = tmp_path / "run"
    run_cli("ired-train", *TINY, "mining=adversarial", *BF16, f"hydra.run.dir={run}", cwd=tmp_path, check=True)
    final = read_json(run / "metrics.json")
    assert final["status"] == "finished"
    assert 0 < final["in_dist/mse"] < 1e3 and final["loss/mse"] > 0  # finite
    assert OmegaConf.load(run / ".hydra" / "config.yaml").hardware.precision == "bf16-mixed"
    # ired-eval evaluates in the run's own precision: its numbers again, exactly
    run_cli("ired-eval", str(run), cwd=tmp_path, check=True)
    again = read_json(run / "eval" / "default.json")["metrics"]
    assert all(again[k] == final[k] for k in again if k.endswith("/mse"))
    # and in fp32 on request: the same matrices, the sampler's answers rounded otherwise. (How far
    # apart the two MSEs are says nothing after 20 steps: an untrained sampler amplifies rounding.)
    run_cli("ired-eval", str(run), "hardware.precision=32", cwd=tmp_path, check=True)
    fp32 = read_json(run / "eval" / "hardware.precision=32.json")["metrics"]
    assert (
        fp32["in_dist/zero_mse"] == final["in_dist/zero_mse"]
        and fp32["in_dist/exact_mse"] == final["in_dist/exact_mse"]
    )
    assert fp32["in_dist/mse"] != final["in_dist/mse"] and 0 < fp32["in_dist/mse"] < 1e3


@pytest.mark.parametrize("value", ["16", "bf16", "fp32"])
def test_a_bad_precision_is_one_line(tmp_path, value):
    proc = run_cli(
        "ired-train", *TINY, f"hardware.precision={value}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"ired-train: error: hardware.precision={value} is invalid; it must be 32 or bf16-mixed"
    )


def _train(run_dir: Path, *extra: str, check: bool = True):
    return run_cli("ired-train", *RUN, *BF16, *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, check=check)


def test_bf16_sigkill_then_resume_ends_bit_for_bit_like_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    _train(reference)
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 60, *BF16)
    _train(run_dir)
    assert "resumed from step" in (run_dir / "train.log").read_text()
    got, want = read_json(run_dir / "metrics.json"), read_json(reference / "metrics.json")
    for key in METRIC_KEYS:
        assert got[key] == want[key], key  # bit for bit
    assert [ln["in_dist/mse"] for ln in read_jsonl(run_dir / "metrics.jsonl")] == [
        ln["in_dist/mse"] for ln in read_jsonl(reference / "metrics.jsonl")
    ]


def test_resume_in_another_precision_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    kill_after_checkpoint(run_dir, 20)  # an fp32 run
    before = sorted((run_dir / "checkpoints").iterdir())
    proc = _train(run_dir, check=False)
    assert proc.returncode != 0
    assert "hardware.precision" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted((run_dir / "checkpoints").iterdir()) == before


def test_precision_accuracy_pairs_runs_by_their_overrides_not_their_directory_names(tmp_path):
    """A sweep names its jobs by the overrides that vary in it, so a bf16 run in `seed=0` must pair
    with the fp32 run in `+grid=none,seed=0`; the changes are then the hand-computed ratios."""
    import precision_accuracy

    def run(sweep, name, overrides, mses):
        d = tmp_path / sweep / name
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (d / "metrics.jsonl").write_text(
            "".join(
                f'{{"step": {100 * (i + 1)}, "in_dist/mse": {m}, "harder/mse": {2 * m}}}\n' for i, m in enumerate(mses)
            )
        )

    for seed, (fp32, bf16) in enumerate([(0.010, 0.011), (0.020, 0.021), (0.040, 0.041)]):
        run("fp32", f"+grid=none,seed={seed}", ["+grid=none", f"seed={seed}", "hardware=submitit_local"], [1.0, fp32])
        run(
            "bf16",
            f"seed={seed}",
            ["+grid=none", f"seed={seed}", "hardware=submitit_local", "hardware.precision=bf16-mixed"],
            [1.0, bf16],
        )
    run("bf16", "seed=9", ["+grid=c0.5_k5", "seed=9"], [1.0, 1.0])  # no fp32 partner: left out

    rows = precision_accuracy.compare(tmp_path / "bf16", tmp_path / "fp32")
    assert [(r["configuration"], r["step"], r["seeds"]) for r in rows] == [
        ("+grid=none", 100, [0, 1, 2]),
        ("+grid=none", 200, [0, 1, 2]),
    ]
    assert rows[0]["in_dist"]["change"] == pytest.approx(0.0, abs=1e-12)
    geo = (1.1 * 1.05 * 1.025) ** (1 / 3) - 1  # ratio of geometric means, by hand
    assert rows[1]["in_dist"]["change"] == pytest.approx(geo, rel=1e-9)
    assert rows[1]["harder"]["change"] == pytest.approx(geo, rel=1e-9)
