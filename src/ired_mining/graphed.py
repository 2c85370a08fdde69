"""The steady-state training step as a CUDA graph (hardware.cuda_graph).

On a GPU one eager step of this small model is bound by Python and kernel launches, not by
arithmetic: recording the whole step once and replaying it removes both. What a replay may touch
is fixed at recording time, so the step is written against tensors that live as long as the run:

- `StaticStep` is one training step (data, levels and noise, mining, both loss terms, backward,
  clipping, Adam), the EMA update, the running sums of the logged values, the step counter and the
  step of the first non-finite loss, all read and written in place on the device. It is plain
  eager code: on a CPU it simply runs, step after step, which is how the tests hold it against the
  ordinary loop of train.py.
- `CudaGraphs` records `StaticStep.step` and `StaticStep.ema_update` as two CUDA graphs after a few
  eager warm-up steps and replays them; the EMA graph runs every `ema.every` steps.
- `StepRunner.advance` runs the steps up to the loop's next log, evaluation or checkpoint step, so
  that Python is visited only there, and hands the running sums back to the loop.

The random numbers come from the run's own generator, registered with the step's graph: each replay
advances its offset as the eager step would, so the same seed gives the same stream, a checkpoint's
generator state is the one the graph goes on from, and a resumed run ends where an uninterrupted one
would. The data is drawn inside the graph by a capture-safe route (data.inverse_by_triangular_solve)
or, with hardware.cuda_graph_data=false, drawn eagerly into static buffers before each replay. That
choice is config, not a try/except around the capture: a failed capture leaves the generator unusable
for the rest of the process. `python -m ired_mining.graphed` asks a GPU, in a process of its own,
whether it can record the data route (scripts/gpu_check.sh sets the switch from its answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from ired_mining.data import Problems, spd_batch

log = logging.getLogger("ired")

WARMUP_STEPS = 3  # eager steps before recording: Adam's state, cuBLAS handles and the sums exist by then
UNTIMED = ("mine_ms",)  # host-side timings: a replay would repeat the value recorded at capture


def enabled(cfg: DictConfig) -> bool:
    return bool(cfg.hardware.cuda_graph)


def data_in_graph(cfg: DictConfig) -> bool:
    return bool(cfg.hardware.cuda_graph_data)


def next_visit(step: int, cfg: DictConfig) -> int:
    """The first step after `step` at which the loop logs, evaluates or checkpoints (or ends)."""
    t = cfg.train
    periods = [t.log_every, cfg.checkpoint.every] + ([t.eval_every] if t.eval_every else [])
    return min([t.steps] + [(step // p + 1) * p for p in periods])


# ================================================================ the step over static buffers


@dataclass(frozen=True)
class StepParts:
    """What the graphed step reads and updates in place: a run's model, its EMA (AveragedModel),
    optimiser, diffusion, strategy, generator, config and device (train.Run holds them)."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    diffusion: object
    strategy: object
    generator: torch.Generator
    cfg: DictConfig
    device: torch.device


class StaticStep:
    """One training step, the EMA update and the loop's bookkeeping, in place on the device, from
    step `start` on. `train_step` is train.train_step, passed in so that this module does not import
    the loop's."""

    def __init__(self, parts: StepParts, train_step, data_in_graph: bool, start: int):
        c, device = parts.cfg, parts.device
        self.parts, self.train_step, self.data_in_graph = parts, train_step, data_in_graph
        self.x = torch.zeros(c.train.batch_size, c.dataset.n**2, device=device)
        self.y = torch.zeros_like(self.x)
        self.step_t = torch.tensor(start, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def draw(self) -> None:
        """The step's problems, drawn eagerly into the static buffers (data outside the graph)."""
        c = self.parts.cfg
        problems = spd_batch(c.dataset.n, c.train.batch_size, c.dataset.lam, self.parts.generator)
        self.x.copy_(problems.x)
        self.y.copy_(problems.y)

    def step(self) -> None:
        r, c = self.parts, self.parts.cfg
        if self.data_in_graph:
            problems = spd_batch(c.dataset.n, c.train.batch_size, c.dataset.lam, r.generator, capture_safe=True)
        else:
            problems = Problems(self.x, self.y)
        stats = self.train_step(r.model, r.diffusion, r.strategy, r.optimizer, problems, c, r.generator)
        self.step_t += 1
        bad = ~(torch.isfinite(stats["loss/total"]) & torch.isfinite(stats["grad_norm"]))
        self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), self.step_t, self.first_bad))
        for k, v in stats.items():
            if k in UNTIMED:
                continue
            if k not in self.sums:  # only in an eager step: a graph is recorded after warm-up
                self.sums[k] = torch.zeros_like(v)
            self.sums[k].add_(v.detach())

    def ema_update(self) -> None:
        """AveragedModel.update_parameters with the same arithmetic, written without its host-side
        branch on the update count (a copy on the first update, the run's avg_fn after)."""
        ema, model = self.parts.ema, self.parts.model
        n = ema.n_averaged
        with torch.no_grad():
            for p_avg, p in zip(ema.parameters(), model.parameters()):
                p_avg.copy_(torch.where(n == 0, p, ema.avg_fn(p_avg, p, n)))
            n.add_(1)

    # ------------------------------------------------------------ the loop's running sums

    def load_running(self, running) -> None:
        """Continue from the loop's sums: a resumed run's, or none after an evaluation reset them."""
        if running.count == 0:
            for v in self.sums.values():
                v.zero_()
        for k, v in running.sums.items():
            if k in UNTIMED:
                continue
            if k in self.sums:
                self.sums[k].copy_(v)
            else:
                self.sums[k] = v.detach().clone()
        self.count = running.count

    def store_running(self, running) -> None:
        running.sums = {k: v.clone() for k, v in self.sums.items()}
        running.count = self.count


# ================================================================ recording and replaying on CUDA


def make_capturable(optimizer: torch.optim.Optimizer, on: bool = True) -> None:
    """Adam with capturable=True keeps its step count on the device, so a replay advances it.
    The flag matters only while Python runs Adam (warm-up and recording); turned off after recording,
    so that a checkpoint does not carry it to a resume on a device that has no capturable Adam."""
    for group in optimizer.param_groups:
        group["capturable"] = on
        for p in group["params"] if on else ():
            state = optimizer.state.get(p, {})
            if "step" in state:
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


class CudaGraphs:
    """The step and the EMA update of a StaticStep as CUDA graphs, recorded after WARMUP_STEPS eager
    steps (on a side stream, as torch's capture recipe asks) and replayed from then on."""

    def __init__(self, static: StaticStep):
        if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            raise RuntimeError(
                f"hardware.cuda_graph needs torch ≥ 2.4 (graph-safe generators); this is {torch.__version__}"
            )
        self.static = static
        self.device = static.parts.device
        self.side = torch.cuda.Stream(self.device)
        self.warmup_left = WARMUP_STEPS
        self.step_graph: torch.cuda.CUDAGraph | None = None
        self.ema_graph: torch.cuda.CUDAGraph | None = None
        make_capturable(static.parts.optimizer)

    def _eager(self, fn) -> None:
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.side):
            fn()
        torch.cuda.current_stream(self.device).wait_stream(self.side)

    def step(self) -> None:
        if self.step_graph is None and self.warmup_left > 0:
            self.warmup_left -= 1
            self._eager(self.static.step)
            return
        if self.step_graph is None:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.static.parts.generator)
            with torch.cuda.graph(graph):  # records only: nothing runs, the generator does not move
                self.static.step()
            self.step_graph = graph
            make_capturable(self.static.parts.optimizer, on=False)
            log.info("recorded the training step as a CUDA graph (hardware.cuda_graph)")
        self.step_graph.replay()

    def ema_update(self) -> None:
        if self.step_graph is None:  # still warming up
            self._eager(self.static.ema_update)
            return
        if self.ema_graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # its own memory pool: the two replay in no fixed order
                self.static.ema_update()
            self.ema_graph = graph
        self.ema_graph.replay()


# ================================================================ what the loop calls


class StepRunner:
    """The loop's steps between two visits (hardware.cuda_graph): graphed on CUDA, eager elsewhere."""

    def __init__(self, parts: StepParts, train_step, start: int):
        self.static = StaticStep(parts, train_step, data_in_graph(parts.cfg), start)
        self.graphs = CudaGraphs(self.static) if parts.device.type == "cuda" else None
        if self.graphs is None:
            log.info("hardware.cuda_graph on %s: the static-buffer step runs eagerly (no CUDA graph)", parts.device)

    def advance(self, running, step: int, until: int) -> torch.Tensor:
        """Steps `step` + 1 … `until`, EMA updates on their schedule, the loop's running sums
        (`running`, train.Running) continued and handed back; returns the (device) step of the first
        non-finite loss or gradient, −1 if none. The loop's step is then `until`."""
        s, every = self.static, self.static.parts.cfg.ema.every
        s.load_running(running)
        do_step = self.graphs.step if self.graphs else s.step
        do_ema = self.graphs.ema_update if self.graphs else s.ema_update
        for k in range(step + 1, until + 1):
            if not s.data_in_graph:
                s.draw()
            do_step()
            if k % every == 0:
                do_ema()
        s.count += until - step
        s.store_running(running)
        return s.first_bad


# ================================================================ can this GPU record the data route?


def probe_data_route(n: int = 20, batch: int = 64) -> None:
    """Record spd_batch's capture-safe route as a CUDA graph and check that each replay draws the
    matrices the next eager draw would; raises if not. Run it in a process of its own
    (`python -m ired_mining.graphed`): a failed capture leaves the generator unusable after it."""
    g = torch.Generator("cuda").manual_seed(7)
    ref = torch.Generator("cuda").manual_seed(7)
    spd_batch(n, batch, 0.5, g, capture_safe=True)  # warm-up: cuSOLVER and cuBLAS handles
    spd_batch(n, batch, 0.5, ref, capture_safe=True)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(g)
    with torch.cuda.graph(graph):
        out = spd_batch(n, batch, 0.5, g, capture_safe=True)
    for _ in range(2):
        graph.replay()
        want = spd_batch(n, batch, 0.5, ref, capture_safe=True)
        if not (torch.equal(out.x, want.x) and torch.equal(out.y, want.y)):
            raise RuntimeError("a replay of the data route drew other matrices than the eager draw")


if __name__ == "__main__":
    import sys

    try:
        probe_data_route()
    except Exception as err:  # noqa: BLE001  any failure means: draw the data outside the graph
        print(f"the data route cannot be recorded here: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    print("the data route records and replays as a CUDA graph: hardware.cuda_graph_data=true works here")
