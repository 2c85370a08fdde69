"""Evaluation on fixed problem sets: the sampler's MSE beside the zero predictor and an exact solver."""

from __future__ import annotations

import torch
from einops import rearrange

from ired_mining.data import Problems, fixed_set
from ired_mining.diffusion import Diffusion
from ired_mining.model import EnergyMLP


def eval_sets(n: int, size: int, seed: int, splits: dict[str, float]) -> dict[str, Problems]:
    """One fixed set per split (name → λ), each from its own seed derived from `seed`.

    The same arguments give the same matrices for every run of a sweep, on any device.
    """
    return {name: fixed_set(n, size, float(lam), seed + 1000 * i) for i, (name, lam) in enumerate(splits.items())}


def residual(x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """‖A·Ŷ − I‖_F / √n per matrix."""
    n = int(round(x.shape[-1] ** 0.5))
    a = rearrange(x.double(), "b (n m) -> b n m", n=n)
    y = rearrange(y_hat.double(), "b (n m) -> b n m", n=n)
    eye = torch.eye(n, dtype=torch.float64, device=x.device)
    return torch.linalg.matrix_norm(a @ y - eye) / n**0.5


@torch.no_grad()
def evaluate(model: EnergyMLP, diffusion: Diffusion, sets: dict[str, Problems], inner_steps: int,
             batch_size: int, seed: int, step_scale: float = 1.0) -> dict[str, float]:
    """Sampler MSE, zero-predictor MSE, exact-solver MSE and residual on each set.

    The sampler's starting noise comes from a generator seeded with `seed`, so two evaluations of the
    same weights give the same numbers.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    out = {}
    for name, problems in sets.items():
        problems = problems.to(device)
        y_hat = torch.cat([
            diffusion.sample(model, problems.x[i:i + batch_size], inner_steps, generator, step_scale)
            for i in range(0, len(problems), batch_size)
        ])
        n = model.n
        exact = torch.linalg.inv(rearrange(problems.x, "b (n m) -> b n m", n=n))
        out[f"{name}/mse"] = (y_hat - problems.y).square().mean().item()
        out[f"{name}/zero_mse"] = problems.y.square().mean().item()
        out[f"{name}/exact_mse"] = (rearrange(exact, "b n m -> b (n m)") - problems.y).square().mean().item()
        out[f"{name}/residual"] = residual(problems.x, y_hat).mean().item()
    return out
