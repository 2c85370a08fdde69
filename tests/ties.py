"""Energy descent that also records how close each of its accept/reject decisions came to a tie.

The accept test E(candidate) <= E(y) is a hard switch: where the two energies agree to rounding,
two correct float32 implementations (or two CPUs) may decide it differently, and the sample then
moves by a whole step. Tests that compare float32 paths through the switch use this to show that
every sample that differs went through such a near-tie.
"""

from __future__ import annotations

import math

import torch

from ired_mining.diffusion import Diffusion


class _Recording:
    """An energy (y ↦ E(x, y, t)) that keeps every point it was asked about and the energy there."""

    def __init__(self, energy):
        self.inner, self.calls = energy, []

    def energy(self, y):
        e = self.inner.energy(y)
        self.calls.append((y, e))
        return e

    def energy_and_grad(self, y, create_graph=False):
        e, g = self.inner.energy_and_grad(y, create_graph)
        self.calls.append((y, e))
        return e, g


class TieWatch(Diffusion):
    """The same diffusion; `closest` holds per sample the smallest relative gap |E(cand) − E(y)| / E(y)
    of any decision where the candidate differs from the current point (inf if none)."""

    def __init__(self, base: Diffusion):
        self.__dict__.update(base.__dict__)
        self.closest: torch.Tensor | None = None

    def descend(self, energy, y, t, steps, scale=1.0, backtrack=1.0):
        recording = _Recording(energy)
        out = super().descend(recording, y, t, steps, scale, backtrack)
        (y_cur, e_cur), *candidates = recording.calls
        for cand, e_new in candidates:
            moved = (cand != y_cur).any(dim=1)
            gap = ((e_new - e_cur).abs() / e_cur.abs().clamp_min(1e-30)).double()
            gap = torch.where(moved, gap, torch.full_like(gap, math.inf))
            self.closest = gap if self.closest is None else torch.minimum(self.closest, gap)
            accept = e_new <= e_cur
            y_cur = torch.where(accept[:, None], cand, y_cur)
            e_cur = torch.where(accept, e_new, e_cur)
        return out
