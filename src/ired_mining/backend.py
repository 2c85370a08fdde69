"""The torch device a run uses and the backend settings it runs with (the `hardware` group)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ired_mining.config import ConfigError


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
