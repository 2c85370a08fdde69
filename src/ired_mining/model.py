"""The energy model E(x, y, t): a time-conditioned MLP with one non-negative scalar per sample (ired.md §2).

The model knows nothing about noise schedules: `t` is just an integer level. Callers that evaluate
the energy many times at a handful of levels (training, mining, sampling) compute the time
conditioning once per level with `conditioning` and pass rows of it to `energy`: the time path is
about a fifth of a forward pass's multiply-adds, yet t takes only T distinct values.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class EnergyMLP(nn.Module):
    """h1 = swish(W1[x; y]); h2, h3 = swish(W h · (1 + g(t)) + b(t)); E = ‖W4 h3‖²."""

    def __init__(self, n: int, hidden: int = 512, time_dim: int = 128):
        super().__init__()
        self.n, self.hidden = n, hidden
        d = n * n
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(time_dim),
            nn.Linear(time_dim, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )
        self.fc1 = nn.Linear(2 * d, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.fc4 = nn.Linear(hidden, d)
        self.film2 = nn.Linear(time_dim, 2 * hidden)
        self.film3 = nn.Linear(time_dim, 2 * hidden)

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """Per-level FiLM rows (g2, b2, g3, b3) concatenated: (len(t), 4 * hidden)."""
        emb = self.time_mlp(t)
        return torch.cat([self.film2(emb), self.film3(emb)], dim=-1)

    def energy(self, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Energy per sample, (batch,), given the conditioning rows of each sample's level."""
        g2, b2, g3, b3 = cond.chunk(4, dim=-1)
        h = F.silu(self.fc1(torch.cat([x, y], dim=-1)))
        h = F.silu(torch.addcmul(b2, self.fc2(h), 1 + g2))
        h = F.silu(torch.addcmul(b3, self.fc3(h), 1 + g3))
        return self.fc4(h).square().sum(dim=-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.energy(x, y, self.conditioning(t))

    def energy_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """E(x, y, t) and ∇_y E. With create_graph the gradient stays differentiable (training)."""
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            e = self.energy(x, y, cond)
            (grad,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
        return e, grad


MODELS = {"mlp": EnergyMLP}


def build_model(name: str, n: int, **kwargs) -> EnergyMLP:
    if name not in MODELS:
        raise ValueError(f"model.name={name!r} is unknown; choose one of: {', '.join(MODELS)}")
    return MODELS[name](n, **kwargs)


@contextmanager
def frozen(model: nn.Module):
    """Turn off weight gradients for a block of gradient-in-y-only work (mining, sampling).

    Autograd then records only the path to y, not the graph the weights' gradients would need.
    """
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
