"""Matrix-inversion problems: SPD matrices A and their inverses, as flat (batch, n*n) tensors.

A = 2 R Rᵀ + λ I with R ~ U(-1, 1)^{n×n} (ired.md §1). λ sets the difficulty: 0.5 is the
in-distribution split, 0.1 the harder one. Inverses are taken in float64 and stored in float32.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
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
    y = spd_inverse(a)
    # Cast first, to a row-major copy (the inverse comes back column-major): one pass, not two.
    flat = lambda m: rearrange(m.to(torch.float32, memory_format=torch.contiguous_format), "b n m -> b (n m)")  # noqa: E731
    return Problems(flat(a), flat(y))


def spd_inverse(a: torch.Tensor) -> torch.Tensor:
    """Inverses of a batch of SPD matrices.

    Cholesky is the cheap, stable route to the inverse of an SPD matrix. Its _ex form skips the
    success check, which would make a GPU wait for the host; A ⪰ λI > 0 cannot fail it. On a CPU,
    torch runs a batch of small LAPACK calls one after another on one core: a large batch is split
    in two halves inverted on two threads (each matrix's inverse is computed exactly as before).
    """
    if a.device.type != "cpu" or len(a) < _PARALLEL_MIN or torch.get_num_threads() < 2:
        return _cholesky_inverse(a)
    return torch.cat(list(_pool().map(_cholesky_inverse, a.chunk(2))))


_PARALLEL_MIN = 512  # below this a batch inverts in about a millisecond: not worth a second thread


def _cholesky_inverse(a: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky_ex(a).L)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2, thread_name_prefix="spd-inverse")


def fixed_set(n: int, size: int, lam: float, seed: int) -> Problems:
    """An evaluation set fixed by its own seed, drawn on the CPU so every device sees the same matrices."""
    return spd_batch(n, size, lam, torch.Generator("cpu").manual_seed(seed))

