"""Negative mining and the contrastive energy loss (ired.md §4).

A strategy is a small object with one method, `negatives(diffusion, batch)`, which returns wrong
answers ŷ⁻ in answer space (or None: no energy term). `STRATEGIES` is the single list of valid names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ired_mining.choices import Choice
from ired_mining.diffusion import Diffusion
from ired_mining.model import BoundEnergy


@dataclass
class MiningBatch:
    """What a strategy may look at: y ↦ E(x, y, t) for the batch's problems and levels (its model is
    `energy.model`), the answers, the levels, the shared noise ε', and the run's generator (draw
    random numbers from it, so that the seed fixes them). Training calls `negatives` under
    torch.no_grad: the negatives are constants of the loss."""

    energy: BoundEnergy
    y: torch.Tensor
    t: torch.Tensor
    eps: torch.Tensor
    generator: torch.Generator


class NoNegatives:
    """`none`: plain diffusion training, L = L_mse."""

    def negatives(self, diffusion: Diffusion, batch: MiningBatch) -> None:
        return None


class Source(Choice):
    """mining.source: where random negatives come from (RandomNegatives)."""

    derangement = "derangement"
    gaussian = "gaussian"


@dataclass
class RandomNegatives:
    """`random`: wrong answers the model played no part in choosing.

    `derangement`: each sample gets the target of another sample of the batch (the inverse of an
    independent matrix of the same distribution; a cyclic shift moves every sample).
    `gaussian`: N(0, σ²) with σ² the targets' mean square.
    """

    source: Source = Source.derangement

    def negatives(self, diffusion: Diffusion, batch: MiningBatch) -> torch.Tensor:
        if self.source == "derangement":
            return batch.y.roll(1, dims=0)
        sigma = batch.y.square().mean().sqrt()
        return sigma * torch.randn(batch.y.shape, device=batch.y.device, generator=batch.generator)


@dataclass
class AdversarialNegatives:
    """`adversarial`: start from z = √ᾱ_t y + c √(1−ᾱ_t) ε' (c = `corruption`) and take `steps` of
    energy descent: the wrong answers the current model likes best, i.e. gradient ascent on L_energy.
    `backtrack` < 1 shrinks a sample's step by that factor after each rejected step (1: the spec)."""

    steps: int = 2
    step_scale: float = 1.0
    corruption: float = 3.0
    backtrack: float = 1.0

    def negatives(self, diffusion: Diffusion, batch: MiningBatch) -> torch.Tensor:
        z = diffusion.noise(batch.y, batch.t, batch.eps, eps_scale=self.corruption)
        z, _ = diffusion.descend(batch.energy, z, batch.t, self.steps, self.step_scale, self.backtrack)
        return (z / diffusion.sqrt_ac[batch.t]).clamp(-diffusion.clamp, diffusion.clamp)


STRATEGIES = {"none": NoNegatives, "random": RandomNegatives, "adversarial": AdversarialNegatives}


def build_strategy(name: str, **options):
    if name not in STRATEGIES:
        raise ValueError(f"mining.name={name!r} is not a strategy; choose one of: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](**options)


def energy_loss(e_pos: torch.Tensor, e_neg: torch.Tensor) -> torch.Tensor:
    """−log(e^{−E⁺} / (e^{−E⁺} + e^{−E⁻})) per sample, computed stably as softplus(E⁺ − E⁻)."""
    return F.softplus(e_pos - e_neg)
