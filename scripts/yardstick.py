"""The yardstick of scripts/bench.py: the product's math written the straightforward way.

Nothing here is used by the product. It is the same method as ired_mining (ired.md), with the four
costs issue 6 names left in, so the benchmark can say what the product's lean hot paths buy:

- data: one matrix per item through numpy, batched by a DataLoader (`ItemDataset`);
- the energy, evaluated from scratch each time: the time embedding and FiLM layers per sample,
  the first layer on the concatenated [x; y] (`plain_energy`);
- energy descent with two evaluations per step: the gradient at y, then a separate forward at the
  candidate to accept or reject it (`plain_descent`);
- autograd's graph to the weights kept while mining and sampling (no gradient is ever taken
  through it, but it is built).

It takes the product's `EnergyMLP` for its parameters only (never calling its methods), so both
run the same weights, and the product's `Diffusion` for the schedule's constants. Given the same
generator state it draws the same levels and noise as `train_step`, which is what lets
tests/test_bench.py check that the two agree to rounding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ired_mining.diffusion import Diffusion
from ired_mining.mining import NoNegatives, RandomNegatives
from ired_mining.model import EnergyMLP

# ================================================================ data: one item at a time


class ItemDataset(Dataset):
    """`size` problems A = 2RRᵀ + λI and their inverses, each drawn when its index is asked for."""

    def __init__(self, n: int, lam: float, size: int, seed: int):
        self.n, self.lam, self.size = n, lam, size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rng.uniform(-1.0, 1.0, (self.n, self.n))
        s = r @ r.T
        a = s + s.T + self.lam * np.eye(self.n)
        y = np.linalg.inv(a)
        return torch.from_numpy(a.reshape(-1).astype(np.float32)), torch.from_numpy(y.reshape(-1).astype(np.float32))


def item_loader(n: int, lam: float, batch: int, steps: int, seed: int = 0) -> DataLoader:
    """`steps` batches of `batch` problems, as a DataLoader over items (no workers: on two cores
    they would take the cores the training step needs)."""
    return DataLoader(ItemDataset(n, lam, batch * steps, seed), batch_size=batch)


# ================================================================ the energy, from scratch


def plain_energy(model: EnergyMLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E(x, y, t) per sample, ired.md §2 line by line, with the time path run for every sample."""
    emb = model.time_mlp(t)
    g2, b2 = model.film2(emb).chunk(2, dim=-1)
    g3, b3 = model.film3(emb).chunk(2, dim=-1)
    h = F.silu(model.fc1(torch.cat([x, y], dim=-1)))
    h = F.silu(model.fc2(h) * (1 + g2) + b2)
    h = F.silu(model.fc3(h) * (1 + g3) + b3)
    return model.fc4(h).pow(2).sum(dim=-1)


def plain_grad(
    model: EnergyMLP, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """E and ∇_y E by autograd."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        e = plain_energy(model, x, y, t)
        (grad,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
    return e, grad


def plain_descent(
    model: EnergyMLP,
    diffusion: Diffusion,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    steps: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """Energy descent with rejection, two evaluations per step."""
    step = scale * diffusion.step_size[t]
    bound = diffusion.clamp * diffusion.sqrt_ac[t]
    y = y.detach()
    for _ in range(steps):
        energy, grad = plain_grad(model, x, y, t)
        cand = torch.clamp(y - step * grad, -bound, bound)
        with torch.enable_grad():  # the weights' graph, built and thrown away
            e_new = plain_energy(model, x, cand, t)
        y = torch.where((e_new <= energy)[:, None], cand, y).detach()
    return y


# ================================================================ training and sampling


def plain_negatives(
    model: EnergyMLP,
    diffusion: Diffusion,
    strategy,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    eps_pair: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor | None:
    """The three strategies of ired.md §4, given the product's strategy object for its options."""
    if isinstance(strategy, NoNegatives):
        return None
    if isinstance(strategy, RandomNegatives):
        if strategy.source == "derangement":
            return y.roll(1, dims=0)
        return y.square().mean().sqrt() * torch.randn(y.shape, device=y.device, generator=generator)
    sqrt_ac, sqrt_1m_ac = diffusion.sqrt_ac[t], diffusion.sqrt_1m_ac[t]
    z = sqrt_ac * y + strategy.corruption * sqrt_1m_ac * eps_pair
    z = plain_descent(model, diffusion, x, z, t, strategy.steps, strategy.step_scale)
    return (z / sqrt_ac).clamp(-diffusion.clamp, diffusion.clamp)


def plain_train_step(
    model: EnergyMLP,
    diffusion: Diffusion,
    strategy,
    optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: float,
    grad_clip: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One optimiser step of L = L_mse + w·L_energy, drawing levels and noise as `train_step` does."""
    b, device = x.shape[0], x.device
    t = torch.randint(0, diffusion.num_steps, (b,), device=device, generator=generator)
    eps = torch.randn(y.shape, device=device, generator=generator)
    eps_pair = torch.randn(y.shape, device=device, generator=generator)
    sqrt_ac, sqrt_1m_ac = diffusion.sqrt_ac[t], diffusion.sqrt_1m_ac[t]

    negatives = plain_negatives(model, diffusion, strategy, x, y, t, eps_pair, generator)

    _, grad = plain_grad(model, x, sqrt_ac * y + sqrt_1m_ac * eps, t, create_graph=True)
    l_mse = (grad - eps).pow(2).mean()
    loss = l_mse
    stats = {"loss/mse": l_mse}
    if negatives is not None:
        e_pos = plain_energy(model, x, sqrt_ac * y + sqrt_1m_ac * eps_pair, t)
        e_neg = plain_energy(model, x, sqrt_ac * negatives + sqrt_1m_ac * eps_pair, t)
        l_energy = F.softplus(e_pos - e_neg).mean()
        loss = loss + weight * l_energy
        stats["loss/energy"] = l_energy

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    stats["loss/total"] = loss
    return stats


def plain_sample(
    model: EnergyMLP,
    diffusion: Diffusion,
    x: torch.Tensor,
    inner_steps: int = 5,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """The IRED sampler of ired.md §5, drawing its start as `Diffusion.sample` does."""
    y = torch.randn(x.shape[0], model.n * model.n, device=x.device, dtype=x.dtype, generator=generator)
    y0 = y
    for level in reversed(range(diffusion.num_steps)):
        t = torch.full((x.shape[0],), level, device=x.device, dtype=torch.long)
        sqrt_ac = diffusion.sqrt_ac[level]
        _, eps_hat = plain_grad(model, x, y, t)
        y0 = ((y - diffusion.sqrt_1m_ac[level] * eps_hat) / sqrt_ac).clamp(-diffusion.clamp, diffusion.clamp)
        y = plain_descent(model, diffusion, x, sqrt_ac * y0, t, inner_steps, scale)
        y0 = y / sqrt_ac
        if level > 0:
            y = diffusion.sqrt_ac[level - 1] * y0
    return y0.detach()
