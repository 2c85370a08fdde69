"""ired-train: train IRED on matrix inversion with a chosen negative-mining strategy.

    ired-train                                   # the method's defaults (ired.md)
    ired-train experiment=pilot                  # a few minutes on a laptop CPU
    ired-train mining=random optim.lr=3e-4 dataset.n=10
    ired-train -m mining=none,random,adversarial seed=0,1,2
    ired-train hydra.run.dir=outputs/my_run      # run again in the same dir to resume it

A run directory holds the composed config (.hydra/), train.log, metrics.jsonl (one line per
evaluation), metrics.json (the final state: finished or failed) and checkpoints/; ired_mining.rundir
owns that layout.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel

from ired_mining import failpoints, interrupt, preemption, runlock
from ired_mining import graphed as graphed_steps
from ired_mining.backend import configure_backend, pick_device
from ired_mining.callbacks import last_unfinished
from ired_mining.checkpoint import (
    CheckpointError,
    WriteFailed,
    fingerprint,
    latest_checkpoint,
    list_checkpoints,
    remove_stale_temporaries,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from ired_mining.checks import ConfigError, check_ranges
from ired_mining.compose import check_command_line, planned_run_dir
from ired_mining.data import spd_batch
from ired_mining.diffusion import Diffusion, build_diffusion
from ired_mining.evaluate import eval_sets, evaluate, print_summary
from ired_mining.memory import BatchTooLarge, check_fits, naming_the_batch
from ired_mining.mining import MiningBatch, build_strategy, energy_loss
from ired_mining.model import BoundEnergy, build_model, is_regressor, precision_of
from ired_mining.rundir import FAILED, FINISHED, LATER_KEYS, Environment, RunDir, backfill
from ired_mining.runlock import RunLocked
from ired_mining.schema import options_of
from ired_mining.trackers import Trackers, open_trackers

log = logging.getLogger("ired")


class TrainingDiverged(RuntimeError):
    """The loss or gradient became non-finite; the message names the step."""


class RunDirTaken(ValueError):
    """The run directory holds a run of other settings; the message names the settings that differ.
    Nothing of that run is written: not its metrics.json, not its .hydra/ record."""


# ================================================================ building blocks


def ema_avg_fn(every: int, warmup: int, power: float, max_decay: float):
    """An averaging function for AveragedModel: a copy during warm-up, then the decay
    1 − (1 + k)^(−power) capped at max_decay, k the optimiser steps since the warm-up.

    AveragedModel counts its updates; one update every `every` steps makes the step count
    (updates + 1) · every. Kept as tensor arithmetic so a GPU never waits on the host.
    """

    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step = (num_averaged.to(averaged.dtype) + 1) * every
        decay = (1 - (1 + step - warmup).clamp(min=1) ** -power).clamp(max=max_decay)
        decay = torch.where(step <= warmup, torch.zeros_like(decay), decay)
        return averaged + (current - averaged) * (1 - decay)

    return avg


SHAPING_GROUPS = ("model", "diffusion", "dataset", "mining", "optim", "ema")
SHAPING_KEYS = ("seed", "train.batch_size", "train.grad_clip")


def compat_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint must agree with to be resumed: everything that shapes the run's
    trajectory (not its length, logging, evaluation or hardware)."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in SHAPING_GROUPS}
    for key, value in LATER_KEYS.items():  # at the value older runs used: as if absent, so they resume
        group, name = key.split(".")
        if group in parts and parts[group].get(name) == value:
            del parts[group][name]
    parts |= {"seed": cfg.seed, "batch_size": cfg.train.batch_size, "grad_clip": cfg.train.grad_clip}
    if cfg.optim.schedule != "constant":  # a schedule over train.steps: the length shapes the trajectory
        parts["steps"] = cfg.train.steps
    if (precision := precision_of(cfg)) != "32":  # only then: fp32 runs keep the fingerprints they had
        parts["precision"] = precision
    return fingerprint(parts)


def learning_rate(cfg: DictConfig, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based): optim.lr, or under the cosine schedule
    min_lr + (lr − min_lr)·(1 + cos(π·step/steps))/2. A function of the step alone, so a resumed run
    sets the same rates as an uninterrupted one."""
    o = cfg.optim
    if o.schedule == "constant":
        return o.lr
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * step / cfg.train.steps))


def flat_settings(cfg: DictConfig) -> dict[str, object]:
    """The run's settings as dotted keys (lists kept whole), without where it runs and who watches it
    (hardware, logger): those may change between attempts of one run."""
    flat: dict[str, object] = {}

    def walk(value, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        else:
            flat[key] = value

    for key in cfg:
        if key not in ("hardware", "logger", "hydra"):
            node = cfg._get_node(key)
            walk(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else cfg[key], str(key))
    return flat


def shapes_the_run(key: str) -> bool:
    """A setting a checkpoint's fingerprint covers (compat_fingerprint): another value is another run."""
    return key in SHAPING_KEYS or key.split(".")[0] in SHAPING_GROUPS


def differences(there: dict, here: dict, which=lambda key: True, most: int = 4) -> list[str]:
    """`key: VALUE here, VALUE there` for each setting (of those `which` picks) that differs."""
    keys = sorted(
        (k for k in set(there) | set(here) if which(k) and there.get(k, "—") != here.get(k, "—")),
        key=lambda k: (not k.endswith(".name"), k),
    )  # a strategy's name says more than its options
    lines = [f"{k} is {here.get(k, 'absent')} here, {there.get(k, 'absent')} there" for k in keys[:most]]
    return lines + ([f"{len(keys) - most} more"] if len(keys) > most else [])


@dataclass
class Running:
    """Sums of the logged quantities since the last evaluation, kept on the device."""

    sums: dict = field(default_factory=dict)
    count: int = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach()
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.count for k, v in self.sums.items()} if self.count else {}

    def reset(self) -> None:
        self.sums, self.count = {}, 0


# ================================================================ one training step


def loss_terms(
    energy: BoundEnergy,
    diffusion: Diffusion,
    y: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    eps_pair: torch.Tensor,
    negatives: torch.Tensor | None,
    weight: float,
):
    """L = L_mse + w·L_energy (ired.md §3, §4) and its logged parts, given y ↦ E(x, y, t) of the batch."""
    l_mse = diffusion.score_loss(energy, diffusion.noise(y, t, eps), eps).mean()
    stats = {"loss/mse": l_mse}
    if negatives is None:
        return l_mse, stats
    e_pos = energy.energy(diffusion.noise(y, t, eps_pair))
    e_neg = energy.energy(diffusion.noise(negatives, t, eps_pair))
    l_energy = energy_loss(e_pos, e_neg).mean()
    stats |= {
        "loss/energy": l_energy,
        "neg/gap": (e_neg - e_pos).mean(),
        "neg/dist": (negatives - y).square().mean(dim=-1).sqrt().mean(),
    }
    return l_mse + weight * l_energy, stats


@functools.cache
def compiled(fn):
    """`fn` through torch.compile, built once per process (hardware.compile): fused elementwise
    kernels, so fewer passes over memory on a CPU and fewer kernel launches on a GPU."""
    return torch.compile(fn)


def compiling(cfg: DictConfig) -> bool:
    return bool(cfg.hardware.compile)


def step_loss(
    model, diffusion: Diffusion, strategy, problems, cfg: DictConfig, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one training step and its logged parts: levels and noise drawn, negatives mined."""
    x, y = problems.x, problems.y
    b, device = x.shape[0], x.device
    t = torch.randint(0, diffusion.num_steps, (b,), device=device, generator=generator)
    eps = torch.randn(y.shape, device=device, generator=generator)
    eps_pair = torch.randn(y.shape, device=device, generator=generator)  # ε', shared by y⁺ and y⁻

    # y ↦ E(x, y, t) with x's half of the first layer computed once, for mining and both loss terms,
    # and the time conditioning computed for the T levels and looked up per sample.
    energy = model.bind_levels(x, model.conditioning(diffusion.levels), t)

    # The strategy's method taken from its class, so that one compiled function serves every
    # instance of the class (compiled() caches by function).
    negatives_of, terms = type(strategy).negatives, loss_terms
    if compiling(cfg):
        negatives_of, terms = compiled(negatives_of), compiled(terms)
    mine_start = time.perf_counter()
    with torch.no_grad():  # negatives are constants of the loss, whatever a strategy computes
        negatives = negatives_of(strategy, diffusion, MiningBatch(energy.detached(), y, t, eps_pair, generator))
    mine_seconds = time.perf_counter() - mine_start
    loss, stats = terms(energy, diffusion, y, t, eps, eps_pair, negatives, cfg.mining.weight)
    return loss, stats | {"mine_ms": torch.tensor(1e3 * mine_seconds)}


def train_step(
    model, diffusion: Diffusion, strategy, optimizer, problems, cfg: DictConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    loss, stats = step_loss(model, diffusion, strategy, problems, cfg, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    return stats | {"loss/total": loss, "grad_norm": grad_norm}


def regression_step(
    model, diffusion: Diffusion, strategy, optimizer, problems, cfg: DictConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One step of the feed-forward baseline (model=regressor): MSE of f(A) against A⁻¹. It draws
    nothing from the generator but the batch, and has no diffusion or negatives."""
    loss = (model(problems.x) - problems.y).square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    optimizer.step()
    return {"loss/mse": loss, "loss/total": loss, "grad_norm": grad_norm}


def compile_ahead(model, diffusion: Diffusion, strategy, cfg: DictConfig, device: torch.device) -> float:
    """With hardware.compile, compile mining and the loss terms (forward and backward) on a throwaway
    batch before the training clock starts, so that train_seconds and mine_ms time training, not
    compiling. Changes nothing: its own generator, no optimiser step, the gradients cleared.
    Returns the seconds it took (0 without hardware.compile)."""
    if not compiling(cfg) or is_regressor(model):
        return 0.0
    start = time.perf_counter()
    generator = torch.Generator(device).manual_seed(0)
    problems = spd_batch(cfg.dataset.n, cfg.train.batch_size, cfg.dataset.lam, generator)
    loss, _ = step_loss(model, diffusion, strategy, problems, cfg, generator)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


# ================================================================ the run


@dataclass(frozen=True)
class Visit:
    """What the loop does at the step it reached: log, evaluate, checkpoint; none of them: step on."""

    log: bool
    evaluate: bool
    checkpoint: bool

    def __bool__(self) -> bool:
        return self.log or self.evaluate or self.checkpoint


class Run:
    """Everything of one training run, its files and its resumable state."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.dir = cfg, Path(run_dir)
        self.rundir = RunDir(self.dir)
        self.ckpt_dir = self.rundir.checkpoints
        self.device = pick_device(cfg)
        configure_backend(cfg, self.device)

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(self.device)
        self.ema = AveragedModel(
            self.model, avg_fn=ema_avg_fn(cfg.ema.every, cfg.ema.warmup, cfg.ema.power, cfg.ema.max_decay)
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
        self.diffusion = build_diffusion(cfg, self.device)
        self.strategy = build_strategy(cfg.mining.name, **options_of(cfg.mining))
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.sets = eval_sets(cfg.dataset.n, cfg.eval.size, cfg.eval.seed, dict(cfg.eval.splits))
        self.fingerprint = compat_fingerprint(cfg)
        self.step_fn = regression_step if is_regressor(self.model) else train_step
        self.step = 0
        self.train_seconds = 0.0
        self.running = Running()
        # The step of the first non-finite loss or gradient, −1 while there is none; kept on the device.
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.trackers = Trackers()  # logger=...: built by train() once the run has resumed

    # ------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.generator),
            "train_seconds": self.train_seconds,
            "running": {"sums": {k: v.cpu() for k, v in self.running.sums.items()}, "count": self.running.count},
            "fingerprint": self.fingerprint,
            "config": OmegaConf.to_yaml(self.cfg, resolve=True),
        }

    def resume(self) -> bool:
        # Under the run's lock no one else writes here: what a killed writer left half-written goes.
        for stale in remove_stale_temporaries(self.ckpt_dir) + remove_stale_temporaries(self.dir):
            log.info(f"removed {stale}, left by a writer that was killed")
        state = latest_checkpoint(self.ckpt_dir, self.cfg.checkpoint.fallback, self.device, log.warning)
        if state is None:
            self.rundir.truncate_metrics(0)  # lines of an attempt whose checkpoints are all gone
            return False
        if state["fingerprint"] != self.fingerprint:
            there = flat_settings(OmegaConf.create(backfill(OmegaConf.to_container(OmegaConf.create(state["config"])))))
            scheduled = self.cfg.optim.schedule != "constant"  # then the length shapes the run too
            which = lambda key: shapes_the_run(key) or (scheduled and key == "train.steps")  # noqa: E731
            changed = differences(there, flat_settings(self.cfg), which)
            recorded = OmegaConf.create(state["config"])
            if (was := precision_of(recorded)) != (now := precision_of(self.cfg)):  # hardware, yet it shapes the run
                changed.append(f"hardware.precision is {now} here, {was} there")
            final = self.rundir.final_state()  # a finished run continued to more steps, or an unfinished one
            held = "a finished" if final is not None and final.finished else "an unfinished"
            raise RunDirTaken(
                f"{self.dir} holds {held} run of other settings ({'; '.join(changed)}); resuming it "
                f"would mix two runs: use another run directory, or that run's settings to resume it"
            )
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"], self.generator)
        self.step, self.train_seconds = state["step"], state["train_seconds"]
        self.running = Running(
            {k: v.to(self.device) for k, v in state["running"]["sums"].items()}, state["running"]["count"]
        )
        self.rundir.truncate_metrics(self.step)  # the lines after it will be written again
        log.info(f"resumed from step {self.step} ({self.ckpt_dir})")
        return True

    def checkpoint(self) -> None:
        save_checkpoint(self.ckpt_dir, self.step, self.state(), self.cfg.checkpoint.keep)

    # ------------------------------------------------------------ evaluation and records

    def evaluate(self) -> dict:
        c = self.cfg
        metrics = evaluate(
            self.ema.module,
            self.diffusion,
            self.sets,
            c.sampler.inner_steps,
            c.eval.batch_size,
            c.eval.seed,
            c.sampler.step_scale,
        )
        failpoints.hit("evaluate")
        record = {"step": self.step, "train_seconds": round(self.train_seconds, 3), **self.running.means(), **metrics}
        self.running.reset()
        self.rundir.append_metrics(record)
        return record

    def write_final(self, status: str, **extra) -> dict:
        return self.rundir.write_final(
            status,
            strategy=self.cfg.mining.name,
            model=self.cfg.model.name,
            seed=self.cfg.seed,
            step=self.step,
            train_seconds=round(self.train_seconds, 3),
            seconds_per_step=self.train_seconds / max(self.step, 1),
            env=Environment.of(self.device).as_dict(),
            **extra,
        )

    # ------------------------------------------------------------ the loop

    def fit(self, progress=None) -> dict:
        total = self.cfg.train.steps
        task = progress.add_task("train", total=total, completed=self.step, info="") if progress else None
        if self.step < total:
            self.compile_first()
        advance = self.stepper()
        tick, tick_step = time.perf_counter(), self.step
        last = {}
        while self.step < total:
            advance()
            visit = self.visit_due()
            if not visit:
                continue
            self.stop_if_diverged()
            now = time.perf_counter()
            self.train_seconds += now - tick
            if visit.log:
                if progress is not None:
                    self.show_progress(progress, task, rate=(self.step - tick_step) / max(now - tick, 1e-9))
                self.trackers.log_training(self.step, self.running, self.train_seconds)  # before evaluate() resets it
            if visit.evaluate:
                last = self.evaluate()
                self.report_evaluation(last)
            if visit.checkpoint:
                self.checkpoint()
                preemption.hand_over(self.step)  # SLURM's warning signal: requeue from this checkpoint
                interrupt.stop_if_requested(self.step)  # Ctrl-C: stop here, resumable from this checkpoint
            tick, tick_step = time.perf_counter(), self.step
        return last or self.recorded_final()

    def compile_first(self) -> None:
        if seconds := compile_ahead(self.model, self.diffusion, self.strategy, self.cfg, self.device):
            log.info("compiled mining and the loss terms in %.1f s (hardware.compile)", seconds)

    def stepper(self) -> Callable[[], None]:
        """What the loop calls to go on: one eager step, after which the loop looks at the step and at
        the signals; or, with hardware.cuda_graph, every step up to the next log, evaluation or
        checkpoint at once (graphed.StepRunner), so that Python is visited only there."""
        if not graphed_steps.enabled(self.cfg):
            return self.eager_step
        parts = graphed_steps.StepParts(
            self.model, self.ema, self.optimizer, self.diffusion, self.strategy, self.generator, self.cfg, self.device
        )
        runner = graphed_steps.StepRunner(parts, train_step, self.step)

        def to_next_visit() -> None:
            until = graphed_steps.next_visit(self.step, self.cfg)
            self.first_bad, self.step = runner.advance(self.running, self.step, until), until

        return to_next_visit

    def eager_step(self) -> None:
        """One training step: its learning rate, a fresh batch, the step, the EMA on its schedule."""
        c = self.cfg
        if c.optim.schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(c, self.step)
        problems = spd_batch(c.dataset.n, c.train.batch_size, c.dataset.lam, self.generator)
        stats = self.step_fn(self.model, self.diffusion, self.strategy, self.optimizer, problems, c, self.generator)
        self.step += 1
        # Recorded on the device and read only at log, eval and checkpoint steps, so a GPU never
        # waits on the host inside the loop; the step named is still the exact one.
        bad = ~(torch.isfinite(stats["loss/total"]) & torch.isfinite(stats["grad_norm"]))
        self.first_bad = torch.where(bad & (self.first_bad < 0), self.step, self.first_bad)
        if self.step % c.ema.every == 0:
            self.ema.update_parameters(self.model)
        self.running.add(stats)

    def visit_due(self) -> Visit:
        """What the step reached asks of the loop; a checkpoint too once Ctrl-C or SLURM's warning came."""
        c, step = self.cfg, self.step
        end = step == c.train.steps
        return Visit(
            log=step % c.train.log_every == 0 or end,
            evaluate=bool(c.train.eval_every and step % c.train.eval_every == 0) or end,
            checkpoint=step % c.checkpoint.every == 0 or end or preemption.requested() or interrupt.requested(),
        )

    def stop_if_diverged(self) -> None:
        if (bad_step := int(self.first_bad)) >= 0:
            kept = list_checkpoints(self.ckpt_dir)
            raise TrainingDiverged(
                f"loss or gradient became non-finite at step {bad_step}; stopped, "
                + (f"last good checkpoint kept: {kept[-1]}" if kept else "no checkpoint had been written yet")
            )

    def show_progress(self, progress, task, rate: float) -> None:
        shown = ("loss/mse", "loss/energy", "neg/gap", "mine_ms")
        info = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in self.running.means().items() if k in shown)
        progress.update(task, completed=self.step, info=f"{info}  {rate:.1f} it/s")

    def report_evaluation(self, record: dict) -> None:
        self.trackers.log_eval(self.step, record)
        log.info(
            f"step {self.step}  "
            + "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k.endswith(("/mse", "/zero_mse")))
        )

    def recorded_final(self) -> dict:
        """The final evaluation of a run that reached its last step in an earlier attempt: killed after
        the final checkpoint but before metrics.json, its evaluation is already in metrics.jsonl (it
        precedes the checkpoint); evaluating again would give the same numbers, so they are reused."""
        finals = [rec for rec in self.rundir.read_metrics() if rec["step"] == self.step]
        return finals[-1] if finals else self.evaluate()


# ================================================================ entry points


def run_dir_of_job() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train (or resume) the run in `run_dir`; returns the final summary written to metrics.json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    previous = RunDir(run_dir).final_state()
    if previous is not None and previous.finished:
        if previous.summary.get("step", 0) >= cfg.train.steps:
            return leave_finished(cfg, run_dir, previous.summary)
        # A longer train.steps than the finished run had: go on from its final checkpoint. Its metrics
        # lines are kept and the new ones appended; metrics.json is rewritten when the longer run ends.
        log.info(
            f"continuing the finished run in {run_dir} from step {previous.summary['step']} "
            f"to train.steps={cfg.train.steps}"
        )

    if previous is not None and previous.status == FAILED:
        # This attempt supersedes the failure recorded (a full disk since freed): until it ends the
        # run is incomplete, resumable, as the sweep's table should say if it is killed.
        RunDir(run_dir).final.unlink(missing_ok=True)
    check_fits(cfg, pick_device(cfg))  # a batch that cannot fit stops here, in one line
    run = Run(cfg, run_dir)
    status = FAILED  # for the trackers' close, unless the loop ends
    interrupt.install()
    try:
        run.resume()  # refuses a checkpoint of other settings before anything is written
        write_record(cfg, run_dir)
        run.trackers = open_trackers(cfg, run_dir, run.step, run.running, run.train_seconds)
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, transient=False) as progress, naming_the_batch(cfg, run.device):
            last = run.fit(progress)
        status = FINISHED
    except (TrainingDiverged, BatchTooLarge, WriteFailed) as err:
        with contextlib.suppress(WriteFailed):  # a full disk may refuse even metrics.json; stderr still says it
            run.write_final(FAILED, error=str(err))
        raise
    finally:
        interrupt.uninstall()
        run.trackers.close(status)
    return run.write_final(FINISHED, **{k: v for k, v in last.items() if "/" in k})


# Errors that are one line for the user, not a bug's traceback.
EXPECTED = (ConfigError, CheckpointError, TrainingDiverged, BatchTooLarge, WriteFailed, RunLocked, RunDirTaken)


def leave_finished(cfg: DictConfig, run_dir: Path, summary: dict) -> dict:
    """A finished run is never touched again. Re-run with the settings that shaped it (a re-launched
    sweep, perhaps on other hardware), it is a note; with others, a refusal naming them."""
    recorded = RunDir(run_dir).recorded_config()
    there = flat_settings(recorded) if recorded is not None else flat_settings(cfg)  # no record: nothing to hold
    if shaping := differences(there, flat_settings(cfg), shapes_the_run):
        raise RunDirTaken(
            f"{run_dir} holds a finished run of other settings ({'; '.join(shaping)}); it is left "
            f"as it is: use another run directory"
        )
    others = differences(there, flat_settings(cfg))
    log.info(
        f"{run_dir} already holds a finished run; leaving it as it is"
        + (f" (it differs only in what does not shape a run: {'; '.join(others)})" if others else "")
    )
    return summary


def write_record(cfg: DictConfig, run_dir: Path) -> None:
    """.hydra/ as Hydra would have written it before the job (hydra.output_subdir is null, so that a
    refused re-run cannot rewrite the record of the run that is there)."""
    hydra_cfg = HydraConfig.get()
    RunDir(run_dir).write_record(
        config=OmegaConf.to_yaml(cfg),
        hydra=OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        overrides=OmegaConf.to_yaml(hydra_cfg.overrides.task),
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> dict:
    run_dir = run_dir_of_job()
    single = HydraConfig.get().mode.name == "RUN"
    try:
        runlock.acquire(run_dir)  # a single run took it in main(), before Hydra wrote anything
        check_ranges(cfg)
        summary = train(cfg, run_dir)
    except EXPECTED as err:
        return fail(err, run_dir, cfg)
    except Exception as err:
        if single:
            raise  # a bug, not bad input: the traceback is what a developer needs
        log.exception("job crashed")
        return fail(err, run_dir, cfg)
    finally:
        if not single and runlock.holds(run_dir):
            runlock.release(run_dir)  # the next job of the sweep may run in this process
    if summary.get("status") == FINISHED:
        # train.log too: the console's final table and path are the run's answer, kept with its log.
        logging.getLogger("ired.file").info("final metrics\n" + print_summary(summary, run_dir))
    return summary


def fail(err: Exception, run_dir: Path, cfg: DictConfig) -> dict:
    """Record the failure in metrics.json and say it in one line. A single run exits non-zero;
    a job of a multirun returns its failure, so the sweep goes on and its end table shows it.
    A run refused at the lock or at a finished run of other settings writes nothing: the directory is
    another process's, or another run's."""
    message = str(err) if isinstance(err, EXPECTED) else f"{type(err).__name__}: {err}"
    run = RunDir(run_dir)
    if not isinstance(err, (RunLocked, RunDirTaken)):
        with contextlib.suppress(WriteFailed):
            if not run.started():  # a job that fails before training is still listed with its settings
                write_record(cfg, run_dir)
            if not run.final.exists():
                run.write_final(FAILED, error=message)
    if HydraConfig.get().mode.name == "RUN":
        logging.getLogger("ired.file").error(message)  # the run's train.log; the console gets one line
        print(f"ired-train: error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(err, (ConfigError, RunDirTaken)) else 1)
    log.error(f"job failed: {message}")
    return {"status": FAILED, "error": message, "run_dir": str(run_dir)}


def take_the_run_dir(composed: DictConfig | None) -> None:
    """A single run locks its directory before Hydra writes .hydra/ and train.log into it, so that a
    second ired-train there stops without touching a file. A multirun's jobs lock theirs in app()."""
    if composed is None or (planned := planned_run_dir(composed)) is None:
        return
    run_dir, pin = planned
    runlock.acquire(Path(run_dir))
    if pin:
        sys.argv.append(pin)  # Hydra must not compute another directory than the one locked


def main() -> None:
    """Console-script entry: a command line Hydra or the schema would refuse is one line, exit 2;
    a run directory another ired-train holds is one line, exit 1, before Hydra writes into it;
    Ctrl-C is one line, exit 130."""
    try:
        take_the_run_dir(check_command_line(sys.argv[1:]))
    except ConfigError as err:
        print(f"ired-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunLocked as err:
        print(f"ired-train: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("ired-train: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    # A full disk fails train.log's writes too; the logging module would print a traceback for
    # each. The run stops at its next write of record, in one line, so those are left silent.
    logging.raiseExceptions = False
    try:
        app()
    except interrupt.Interrupted as err:
        logging.getLogger("ired.file").warning(str(err))
        print(f"ired-train: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print(
            "ired-train: interrupted; stopped at once; the newest checkpoint is kept; run the same command to resume",
            file=sys.stderr,
        )
        sys.exit(130)
    # A multirun's failed jobs return their failure (see fail()) so the others go on; the
    # end-of-sweep table (callbacks.py) lists them, and the shell sees them in the exit code.
    if last_unfinished():
        sys.exit(1)


if __name__ == "__main__":
    main()
