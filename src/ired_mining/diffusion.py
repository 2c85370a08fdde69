"""The diffusion around the energy model (ired.md §3, §5): cosine schedule, noising, the
noise-prediction loss, energy descent, and the IRED sampler.

Nothing here knows about optimisers or negatives; `mining.py` builds on `descend`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ired_mining.model import BoundEnergy, EnergyMLP


@dataclass(frozen=True)
class Schedule:
    betas: torch.Tensor  # (T,) float64
    alphas_cumprod: torch.Tensor  # ᾱ_t, (T,)
    step_sizes: torch.Tensor  # η_t = β_t √(1 / (1 − ᾱ_t)), (T,)

    @property
    def num_steps(self) -> int:
        return len(self.betas)


def cosine_schedule(num_steps: int = 10, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine schedule, computed in float64."""
    u = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(0, max_beta)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    step_sizes = betas * torch.sqrt(1 / (1 - alphas_cumprod))
    return Schedule(betas, alphas_cumprod, step_sizes)


class Diffusion:
    """Per-level coefficients as (T, 1) columns on the training device, indexed by t."""

    def __init__(
        self,
        schedule: Schedule,
        device: torch.device | str = "cpu",
        clamp: float = 2.0,
        descent_scale: float = 1.0,
        sample_backtrack: float = 1.0,
    ):
        col = lambda v: v.to(device=device, dtype=torch.float32)[:, None]  # noqa: E731
        self.num_steps = schedule.num_steps
        self.sqrt_ac = col(schedule.alphas_cumprod.sqrt())
        self.sqrt_1m_ac = col((1 - schedule.alphas_cumprod).sqrt())
        self.step_size = col(schedule.step_sizes * descent_scale)
        self.clamp = clamp
        self.levels = torch.arange(self.num_steps, device=device)
        self.sample_backtrack = sample_backtrack  # the sampler's shrink factor (sampler.backtrack)

    # ---------------------------------------------------------------- training

    def noise(self, y: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, eps_scale: float = 1.0) -> torch.Tensor:
        """y_t = √ᾱ_t y + s √(1 − ᾱ_t) ε (s = 1 is the forward process)."""
        return torch.addcmul(self.sqrt_ac[t] * y, self.sqrt_1m_ac[t], eps, value=eps_scale)

    def score_loss(self, energy: BoundEnergy, y_t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The denoising loss: per-sample mean over entries of (∇_y E(x, y_t, t) − ε)², differentiable
        in the weights; `energy` is y ↦ E(x, y, t) bound to the problems and levels."""
        return (energy.grad(y_t, create_graph=True) - eps).square().mean(dim=-1)

    # ---------------------------------------------------------------- energy descent

    @torch.no_grad()
    def descend(
        self,
        energy: BoundEnergy,
        y: torch.Tensor,
        t: torch.Tensor | int,
        steps: int,
        scale: float = 1.0,
        backtrack: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`steps` steps of y ← clamp(y − scale·η_t ∇E, ±clamp·√ᾱ_t), keeping per sample the old y
        where a step raised the energy; `energy` is y ↦ E(x, y, t) bound to the problems and levels,
        `t` one level per sample or a single level for the whole batch. Returns (y, E(y)); no graph
        to the weights.

        One forward-backward per step: the pass at a candidate gives both its energy (accept or
        reject) and its gradient (the next step), and the last candidate needs only its energy.

        `backtrack` < 1: a sample whose step was rejected tries its next step `backtrack` times as
        long (its step sizes are a tensor, one per sample, so no host sync); an accepted step keeps
        its size. 1 (the spec) retries the same step from the same point, which a smooth energy
        rejects again, so extra steps would change nothing.
        """
        step = scale * self.step_size[t]
        bound = self.clamp * self.sqrt_ac[t]
        y = y.detach()
        if steps == 0:
            return y, energy.energy(y)
        if backtrack != 1.0:
            step = step.expand(y.shape[0], 1)
        e, grad = energy.energy_and_grad(y)
        for k in range(steps):
            cand = torch.clamp(y - step * grad, -bound, bound)
            last = k + 1 == steps
            e_new, g_new = (energy.energy(cand), None) if last else energy.energy_and_grad(cand)
            accept = e_new <= e
            y = torch.where(accept[:, None], cand, y)
            e = torch.where(accept, e_new, e)
            if not last:
                grad = torch.where(accept[:, None], g_new, grad)
                if backtrack != 1.0:
                    step = torch.where(accept[:, None], step, step * backtrack)
        return y, e

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(
        self,
        model: EnergyMLP,
        x: torch.Tensor,
        inner_steps: int = 5,
        generator: torch.Generator | None = None,
        scale: float = 1.0,
        backtrack: float | None = None,
    ) -> torch.Tensor:
        """The IRED sampler (ired.md §5): from y_T ~ N(0, I), at each level t = T−1 … 0 one
        denoising step without added noise, then `inner_steps` of energy descent (`backtrack` as in
        `descend`; None: this diffusion's `sample_backtrack`). Returns ŷ0 in answer space (not
        scaled by √ᾱ_0)."""
        backtrack = self.sample_backtrack if backtrack is None else backtrack
        y = torch.randn(x.shape[0], model.n * model.n, device=x.device, dtype=x.dtype, generator=generator)
        table = model.conditioning(self.levels)
        # Every sample is at the same level: one conditioning row, broadcast over the batch.
        energy = model.bind(x, table[:1])
        y0 = y
        for level in reversed(range(self.num_steps)):
            energy = energy.at(table[level : level + 1])
            eps_hat = energy.grad(y)
            y0 = ((y - self.sqrt_1m_ac[level] * eps_hat) / self.sqrt_ac[level]).clamp(-self.clamp, self.clamp)
            y = self.sqrt_ac[level] * y0
            y, _ = self.descend(energy, y, level, inner_steps, scale, backtrack)
            y0 = y / self.sqrt_ac[level]
            if level > 0:
                y = self.sqrt_ac[level - 1] * y0
        return y0


def build_diffusion(cfg, device: torch.device | str) -> Diffusion:
    """The diffusion a composed config's `diffusion` group describes, with the sampler's
    backtracking (`sampler.backtrack`: a run read back from before the key existed has it too, at
    the value it used, from rundir.LATER_KEYS)."""
    d = cfg.diffusion
    return Diffusion(
        cosine_schedule(d.steps, d.s, d.max_beta),
        device,
        clamp=d.clamp,
        sample_backtrack=float(cfg.sampler.backtrack),
    )
