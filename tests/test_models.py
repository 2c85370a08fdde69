"""The model choices beyond the spec's: a deeper energy MLP (model.depth) and the feed-forward
regressor (model=regressor), against independent computations and through the CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ired_mining.model import EnergyMLP, Regressor

from conftest import TINY, read_json, run_cli


def energy_by_the_spec(model: EnergyMLP, x, y, t) -> torch.Tensor:
    """ired.md §2 written out with the model's weights, any number of FiLM layers: h = swish(W h ·
    (1 + g(t)) + b(t)) after the first layer, E = ‖W4 h‖²."""
    emb = model.time_mlp(t)
    h = F.silu(model.fc1(torch.cat([x, y], dim=-1)))
    for fc, film in model.film_layers:
        g, b = film(emb).chunk(2, dim=-1)
        h = F.silu(fc(h) * (1 + g) + b)
    return model.fc4(h).square().sum(dim=-1)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_energy_and_written_out_gradient_match_the_spec_and_autograd(depth):
    torch.manual_seed(depth)
    model = EnergyMLP(3, hidden=16, time_dim=8, depth=depth).double()
    x, y = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 2, 4, 7, 9])
    reference = energy_by_the_spec(model, x, y, t)
    (auto,) = torch.autograd.grad(reference.sum(), y)
    energy, grad = model.energy_and_grad(x, y.detach(), model.conditioning(t))
    torch.testing.assert_close(energy, reference.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, auto, rtol=1e-10, atol=1e-12)
    # and differentiable once more, as training needs: d/dW of Σ ∇_y E against autograd's double backward
    w = model.fc2.weight
    _, g = model.energy_and_grad(x, y.detach(), model.conditioning(t), create_graph=True)
    (mine,) = torch.autograd.grad(g.square().sum(), w)
    yy = y.detach().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(energy_by_the_spec(model, x, yy, t).sum(), yy, create_graph=True)
    (theirs,) = torch.autograd.grad(g_auto.square().sum(), w)
    torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-11)


def test_depth_three_is_the_spec_model_weight_for_weight():
    """The default keeps the spec's parameter names and draws them in the spec's order, so runs and
    checkpoints from before model.depth existed load and reproduce."""
    torch.manual_seed(0)
    default = EnergyMLP(4, hidden=8, time_dim=8)
    torch.manual_seed(0)
    deep = EnergyMLP(4, hidden=8, time_dim=8, depth=4)
    names = {k.split(".")[0] for k in default.state_dict()}
    assert names == {"time_mlp", "fc1", "fc2", "fc3", "fc4", "film2", "film3"}
    for key, value in default.state_dict().items():  # the extra layer is drawn after the spec's
        assert torch.equal(deep.state_dict()[key], value), key
    assert {k.split(".")[0] for k in deep.state_dict()} - names == {"fc_more", "film_more"}


def test_regressor_is_the_plain_mlp_of_the_same_widths():
    torch.manual_seed(0)
    model = Regressor(3, hidden=16, depth=3).double()
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9, 16), (16, 16), (16, 16), (16, 9)]
    x = torch.randn(4, 9, dtype=torch.float64)
    h = x
    for m in linears[:-1]:
        h = h @ m.weight.T + m.bias
        h = h * torch.sigmoid(h)
    torch.testing.assert_close(model(x), h @ linears[-1].weight.T + linears[-1].bias)


def test_regressor_trains_through_the_cli_and_beats_the_zero_predictor(tmp_path):
    run = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("train.steps")]
    proc = run_cli(
        "ired-train",
        *args,
        "train.steps=300",
        "model=regressor",
        "mining=none",
        "optim.lr=1e-3",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        check=True,
    )
    final = read_json(run / "metrics.json")
    assert final["status"] == "finished" and final["step"] == 300
    # A 4 × 4 inverse is within a small MLP's reach: well under the zero predictor after 300 steps.
    assert final["in_dist/mse"] < 0.5 * final["in_dist/zero_mse"], final
    assert "loss/energy" not in final and "regressor" in proc.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model=regressor", "mining=adversarial"],
            "mining.name=adversarial is invalid; it must be none with model=regressor",
        ),
        (["model.depth=1"], "model.depth=1 is invalid; it must be an integer ≥ 2"),
        (["optim.schedule=linear"], "optim.schedule=linear is invalid; it must be constant or cosine"),
        (
            ["optim.schedule=cosine", "optim.min_lr=1"],
            "optim.min_lr=1.0 is invalid; it must be a number in [0, optim.lr=",
        ),
    ],
)
def test_bad_model_and_schedule_values_are_one_line(tmp_path, overrides, message):
    proc = run_cli("ired-train", *TINY, *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
