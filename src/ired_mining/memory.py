"""Does a batch fit the device? One line that says so, instead of an allocator's traceback.

Two guards, because neither is enough alone:
- before the run starts, an estimate of a training step's and an evaluation's peak memory against
  what the device has free (`check_fits`). On Linux a CPU allocation far beyond RAM often succeeds
  (overcommit) and the OOM killer ends the process later without a word, so only a check ahead
  can speak for it;
- around the loop, the allocator's own error turned into the same line (`naming_the_batch`), for
  what the estimate misses (other processes taking memory meanwhile, a GPU's fragmentation).

The estimate counts floats per sample, a·hidden + b·n², with a and b read off peak resident memory
measured on the CPU (resource.getrusage's maxrss growth over one step at batch 10,000–40,000,
hidden 128–2048, n 4 and 20): mining's two extra energy passes with a graph nearly double a
training step. tests/test_memory.py checks the estimate against a fresh measurement.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from ired_mining.mining import STRATEGIES, NoNegatives

GB = 1e9

# Floats per sample at the peak of a training step (data drawn, mining, loss, backward, Adam):
# (per hidden unit, per answer entry). With negatives, the energy term's two passes keep their
# activations for the backward too.
TRAIN_FLOATS = {"without negatives": (22, 10), "with negatives": (38, 16)}
# The sampler under no_grad: a few hidden-wide activations and answer-wide iterates per sample.
SAMPLE_FLOATS = (12, 5)
# Per matrix of an evaluation set: x and y kept for each split, and while a split is scored its
# float64 generation, inverse and residual.
EVAL_SET_FLOATS_PER_SPLIT, EVAL_SET_FLOATS_ONCE = 2, 18


class BatchTooLarge(RuntimeError):
    """A batch that does not fit the device; the message is one line for the user."""


# ---------------------------------------------------------------- what a run needs


def train_step_bytes(cfg: DictConfig) -> float:
    d, hidden = cfg.dataset.n**2, cfg.model.hidden
    plain = STRATEGIES[cfg.mining.name] is NoNegatives
    per_hidden, per_entry = TRAIN_FLOATS["without negatives" if plain else "with negatives"]
    return 4.0 * cfg.train.batch_size * (per_hidden * hidden + per_entry * d)


def evaluation_bytes(cfg: DictConfig) -> float:
    """An evaluation: the sampler at min(eval.batch_size, eval.size) matrices and the sets themselves."""
    d, hidden = cfg.dataset.n**2, cfg.model.hidden
    batch = min(cfg.eval.batch_size, cfg.eval.size)
    sets = cfg.eval.size * d * (EVAL_SET_FLOATS_PER_SPLIT * len(cfg.eval.splits) + EVAL_SET_FLOATS_ONCE)
    return 4.0 * (batch * (SAMPLE_FLOATS[0] * hidden + SAMPLE_FLOATS[1] * d) + sets)


# ---------------------------------------------------------------- what the device has


def available_bytes(device: torch.device) -> float:
    """Free memory now: the GPU's free memory, or on the CPU MemAvailable, capped by the
    job's cgroup limit where SLURM (or a container) set one."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    return min(_mem_available(), _cgroup_headroom())


def _mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024.0
    return float("inf")


def _cgroup_headroom() -> float:
    """memory.max − memory.current of this process's cgroup (v2), or infinity without a limit."""
    try:
        rel = Path("/proc/self/cgroup").read_text().splitlines()[0].split("::", 1)[1]
        group = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (group / "memory.max").read_text().strip()
        if limit == "max":
            return float("inf")
        return float(int(limit) - int((group / "memory.current").read_text()))
    except (OSError, IndexError, ValueError):
        return float("inf")


# ---------------------------------------------------------------- the two guards


def too_large(key: str, value: int, needs: float, device: torch.device, available: float) -> BatchTooLarge:
    return BatchTooLarge(
        f"{key}={value} does not fit: a {'step' if key.startswith('train.') else 'evaluation'} needs "
        f"~{_gb(needs)} GB, the {device.type} has {_gb(available)} GB available; lower {key}"
    )


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / GB:,.0f}" if n_bytes >= 100 * GB else f"{n_bytes / GB:.3g}"


def check_fits(cfg: DictConfig, device: torch.device) -> None:
    """Raise BatchTooLarge if a training step or an evaluation is estimated to need more than the device has."""
    available = available_bytes(device)
    checks = [("train.batch_size", cfg.train.batch_size, train_step_bytes(cfg))]
    key = "eval.batch_size" if cfg.eval.batch_size <= cfg.eval.size else "eval.size"
    checks.append((key, cfg.eval[key.split(".")[1]], evaluation_bytes(cfg)))
    for key, value, needs in checks:
        if needs > available:
            raise too_large(key, value, needs, device, available)


_CPU_OOM = re.compile(r"DefaultCPUAllocator: can't allocate memory: you tried to allocate (\d+) bytes")


def out_of_memory(err: BaseException) -> int | None:
    """The bytes an out-of-memory error asked for (0 if it does not say); None if it is not one."""
    if isinstance(err, torch.OutOfMemoryError):  # CUDA's, and the CPU's in recent torch
        found = re.search(r"Tried to allocate ([\d.]+) (GiB|MiB|KiB|B)", str(err))
        if not found:
            found = _CPU_OOM.search(str(err))
            return int(found.group(1)) if found else 0
        return int(float(found.group(1)) * {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "B": 1}[found.group(2)])
    if isinstance(err, RuntimeError) and (found := _CPU_OOM.search(str(err))):
        return int(found.group(1))
    return None


def _in_evaluation(err: BaseException) -> bool:
    """Whether the error was raised under the evaluation (its frames are on the traceback)."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("evaluate.py"):
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def naming_the_batch(cfg: DictConfig, device: torch.device):
    """Turn the allocator's out-of-memory error into BatchTooLarge, naming the batch that caused it."""
    try:
        yield
        return
    except (torch.OutOfMemoryError, RuntimeError) as err:
        asked = out_of_memory(err)
        if asked is None:
            raise
        in_evaluation = _in_evaluation(err)
    # Raised out here, not inside the except: the allocator's error, its traceback and the
    # tensors of the step that failed are gone by now, so the memory is free again.
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if in_evaluation:
        key = "eval.batch_size" if cfg.eval.batch_size <= cfg.eval.size else "eval.size"
        value, needs = cfg.eval[key.split(".")[1]], evaluation_bytes(cfg)
    else:
        key, value, needs = "train.batch_size", cfg.train.batch_size, train_step_bytes(cfg)
    raise too_large(key, value, max(needs, asked), device, available_bytes(device))
