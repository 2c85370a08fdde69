"""The checks of a composed config's values that a type cannot say: ranges, and rules across keys
(a range that another key sets: model.depth ≥ 2 for the energy MLP, no CUDA graph with a schedule).
Each fails with one line that names the value and what is allowed (ConfigError).

Known keys, types and closed sets of choices are the schema's (schema.py), enforced while Hydra
composes; what is left here runs per run, in ired-train's app and in ired-eval.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from ired_mining.mining import STRATEGIES
from ired_mining.model import MODELS, PRECISIONS
from ired_mining.schema import GROUP_KEYS, strategy_options


class ConfigError(ValueError):
    """A config value the run cannot use; the message is one line for the user."""


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is invalid; it must be {allowed}")


def check_ranges(cfg: DictConfig) -> None:
    """Ranges and cross-key rules of the values a user is most likely to mistype from the shell."""
    positive_ints = {
        "dataset.n": cfg.dataset.n,
        "train.batch_size": cfg.train.batch_size,
        "train.steps": cfg.train.steps,
        "train.log_every": cfg.train.log_every,
        "checkpoint.every": cfg.checkpoint.every,
        "checkpoint.keep": cfg.checkpoint.keep,
        "eval.size": cfg.eval.size,
        "eval.batch_size": cfg.eval.batch_size,
        "ema.every": cfg.ema.every,
        "diffusion.steps": cfg.diffusion.steps,
        "model.hidden": cfg.model.hidden,
    }
    for key, value in positive_ints.items():
        _require(value >= 1, key, value, "an integer ≥ 1")
    _require(
        cfg.train.eval_every >= 0, "train.eval_every", cfg.train.eval_every, "an integer ≥ 0 (0 = only at the end)"
    )
    _require(cfg.model.name in MODELS, "model.name", cfg.model.name, f"one of {', '.join(MODELS)}")
    least = 1 if cfg.model.name == "regressor" else 2  # the energy MLP: a first layer, then FiLM layers
    _require(cfg.model.depth >= least, "model.depth", cfg.model.depth, f"an integer ≥ {least}")
    if cfg.model.name == "regressor":  # trained on MSE against A⁻¹: no energy to mine negatives on
        _require(cfg.mining.name == "none", "mining.name", cfg.mining.name, "none with model=regressor")
        _require(
            not cfg.hardware.cuda_graph,
            "hardware.cuda_graph",
            cfg.hardware.cuda_graph,
            "false with model=regressor (the graphed step is the energy model's)",
        )
    if cfg.optim.schedule != "constant":  # the graphed step captures the optimiser with its rate fixed
        _require(
            not cfg.hardware.cuda_graph,
            "hardware.cuda_graph",
            cfg.hardware.cuda_graph,
            "false with a learning-rate schedule",
        )
    _require(
        cfg.model.time_dim >= 4 and cfg.model.time_dim % 2 == 0,
        "model.time_dim",
        cfg.model.time_dim,
        "an even integer ≥ 4",
    )
    for key, value in {
        "optim.lr": cfg.optim.lr,
        "train.grad_clip": cfg.train.grad_clip,
        "diffusion.clamp": cfg.diffusion.clamp,
    }.items():
        _require(value > 0, key, value, "a number > 0")
    _require(
        0 <= cfg.optim.min_lr <= cfg.optim.lr,
        "optim.min_lr",
        cfg.optim.min_lr,
        f"a number in [0, optim.lr={cfg.optim.lr}]",
    )
    _require(
        len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
        "optim.betas",
        list(cfg.optim.betas),
        "two numbers in [0, 1)",
    )
    _require(cfg.dataset.lam > 0, "dataset.lam", cfg.dataset.lam, "a number > 0 (A must be positive definite)")
    _require(cfg.mining.name in STRATEGIES, "mining.name", cfg.mining.name, f"one of {', '.join(STRATEGIES)}")
    # The group's keys are one strategy's options; a renamed strategy would get another's.
    options = sorted(set(cfg.mining) - set(GROUP_KEYS))
    _require(
        options == sorted(strategy_options(cfg.mining.name)),
        "mining.name",
        cfg.mining.name,
        f"the strategy of the mining group chosen; pick a strategy with mining={cfg.mining.name}",
    )
    _require(cfg.mining.weight >= 0, "mining.weight", cfg.mining.weight, "a number ≥ 0")
    if cfg.mining.name == "adversarial":
        _require(cfg.mining.steps >= 0, "mining.steps", cfg.mining.steps, "an integer ≥ 0")
        # A negative scale flips the noise's sign (the same distribution: no new setting), and a
        # non-finite one leaves no number to train on.
        _require(
            math.isfinite(cfg.mining.corruption) and cfg.mining.corruption >= 0,
            "mining.corruption",
            cfg.mining.corruption,
            "a finite number ≥ 0 (the multiple of the level's noise the negatives start "
            "from; 0 = from the answer itself, without noise)",
        )
        _require(
            math.isfinite(cfg.mining.step_scale) and cfg.mining.step_scale > 0,
            "mining.step_scale",
            cfg.mining.step_scale,
            "a finite number > 0 (it multiplies η_t; for no descent set mining.steps=0)",
        )
    if cfg.mining.name == "random":
        _require(
            cfg.train.batch_size >= 2 or cfg.mining.source != "derangement",
            "train.batch_size",
            cfg.train.batch_size,
            "≥ 2 for derangement negatives",
        )
    _require(cfg.sampler.inner_steps >= 0, "sampler.inner_steps", cfg.sampler.inner_steps, "an integer ≥ 0")
    _require(
        math.isfinite(cfg.sampler.step_scale) and cfg.sampler.step_scale > 0,
        "sampler.step_scale",
        cfg.sampler.step_scale,
        "a finite number > 0 (it multiplies η_t; for no descent set sampler.inner_steps=0)",
    )
    shrinks = {"sampler.backtrack": cfg.sampler.backtrack}
    if cfg.mining.name == "adversarial":
        shrinks["mining.backtrack"] = cfg.mining.backtrack
    for key, value in shrinks.items():
        _require(0 < value <= 1, key, value, "a number in (0, 1] (1 = no backtracking)")
    _require(
        cfg.hardware.precision in PRECISIONS, "hardware.precision", cfg.hardware.precision, " or ".join(PRECISIONS)
    )
    _require(
        len(cfg.eval.splits) >= 1 and all(lam > 0 for lam in cfg.eval.splits.values()),
        "eval.splits",
        dict(cfg.eval.splits),
        "at least one split, each λ > 0",
    )
