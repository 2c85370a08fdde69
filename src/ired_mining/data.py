"""Matrix-inversion problems: SPD matrices A and their inverses, as flat (batch, n*n) tensors.

A = 2 R Rᵀ + λ I with R ~ U(-1, 1)^{n×n} (ired.md §1). λ sets the difficulty: 0.5 is the
in-distribution split, 0.1 the harder one. Inverses are taken in float64 and stored in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange


@dataclass(frozen=True)
class Problems:
    """A batch of problems: `x` the flattened matrices, `y` their flattened inverses."""

    x: torch.Tensor  # (batch, n*n) float32
    y: torch.Tensor  # (batch, n*n) float32

    def to(self, device: torch.device | str) -> "Problems":
        return Problems(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


def spd_batch(n: int, batch: int, lam: float, generator: torch.Generator) -> Problems:
    """Draw `batch` problems at once on the generator's device (never one matrix at a time)."""
    device = generator.device
    r = torch.rand(batch, n, n, generator=generator, device=device, dtype=torch.float64).mul_(2).sub_(1)
    a = torch.baddbmm(torch.eye(n, device=device, dtype=torch.float64).mul_(lam), r, r.mT, alpha=2)
    # Cholesky is the cheap, stable route to the inverse of an SPD matrix. Its _ex form skips the
    # success check, which would make a GPU wait for the host; A ⪰ λI > 0 cannot fail it.
    y = torch.cholesky_inverse(torch.linalg.cholesky_ex(a).L)
    return Problems(_flat32(a), _flat32(y))


def _flat32(m: torch.Tensor) -> torch.Tensor:
    """(batch, n, n) float64 → (batch, n*n) float32. Cast first, into a row-major copy (an inverse
    comes back column-major): one pass over the data, not a reshaping copy and then a cast."""
    return rearrange(m.to(torch.float32, memory_format=torch.contiguous_format), "b n m -> b (n m)")


def fixed_set(n: int, size: int, lam: float, seed: int) -> Problems:
    """An evaluation set fixed by its own seed, drawn on the CPU so every device sees the same matrices."""
    return spd_batch(n, size, lam, torch.Generator("cpu").manual_seed(seed))

