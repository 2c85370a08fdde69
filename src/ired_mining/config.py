"""Checks on a composed config, each failing with one line that names the value and what is allowed."""

from __future__ import annotations

from importlib.resources import files

from omegaconf import DictConfig

from ired_mining.mining import STRATEGIES


class ConfigError(ValueError):
    """A config value the run cannot use; the message is one line for the user."""


CONF = files("ired_mining") / "conf"


def group_choices(group: str) -> list[str]:
    """The options of a config group, as the yaml files under conf/ name them."""
    return sorted(p.name[:-5] for p in (CONF / group).iterdir() if p.name.endswith(".yaml"))


def check_cli_choices(args: list[str]) -> None:
    """Reject an unknown group option (`mining=bogus`) before Hydra composes, in one line.

    Only plain `group=a,b` overrides are checked; sweep functions (range, choice, ...) and
    other keys are left to Hydra.
    """
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups or "(" in value or "[" in value:
            continue
        allowed = list(STRATEGIES) if key == "mining" else group_choices(key)
        for choice in value.split(","):
            if choice not in allowed and not (key == "experiment" and choice == "null"):
                raise ConfigError(f"{key}={choice} is not available; choose one of: {', '.join(allowed)}")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is invalid; it must be {allowed}")


def validate(cfg: DictConfig) -> None:
    """Range checks on the values a user is most likely to mistype from the shell."""
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
        _require(isinstance(value, int) and value >= 1, key, value, "an integer ≥ 1")
    _require(isinstance(cfg.train.eval_every, int) and cfg.train.eval_every >= 0,
             "train.eval_every", cfg.train.eval_every, "an integer ≥ 0 (0 = only at the end)")
    _require(isinstance(cfg.model.time_dim, int) and cfg.model.time_dim >= 4 and cfg.model.time_dim % 2 == 0,
             "model.time_dim", cfg.model.time_dim, "an even integer ≥ 4")
    for key, value in {"optim.lr": cfg.optim.lr, "train.grad_clip": cfg.train.grad_clip,
                       "diffusion.clamp": cfg.diffusion.clamp}.items():
        _require(isinstance(value, (int, float)) and value > 0, key, value, "a number > 0")
    _require(cfg.dataset.lam > 0, "dataset.lam", cfg.dataset.lam, "a number > 0 (A must be positive definite)")
    _require(cfg.mining.name in STRATEGIES, "mining.name", cfg.mining.name, f"one of {', '.join(STRATEGIES)}")
    _require(cfg.mining.weight >= 0, "mining.weight", cfg.mining.weight, "a number ≥ 0")
    if cfg.mining.name == "adversarial":
        _require(isinstance(cfg.mining.steps, int) and cfg.mining.steps >= 0, "mining.steps", cfg.mining.steps,
                 "an integer ≥ 0")
    if cfg.mining.name == "random":
        _require(cfg.mining.source in ("derangement", "gaussian"), "mining.source", cfg.mining.source,
                 "derangement or gaussian")
        _require(cfg.train.batch_size >= 2 or cfg.mining.source != "derangement", "train.batch_size",
                 cfg.train.batch_size, "≥ 2 for derangement negatives")
    _require(isinstance(cfg.sampler.inner_steps, int) and cfg.sampler.inner_steps >= 0,
             "sampler.inner_steps", cfg.sampler.inner_steps, "an integer ≥ 0")
    shrinks = {"sampler.backtrack": cfg.sampler.get("backtrack", 1.0)}
    if cfg.mining.name == "adversarial":
        shrinks["mining.backtrack"] = cfg.mining.get("backtrack", 1.0)
    for key, value in shrinks.items():
        _require(isinstance(value, (int, float)) and 0 < value <= 1, key, value,
                 "a number in (0, 1] (1 = no backtracking)")
    _require(cfg.hardware.device in ("auto", "cpu", "cuda"), "hardware.device", cfg.hardware.device,
             "auto, cpu or cuda")
    _require(len(cfg.eval.splits) >= 1 and all(lam > 0 for lam in cfg.eval.splits.values()),
             "eval.splits", dict(cfg.eval.splits), "at least one split, each λ > 0")
