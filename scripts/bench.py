"""Speed of IRED training and sampling, against the machine's own limit (issue 6).

    python scripts/bench.py                          # the full run (CPU: 1-2 minutes on 2 cores)
    python scripts/bench.py --quick --json out.json  # a check: ~30 s on 2 cores (~50 s compiling afresh)
    python scripts/bench.py --device cuda            # on a GPU (auto picks one when it is there)
    python scripts/bench.py --threads 1              # CPU threads for torch (default: torch's own)

For each mining strategy and batch 256 / 2048 it times the product's real training step (a fresh
batch by `spd_batch`, then `train_step`, as `ired-train` runs them), the sampler with the default
inner steps, and data generation; counts the FLOPs of each with torch.utils.flop_counter; and, in
the same run, measures the device's dense fp32 matmul rate, so every rate is also a fraction of it.
Training at batch 2048 with adversarial negatives, the sampler and the data are also timed against
the straightforward version of the same math (scripts/yardstick.py), interleaved call by call so
that both see the same machine, and checked to agree with it; a dense matmul is timed in those
rounds too, so that this step's fraction of the limit is also measured at the same moments (on a
busy host the limit moves from minute to minute). The adversarial step is also timed
with hardware.compile the other way (compiled, unless the overrides compile already) in the same
rounds, at each batch size, and at batch 2048 on a CPU profiled once to show where its time goes
(matmuls, random numbers, the data's batched Cholesky, everything else).

Precision (issue 20): every strategy's step, at each batch size, and the sampler are also timed with
hardware.precision=bf16-mixed in the same interleaved rounds as their fp32 runs, from the same
weights, and the report prints each bf16 / fp32 speed ratio; a dense bf16 matmul is sampled beside the
fp32 one, so that bf16 rates are also shown against the bf16 limit.

The config is the product's own, composed by Hydra from ired_mining.conf: the figures are those of
the defaults (n = 20, hidden 512, T = 10, K = 2, 5 inner sampler steps) unless overrides are given
after the options, e.g. `python scripts/bench.py --quick dataset.n=10`.
"""

from __future__ import annotations

import ired_mining  # noqa: F401  first: it sets a short OpenMP spin before torch loads (see its __init__)

# isort: split
import argparse  # noqa: E402
import enum  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import ClassVar  # noqa: E402

import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from ired_mining.backend import configure_backend  # noqa: E402
from ired_mining.data import spd_batch  # noqa: E402
from ired_mining.graphed import WARMUP_STEPS, CudaGraphs, StaticStep, StepParts, data_in_graph  # noqa: E402
from ired_mining.mining import STRATEGIES  # noqa: E402
from ired_mining.rundir import cpu_model  # noqa: E402
from ired_mining.train import Run, train_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import yardstick  # noqa: E402  (lives beside this script, not in the product)


@dataclass(frozen=True)
class Plan:
    """How much to measure: batch sizes, timed calls per case, the sampler's batch, the matmul size."""

    batches: tuple[int, ...] = (256, 2048)
    calls: dict | None = None  # timed training steps per batch size
    yardstick_calls: int = 8  # timed product/yardstick pairs (adversarial, largest batch)
    profile_calls: int = 3  # profiled steps (adversarial, largest batch, CPU): where the time goes
    sampler_batch: int | None = None  # None: the config's eval.batch_size
    sampler_calls: int = 4
    matmul_n: int = 2048
    overrides: tuple[str, ...] = ()


PLANS = {
    "full": Plan(calls={256: 30, 2048: 10}),
    "quick": Plan(calls={256: 8, 2048: 3}, yardstick_calls=3, sampler_batch=256, sampler_calls=3),
    # For tests: the same code on a toy model, seconds in all.
    "tiny": Plan(
        batches=(16, 64),
        calls={16: 3, 64: 3},
        yardstick_calls=2,
        sampler_batch=16,
        sampler_calls=2,
        matmul_n=256,
        overrides=("dataset.n=4", "model.hidden=32", "model.time_dim=16"),
    ),
}


# ================================================================ measuring


class Meter:
    """Wall-clock time of calls on one device, and the device's matmul rate, sampled through the run."""

    def __init__(self, device: torch.device, matmul_n: int):
        self.device, self.matmul_n = device, matmul_n
        self.matmul_rates: list[float] = []  # fp32
        self.bf16_matmul_rates: list[float] = []
        a = torch.randn(matmul_n, matmul_n, device=device)
        self._mm = (a, torch.randn(matmul_n, matmul_n, device=device))
        self._mm_bf16 = tuple(v.bfloat16() for v in self._mm)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def seconds(self, fn, calls: int = 1) -> float:
        """Seconds per call over `calls` back-to-back calls (one wait for the GPU, at the end)."""
        self.sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        self.sync()
        return (time.perf_counter() - start) / calls

    def sample_matmul(self, reps: int = 3) -> None:
        """Dense fp32 and bf16 matmul rates, best of `reps` each (the limit is what the machine can do)."""
        calls = 1 if self.device.type == "cpu" else 20
        for fn, rates in ((self.matmul, self.matmul_rates), (self.matmul_bf16, self.bf16_matmul_rates)):
            self.seconds(fn)
            rates.append(max(self.matmul_flops / self.seconds(fn, calls) for _ in range(reps)))

    @property
    def matmul_rate(self) -> float:
        return statistics.median(self.matmul_rates)

    @property
    def bf16_matmul_rate(self) -> float:
        return statistics.median(self.bf16_matmul_rates)

    def rate_of(self, precision: str) -> float:
        return self.bf16_matmul_rate if precision == BF16 else self.matmul_rate

    @property
    def matmul_flops(self) -> int:
        return 2 * self.matmul_n**3

    def matmul(self) -> None:
        """One dense fp32 matmul: a contender of `interleaved`, for the limit at the same moments."""
        a, b = self._mm
        a @ b

    def matmul_bf16(self) -> None:
        """The same matmul in bf16: the limit of bf16-mixed steps."""
        a, b = self._mm_bf16
        a @ b

    def interleaved(self, fns: dict, rounds: int, calls: int = 1) -> dict[str, float]:
        """Median seconds per call of each function, timed in turn round after round so that a
        change in the machine's load hits all of them alike."""
        times = {k: [] for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                times[k].append(self.seconds(fn, calls))
        return {k: statistics.median(v) for k, v in times.items()}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# Kinds of op that one profiled training step is split into; the rest is "other" (elementwise
# work, fused or not, copies, the optimiser). Matched on the profiler's op names.
OP_KINDS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "random numbers": ("aten::normal_", "aten::uniform_", "aten::random_"),
    "data linalg": ("aten::linalg_cholesky_ex", "aten::cholesky_inverse", "aten::baddbmm", "aten::tril"),
}


def breakdown(step, calls: int, flops: int) -> dict:
    """Where a CPU training step's time goes: the self time of every op, summed by kind (OP_KINDS),
    per step, and the rate of the step's matmuls alone. The profiler adds a little to each op."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        wall_ms = 1e3 * (time.perf_counter() - start) / calls
    ms = {kind: 0.0 for kind in (*OP_KINDS, "other")}
    for event in prof.key_averages():
        kind = next((k for k, names in OP_KINDS.items() if event.key in names), "other")
        ms[kind] += event.self_cpu_time_total / 1e3 / calls
    ms["outside ops"] = max(wall_ms - sum(ms.values()), 0.0)  # Python between ops
    return {"ms_per_step": ms, "profiled_step_ms": wall_ms, "matmul_flops_per_s_in_step": flops / (ms["matmul"] / 1e3)}


def compiles(cfg) -> bool:
    return bool(cfg.hardware.compile)


BF16 = "bf16-mixed"


def precision(cfg) -> str:
    return str(cfg.hardware.precision)


def with_precision(cfg, value: str):
    """The config with hardware.precision set (bf16-mixed, or 32)."""
    return OmegaConf.merge(cfg, {"hardware": {"precision": value}})


def other_precision(cfg) -> str:
    return "32" if precision(cfg) == BF16 else BF16


def with_compile(cfg, on: bool):
    """The config with hardware.compile on or off. FLOPs are always counted on an eager step (the
    same math): a compiled function once run under FlopCounterMode measured ~20 % slower for the
    rest of the process."""
    return OmegaConf.merge(cfg, {"hardware": {"compile": on}})


class PeakMemory:
    """Peak memory of a block of work: on a GPU the allocator's peak; on Linux CPUs the peak
    resident set (VmHWM), reset before the block through /proc/self/clear_refs."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # the peak then runs from the process start: still an upper bound

    def current_mib(self) -> float | None:
        return (
            self._status_mib("VmRSS:")
            if self.device.type == "cpu"
            else torch.cuda.memory_allocated(self.device) / 2**20
        )

    def _status_mib(self, field: str) -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def peak_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self._status_mib("VmHWM:")

    def total_mib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory / 2**20
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
        except (ValueError, OSError):
            return None


# ================================================================ the cases


def compose_cfg(device_kind: str, strategy: str, overrides) -> object:
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[f"hardware={'gpu' if device_kind == 'cuda' else 'cpu'}", f"mining={strategy}", *overrides],
        )


class Trainer:
    """The run `ired-train` would build for this config (nothing is written); `step` is one step of
    its loop: a fresh batch, then `train_step`."""

    def __init__(self, cfg, batch: int):
        cfg = OmegaConf.merge(cfg, {"train": {"batch_size": batch}})
        self.run = Run(cfg, Path(tempfile.gettempdir()) / "ired-bench-unused")
        self.cfg, self.batch = cfg, batch
        self.model, self.diffusion, self.device = self.run.model, self.run.diffusion, self.run.device

    def step(self) -> dict:
        r, c = self.run, self.cfg
        problems = spd_batch(c.dataset.n, self.batch, c.dataset.lam, r.generator)
        return train_step(r.model, r.diffusion, r.strategy, r.optimizer, problems, c, r.generator)

    def warm(self) -> None:
        """Untimed steps first: first-call allocations, thread pools, compiling."""
        self.step()


class GraphedTrainer(Trainer):
    """The same run with hardware.cuda_graph (CUDA only): the static-buffer step, recorded as a CUDA
    graph after its eager warm-up and replayed; the data drawn as hardware.cuda_graph_data says."""

    def __init__(self, cfg, batch: int):
        super().__init__(OmegaConf.merge(cfg, {"hardware": {"cuda_graph": True}}), batch)
        r = self.run
        parts = StepParts(r.model, r.ema, r.optimizer, r.diffusion, r.strategy, r.generator, r.cfg, r.device)
        self.static = StaticStep(parts, train_step, data_in_graph(self.cfg), r.step)
        self.graphs = CudaGraphs(self.static)

    def step(self) -> None:
        if not self.static.data_in_graph:
            self.static.draw()
        self.graphs.step()

    def warm(self) -> None:
        for _ in range(WARMUP_STEPS + 2):  # the eager warm-up, the recording, a replay
            self.step()


class PlainTrainer(Trainer):
    """The same run written straightforwardly (yardstick.py), from the same initial weights."""

    def __init__(self, cfg, batch: int, steps: int):
        super().__init__(cfg, batch)
        self.items = iter(yardstick.item_loader(cfg.dataset.n, cfg.dataset.lam, batch, steps, cfg.seed))

    def step(self) -> dict:
        r, c = self.run, self.cfg
        x, y = next(self.items)
        return yardstick.plain_train_step(
            r.model,
            r.diffusion,
            r.strategy,
            r.optimizer,
            x.to(self.device),
            y.to(self.device),
            c.mining.weight,
            c.train.grad_clip,
            r.generator,
        )


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def agreement(cfg, batch: int, device: torch.device) -> dict:
    """One training step of product and yardstick from the same weights, data, levels and noise:
    relative differences of the losses and of the gradients (float32)."""
    product, plain = Trainer(cfg, batch).run, Trainer(cfg, batch).run
    problems = spd_batch(cfg.dataset.n, batch, cfg.dataset.lam, torch.Generator(device).manual_seed(1))
    a = train_step(
        product.model, product.diffusion, product.strategy, product.optimizer, problems, cfg, product.generator
    )
    b = yardstick.plain_train_step(
        plain.model,
        plain.diffusion,
        plain.strategy,
        plain.optimizer,
        problems.x,
        problems.y,
        cfg.mining.weight,
        cfg.train.grad_clip,
        plain.generator,
    )
    out = {
        f"{k}_rel_diff": rel_diff(a[k].detach(), b[k].detach())
        for k in ("loss/mse", "loss/energy", "loss/total")
        if k in b
    }
    grads = [(p.grad, q.grad) for p, q in zip(product.model.parameters(), plain.model.parameters())]
    out["grad_rel_diff"] = max(rel_diff(g, h) for g, h in grads)
    return out


# ================================================================ the records


class Absent(enum.Enum):
    """A key a record's JSON leaves out, unlike None, which is written as null: a figure that could
    not be measured here (a peak memory without /proc)."""

    KEY = "absent"


ABSENT = Absent.KEY


class Record:
    """What the three kinds of record share: the limits they are set against once the run's matmul
    rates are known, the case a bf16-mixed record's fp32 twin shares, and their JSON."""

    def against_limits(self, matmul_rate: float, memory_mib: float | None):
        """The record with its figures over the matmul rate of its precision and the device's memory."""
        changes = {"matmul_flops_per_s": matmul_rate, "fraction_of_matmul": self.flops_per_s / matmul_rate}
        if (b := getattr(self, "breakdown", ABSENT)) is not ABSENT:
            changes["breakdown"] = replace(b, matmul_fraction_of_matmul_rate=b.matmul_flops_per_s_in_step / matmul_rate)
        peak = getattr(self, "peak_mem_mib", ABSENT)
        if peak is not ABSENT and peak is not None and memory_mib:
            changes["fraction_of_memory"] = peak / memory_mib
        return replace(self, **changes)

    def case(self) -> tuple:
        """What a record and its twin in the other precision have in common."""
        return (self.kind, self.strategy, self.batch, getattr(self, "compile", None), getattr(self, "graph", None))

    def as_json(self) -> dict:
        return asdict(self, dict_factory=lambda items: {k: v for k, v in items if v is not ABSENT})


@dataclass(frozen=True, kw_only=True)
class Breakdown:
    """Where a CPU training step's time goes (`breakdown`): ms per step by kind of op, the profiled
    step's wall-clock, its matmuls' own rate and, once the limit is known, that rate's share of it."""

    ms_per_step: dict[str, float]
    profiled_step_ms: float
    matmul_flops_per_s_in_step: float
    matmul_fraction_of_matmul_rate: float | Absent = ABSENT


# The fields' order is the JSON's key order (results/bench/*.json); ABSENT ones are left out.
@dataclass(frozen=True, kw_only=True)
class TrainRecord(Record):
    """One training step's figures: the product's run (its peak memory, and against the yardstick
    for adversarial at the largest batch), or one of its variants (compile, graph, precision)."""

    kind: str = field(default="train", init=False)
    strategy: str
    batch: int
    compile: bool
    graph: bool
    precision: str
    flops_per_step: int
    peak_mem_mib: float | None | Absent = ABSENT  # the product's run only
    yardstick_flops_per_step: int | Absent = ABSENT
    yardstick_peak_mem_mib: float | None | Absent = ABSENT
    steps_per_s: float
    step_ms: float
    flops_per_s: float
    yardstick_steps_per_s: float | Absent = ABSENT  # the cases timed beside the yardstick
    speedup_vs_yardstick: float | Absent = ABSENT
    matmul_flops_per_s_same_rounds: float | Absent = ABSENT
    fraction_of_matmul_same_rounds: float | Absent = ABSENT
    breakdown: Breakdown | Absent = ABSENT  # the product's run beside the yardstick, on a CPU
    matmul_flops_per_s: float | Absent = ABSENT  # these from against_limits
    fraction_of_matmul: float | Absent = ABSENT
    fraction_of_memory: float | Absent = ABSENT
    speedup_vs_fp32: float | Absent = ABSENT  # a bf16-mixed record with an fp32 twin

    @property
    def mode(self) -> str:
        return mode_name(self.graph, self.compile, self.precision)


@dataclass(frozen=True, kw_only=True)
class SamplerRecord(Record):
    """The sampler's figures, in the product's precision (against the yardstick too) or the other."""

    kind: str = field(default="sampler", init=False)
    strategy: str = field(default="sampler", init=False)
    batch: int
    inner_steps: int
    precision: str
    matrices_per_s: float
    calls_per_s: float
    flops_per_call: int
    flops_per_s: float
    peak_mem_mib: float | None | Absent = ABSENT  # the product's precision only
    yardstick_matrices_per_s: float | Absent = ABSENT
    yardstick_flops_per_call: int | Absent = ABSENT
    speedup_vs_yardstick: float | Absent = ABSENT
    matmul_flops_per_s: float | Absent = ABSENT
    fraction_of_matmul: float | Absent = ABSENT
    fraction_of_memory: float | Absent = ABSENT
    speedup_vs_fp32: float | Absent = ABSENT


@dataclass(frozen=True, kw_only=True)
class DataRecord(Record):
    """Data generation, batched, against the yardstick's one item at a time."""

    # Drawn in float32 whatever hardware.precision says: set against the fp32 limit (not a JSON key).
    precision: ClassVar[str] = "32"
    kind: str = field(default="data", init=False)
    strategy: str = field(default="data", init=False)
    batch: int
    matrices_per_s: float
    flops_per_call: int
    flops_per_s: float
    yardstick_matrices_per_s: float
    speedup_vs_yardstick: float
    matmul_flops_per_s: float | Absent = ABSENT
    fraction_of_matmul: float | Absent = ABSENT


def with_precision_ratios(records: list[Record]) -> list[Record]:
    """Each bf16-mixed record with its speed over its fp32 twin's (the same case, mode and batch,
    timed in the same rounds): `speedup_vs_fp32`."""
    fp32 = {r.case(): r for r in records if r.precision == "32"}
    return [
        replace(r, speedup_vs_fp32=r.flops_per_s / fp32[r.case()].flops_per_s)
        if r.precision == BF16 and r.case() in fp32
        else r
        for r in records
    ]


# ================================================================ the run


@dataclass(frozen=True)
class Variant:
    """The product's step another way: hardware.compile, hardware.cuda_graph, hardware.precision."""

    compile: bool
    graph: bool
    precision: str

    def trainer(self, cfg, batch: int) -> Trainer:
        cfg = with_precision(with_compile(cfg, self.compile), self.precision)
        return (GraphedTrainer if self.graph else Trainer)(cfg, batch)


def variants(cfg, name: str, gpu: bool, graphs: bool) -> dict[str, Variant]:
    """The step with hardware.compile the other way (on a GPU for every strategy), on a GPU as CUDA
    graphs (hardware.cuda_graph), compiled as configured and the other way, and in the other
    precision (every strategy; adversarial also compiled the other way)."""
    on, prec, other = compiles(cfg), precision(cfg), other_precision(cfg)
    out = {"flipped": Variant(not on, False, prec)} if name == "adversarial" or gpu else {}
    if gpu and graphs:
        out |= {"graphed": Variant(on, True, prec), "graphed_flipped": Variant(not on, True, prec)}
    out["precision"] = Variant(on, False, other)
    if name == "adversarial":
        out["precision_flipped"] = Variant(not on, False, other)
    if gpu and graphs:
        out["graphed_precision"] = Variant(on, True, other)
    return out


@dataclass(frozen=True)
class Bench:
    """One benchmark run's plan, device, meter and memory gauge."""

    plan: Plan
    device: torch.device
    meter: Meter
    memory: PeakMemory
    graphs: bool  # on a GPU, time the graphed steps too

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def gpu_calls(self) -> int:
        return 10 if self.gpu else 1  # a GPU is timed over blocks, never per call

    def train_case(self, cfg, name: str, batch: int) -> list[TrainRecord]:
        """The product's step of one strategy at one batch size and its variants, timed in the same
        rounds; adversarial at the largest batch also beside the yardstick and the matmul limits."""
        plan, meter, memory = self.plan, self.meter, self.memory
        flops = count_flops(Trainer(with_compile(cfg, False), batch).step)
        memory.reset()
        runs = {"product": Trainer(cfg, batch)}
        runs["product"].warm()  # first-call allocations, thread pools, compiling
        product = {"peak_mem_mib": memory.peak_mib()}
        rounds, beside_yardstick = plan.calls[batch], name == "adversarial" and batch == max(plan.batches)
        if beside_yardstick:
            memory.reset()
            # Every call of every round draws a batch, plus the warm-up and the FLOP count.
            runs["plain"] = PlainTrainer(cfg, batch, steps=plan.yardstick_calls * self.gpu_calls + 2)
            runs["plain"].step()
            product["yardstick_flops_per_step"] = count_flops(runs["plain"].step)
            product["yardstick_peak_mem_mib"] = memory.peak_mib()
            rounds = plan.yardstick_calls
        fns = {k: run.step for k, run in runs.items()}
        if beside_yardstick:  # the limits, timed in the same rounds as the steps
            fns |= {"matmul": meter.matmul, "matmul_bf16": meter.matmul_bf16}
        ways = variants(cfg, name, self.gpu, self.graphs)
        for key, way in ways.items():
            runs[key] = way.trainer(cfg, batch)
            runs[key].warm()
            fns[key] = runs[key].step
        t = meter.interleaved(fns, rounds, self.gpu_calls)
        if beside_yardstick and self.device.type == "cpu":
            product["breakdown"] = Breakdown(**breakdown(runs["product"].step, plan.profile_calls, flops))
        ways = {"product": Variant(compiles(cfg), False, precision(cfg))} | ways
        return [
            TrainRecord(
                strategy=name,
                batch=batch,
                compile=way.compile,
                graph=way.graph,
                precision=way.precision,
                flops_per_step=flops,
                **(product if key == "product" else {}),
                **timing(t, key, flops, meter.matmul_flops, way.precision),
            )
            for key, way in ways.items()
        ]

    def sampler_case(self, cfg) -> tuple[list[SamplerRecord], dict]:
        """The sampler, product and yardstick and the product in the other precision in turn; and
        how far the three samples lie apart."""
        device, meter, memory = self.device, self.meter, self.memory
        sb = self.plan.sampler_batch or cfg.eval.batch_size
        trainer = Trainer(cfg, sb)
        model, diffusion = trainer.model, trainer.diffusion
        x = spd_batch(cfg.dataset.n, sb, cfg.dataset.lam, torch.Generator(device).manual_seed(2)).x
        steps, scale = cfg.sampler.inner_steps, cfg.sampler.step_scale
        gen = lambda: torch.Generator(device).manual_seed(3)  # noqa: E731
        sample = lambda: diffusion.sample(model, x, steps, gen(), scale)  # noqa: E731
        plain_sample = lambda: yardstick.plain_sample(model, diffusion, x, steps, gen(), scale)  # noqa: E731
        # The same weights (the same seed builds them) in the other precision.
        other_model = Trainer(with_precision(cfg, other_precision(cfg)), sb).model
        other_sample = lambda: diffusion.sample(other_model, x, steps, gen(), scale)  # noqa: E731
        memory.reset()
        sample()
        flops = count_flops(sample)
        peak = memory.peak_mib()
        plain_sample()
        plain_flops = count_flops(plain_sample)
        other_sample()
        t = meter.interleaved(
            {"product": sample, "plain": plain_sample, "precision": other_sample}, self.plan.sampler_calls
        )
        checks = {
            "sampler_max_abs_diff": (sample() - plain_sample()).abs().max().item(),
            "sampler_bf16_vs_fp32_rms_diff": (sample() - other_sample()).square().mean().sqrt().item(),
        }
        product = {
            "peak_mem_mib": peak,
            "yardstick_matrices_per_s": sb / t["plain"],
            "yardstick_flops_per_call": plain_flops,
            "speedup_vs_yardstick": t["plain"] / t["product"],
        }
        records = [
            SamplerRecord(
                batch=sb,
                inner_steps=steps,
                precision=p,
                matrices_per_s=sb / t[key],
                calls_per_s=1 / t[key],
                flops_per_call=flops,
                flops_per_s=flops / t[key],
                **(product if key == "product" else {}),
            )
            for key, p in (("product", precision(cfg)), ("precision", other_precision(cfg)))
        ]
        return records, checks

    def data_case(self, cfg) -> DataRecord:
        """Data generation, batched against one item at a time, at the largest batch."""
        device, db, calls = self.device, max(self.plan.batches), self.plan.sampler_calls
        g = torch.Generator(device).manual_seed(4)
        batched = lambda: spd_batch(cfg.dataset.n, db, cfg.dataset.lam, g)  # noqa: E731
        items = iter(yardstick.item_loader(cfg.dataset.n, cfg.dataset.lam, db, calls + 2))
        per_item = lambda: [v.to(device) for v in next(items)]  # noqa: E731
        batched(), per_item()
        flops = count_flops(batched)
        t = self.meter.interleaved({"product": batched, "plain": per_item}, calls)
        return DataRecord(
            batch=db,
            matrices_per_s=db / t["product"],
            flops_per_call=flops,
            flops_per_s=flops / t["product"],
            yardstick_matrices_per_s=db / t["plain"],
            speedup_vs_yardstick=t["plain"] / t["product"],
        )


def timing(t: dict[str, float], key: str, flops: int, matmul_flops: int, precision: str) -> dict:
    """A training record's rates from the seconds per call of its rounds (`t`): its own, against the
    yardstick and against the matmul of its precision where those were timed beside it."""
    out = {"steps_per_s": 1 / t[key], "step_ms": 1e3 * t[key], "flops_per_s": flops / t[key]}
    if "plain" in t:
        out |= {"yardstick_steps_per_s": 1 / t["plain"], "speedup_vs_yardstick": t["plain"] / t[key]}
    if "matmul" in t:
        same = matmul_flops / t["matmul_bf16" if precision == BF16 else "matmul"]
        out |= {"matmul_flops_per_s_same_rounds": same, "fraction_of_matmul_same_rounds": out["flops_per_s"] / same}
    return out


def run(plan: Plan, device: torch.device, log=print, graphs: bool = True) -> dict:
    base = compose_cfg(device.type, "adversarial", plan.overrides)
    configure_backend(base, device)
    # A GPU needs a larger product than a CPU to reach its rate.
    meter = Meter(device, plan.matmul_n if device.type == "cpu" else max(plan.matmul_n, 8192))
    bench = Bench(plan, device, meter, PeakMemory(device), graphs)
    load_start, rss_start = os.getloadavg(), bench.memory.current_mib()
    meter.sample_matmul()
    records, checks = [], {}
    for name in STRATEGIES:
        cfg = compose_cfg(device.type, name, plan.overrides)
        for batch in plan.batches:
            timed = bench.train_case(cfg, name, batch)
            records += timed
            log(
                f"train {name:11s} batch {batch:5d}: "
                + ", ".join(f"{r.mode} {r.steps_per_s:.2f}" for r in timed)
                + " steps/s"
            )
            meter.sample_matmul()
        if name == "adversarial":
            checks["train"] = agreement(cfg, min(plan.batches), device)
            checks["train_bf16_vs_fp32"] = precision_agreement(cfg, min(plan.batches), device)
    sampled, checks_of_sampler = bench.sampler_case(base)
    checks |= checks_of_sampler
    for r in sampled:
        log(f"sampler batch {r.batch} ({r.precision}): {r.matrices_per_s:.0f} matrices/s")
    records += sampled
    meter.sample_matmul()
    records.append(bench.data_case(base))
    meter.sample_matmul()

    memory_mib = bench.memory.total_mib()
    records = with_precision_ratios([r.against_limits(meter.rate_of(r.precision), memory_mib) for r in records])
    return result_of(records, checks, base, meter, device, plan, (load_start, rss_start))


def result_of(records: list[Record], checks: dict, cfg, meter: Meter, device, plan: Plan, start: tuple) -> dict:
    """The run's JSON: the machine, the config, the matmul limit, the records, the checks, the targets."""
    (load_start, rss_start), records = start, [r.as_json() for r in records]
    return {
        "machine": machine(device)
        | {"load_avg_start": load_start, "load_avg_end": os.getloadavg(), "memory_at_start_mib": rss_start},
        "config": {
            "n": cfg.dataset.n,
            "hidden": cfg.model.hidden,
            "diffusion_steps": cfg.diffusion.steps,
            "mining_steps": cfg.mining.steps,
            "sampler_inner_steps": cfg.sampler.inner_steps,
            "overrides": list(plan.overrides),
        },
        "matmul": {
            "n": meter.matmul_n,
            "flops_per_s": meter.matmul_rate,
            "samples": meter.matmul_rates,
            "bf16_flops_per_s": meter.bf16_matmul_rate,
            "bf16_samples": meter.bf16_matmul_rates,
        },
        "records": records,
        "agreement": checks,
        "targets": targets(records, device),
    }


def precision_agreement(cfg, batch: int, device: torch.device) -> dict:
    """One training step in fp32 and in bf16-mixed from the same weights, data, levels and noise:
    relative differences of the losses and the largest of the gradients (what bf16 rounding moves)."""
    a_run, b_run = (Trainer(with_precision(cfg, p), batch).run for p in ("32", BF16))
    problems = spd_batch(cfg.dataset.n, batch, cfg.dataset.lam, torch.Generator(device).manual_seed(1))
    a, b = (
        train_step(r.model, r.diffusion, r.strategy, r.optimizer, problems, r.cfg, r.generator) for r in (a_run, b_run)
    )
    out = {
        f"{k}_rel_diff": rel_diff(b[k].detach(), a[k].detach())
        for k in ("loss/mse", "loss/energy", "loss/total")
        if k in a
    }
    out["grad_rel_diff"] = max(
        rel_diff(q.grad, p.grad) for p, q in zip(a_run.model.parameters(), b_run.model.parameters())
    )
    return out


def machine(device: torch.device) -> dict:
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ},
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }
    if device.type == "cuda":
        # With hardware.tf32 the training's matmuls and the limit's run in TF32 alike.
        info |= {"gpu": torch.cuda.get_device_name(device), "tf32": torch.backends.cuda.matmul.allow_tf32}
    return info


def mode_name(graph: bool | None, compiled: bool | None, precision: str | None) -> str:
    """How a training step ran: eager, compiled, graphed or graphed+compiled, each +bf16 in bf16-mixed."""
    parts = (["graphed"] if graph else []) + (["compiled"] if compiled else [])
    return "+".join(parts or ["eager"]) + ("+bf16" if precision == BF16 else "")


def mode(record: dict) -> str:
    """mode_name of a record as JSON (a sampler's or the data's: no compile or graph key)."""
    return mode_name(record.get("graph"), record.get("compile"), record.get("precision"))


# Issue 11's targets on a GPU (batch 2048, steps/s or matrices/s); the bar is the least it accepts.
GPU_TARGETS = {"adversarial": (1000.0, 500.0), "none": (1500.0, None)}
SAMPLER_TARGET_GPU = 50_000.0


def targets(records: list[dict], device: torch.device) -> list[dict]:
    """Issue 6's targets on a CPU and issue 11's on a GPU, each with the measured figure."""
    train = [r for r in records if r["kind"] == "train"]
    batch = max(r["batch"] for r in train)
    sampler = next(r for r in records if r["kind"] == "sampler")
    out = []
    if device.type == "cuda":
        for name, (target, bar) in GPU_TARGETS.items():
            for r in sorted((r for r in train if r["strategy"] == name and r["batch"] == batch), key=mode):
                bar_note = f", the bar {bar:g}" if bar else ""
                out.append(
                    {
                        "name": f"training steps/s ({name}, batch {batch}, {mode(r)}{bar_note})",
                        "value": r["steps_per_s"],
                        "target": target,
                        "unit": "steps/s",
                    }
                )
        out.append(
            {
                "name": f"sampler matrices/s (batch {sampler['batch']})",
                "value": sampler["matrices_per_s"],
                "target": SAMPLER_TARGET_GPU,
                "unit": "matrices/s",
            }
        )
    # Issue 6's targets are the product's own precision's (fp32 unless the overrides say otherwise).
    adversarial = [
        r
        for r in train
        if r["strategy"] == "adversarial" and r["batch"] == batch and r.get("precision") == sampler.get("precision")
    ]
    for r in sorted(adversarial, key=mode):
        case = f"adversarial, batch {batch}, {mode(r)}"
        if device.type == "cpu":
            out.append(
                {
                    "name": f"training FLOP/s / matmul rate of the run ({case})",
                    "value": r["fraction_of_matmul"],
                    "target": 0.70,
                    "unit": "fraction",
                }
            )
            out.append(
                {
                    "name": f"training FLOP/s / matmul rate timed in the same rounds ({case})",
                    "value": r["fraction_of_matmul_same_rounds"],
                    "target": 0.70,
                    "unit": "fraction",
                }
            )
        out.append(
            {
                "name": f"training speed vs yardstick ({case})",
                "value": r["speedup_vs_yardstick"],
                "target": 1.3,
                "unit": "x",
            }
        )
    out.append(
        {"name": "sampler speed vs yardstick", "value": sampler["speedup_vs_yardstick"], "target": 1.3, "unit": "x"}
    )
    # Issue 20's: bf16-mixed over fp32, the largest batch ≥ 2×, the smallest ≥ 1.5×, the sampler ≥ 2×.
    smallest = min(r["batch"] for r in train)
    for r in sorted(
        (
            r
            for r in train
            if "speedup_vs_fp32" in r and r["strategy"] == "adversarial" and r["batch"] in (smallest, batch)
        ),
        key=lambda r: (-r["batch"], mode(r)),
    ):
        out.append(
            {
                "name": f"bf16-mixed / fp32 speed (adversarial, batch {r['batch']}, {mode(r)})",
                "value": r["speedup_vs_fp32"],
                "target": 2.0 if r["batch"] == batch else 1.5,
                "unit": "x",
            }
        )
    for r in records:
        if r["kind"] == "sampler" and "speedup_vs_fp32" in r:
            out.append(
                {
                    "name": f"bf16-mixed / fp32 speed (sampler, batch {r['batch']})",
                    "value": r["speedup_vs_fp32"],
                    "target": 2.0,
                    "unit": "x",
                }
            )
    for t in out:
        t["met"] = t["value"] >= t["target"]
    return out


# ================================================================ output


def print_report(result: dict, txt: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    m, rate = result["machine"], result["matmul"]["flops_per_s"]
    bf16_rate = result["matmul"].get("bf16_flops_per_s")
    omp = "".join(f" {k}={v}" for k, v in m["omp"].items())
    title = (
        f"{m.get('gpu', m['cpu'])} · {m['threads']} threads{omp} · "
        f"torch {m['torch']} · {'TF32' if m.get('tf32') else 'fp32'} "
        f"matmul {rate / 1e9:.0f} GFLOP/s"
        + (f", bf16 {bf16_rate / 1e9:.0f}" if bf16_rate else "")
        + f" · load {m['load_avg_start'][0]:.1f}→{m['load_avg_end'][0]:.1f}"
    )
    table = Table(title=title)
    for col in (
        "case",
        "batch",
        "mode",
        "steps or matrices/s",
        "ms/call",
        "GFLOP/call",
        "GFLOP/s",
        "% of matmul",
        "× yardstick",
        "× fp32",
        "peak MiB",
    ):
        table.add_column(col, justify="right")
    for r in result["records"]:
        per_call = r.get("flops_per_step", r.get("flops_per_call"))
        if r["kind"] == "train":
            case, rate_s, ms = f"train {r['strategy']}", f"{r['steps_per_s']:.2f}", r["step_ms"]
        else:
            case, rate_s, ms = r["kind"], f"{r['matrices_per_s']:.0f}", 1e3 * r["batch"] / r["matrices_per_s"]
        speed = f"{r['speedup_vs_yardstick']:.2f}" if "speedup_vs_yardstick" in r else ""
        vs_fp32 = f"{r['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in r else ""
        peak = f"{r['peak_mem_mib']:.0f}" if r.get("peak_mem_mib") is not None else ""
        how = mode(r) if r["kind"] == "train" else "bf16" if r.get("precision") == BF16 else ""
        table.add_row(
            case,
            str(r["batch"]),
            how,
            rate_s,
            f"{ms:.1f}",
            f"{per_call / 1e9:.3g}",
            f"{r['flops_per_s'] / 1e9:.1f}",
            f"{100 * r['fraction_of_matmul']:.1f}",
            speed,
            vs_fp32,
            peak,
        )
    console = Console(width=None if sys.stdout.isatty() else 150, record=txt is not None)
    console.print(table)
    for t in result["targets"]:
        value = f"{100 * t['value']:.1f} %" if t["unit"] == "fraction" else f"{t['value']:.2f} {t['unit']}"
        target = f"{100 * t['target']:.0f} %" if t["unit"] == "fraction" else f"{t['target']:g} {t['unit']}"
        mark = "[green]met[/green]" if t["met"] else "[red]not met[/red]"
        console.print(f"{t['name']}: {value} (target ≥ {target}) {mark}")
    for r in result["records"]:
        if "breakdown" in r:
            b = r["breakdown"]
            parts = ", ".join(f"{k} {v:.1f}" for k, v in b["ms_per_step"].items())
            console.print(
                f"where a step goes (train {r['strategy']}, batch {r['batch']}, profiled, ms): {parts}; "
                f"its matmuls alone run at {b['matmul_flops_per_s_in_step'] / 1e9:.0f} GFLOP/s, "
                f"{100 * b['matmul_fraction_of_matmul_rate']:.0f} % of the limit"
            )
    ratios = [
        f"{r['strategy']} {r['batch']}{'' if r['kind'] == 'sampler' else ' ' + mode(r).removesuffix('+bf16')} "
        f"{r['speedup_vs_fp32']:.2f}×"
        for r in result["records"]
        if "speedup_vs_fp32" in r
    ]
    if ratios:
        console.print("bf16-mixed / fp32 speed, timed in the same rounds: " + ", ".join(ratios))
    where = "the allocator's peak" if m["device"] == "cuda" else "the process's peak resident set"
    console.print(
        f"peak MiB: {where} during the case ({m['memory_at_start_mib']:.0f} MiB at start); "
        "% of matmul: FLOPs counted by torch.utils.flop_counter (matmuls only) per second, "
        "over the same run's matmul rate (a bf16 row: over the bf16 matmul rate)"
    )
    a = result["agreement"]
    console.print(
        "agreement with the yardstick (float32, one step): "
        + ", ".join(f"{k} {v:.1e}" for k, v in a.get("train", {}).items())
        + f"; sampler max |Δ| {a['sampler_max_abs_diff']:.1e}"
    )
    if "train_bf16_vs_fp32" in a:
        console.print(
            "bf16-mixed against fp32 (one step, the same weights and data): "
            + ", ".join(f"{k} {v:.1e}" for k, v in a["train_bf16_vs_fp32"].items())
            + f"; sampler RMS |Δ| {a['sampler_bf16_vs_fp32_rms_diff']:.1e}"
        )
    if txt is not None:
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text(console.export_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer calls, sampler at batch 256 (~30 s on 2 cores)")
    mode.add_argument("--tiny", action="store_true", help="a toy model (n=4, hidden 32): seconds, for tests")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--txt", type=Path, help="write the printed report here too (e.g. results/bench/gpu.txt)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is visible")
    parser.add_argument(
        "--no-graph", action="store_true", help="on a GPU, skip the graphed steps (hardware.cuda_graph)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the product's config")
    args = parser.parse_args(argv)

    plan = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
    plan = Plan(**{**plan.__dict__, "overrides": (*plan.overrides, *args.overrides)})
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(plan, device, log=lambda s: print(s, file=sys.stderr), graphs=not args.no_graph)
    if args.json:  # first: minutes of measurements survive a failure in the report below
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.json)
    print_report(result, args.txt)
    return result


if __name__ == "__main__":
    main()
