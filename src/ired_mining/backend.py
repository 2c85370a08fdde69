"""The torch device a run uses and the backend settings it runs with (the `hardware` group)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from ired_mining.checks import ConfigError
from ired_mining.model import PRECISIONS, precision_of

log = logging.getLogger("ired")

# CPU flags of native bf16 arithmetic (x86: AVX512-BF16, AMX; Arm: BF16). Without them oneDNN
# converts to float32 and back around each op, and bf16 is slower than fp32.
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def pick_device(cfg: DictConfig) -> torch.device:
    want = cfg.hardware.device
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device=cuda but no GPU is visible; use hardware=cpu or hardware=auto")
    return torch.device(want)


def configure_backend(cfg: DictConfig, device: torch.device) -> None:
    if cfg.hardware.threads:
        torch.set_num_threads(int(cfg.hardware.threads))
    # Tiny weights and gradients late in training become denormal floats, which run
    # several times slower on x86 CPUs; flushing them to zero costs nothing in accuracy here.
    torch.set_flush_denormal(True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.hardware.tf32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.hardware.tf32)
    if PRECISIONS[precision_of(cfg)] is torch.bfloat16 and not native_bf16(device):
        log.warning(
            "hardware.precision=%s: this %s has no bf16 instructions, so bf16 will be slow here "
            "(hardware.precision=32 is the fast choice)",
            precision_of(cfg),
            device.type.upper() if device.type == "cpu" else "GPU",
        )


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux's /proc/cpuinfo), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes in bf16 natively; a CPU whose flags cannot be read counts as yes
    (the warning would only guess)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    flags = cpu_flags()
    return flags is None or bool(flags & BF16_CPU_FLAGS)
