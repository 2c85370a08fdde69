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
    """h1 = swish(W1[x; y]); h2, h3 = swish(W h · (1 + g(t)) + b(t)); E = ‖W4 h3‖².

    `depth` counts the hidden layers (3 in ired.md); every one after the first is a FiLM layer like
    h2 and h3. The spec's layers keep their names (fc2, film2, fc3, film3) and their place in the
    order of initialisation, so depth 3 is the spec's model, weights and state dict alike.
    """

    def __init__(self, n: int, hidden: int = 512, time_dim: int = 128, depth: int = 3):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth={depth}: the energy MLP needs at least 2 hidden layers")
        self.n, self.hidden, self.depth = n, hidden, depth
        d = n * n
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(time_dim),
            nn.Linear(time_dim, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )
        self.fc1 = nn.Linear(2 * d, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden) if depth >= 3 else None
        self.fc4 = nn.Linear(hidden, d)
        self.film2 = nn.Linear(time_dim, 2 * hidden)
        self.film3 = nn.Linear(time_dim, 2 * hidden) if depth >= 3 else None
        # Hidden layers past the spec's three, created last so the spec's draws come first.
        self.fc_more = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 3))
        self.film_more = nn.ModuleList(nn.Linear(time_dim, 2 * hidden) for _ in range(depth - 3))
        # The dtype the bound energy's matmuls run in; None: the parameters' own (PRECISIONS).
        self.compute_dtype: torch.dtype | None = None

    @property
    def film_layers(self) -> list[tuple[nn.Linear, nn.Linear]]:
        """(linear layer, its FiLM map of t) for each hidden layer after the first, in order."""
        pairs = [(self.fc2, self.film2)]
        if self.fc3 is not None:
            pairs.append((self.fc3, self.film3))
        return pairs + list(zip(self.fc_more, self.film_more))

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """Per-level affine maps of the FiLM layers, (len(t), 2 * (depth − 1) * hidden), rows
        (s2, c2, s3, c3, …): layer k computes (Wk h)·sk + ck. With gk, bk the FiLM outputs of ired.md
        §2 and bk' the layer's own bias, (Wk h + bk')(1 + gk) + bk = (Wk h)·sk + ck for sk = 1 + gk,
        ck = bk + bk'·sk: the bias is folded into this small table instead of costing a pass over the batch."""
        emb = self.time_mlp(t)
        rows = []
        for fc, film in self.film_layers:
            g, b = film(emb).chunk(2, dim=-1)
            scale = 1 + g
            rows += [scale, torch.addcmul(b, fc.bias, scale)]
        return torch.cat(rows, dim=-1)

    @property
    def map_count(self) -> int:
        """Columns blocks of a conditioning row: a scale and a shift per FiLM layer."""
        return 2 * (self.depth - 1)

    def bind(self, x: torch.Tensor, cond: torch.Tensor) -> BoundEnergy:
        """y ↦ E(x, y, t) for these problems and conditioning rows (one row per sample, or one for all).

        W1 [x; y] = W1_x x + W1_y y: the x half is computed here, once.
        """
        return self._bound(x, cond.chunk(self.map_count, dim=-1))

    def bind_levels(self, x: torch.Tensor, table: torch.Tensor, t: torch.Tensor) -> BoundEnergy:
        """`bind` with each sample's row looked up in `table` (`conditioning` of every level) by its
        level t. Each of the maps is an embedding lookup of its own (its backward is a scatter-add,
        where indexing's is a serial index_put on CPUs); one lookup of whole rows, split afterwards,
        would concatenate the four gradients back into whole rows on the way back."""
        return self._bound(x, [F.embedding(t, part) for part in table.chunk(self.map_count, dim=-1)])

    def _bound(self, x: torch.Tensor, maps: Sequence[torch.Tensor]) -> BoundEnergy:
        # Each weight cast once here serves every pass of the step (mining's and both loss terms');
        # autocast would cast again at every matmul, since its cache skips views such as W.t().
        # In the parameters' own dtype `.to` returns the tensor itself: no op, no graph node.
        dtype = self.compute_dtype or self.fc1.weight.dtype
        cast = lambda v: v.to(dtype)  # noqa: E731
        w1x, w1y = self.fc1.weight.split(self.n * self.n, dim=1)
        return BoundEnergy(
            self,
            F.linear(cast(x), cast(w1x), cast(self.fc1.bias)),
            cast(w1y),
            tuple(map(cast, maps)),
            tuple(cast(fc.weight) for fc, _ in self.film_layers),
            cast(self.fc4.weight),
            cast(self.fc4.bias),
        )

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
        return (
            g * scale if need_z else None,
            (g * z).sum_to_size(scale.shape) if need_scale else None,
            g.sum_to_size(ctx.shift_shape) if need_shift else None,
        )


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
    maps: tuple[torch.Tensor, ...]  # the rows of `EnergyMLP.conditioning`, split: (s2, c2, s3, c3, …)
    weights: tuple[torch.Tensor, ...]  # the FiLM layers' weights, in the dtype the matmuls run in
    w4: torch.Tensor
    b4: torch.Tensor

    def at(self, cond: torch.Tensor) -> BoundEnergy:
        """The same problems at other levels."""
        maps = tuple(v.to(self.w1y.dtype) for v in cond.chunk(self.model.map_count, dim=-1))
        return BoundEnergy(self.model, self.x_proj, self.w1y, maps, self.weights, self.w4, self.b4)

    def detached(self) -> BoundEnergy:
        """The same function with every tensor it holds cut from the graph that made it (mining
        reuses training's): evaluated without gradients, it builds no graph at all."""
        return BoundEnergy(
            self.model,
            self.x_proj.detach(),
            self.w1y.detach(),
            tuple(v.detach() for v in self.maps),
            tuple(w.detach() for w in self.weights),
            self.w4.detach(),
            self.b4.detach(),
        )

    def _forward(self, y: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """W4 h + b4 and the pre-activations the y-gradient needs, in the compute dtype."""
        a = torch.addmm(self.x_proj, y.to(self.w1y.dtype), self.w1y.t())
        pre = [a]
        for w, scale, shift in zip(self.weights, self.maps[0::2], self.maps[1::2]):
            a = _Film.apply(F.silu(a) @ w.t(), scale, shift)
            pre.append(a)
        return F.linear(F.silu(a), self.w4, self.b4), tuple(pre)

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
        """Back from E = ‖out‖² to y, layer by layer: ∂E/∂h_last = 2 outᵀ W4, and so on."""
        d = 2 * out @ self.w4
        for w, a, scale in zip(reversed(self.weights), reversed(pre[1:]), reversed(self.maps[0::2])):
            d = _SiluGrad.apply(d, a) * scale @ w
        d = _SiluGrad.apply(d, pre[0])
        return d @ self.w1y


class Regressor(nn.Module):
    """The IRED paper's feed-forward baseline: Ŷ = f(A), an MLP of the energy model's widths
    (depth swish layers of `hidden` units) trained on MSE against A⁻¹. No energy, no levels, no
    sampler: it says whether a limit is the network's or IRED's."""

    def __init__(self, n: int, hidden: int = 512, depth: int = 3):
        super().__init__()
        self.n, self.hidden, self.depth = n, hidden, depth
        widths = [n * n] + [hidden] * depth
        layers = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, n * n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def energy_mlp(n: int, m) -> EnergyMLP:
    return EnergyMLP(n, hidden=m.hidden, time_dim=m.time_dim, depth=m.depth)


def regressor(n: int, m) -> Regressor:
    return Regressor(n, hidden=m.hidden, depth=m.depth)


MODELS = {"mlp": energy_mlp, "regressor": regressor}  # model.name → factory; the list of valid names

# hardware.precision → the dtype the bound energy's matmuls run in (None: the parameters' own).
# Named as Lightning names them; the single list of valid values.
PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16}
# What a run recorded before hardware.precision existed ran in: the one owner of that value, which
# the schema's default (for ired-eval's typed config) and precision_of (for a raw one) both read.
PRECISION_BEFORE_THE_KEY = "32"


def precision_of(cfg) -> str:
    """hardware.precision; a config from before the key existed ran in PRECISION_BEFORE_THE_KEY."""
    hardware = cfg.get("hardware") or {}
    return str(hardware.get("precision", PRECISION_BEFORE_THE_KEY))


def build_model(cfg) -> EnergyMLP | Regressor:
    """The model a composed config's `model` and `dataset` groups describe (on the CPU)."""
    m = cfg.model
    if m.name not in MODELS:
        raise ValueError(f"model.name={m.name!r} is unknown; choose one of: {', '.join(MODELS)}")
    model = MODELS[m.name](cfg.dataset.n, m)
    if isinstance(model, EnergyMLP):  # the regressor computes in its parameters' dtype
        model.compute_dtype = PRECISIONS[precision_of(cfg)]
    return model


def is_regressor(model: nn.Module) -> bool:
    """A direct predictor of A⁻¹ rather than an energy: trained and evaluated without the diffusion."""
    return isinstance(model, Regressor)
