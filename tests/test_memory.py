"""A batch that cannot fit the device: one line, a failed metrics.json, and in a sweep that job alone
fails. And the estimate behind the check, against memory measured on this machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from ired_mining.memory import BatchTooLarge, available_bytes, naming_the_batch, train_step_bytes
from ired_mining.sweep import job_states

from conftest import TINY, read_json, run_cli

DOES_NOT_FIT = re.compile(
    r"ired-train: error: (\S+)=(\d+) does not fit: an? \w+ needs ~([\d.,]+) GB, "
    r"the cpu has ([\d.,]+) GB available; lower \1\n"
)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["train.batch_size=100000000"], "train.batch_size"),
        (["eval.size=20000000", "eval.batch_size=20000000"], "eval.batch_size"),
    ],
)
def test_a_batch_that_cannot_fit_stops_with_one_line(tmp_path, overrides, key):
    """Default model (n = 20, hidden 512): 10^8 problems a step, or 2·10^7 matrices a sampler call,
    need hundreds of GB."""
    run_dir = tmp_path / "run"
    proc = run_cli("ired-train", *overrides, "hardware=cpu", f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    found = DOES_NOT_FIT.fullmatch(proc.stderr)
    assert found, proc.stderr
    assert found.group(1) == key
    needs, has = (float(found.group(i).replace(",", "")) for i in (3, 4))
    assert needs > has > 0
    final = read_json(run_dir / "metrics.json")
    assert final["status"] == "failed" and final["error"] == proc.stderr.removeprefix("ired-train: error: ").strip()
    assert not (run_dir / "checkpoints").exists()


def test_in_a_sweep_the_job_that_cannot_fit_fails_alone(tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith("train.batch_size")]
    proc = run_cli(
        "ired-train",
        "-m",
        *tiny,
        "mining=none",
        "train.batch_size=32,1000000000",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ok, bad = job_states(sweep)
    assert ok.state == "finished" and ok.metrics["step"] == 20
    assert bad.state == "failed" and bad.error.startswith("train.batch_size=1000000000 does not fit:")
    assert "1 finished, 1 failed" in re.sub(r"\s+", " ", proc.stdout)


def _cfg(batch: int = 64):
    return OmegaConf.create(
        {
            "dataset": {"n": 4},
            "model": {"hidden": 32},
            "mining": {"name": "none"},
            "train": {"batch_size": batch},
            "eval": {"batch_size": 32, "size": 32, "splits": {"a": 0.5}},
        }
    )


def test_the_allocators_own_error_becomes_the_same_line():
    """The net under the estimate: a real allocation the CPU allocator refuses (64 TiB) inside the
    loop becomes BatchTooLarge naming the batch; other errors pass through untouched."""
    with pytest.raises(
        BatchTooLarge,
        match=r"^train\.batch_size=64 does not fit: a step needs ~70,369 GB, the cpu "
        r"has [\d.,]+ GB available; lower train\.batch_size$",
    ):
        with naming_the_batch(_cfg(), torch.device("cpu")):
            torch.empty(2**44, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="shape"):
        with naming_the_batch(_cfg(), torch.device("cpu")):
            torch.zeros(2, 3) @ torch.zeros(2, 3)


def test_available_memory_is_what_proc_meminfo_says_or_less():
    with open("/proc/meminfo") as f:
        mem_available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert 0 < available_bytes(torch.device("cpu")) <= mem_available * 1.05


PEAK = """
import json, re, sys, torch
from omegaconf import OmegaConf
from ired_mining.data import spd_batch
from ired_mining.diffusion import Diffusion, cosine_schedule
from ired_mining.mining import build_strategy
from ired_mining.model import EnergyMLP
from ired_mining.train import train_step
def status_kb(field):
    return int(re.search(rf"^{field}:\\s+(\\d+) kB", open("/proc/self/status").read(), re.M)[1])
n, hidden, mining, batch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
cfg = OmegaConf.create({"mining": {"weight": 0.5}, "train": {"grad_clip": 1.0}, "hardware": {"compile": False}})
model, diffusion, strategy = EnergyMLP(n, hidden, 16), Diffusion(cosine_schedule(10)), build_strategy(mining)
optimizer, g = torch.optim.Adam(model.parameters()), torch.Generator().manual_seed(0)
step = lambda b: train_step(model, diffusion, strategy, optimizer, spd_batch(n, b, 0.5, g), cfg, g)
step(8)  # libraries loaded, optimiser state made
# Reset the peak to the current resident size (Linux: clear_refs 5), so the growth below is the step's
# own: a peak reached before it (imports, freed since) would otherwise hide part of the step.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status_kb("VmRSS")
step(batch)
print(json.dumps((status_kb("VmHWM") - before) * 1024))
"""


@pytest.mark.parametrize("mining", ["none", "adversarial"])
def test_the_estimate_of_a_step_is_near_the_measured_peak(mining):
    """Peak resident memory of one training step in a fresh process (the growth of the peak, reset
    just before the step, so nothing but the step's own tensors), at a shape the estimate's
    constants were not read off (n = 10, hidden 256)."""
    n, hidden, batch = 10, 256, 20000
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, str(n), str(hidden), mining, str(batch)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(proc.stdout)
    cfg = OmegaConf.merge(_cfg(batch), {"dataset": {"n": n}, "model": {"hidden": hidden}, "mining": {"name": mining}})
    estimate = train_step_bytes(cfg)
    # Under by a third at most: an estimate too low lets a batch that cannot fit reach the allocator.
    # Over by 2x at most: the same fresh process measures ~590 MB for `none` alone but ~330 MB late
    # in a full pytest run on the same machine (seen twice; the cause is not yet known), and the
    # pre-flight check only has to refuse what cannot fit, not to size a batch exactly.
    assert 0.67 < estimate / measured < 2.0, (estimate, measured)
