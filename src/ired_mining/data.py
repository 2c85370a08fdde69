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

    def to(self, device: torch.device | str) -> Problems:
        return Problems(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


def spd_batch(n: int, batch: int, lam: float, generator: torch.Generator, capture_safe: bool = False) -> Problems:
    """Draw `batch` problems at once on the generator's device (never one matrix at a time).

    `capture_safe` takes the inverse by a route a CUDA graph can record (`inverse_by_triangular_solve`):
    the same matrices to float32 rounding, not bit for bit."""
    device = generator.device
    r = torch.rand(batch, n, n, generator=generator, device=device, dtype=torch.float64).mul_(2).sub_(1)
    a = torch.baddbmm(torch.eye(n, device=device, dtype=torch.float64).mul_(lam), r, r.mT, alpha=2)
    # Cholesky is the cheap, stable route to the inverse of an SPD matrix. Its _ex form skips the
    # success check, which would make a GPU wait for the host; A ⪰ λI > 0 cannot fail it.
    low = torch.linalg.cholesky_ex(a).L
    y = inverse_by_triangular_solve(low) if capture_safe else torch.cholesky_inverse(low)
    return Problems(_flat32(a), _flat32(y))


def inverse_by_triangular_solve(low: torch.Tensor) -> torch.Tensor:
    """A⁻¹ = L⁻ᵀ L⁻¹ from the Cholesky factor L of A, batched. On a GPU cholesky_inverse runs MAGMA's
    batched potrs, which fails inside CUDA graph capture; a batched triangular solve (cuBLAS trsm)
    and a batched matmul do not wait for the host."""
    eye = torch.eye(low.shape[-1], dtype=low.dtype, device=low.device).expand_as(low)
    low_inv = torch.linalg.solve_triangular(low, eye, upper=False)
    return low_inv.mT @ low_inv


def _flat32(m: torch.Tensor) -> torch.Tensor:
    """(batch, n, n) float64 → (batch, n*n) float32. Cast first, into a row-major copy (an inverse
    comes back column-major): one pass over the data, not a reshaping copy and then a cast."""
    return rearrange(m.to(torch.float32, memory_format=torch.contiguous_format), "b n m -> b (n m)")


def fixed_set(n: int, size: int, lam: float, seed: int) -> Problems:
    """An evaluation set fixed by its own seed, drawn on the CPU so every device sees the same matrices."""
    return spd_batch(n, size, lam, torch.Generator("cpu").manual_seed(seed))
