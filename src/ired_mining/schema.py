"""The config's types: Hydra Structured Configs that the yaml files under conf/ extend.

Each group's yaml names its schema first in its defaults list (`- /model_schema@_here_`), so a
composed config is typed: an unknown key, a value of the wrong type or a deleted required key is
refused while Hydra composes (compose.py turns that into one line). The split of work:
- the yaml holds the values and says what each controls (the readable face);
- this module holds the types, and `???` (required) where the yaml gives the value;
- a mining strategy's options and their defaults are its own dataclass in mining.py: the mining
  schema is derived from it, so a field added to a strategy class is a config key at once;
- a closed set of values is an Enum (choices.Choice): mining.source, optim.schedule, hardware.device;
- checks.py checks what a type cannot say: ranges and rules across keys.

Registered in Hydra's ConfigStore on import (conf/__init__.py imports this module, so every way of
composing ired_mining.conf finds the schemas).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ired_mining.choices import Choice
from ired_mining.mining import STRATEGIES
from ired_mining.model import PRECISION_BEFORE_THE_KEY

# ================================================================ the groups


@dataclass
class ModelConfig:
    name: str = MISSING
    hidden: int = MISSING
    time_dim: int = MISSING
    depth: int = MISSING


@dataclass
class DiffusionConfig:
    steps: int = MISSING
    s: float = MISSING
    max_beta: float = MISSING
    clamp: float = MISSING


@dataclass
class DatasetConfig:
    n: int = MISSING
    lam: float = MISSING


class Schedule(Choice):
    """optim.schedule: train.learning_rate computes each."""

    constant = "constant"
    cosine = "cosine"


@dataclass
class OptimConfig:
    lr: float = MISSING
    betas: List[float] = MISSING
    schedule: Schedule = MISSING
    min_lr: float = MISSING


class Device(Choice):
    """hardware.device: backend.pick_device resolves auto to cuda where a GPU is visible, else cpu."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class HardwareConfig:
    """This machine (auto, cpu, gpu, submitit_local). The per-job limits are read only by the
    submitit and SLURM choices; the others leave them unset (None), and presets may still set
    them (the pilot's timeout_min and mem_gb)."""

    device: Device = MISSING
    threads: Optional[int] = MISSING
    tf32: bool = MISSING
    compile: bool = MISSING
    cuda_graph: bool = MISSING
    cuda_graph_data: bool = MISSING
    # A string checked in checks.py, not a Choice: "32" is no member name OmegaConf can match, and it
    # arrives from the shell as the integer 32, which OmegaConf would look up as a member's value.
    precision: str = PRECISION_BEFORE_THE_KEY  # so that configs saved before the key existed still load
    timeout_min: Optional[int] = None
    mem_gb: Optional[int] = None
    gpus_per_node: Optional[int] = None


@dataclass
class SlurmHardwareConfig(HardwareConfig):
    """A SLURM cluster through submitit (slurm_gpu, slurm_cpu): the keys of hydra.launcher that a
    user sets as hardware.*."""

    wait: bool = MISSING
    partition: Optional[str] = MISSING
    cpus_per_task: int = MISSING
    array_parallelism: int = MISSING
    max_num_timeout: int = MISSING
    account: Optional[str] = MISSING
    qos: Optional[str] = MISSING
    constraint: Optional[str] = MISSING
    additional_parameters: Dict[str, Any] = MISSING


# The mining group's own keys, the only ones that are no option of the strategy: which strategy
# (fixed to the registry's name) and w of the energy loss (given by the yaml).
GROUP_KEYS = ("name", "weight")


def strategy_schema(name: str, strategy: type) -> type:
    """The mining group's schema for one strategy: GROUP_KEYS, then the strategy's dataclass fields
    with their own types and defaults. A strategy that is no dataclass has no options."""
    name_key, weight_key = GROUP_KEYS
    options = []
    if dataclasses.is_dataclass(strategy):
        types = typing.get_type_hints(strategy)  # mining.py's annotations are strings (PEP 563)
        for f in dataclasses.fields(strategy):
            default = (
                field(default_factory=f.default_factory)
                if f.default_factory is not dataclasses.MISSING
                else field(default=MISSING if f.default is dataclasses.MISSING else f.default)
            )
            options.append((f.name, types[f.name], default))
    return dataclasses.make_dataclass(
        f"{strategy.__name__}Config",
        [(name_key, str, field(default=name)), (weight_key, float, field(default=MISSING)), *options],
    )


MINING_SCHEMAS: dict[str, type] = {name: strategy_schema(name, cls) for name, cls in STRATEGIES.items()}


def strategy_options(name: str) -> list[str]:
    """The keys of mining.<name> that go to the strategy's class (all but GROUP_KEYS)."""
    return [f.name for f in dataclasses.fields(MINING_SCHEMAS[name]) if f.name not in GROUP_KEYS]


def options_of(mining: DictConfig) -> dict:
    """A composed mining group's options for its strategy's class (all but GROUP_KEYS)."""
    return {k: v for k, v in OmegaConf.to_container(mining).items() if k not in GROUP_KEYS}


# ================================================================ the top level


@dataclass
class TrainConfig:
    steps: int = MISSING
    batch_size: int = MISSING
    grad_clip: float = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING


@dataclass
class EmaConfig:
    every: int = MISSING
    warmup: int = MISSING
    power: float = MISSING
    max_decay: float = MISSING


@dataclass
class EvalConfig:
    size: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    splits: Dict[str, float] = MISSING


@dataclass
class SamplerConfig:
    inner_steps: int = MISSING
    step_scale: float = MISSING
    backtrack: float = MISSING


@dataclass
class CheckpointConfig:
    every: int = MISSING
    keep: int = MISSING
    fallback: bool = MISSING


@dataclass
class Config:
    seed: int = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # The groups: each option's yaml extends its group's schema.
    model: ModelConfig = MISSING
    diffusion: DiffusionConfig = MISSING
    dataset: DatasetConfig = MISSING
    mining: Any = MISSING  # one schema per strategy (MINING_SCHEMAS)
    optim: OptimConfig = MISSING
    hardware: HardwareConfig = MISSING
    # A group whose options bring their own schema (the trackers of issue 15); None = no group.
    logger: Any = None


# ================================================================ the yaml files

CONF = files("ired_mining") / "conf"


def group_choices(group: str) -> list[str]:
    """The options of a config group, as the yaml files under conf/ name them."""
    return sorted(p.name[:-5] for p in (CONF / group).iterdir() if p.name.endswith(".yaml"))


# ================================================================ a job's directory name

# The one hardware key that shapes a run's numbers (train.compat_fingerprint covers it): a bf16 job
# is another run than its fp32 twin, so it keeps its place in the job's directory name.
RUN_SHAPING_HARDWARE = ("precision",)


def dirname_exclude_keys() -> list[str]:
    """The overrides left out of a job's directory name (hydra.job.config.override_dirname.exclude_keys):
    the presets, every hardware key but RUN_SHAPING_HARDWARE, and the trackers' keys. Hardware and
    trackers do not change a run, so a sweep re-launched on another partition, with another time limit
    or with torch.compile finds its jobs again. Derived from the hardware schemas and conf/logger/, so
    that a key added there is left out at once (a hand-kept list drifted: hardware.compile)."""
    hardware = [f.name for f in dataclasses.fields(SlurmHardwareConfig) if f.name not in RUN_SHAPING_HARDWARE]
    trackers = []
    for option in group_choices("logger"):
        settings = OmegaConf.to_container(OmegaConf.load(str(CONF / "logger" / f"{option}.yaml"))) or {}
        for tracker, keys in settings.items():
            trackers += [f"logger.{tracker}.{key}" for key in keys or {}]
    return ["experiment", "hardware", *(f"hardware.{key}" for key in hardware), "logger", *trackers]


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent), as configs of no group named
    `<group>_schema` (`mining_<strategy>_schema` for mining): a group would be listed by --help
    beside the real ones."""
    cs = ConfigStore.instance()
    for name, node in [
        ("config", Config),
        ("model", ModelConfig),
        ("diffusion", DiffusionConfig),
        ("dataset", DatasetConfig),
        ("optim", OptimConfig),
        ("hardware", HardwareConfig),
        ("hardware_slurm", SlurmHardwareConfig),
    ]:
        cs.store(name=f"{name}_schema", node=node)
    for name, node in MINING_SCHEMAS.items():
        cs.store(name=f"mining_{name}_schema", node=node)
    cs.store(
        name="job_dirname",
        node={"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": dirname_exclude_keys()}}}}},
    )


register()


# ================================================================ runs read back


def typed(cfg: DictConfig) -> DictConfig:
    """A config read back from a run (its checkpoint or .hydra/config.yaml, plain yaml) with the
    schema's types again, so that overrides of it are checked as ired-train's are. The mining
    schema is the one of cfg.mining.name; the hardware one is SLURM's where the run had a partition.
    Raises omegaconf's ValidationError or ConfigKeyError where the config does not fit."""
    schema = OmegaConf.structured(Config)
    if cfg.mining.name in MINING_SCHEMAS:  # else left untyped: checks.check_ranges names the strategies
        schema.mining = OmegaConf.structured(MINING_SCHEMAS[cfg.mining.name])
    schema.hardware = OmegaConf.structured(SlurmHardwareConfig if "partition" in cfg.hardware else HardwareConfig)
    return OmegaConf.merge(schema, cfg)
