"""The energy model E(x, y, t): a time-conditioned MLP with one non-negative scalar per sample (ired.md §2).

The model knows nothing about noise schedules: `t` is just an integer level. Callers that evaluate
the energy many times at a handful of levels (training, mining, sampling) compute the time
conditioning once per level with `conditioning` and pass rows of it on: the time path is about a
fifth of a forward pass's multiply-adds, yet t takes only T distinct values.

Likewise, while y moves (energy descent, the sampler, the losses of one training step) x and t stay
put: `bind(x, cond)` computes once what does not depend on y and returns a `BoundEnergy`, the
function y ↦ E(x, y, t). Its gradient in y is written out layer by layer rather than taken with
autograd, so mining and sampling build no graph at all, and training differentiates it once
instead of running autograd's double backward.

Precision (`hardware.precision`, the keys of `PRECISIONS`): with `bf16-mixed` every matmul of the
bound energy runs in bfloat16 (and with it the elementwise work between them), while the weights,
their gradients, the time conditioning, and what callers receive (energies and gradients in y) stay
in the parameters' float32. The casts are made once per `bind`, not per op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


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
        # The dtype the bound energy's matmuls run in; None: the parameters' own (PRECISIONS).
        self.compute_dtype: torch.dtype | None = None

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """Per-level affine maps of the two FiLM layers, (len(t), 4 * hidden), rows (s2, c2, s3, c3):
        layer k computes (Wk h)·sk + ck. With gk, bk the FiLM outputs of ired.md §2 and bk' the layer's
        own bias, (Wk h + bk')(1 + gk) + bk = (Wk h)·sk + ck for sk = 1 + gk, ck = bk + bk'·sk: the bias
        is folded into this small table instead of costing a pass over the batch."""
        emb = self.time_mlp(t)
        rows = []
        for film, fc in ((self.film2, self.fc2), (self.film3, self.fc3)):
            g, b = film(emb).chunk(2, dim=-1)
            scale = 1 + g
            rows += [scale, torch.addcmul(b, fc.bias, scale)]
        return torch.cat(rows, dim=-1)

    def bind(self, x: torch.Tensor, cond: torch.Tensor) -> BoundEnergy:
        """y ↦ E(x, y, t) for these problems and conditioning rows (one row per sample, or one for all).

        W1 [x; y] = W1_x x + W1_y y: the x half is computed here, once.
        """
        return self._bound(x, cond.chunk(4, dim=-1))

    def bind_levels(self, x: torch.Tensor, table: torch.Tensor, t: torch.Tensor) -> BoundEnergy:
        """`bind` with each sample's row looked up in `table` (`conditioning` of every level) by its
        level t. Each of the four maps is an embedding lookup of its own (its backward is a scatter-add,
        where indexing's is a serial index_put on CPUs); one lookup of whole rows, split afterwards,
        would concatenate the four gradients back into whole rows on the way back."""
        return self._bound(x, [F.embedding(t, part) for part in table.chunk(4, dim=-1)])

    def _bound(self, x: torch.Tensor, maps: Sequence[torch.Tensor]) -> BoundEnergy:
        # Each weight cast once here serves every pass of the step (mining's and both loss terms');
        # autocast would cast again at every matmul, since its cache skips views such as W.t().
        # In the parameters' own dtype `.to` returns the tensor itself: no op, no graph node.
        dtype = self.compute_dtype or self.fc1.weight.dtype
        cast = lambda v: v.to(dtype)  # noqa: E731
        w1x, w1y = self.fc1.weight.split(self.n * self.n, dim=1)
        return BoundEnergy(self, F.linear(cast(x), cast(w1x), cast(self.fc1.bias)), cast(w1y), *map(cast, maps),
                           *map(cast, (self.fc2.weight, self.fc3.weight, self.fc4.weight, self.fc4.bias)))

    def energy(self, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Energy per sample, (batch,), given the conditioning rows of each sample's level."""
        return self.bind(x, cond).energy(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.energy(x, y, self.conditioning(t))

    def energy_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """E(x, y, t) and ∇_y E. With create_graph the gradient stays differentiable (training)."""
        return self.bind(x, cond).energy_and_grad(y, create_graph)


class _Film(torch.autograd.Function):
    """z · scale + shift, as addcmul; its backward without the two passes that autograd's addcmul
    spends multiplying by its `value` argument (1 here)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, scale)
        ctx.shift_shape = shift.shape
        return torch.addcmul(shift, z, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, scale = ctx.saved_tensors
        need_z, need_scale, need_shift = ctx.needs_input_grad
        return (g * scale if need_z else None,
                (g * z).sum_to_size(scale.shape) if need_scale else None,
                g.sum_to_size(ctx.shift_shape) if need_shift else None)


class _SiluGrad(torch.autograd.Function):
    """d · silu'(a): one step of the y-gradient through a swish, differentiable once more.

    The forward is ATen's fused silu_backward kernel. Autograd's own double backward of silu builds
    silu' out of six elementwise ops and then differentiates each of them; the backward here is
    written out instead, with silu''(a) = s(1 − s)(2 + a(1 − 2s)), s = sigmoid(a).
    """

    @staticmethod
    def forward(ctx, d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(d, a)
        return torch.ops.aten.silu_backward(d, a)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        d, a = ctx.saved_tensors
        grad_d = torch.ops.aten.silu_backward(g, a) if ctx.needs_input_grad[0] else None
        grad_a = None
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(a)
            grad_a = torch.addcmul(a, a, s, value=-2).add_(2)  # 2 + a(1 − 2s)
            grad_a.mul_(torch.addcmul(s, s, s, value=-1)).mul_(g).mul_(d)  # · s(1 − s) · g · d
        return grad_d, grad_a


@dataclass(frozen=True)
class BoundEnergy:
    """y ↦ E(x, y, t) for one batch of problems and levels; made by `EnergyMLP.bind` or `bind_levels`.

    Holds what a forward pass can compute before it sees y: the x half of the first layer and the
    affine maps of the FiLM layers for each sample's level (or one row broadcast over the batch).
    """

    model: EnergyMLP
    x_proj: torch.Tensor  # W1_x x + b1, (batch, hidden)
    w1y: torch.Tensor  # W1's y columns, (hidden, n²)
    scale2: torch.Tensor  # the rows of `EnergyMLP.conditioning`, split
    shift2: torch.Tensor
    scale3: torch.Tensor
    shift3: torch.Tensor
    w2: torch.Tensor  # the other weights, in the dtype the matmuls run in
    w3: torch.Tensor
    w4: torch.Tensor
    b4: torch.Tensor

    def at(self, cond: torch.Tensor) -> BoundEnergy:
        """The same problems at other levels."""
        maps = (v.to(self.w1y.dtype) for v in cond.chunk(4, dim=-1))
        return BoundEnergy(self.model, self.x_proj, self.w1y, *maps, self.w2, self.w3, self.w4, self.b4)

    def detached(self) -> BoundEnergy:
        """The same function with every tensor it holds cut from the graph that made it (mining
        reuses training's): evaluated without gradients, it builds no graph at all."""
        parts = (self.x_proj, self.w1y, self.scale2, self.shift2, self.scale3, self.shift3,
                 self.w2, self.w3, self.w4, self.b4)
        return BoundEnergy(self.model, *(v.detach() for v in parts))

    def _forward(self, y: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """W4 h3 + b4 and the three pre-activations the y-gradient needs, in the compute dtype."""
        a1 = torch.addmm(self.x_proj, y.to(self.w1y.dtype), self.w1y.t())
        a2 = _Film.apply(F.silu(a1) @ self.w2.t(), self.scale2, self.shift2)
        a3 = _Film.apply(F.silu(a2) @ self.w3.t(), self.scale3, self.shift3)
        return F.linear(F.silu(a3), self.w4, self.b4), (a1, a2, a3)

    @staticmethod
    def _energy(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # Squared and summed in the caller's dtype: in bf16 the sum of n² squares would keep only
        # ~3 digits, too few for the accept test's comparison of two nearby energies.
        return out.to(dtype).square().sum(dim=-1)

    def energy(self, y: torch.Tensor) -> torch.Tensor:
        """E per sample, (batch,), in y's dtype."""
        out, _ = self._forward(y)
        return self._energy(out, y.dtype)

    def energy_and_grad(self, y: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """E and ∇_y E, in y's dtype. Without create_graph no graph is built, whatever the weights'
        flags; with it, both are differentiable (in the weights, and in y where y requires grad)."""
        with torch.set_grad_enabled(create_graph):
            out, pre = self._forward(y)
            return self._energy(out, y.dtype), self._grad(out, pre).to(y.dtype)

    def grad(self, y: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """∇_y E alone (the denoiser's output), as `energy_and_grad` gives it."""
        with torch.set_grad_enabled(create_graph):
            return self._grad(*self._forward(y)).to(y.dtype)

    def _grad(self, out: torch.Tensor, pre: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Back from E = ‖out‖² to y, layer by layer: ∂E/∂h3 = 2 outᵀ W4, and so on."""
        a1, a2, a3 = pre
        d = _SiluGrad.apply((2 * out) @ self.w4, a3) * self.scale3
        d = _SiluGrad.apply(d @ self.w3, a2) * self.scale2
        d = _SiluGrad.apply(d @ self.w2, a1)
        return d @ self.w1y


MODELS = {"mlp": EnergyMLP}

# hardware.precision → the dtype the bound energy's matmuls run in (None: the parameters' own).
# Named as Lightning names them; the single list of valid values.
PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16}


def precision_of(cfg) -> str:
    """hardware.precision; a config from before the key existed ran in 32."""
    return str(cfg.hardware.get("precision", "32")) if "hardware" in cfg else "32"


def build_model(cfg) -> EnergyMLP:
    """The model a composed config's `model` and `dataset` groups describe (on the CPU), computing
    in the precision `hardware.precision` names."""
    m = cfg.model
    if m.name not in MODELS:
        raise ValueError(f"model.name={m.name!r} is unknown; choose one of: {', '.join(MODELS)}")
    model = MODELS[m.name](cfg.dataset.n, hidden=m.hidden, time_dim=m.time_dim)
    model.compute_dtype = PRECISIONS[precision_of(cfg)]
    return model

