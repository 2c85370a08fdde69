"""The method's numerics against independent computations: the spec's tables, finite differences,
float64 references and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ired_mining.data import fixed_set, spd_batch
from ired_mining.diffusion import Diffusion, cosine_schedule
from ired_mining.mining import (
    STRATEGIES,
    AdversarialNegatives,
    MiningBatch,
    RandomNegatives,
    build_strategy,
    energy_loss,
)
from ired_mining.model import EnergyMLP
from ired_mining.train import ema_avg_fn

# ired.md §3, T = 10
SPEC_ALPHAS_CUMPROD = [0.97209, 0.89871, 0.78691, 0.64748, 0.49384, 0.34081, 0.20312, 0.09405, 0.02409, 0.00002]
SPEC_STEP_SIZES = [0.16705, 0.2372, 0.26948, 0.29843, 0.33352, 0.38167, 0.45257, 0.56418, 0.75295, 0.99901]


def test_schedule_matches_spec_table():
    s = cosine_schedule(10)
    assert s.alphas_cumprod.tolist() == pytest.approx(SPEC_ALPHAS_CUMPROD, abs=6e-6)
    assert s.step_sizes.tolist() == pytest.approx(SPEC_STEP_SIZES, abs=6e-6)


def test_schedule_against_closed_form_cosine():
    # ᾱ_t = f(t+1)/f(0) with f(u) = cos²((u/T + s)/(1 + s) · π/2) when no beta is clipped.
    T, s = 7, 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = [f(t + 1) / f(0) for t in range(T - 1)]  # the last beta is clipped at 0.999
    assert cosine_schedule(T, s).alphas_cumprod[:-1].tolist() == pytest.approx(expected, rel=1e-12)


def _model(n=3, hidden=16, time_dim=8, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return EnergyMLP(n, hidden, time_dim).to(dtype)


def test_energy_gradient_matches_finite_differences():
    model = _model()
    x = torch.randn(4, 9, dtype=torch.float64)
    y = torch.randn(4, 9, dtype=torch.float64)
    t = torch.tensor([0, 3, 5, 9])
    cond = model.conditioning(t)
    _, grad = model.energy_and_grad(x, y, cond)
    h = 1e-6
    numeric = torch.zeros_like(y)
    with torch.no_grad():
        for j in range(y.shape[1]):
            d = torch.zeros_like(y)
            d[:, j] = h
            numeric[:, j] = (model.energy(x, y + d, cond) - model.energy(x, y - d, cond)) / (2 * h)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)


def test_energy_is_non_negative_and_table_conditioning_equals_per_sample():
    model = _model()
    x, y = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    t = torch.tensor([0, 1, 1, 4, 9, 9])
    table = model.conditioning(torch.arange(10))
    assert (model(x, y, t) >= 0).all()
    e_rows = model.energy(x, y, table[t])
    torch.testing.assert_close(e_rows, model(x, y, t))
    # bind_levels looks the rows up itself: the same energy, bit for bit, and the same gradient
    # reaches the table
    e_levels = model.bind_levels(x, table, t).energy(y)
    assert torch.equal(e_levels, e_rows)
    (g_rows,) = torch.autograd.grad(e_rows.square().sum(), table)
    (g_levels,) = torch.autograd.grad(e_levels.square().sum(), table)
    torch.testing.assert_close(g_levels, g_rows, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- data


@pytest.mark.parametrize("lam", [0.5, 0.1])
def test_data_is_spd_with_inverse_and_lambda(lam):
    n = 6
    p = spd_batch(n, 64, lam, torch.Generator().manual_seed(1))
    a = p.x.double().view(-1, n, n)
    y = p.y.double().view(-1, n, n)
    torch.testing.assert_close(a, a.transpose(1, 2))
    eig = torch.linalg.eigvalsh(a)
    # A − λI = 2RRᵀ is positive semi-definite, so every eigenvalue is at least λ.
    assert (eig > lam - 1e-5).all()
    assert eig.min() < lam + 0.5  # and λ is the floor: some eigenvalue comes close to it
    eye = torch.eye(n, dtype=torch.float64).expand_as(a)
    torch.testing.assert_close(a @ y, eye, atol=5e-5, rtol=0)


@pytest.mark.parametrize("lam,mean_square", [(0.5, 0.0208), (0.1, 0.255)])
def test_answer_scale_matches_spec(lam, mean_square):
    # ired.md §1 at n = 20: mean(Y²) ≈ 0.0208 (λ = 0.5) and ≈ 0.255 (λ = 0.1), the zero predictor's MSE.
    p = fixed_set(20, 2048, lam, seed=3)
    assert p.y.square().mean().item() == pytest.approx(mean_square, rel=0.1)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (fixed_set(5, 16, 0.5, s) for s in (7, 7, 8))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.allclose(a.x, c.x)


# ---------------------------------------------------------------- energy loss and strategies


def test_energy_loss_is_the_two_way_cross_entropy():
    e_pos = torch.tensor([0.0, 1.0, 50.0, 3.0], dtype=torch.float64)
    e_neg = torch.tensor([0.0, 5.0, 0.1, 900.0], dtype=torch.float64)
    direct = -torch.log(torch.exp(-e_pos) / (torch.exp(-e_pos) + torch.exp(-e_neg)))
    torch.testing.assert_close(energy_loss(e_pos, e_neg), direct)
    # and stays finite where the direct form overflows: −log σ(−Δ) → Δ for a large gap Δ = E⁺ − E⁻,
    # → e^{−|Δ|} ≈ 0 for a large negative one
    far = energy_loss(torch.tensor([1000.0, 0.0]), torch.tensor([0.0, 1000.0]))
    assert far.tolist() == [1000.0, 0.0]


def _mining_batch(model, diffusion, n=3, b=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = spd_batch(n, b, 0.5, g)
    t = torch.randint(0, diffusion.num_steps, (b,), generator=g)
    eps = torch.randn(p.y.shape, generator=g)
    cond = model.conditioning(diffusion.levels)[t]
    return MiningBatch(model.bind(p.x, cond).detached(), p.y, t, eps, torch.Generator().manual_seed(99)), p.x, cond


def test_adversarial_negatives_never_raise_the_energy():
    model = _model(dtype=torch.float32)
    diffusion = Diffusion(cosine_schedule(10))
    batch, x, cond = _mining_batch(model, diffusion)
    miner = AdversarialNegatives(steps=4)
    start = diffusion.noise(batch.y, batch.t, batch.eps, eps_scale=miner.corruption)
    with torch.no_grad():
        e_start = model.energy(x, start, cond)
    z, e_end = diffusion.descend(batch.energy, start, batch.t, miner.steps)
    with torch.no_grad():
        torch.testing.assert_close(e_end, model.energy(x, z, cond))
    assert (e_end <= e_start).all()
    assert (e_end < e_start).any()  # descent did move some samples
    bound = 2 * diffusion.sqrt_ac[batch.t]
    moved = (z != start).any(dim=1)
    assert (z[moved].abs() <= bound[moved] + 1e-6).all()
    neg = miner.negatives(diffusion, batch)
    assert neg.abs().max() <= 2.0
    # no graph to the weights (they require grad), so mining costs no autograd memory
    assert e_end.grad_fn is None and neg.grad_fn is None and not neg.requires_grad


@pytest.mark.parametrize("source", ["derangement", "gaussian"])
def test_random_negatives_do_not_depend_on_the_model(source):
    diffusion = Diffusion(cosine_schedule(10))
    m1, m2 = _model(seed=1, dtype=torch.float32), _model(seed=2, dtype=torch.float32)
    (b1, *_), (b2, *_) = _mining_batch(m1, diffusion), _mining_batch(m2, diffusion)
    miner = RandomNegatives(source)
    n1, n2 = miner.negatives(diffusion, b1), miner.negatives(diffusion, b2)
    assert torch.equal(n1, n2)
    # wrong answers: no negative equals its own target
    assert ((n1 - b1.y).abs().amax(dim=1) > 0).all()


def test_registry_is_the_list_of_strategies_and_bad_names_fail_clearly():
    from ired_mining.schema import group_choices

    assert sorted(STRATEGIES) == group_choices("mining")
    with pytest.raises(ValueError, match="bogus.*adversarial, none, random|bogus.*none, random, adversarial"):
        build_strategy("bogus")


def test_negatives_are_constants_of_the_loss():
    """A strategy that evaluates the model still hands back negatives with no graph to the weights:
    training calls it without gradients (the energy term pushes on E at the negatives, not on
    how they were found)."""
    from omegaconf import OmegaConf

    from ired_mining.train import step_loss

    class EnergyScaled:
        def negatives(self, diffusion, batch):
            out = batch.y * (1 + 0.01 * batch.energy.energy(batch.y)[:, None])
            self.required_grad = out.requires_grad
            return out

    model, strategy = _model(dtype=torch.float32), EnergyScaled()
    p = spd_batch(3, 16, 0.5, torch.Generator().manual_seed(0))
    cfg = OmegaConf.create({"mining": {"weight": 0.5}, "hardware": {"compile": False}})
    loss, stats = step_loss(model, Diffusion(cosine_schedule(10)), strategy, p, cfg, torch.Generator().manual_seed(5))
    assert strategy.required_grad is False and loss.requires_grad
    assert "loss/energy" in stats


def test_none_adds_no_energy_term():
    from omegaconf import OmegaConf

    from ired_mining.train import train_step

    cfg = OmegaConf.create({"mining": {"weight": 0.5}, "train": {"grad_clip": 1e9}, "hardware": {"compile": False}})
    diffusion = Diffusion(cosine_schedule(10))
    p = spd_batch(3, 16, 0.5, torch.Generator().manual_seed(0))
    grads = {}
    for name in ("none", "random"):
        model = _model(dtype=torch.float32)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        stats = train_step(model, diffusion, build_strategy(name), opt, p, cfg, torch.Generator().manual_seed(5))
        grads[name] = torch.cat([q.grad.flatten() for q in model.parameters()])
        if name == "none":
            assert "loss/energy" not in stats
            assert stats["loss/total"].item() == stats["loss/mse"].item()
    # same data, levels and noise: random's gradient differs only by its energy term
    assert not torch.allclose(grads["none"], grads["random"])

    # and none's gradient is exactly that of the denoising loss alone
    model = _model(dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 10, (16,), generator=g)
    eps = torch.randn(p.y.shape, generator=g)
    cond = model.conditioning(diffusion.levels)[t]
    loss = diffusion.score_loss(model.bind(p.x, cond), diffusion.noise(p.y, t, eps), eps).mean()
    loss.backward()
    torch.testing.assert_close(torch.cat([q.grad.flatten() for q in model.parameters()]), grads["none"])


# ---------------------------------------------------------------- sampler and EMA


def test_sampler_is_deterministic_given_its_generator_and_clamped():
    model = _model(dtype=torch.float32)
    diffusion = Diffusion(cosine_schedule(10))
    x = spd_batch(3, 8, 0.5, torch.Generator().manual_seed(0)).x
    a = diffusion.sample(model, x, 5, torch.Generator().manual_seed(1))
    b = diffusion.sample(model, x, 5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.abs().max() <= 2.0 and a.shape == (8, 9)


def test_ema_decay_follows_the_warmup_schedule():
    """Values worked out by hand: one update every 10 steps, warm-up 27, power ½, cap 0.6.
    Step 10: AveragedModel's first update copies (8). Step 20 ≤ 27: a copy (4). Step 30:
    k + 1 = 1 + 30 − 27 = 4, decay 1 − 4^(−½) = ½, so ½·4 + ½·2 = 3. Step 40: 1 − 14^(−½) ≈ 0.73
    is capped at 0.6, so 0.6·3 + 0.4·12 = 6.6."""
    from torch.optim.swa_utils import AveragedModel

    net = torch.nn.Linear(1, 1, bias=False)
    ema = AveragedModel(net, avg_fn=ema_avg_fn(every=10, warmup=27, power=0.5, max_decay=0.6))
    seen = []
    for weight in (8.0, 4.0, 2.0, 12.0):  # the weights at steps 10, 20, 30, 40
        with torch.no_grad():
            net.weight.fill_(weight)
        ema.update_parameters(net)
        seen.append(ema.module.weight.item())
    assert seen == pytest.approx([8.0, 4.0, 3.0, 6.6], rel=1e-6)
