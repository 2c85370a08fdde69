"""Evaluation on fixed problem sets: the sampler's MSE beside the zero predictor and an exact solver
(what training calls), and a trained run loaded again for evaluation under any setting. The
`ired-eval` command line over this library is eval_cli.py.

    from ired_mining.evaluate import open_run
    run = open_run("outputs/2026-11-26/10-00-00")    # the EMA model, on cfg's device (a LoadedRun)
    y_hat = run.diffusion.sample(run.model, x, run.cfg.sampler.inner_steps)   # x: (batch, n*n) matrices A
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ired_mining import expansion
from ired_mining.backend import configure_backend, pick_device
from ired_mining.checkpoint import list_checkpoints, load_checkpoint
from ired_mining.checks import ConfigError, check_ranges
from ired_mining.compose import already_set, explain
from ired_mining.data import Problems, fixed_set
from ired_mining.diffusion import Diffusion, build_diffusion
from ired_mining.model import EnergyMLP, build_model, is_regressor
from ired_mining.rundir import RunDir, backfill
from ired_mining.schema import typed


def eval_sets(n: int, size: int, seed: int, splits: dict[str, float]) -> dict[str, Problems]:
    """One fixed set per split (name → λ), each from its own seed derived from `seed`.

    The same arguments give the same matrices for every run of a sweep, on any device.
    """
    return {name: fixed_set(n, size, float(lam), seed + 1000 * i) for i, (name, lam) in enumerate(splits.items())}


def residual(x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """‖A·Ŷ − I‖_F / √n per matrix."""
    n = int(round(x.shape[-1] ** 0.5))
    a = rearrange(x.double(), "b (n m) -> b n m", n=n)
    y = rearrange(y_hat.double(), "b (n m) -> b n m", n=n)
    eye = torch.eye(n, dtype=torch.float64, device=x.device)
    return torch.linalg.matrix_norm(a @ y - eye) / n**0.5


def predict(
    model, diffusion: Diffusion, x: torch.Tensor, inner_steps: int, generator: torch.Generator, step_scale: float = 1.0
) -> torch.Tensor:
    """The model's answers Ŷ to the problems x: the IRED sampler, or the regressor's forward pass."""
    if is_regressor(model):
        return model(x)
    return diffusion.sample(model, x, inner_steps, generator, step_scale)


@torch.no_grad()
def evaluate(
    model: EnergyMLP,
    diffusion: Diffusion,
    sets: dict[str, Problems],
    inner_steps: int,
    batch_size: int,
    seed: int,
    step_scale: float = 1.0,
) -> dict[str, float]:
    """Sampler MSE, zero-predictor MSE, exact-solver MSE and residual on each set.

    The sampler's starting noise comes from a generator seeded with `seed`, so two evaluations of the
    same weights give the same numbers.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    out = {}
    for name, problems in sets.items():
        problems = problems.to(device)
        y_hat = torch.cat(
            [
                predict(model, diffusion, problems.x[i : i + batch_size], inner_steps, generator, step_scale)
                for i in range(0, len(problems), batch_size)
            ]
        )
        n = model.n
        exact = torch.linalg.inv(rearrange(problems.x, "b (n m) -> b n m", n=n))
        out[f"{name}/mse"] = (y_hat - problems.y).square().mean().item()
        out[f"{name}/zero_mse"] = problems.y.square().mean().item()
        out[f"{name}/exact_mse"] = (rearrange(exact, "b n m -> b (n m)") - problems.y).square().mean().item()
        out[f"{name}/residual"] = residual(problems.x, y_hat).mean().item()
    return out


def print_summary(summary: dict, run_dir: Path, changed: list[str] = ()) -> str:
    """The final metrics of a run as a rich table (split × MSE, zero predictor, exact solver, residual),
    titled with the settings `changed` from the run's own (ired-eval's overrides), and the run's path.
    Returns the same as plain text, for a log file."""
    import io

    from rich.console import Console
    from rich.table import Table

    what = "regressor" if summary.get("model") == "regressor" else summary["strategy"]
    table = Table(title=" · ".join([what, f"seed {summary['seed']}", f"{summary['step']} steps", *changed]))
    for col in ("split", "MSE", "zero predictor", "exact solver", "residual"):
        table.add_column(col, justify="right")
    for split in sorted({k.split("/")[0] for k in summary if k.endswith("/zero_mse")}):
        table.add_row(split, *(f"{summary[f'{split}/{m}']:.4g}" for m in ("mse", "zero_mse", "exact_mse", "residual")))
    console = Console()
    console.print(table)
    console.print(f"run directory: [bold]{run_dir}[/bold]", soft_wrap=True)  # one line, to copy
    plain = Console(file=io.StringIO(), width=120, color_system=None)
    plain.print(table)
    return plain.file.getvalue() + f"run directory: {run_dir}"


# ================================================================ a trained run, under any evaluation setting


class EvalError(ValueError):
    """Input a trained run cannot be evaluated with; the message is one line for the user."""


# What an evaluation may change; the rest of the config is fixed by the trained weights or does
# not affect evaluation, and changing it would silently mean nothing.
EVAL_PREFIXES = ("eval.", "sampler.", "hardware.")
SPLIT_KEY = "dataset.split"  # not a config key: restricts which of eval.splits are evaluated
_ABSENT = object()  # OmegaConf.select's default for a key the config lacks (None may be a value)


@dataclass
class LoadedRun:
    model: EnergyMLP
    diffusion: Diffusion
    cfg: DictConfig
    checkpoint: Path
    step: int


def apply_overrides(cfg, overrides: list[str]):
    """The run's config with `key=value` overrides, in ired-train's grammar (Hydra's override parser:
    its typed values, quoting, lists and dicts) and checked as ired-train's are: the config is typed
    by the schema again, each value merged as Hydra merges it, the ranges checked.

    Only eval.*, sampler.* and hardware.* may change; a new split may be added under eval.splits
    (with or without the +).
    """
    from hydra.errors import OverrideParseException

    try:  # the schema's types again, so that overrides are checked as ired-train's are
        cfg = typed(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    except OmegaConfBaseException as err:
        raise EvalError(f"the run's config does not fit this version's schema: {explain(err)}") from None
    for item in overrides:
        try:
            (override,) = expansion.parse([item])
        except OverrideParseException as err:
            if "=" not in item:
                raise EvalError(not_an_override(item)) from None
            raise EvalError(f"cannot parse {item!r}: {err.message.strip().splitlines()[0]}") from None
        key = override.key_or_group
        if not key or override.is_delete() or override.package is not None:  # =v, ~key, key@package
            raise EvalError(not_an_override(item))
        if override.is_sweep_override():
            raise EvalError(
                f"{key}: {item} is a sweep; ired-eval evaluates one setting at a time "
                "(over inner steps: --scaling --inner-steps A,B,...)"
            )
        new_split = key.startswith("eval.splits.") and key.count(".") == 2
        held = OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT
        if not held and not new_split:
            raise EvalError(not_a_key(cfg, key))
        if not key.startswith(EVAL_PREFIXES):
            raise EvalError(
                f"{key} cannot change at evaluation (the trained run fixes it); ired-eval "
                f"accepts eval.*, sampler.*, hardware.* and {SPLIT_KEY}"
            )
        if override.is_add() and held:  # as ired-train refuses it
            raise EvalError(already_set(key))
        try:
            OmegaConf.update(cfg, key, override.value(), merge=True)
        except OmegaConfBaseException as err:  # the schema refuses the value's type
            raise EvalError(explain(err)) from None
    try:  # an override's ${...}, at once: the evaluation reads plain values
        OmegaConf.to_container(cfg, resolve=True)  # names the key that does not resolve (resolve() does not)
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise EvalError(explain(err)) from None
    try:
        check_ranges(cfg)
    except ConfigError as err:
        raise EvalError(str(err)) from None
    return cfg


def not_an_override(item: str) -> str:
    return f"{item!r} is not an override; write key=value, e.g. sampler.inner_steps=20"


def not_a_key(cfg: DictConfig, key: str) -> str:
    """The one line for an override of a key the run's config lacks: the keys its nearest existing
    parent does have (as ired-train's refusal lists them), or what ired-eval accepts at all."""
    parent = key.rpartition(".")[0]
    while parent and not isinstance(OmegaConf.select(cfg, parent, default=None), DictConfig):
        parent = parent.rpartition(".")[0]
    if parent.partition(".")[0] + "." not in EVAL_PREFIXES:
        return f"{key}: not a key of this run's config; ired-eval accepts eval.*, sampler.*, hardware.* and {SPLIT_KEY}"
    return f"{key}: not a key of {parent}; its keys: {', '.join(str(k) for k in OmegaConf.select(cfg, parent))}"


def ema_weights(state: dict) -> dict:
    """The EMA model's weights as a plain EnergyMLP state dict: AveragedModel prefixes the wrapped
    module's keys with `module.` and adds its update counter."""
    return {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> LoadedRun:
    """A trained run: its EMA model from the newest checkpoint on the device cfg.hardware.device
    picks, the diffusion it was trained with, and its config with `overrides` such as
    "sampler.inner_steps=20" or "hardware.device=cpu" applied."""
    # The same builders as training (device, backend settings, diffusion), so the numbers reproduce.
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"run directory {run_dir} does not exist")
    checkpoint_dir = RunDir(run_dir).checkpoints
    checkpoints = list_checkpoints(checkpoint_dir)
    if not checkpoints:
        raise EvalError(f"no checkpoint in {checkpoint_dir}: is {run_dir} a run directory of ired-train?")
    state = load_checkpoint(checkpoints[-1], "cpu")  # CheckpointError says in one line what is wrong
    if "ema" not in state or "config" not in state:
        raise EvalError(f"checkpoint {checkpoints[-1]} holds no EMA weights or config")
    cfg = OmegaConf.create(backfill(OmegaConf.to_container(OmegaConf.create(state["config"]))))
    cfg = apply_overrides(cfg, list(overrides))
    try:
        device = pick_device(cfg)
    except ConfigError as err:
        raise EvalError(str(err).replace("use hardware=cpu or hardware=auto", "add hardware.device=cpu")) from None
    configure_backend(cfg, device)
    model = build_model(cfg)
    model.load_state_dict(ema_weights(state))
    return LoadedRun(model.to(device).eval(), build_diffusion(cfg, device), cfg, checkpoints[-1], int(state["step"]))


def run_eval(run: LoadedRun, splits: list[str] | None = None) -> dict[str, float]:
    """evaluate() under the run's (overridden) config on the chosen splits (all by default).

    The sets are built from the full list of splits, so a split keeps its matrices when it is
    evaluated alone; the sampler's noise then starts at that split, which is why a single split's
    MSE matches training's only up to sampler noise, while all splits together reproduce it exactly.
    """
    c = run.cfg
    sets = eval_sets(c.dataset.n, c.eval.size, c.eval.seed, dict(c.eval.splits))
    if splits:
        sets = {name: sets[name] for name in splits}
    return evaluate(
        run.model, run.diffusion, sets, c.sampler.inner_steps, c.eval.batch_size, c.eval.seed, c.sampler.step_scale
    )
