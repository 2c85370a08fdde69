"""The typed config schema: every yaml composes against it, the mining schema is the strategy classes'
own fields, and a command line it (or Hydra's composition) refuses is one line on stderr, exit 2,
for a single run and for a multirun, with nothing written."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from ired_mining import schema
from ired_mining.checks import ConfigError
from ired_mining.compose import check_against_schema
from ired_mining.jobs_record import job_names
from ired_mining.mining import STRATEGIES
from ired_mining.schema import CONF, group_choices

from conftest import TINY, run_cli


def compose_cfg(overrides: list[str]):
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


# ================================================================ the schema and the yaml files


def test_mining_schema_is_each_strategy_class_with_its_defaults():
    for name, cls in STRATEGIES.items():
        cfg = compose_cfg([f"mining={name}"])
        assert OmegaConf.get_type(cfg.mining) is schema.MINING_SCHEMAS[name]
        fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
        options = {k: v for k, v in cfg.mining.items() if k not in ("name", "weight")}
        assert options == {f.name: f.default for f in fields}
        assert cfg.mining.name == name
        # The yaml states the weight only: each option's default lives in the class, once.
        raw = yaml.safe_load((CONF / "mining" / f"{name}.yaml").read_text())
        assert not set(raw) & {f.name for f in fields}, raw


def test_a_field_added_to_a_strategy_class_is_a_typed_config_key():
    @dataclass
    class NearbyNegatives:
        sigma: float = 0.05
        tries: int = 3

    node = OmegaConf.structured(schema.strategy_schema("nearby", NearbyNegatives))
    assert list(node) == ["name", "weight", "sigma", "tries"]
    assert node.name == "nearby" and node.sigma == 0.05 and node.tries == 3
    assert OmegaConf.is_missing(node, "weight")  # the group's yaml gives it
    with pytest.raises(ValidationError):
        node.tries = "many"


PRESETS = group_choices("experiment")
HARDWARE = group_choices("hardware")


@pytest.mark.parametrize(
    "overrides",
    [[f"experiment={p}"] for p in PRESETS]
    + [[f"hardware={h}"] for h in HARDWARE]
    + [[f"mining={m}"] for m in group_choices("mining")]
    + [
        ["experiment=[paper,mining_sweep]", "hardware=slurm_gpu"],
        ["experiment=[pilot,mining_sweep]", "hardware=slurm_cpu"],
        ["experiment=pilot", "hardware=submitit_local"],
    ],
)
def test_every_yaml_composes_against_the_schema(overrides):
    cfg = compose_cfg(overrides)
    check_against_schema(cfg)  # exactly the schema's keys, every value resolves
    assert OmegaConf.get_type(cfg) is schema.Config
    for group, typ in [
        ("train", schema.TrainConfig),
        ("model", schema.ModelConfig),
        ("diffusion", schema.DiffusionConfig),
        ("dataset", schema.DatasetConfig),
        ("optim", schema.OptimConfig),
    ]:
        assert OmegaConf.get_type(cfg[group]) is typ
    assert issubclass(OmegaConf.get_type(cfg.hardware), schema.HardwareConfig)
    if cfg.hydra.launcher.get("_target_", "").endswith("SlurmLauncher"):
        # the launcher's keys come from hardware.* and resolve to the schema's types
        assert OmegaConf.get_type(cfg.hardware) is schema.SlurmHardwareConfig
        assert cfg.hydra.launcher.timeout_min == cfg.hardware.timeout_min
        assert cfg.hardware.threads == cfg.hardware.cpus_per_task


def test_the_schema_refuses_a_key_added_past_hydra():
    cfg = compose_cfg(["+mining.stpes=3"])  # Hydra lets + add it
    with pytest.raises(
        ConfigError,
        match=r"^mining.stpes: not a key of mining \(adversarial\); its keys: "
        r"name, weight, steps, step_scale, corruption, backtrack$",
    ):
        check_against_schema(cfg)


def test_ired_eval_overrides_are_typed_by_the_schema():
    from ired_mining.evaluate import EvalError, apply_overrides

    cfg = OmegaConf.create(OmegaConf.to_container(compose_cfg(["experiment=pilot"]), resolve=False))
    del cfg["hydra"]  # as a checkpoint stores it
    assert apply_overrides(cfg, ["sampler.inner_steps=20"]).sampler.inner_steps == 20
    with pytest.raises(EvalError, match=r"^sampler.inner_steps: got 'abc'; it must be an integer$"):
        apply_overrides(cfg, ["sampler.inner_steps=abc"])
    with pytest.raises(EvalError, match=r"^hardware.threads: got '1.5'; it must be an integer or null$"):
        apply_overrides(cfg, ["hardware.threads=1.5"])


# ================================================================ bad command lines, through the CLI


BAD = [
    (
        ["+mining.stpes=3"],
        "mining.stpes: not a key of mining (adversarial); its keys: name, weight, steps, step_scale, corruption",
    ),
    (
        ["mining.stpes=3"],
        "mining.stpes: not a key of mining (adversarial); its keys: name, weight, steps, step_scale, corruption",
    ),
    (["bogus=1"], "bogus: not a key of the config; its keys: seed, train, ema, eval, sampler, checkpoint, "),
    (["+bogus=1"], "bogus: not a key of the config; its keys: seed, train, "),
    (["train.batch_size=abc"], "train.batch_size: got 'abc'; it must be an integer"),
    (["optim.lr=fast"], "optim.lr: got 'fast'; it must be a number"),
    (["optim.betas=[0.9,x]"], "optim.betas[1]: got 'x'; it must be a number"),
    (["hardware.compile=maybe"], "hardware.compile: got 'maybe'; it must be true or false"),
    (["~mining.steps"], "mining.steps: required, cannot be deleted; set it instead"),
    (["~train.batch_size"], "train.batch_size: required, cannot be deleted; set it instead"),
    (["~seed"], "seed: required, cannot be deleted; set it instead"),
    (["mining=bogus"], "mining: no option 'bogus'; choose one of: adversarial, none, random"),
    (
        ["hardware=nope"],
        "hardware: no option 'nope'; choose one of: auto, cpu, gpu, slurm_cpu, slurm_gpu, submitit_local",
    ),
    (["mining=none", "mining.steps=3"], "mining.steps: not a key of mining (none); its keys: name, weight"),
    (["hardware.partition=a100"], "hardware.partition: not a key of hardware; its keys: device, threads, "),
    (["train.steps=${nope}"], "train.steps: does not resolve"),
    (["train.steps=3=4"], "train.steps=3=4: not an override ("),
]


def assert_refused(tmp_path, args: list[str], message: str, multirun: bool = False) -> None:
    run_dir, sweep_dir = tmp_path / "run", tmp_path / "sweep"
    proc = run_cli(
        "ired-train",
        *(["-m", "seed=0,1"] if multirun else []),
        *TINY,
        *args,
        f"hydra.run.dir={run_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"ired-train: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not run_dir.exists() and not sweep_dir.exists()  # nothing written, no run started
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_line_is_one_line_single_run(tmp_path, args, message):
    assert_refused(tmp_path, args, message)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_line_is_one_line_multirun(tmp_path, args, message):
    assert_refused(tmp_path, args, message, multirun=True)


@pytest.mark.parametrize(
    "args,message",
    [
        # only the jobs of some strategies are bad: each job is composed before any starts
        (["mining=glob(*)", "mining.steps=3"], "mining.steps: not a key of mining (none); its keys: name, weight"),
        (["experiment=mining_sweep", "mining.source=gaussian"], "mining.source: not a key of mining (adversarial)"),
        (
            ["seed=range(2)", "mining=adversarial,random", "mining.source=gaussian"],
            "mining.source: not a key of mining (adversarial)",
        ),
        (["mining=none,bogus"], "mining: no option 'bogus'; choose one of: adversarial, none, random"),
        (["hardware=cpu,slurm_cpu", "hardware.cpus_per_task=1"], "hardware.cpus_per_task: not a key of hardware"),
        (["seed=0,abc"], "seed: got 'abc'; it must be an integer"),
    ],
)
def test_bad_job_of_a_sweep_is_refused_before_any_job_runs(tmp_path, args, message):
    assert_refused(tmp_path, args, message, multirun=True)


def test_a_sweep_outside_multirun_is_one_line(tmp_path):
    assert_refused(tmp_path, ["seed=0,1"], "seed: seed=0,1 sweeps over values, which needs -m")


# ================================================================ a job's directory name


def hardware_keys() -> list[str]:
    """Every key some hardware option sets, read off conf/hardware/*.yaml (not off the schema that
    the exclude list is derived from)."""
    return sorted(
        {
            key
            for option in HARDWARE
            for key in yaml.safe_load((CONF / "hardware" / f"{option}.yaml").read_text())["hardware"]
        }
    )


def names_with(key: str | None) -> list[str]:
    """The directory names ired-train's sweeper gives two jobs that differ in their seed and, where
    `key` is given, in hardware.<key> too, under the exclude list Hydra composes."""
    exclude = list(compose_cfg([]).hydra.job.config.override_dirname.exclude_keys)
    jobs = [["seed=0"], ["seed=1"]]
    if key:
        jobs = [[*job, f"hardware.{key}={value}"] for job, value in zip(jobs, ("a", "b"))]
    return job_names(jobs, exclude)


@pytest.mark.parametrize("key", [k for k in hardware_keys() if k != "precision"])
def test_a_hardware_override_never_changes_a_jobs_directory_name(key):
    # A re-launch on other hardware (another partition, a time limit, torch.compile) finds its jobs.
    assert names_with(key) == names_with(None) == ["seed=0", "seed=1"]


def test_precision_shapes_the_run_so_it_stays_in_the_name():
    assert names_with("precision") == ["hardware.precision=a,seed=0", "hardware.precision=b,seed=1"]
