"""Evaluation on fixed problem sets: the sampler's MSE beside the zero predictor and an exact solver,
and ired-eval, which evaluates a trained run again under any evaluation setting.

    ired-eval RUN_DIR                                     # the run's own settings: its metrics.json again
    ired-eval RUN_DIR sampler.inner_steps=20 dataset.split=harder
    ired-eval RUN_DIR eval.size=4096 eval.seed=7          # more matrices; other matrices and sampler noise
    ired-eval RUN_DIR eval.splits.mid=0.25                # a new split: A = 2RRᵀ + 0.25·I
    ired-eval RUN_DIR --scaling                           # MSE for 0, 5, 10, 20 inner steps, every split
    ired-eval RUN_DIR --scaling --inner-steps 0,1,2,5,10,20,40

Results go to RUN_DIR/eval/ as JSON (and scaling.png); `ired-report` picks up eval/scaling.json.
From Python:

    from ired_mining.evaluate import load_run
    model, diffusion, cfg = load_run("outputs/2026-11-26/10-00-00")    # the EMA model, on cfg's device
    y_hat = diffusion.sample(model, x, cfg.sampler.inner_steps)         # x: (batch, n*n) matrices A
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ired_mining.backend import configure_backend, pick_device
from ired_mining.checkpoint import CheckpointError, atomic_write_json, list_checkpoints, load_checkpoint
from ired_mining.compose import explain
from ired_mining.config import ConfigError, validate
from ired_mining.data import Problems, fixed_set
from ired_mining.diffusion import Diffusion, build_diffusion
from ired_mining.model import EnergyMLP, build_model
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


@torch.no_grad()
def evaluate(model: EnergyMLP, diffusion: Diffusion, sets: dict[str, Problems], inner_steps: int,
             batch_size: int, seed: int, step_scale: float = 1.0) -> dict[str, float]:
    """Sampler MSE, zero-predictor MSE, exact-solver MSE and residual on each set.

    The sampler's starting noise comes from a generator seeded with `seed`, so two evaluations of the
    same weights give the same numbers.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    out = {}
    for name, problems in sets.items():
        problems = problems.to(device)
        y_hat = torch.cat([
            diffusion.sample(model, problems.x[i:i + batch_size], inner_steps, generator, step_scale)
            for i in range(0, len(problems), batch_size)
        ])
        n = model.n
        exact = torch.linalg.inv(rearrange(problems.x, "b (n m) -> b n m", n=n))
        out[f"{name}/mse"] = (y_hat - problems.y).square().mean().item()
        out[f"{name}/zero_mse"] = problems.y.square().mean().item()
        out[f"{name}/exact_mse"] = (rearrange(exact, "b n m -> b (n m)") - problems.y).square().mean().item()
        out[f"{name}/residual"] = residual(problems.x, y_hat).mean().item()
    return out


def print_summary(summary: dict, run_dir: Path) -> None:
    """The final metrics of a run as a rich table (split × MSE, zero predictor, exact solver, residual)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['strategy']} · seed {summary['seed']} · {summary['step']} steps")
    for col in ("split", "MSE", "zero predictor", "exact solver", "residual"):
        table.add_column(col, justify="right")
    for split in sorted({k.split("/")[0] for k in summary if k.endswith("/zero_mse")}):
        table.add_row(split, *(f"{summary[f'{split}/{m}']:.4g}" for m in ("mse", "zero_mse", "exact_mse", "residual")))
    console = Console()
    console.print(table)
    console.print(f"run directory: [bold]{run_dir}[/bold]")


# ================================================================ ired-eval: a trained run under any setting

class EvalError(ValueError):
    """Input ired-eval cannot use; the message is one line for the user."""


# What an evaluation may change; the rest of the config is fixed by the trained weights or does
# not affect evaluation, and changing it would silently mean nothing.
EVAL_PREFIXES = ("eval.", "sampler.", "hardware.")
SPLIT_KEY = "dataset.split"  # not a config key: restricts which of eval.splits are evaluated
SCALING_STEPS = (0, 5, 10, 20)


@dataclass
class LoadedRun:
    model: EnergyMLP
    diffusion: Diffusion
    cfg: DictConfig
    checkpoint: Path
    step: int


def apply_overrides(cfg, overrides: list[str]):
    """The run's config with `key=value` overrides (values parsed as YAML), checked like ired-train's.

    Only eval.*, sampler.* and hardware.* may change; a new split may be added under eval.splits.
    """
    try:  # the schema's types again, so that overrides are checked as ired-train's are
        cfg = typed(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    except OmegaConfBaseException as err:
        raise EvalError(f"the run's config does not fit this version's schema: {explain(err)}") from None
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise EvalError(f"{item!r} is not an override; write key=value, e.g. sampler.inner_steps=20")
        new_split = key.startswith("eval.splits.") and key.count(".") == 2
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>" and not new_split:
            raise EvalError(f"{key} is not a key of this run's config")
        if not key.startswith(EVAL_PREFIXES):
            raise EvalError(f"{key} cannot change at evaluation (the trained run fixes it); ired-eval "
                            f"accepts eval.*, sampler.*, hardware.* and {SPLIT_KEY}")
        try:
            value = OmegaConf.select(OmegaConf.from_dotlist([item]), key)
        except Exception as err:  # OmegaConf's grammar errors come in several types
            raise EvalError(f"cannot parse {item!r}: {str(err).splitlines()[0]}") from None
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:  # the schema refuses the value's type
            raise EvalError(explain(err)) from None
    try:
        validate(cfg)
    except ConfigError as err:
        raise EvalError(str(err)) from None
    return cfg


def ema_weights(state: dict) -> dict:
    """The EMA model's weights as a plain EnergyMLP state dict: AveragedModel prefixes the wrapped
    module's keys with `module.` and adds its update counter."""
    return {k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}


def open_run(run_dir: str | Path, overrides: list[str] = ()) -> LoadedRun:
    """The newest checkpoint's EMA model of a run, with its config and the overrides applied."""
    # The same builders as training (device, backend settings, diffusion), so the numbers reproduce.
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvalError(f"run directory {run_dir} does not exist")
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not checkpoints:
        raise EvalError(f"no checkpoint in {run_dir / 'checkpoints'}: is {run_dir} a run directory of ired-train?")
    state = load_checkpoint(checkpoints[-1], "cpu")  # CheckpointError says in one line what is wrong
    if "ema" not in state or "config" not in state:
        raise EvalError(f"checkpoint {checkpoints[-1]} holds no EMA weights or config")
    cfg = apply_overrides(OmegaConf.create(state["config"]), list(overrides))
    try:
        device = pick_device(cfg)
    except ConfigError as err:
        raise EvalError(str(err).replace("use hardware=cpu or hardware=auto", "add hardware.device=cpu")) from None
    configure_backend(cfg, device)
    model = build_model(cfg)
    model.load_state_dict(ema_weights(state))
    return LoadedRun(model.to(device).eval(), build_diffusion(cfg, device), cfg, checkpoints[-1], int(state["step"]))


def load_run(run_dir: str | Path, overrides: list[str] = ()):
    """(model, diffusion, cfg) of a trained run: its EMA model from the newest checkpoint on the
    device cfg.hardware.device picks, the diffusion it was trained with, and its config (with
    `overrides` such as "sampler.inner_steps=20" or "hardware.device=cpu" applied)."""
    run = open_run(run_dir, overrides)
    return run.model, run.diffusion, run.cfg


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
    return evaluate(run.model, run.diffusion, sets, c.sampler.inner_steps, c.eval.batch_size, c.eval.seed,
                    c.sampler.step_scale)


def settings(run: LoadedRun, splits: list[str]) -> dict:
    c = run.cfg
    return {"eval.size": c.eval.size, "eval.seed": c.eval.seed, "eval.batch_size": c.eval.batch_size,
            "splits": {k: float(v) for k, v in c.eval.splits.items() if k in splits},
            "sampler.inner_steps": c.sampler.inner_steps, "sampler.step_scale": c.sampler.step_scale,
            "device": str(next(run.model.parameters()).device)}


def record(run: LoadedRun, run_dir: Path, overrides: list[str], splits: list[str]) -> dict:
    """What every ired-eval JSON starts with: which weights, which run, which settings."""
    return {"run_dir": str(run_dir.resolve()), "checkpoint": run.checkpoint.name, "step": run.step,
            "strategy": run.cfg.mining.name, "seed": run.cfg.seed, "overrides": overrides,
            "settings": settings(run, splits)}


def output_name(overrides: list[str]) -> str:
    """eval/<overrides>.json, so evaluations under different settings sit side by side."""
    if not overrides:
        return "default"
    name = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", ",".join(sorted(overrides)))
    return name if len(name) <= 150 else name[:130] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def choose_splits(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split the dataset.split override off the config overrides; check its names."""
    chosen, rest = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        if key == SPLIT_KEY:
            chosen += [v.strip() for v in value.split(",") if v.strip()]
        else:
            rest.append(item)
    return chosen, rest


def check_splits(chosen: list[str], cfg) -> list[str]:
    available = list(cfg.eval.splits)
    for name in chosen:
        if name not in available:
            raise EvalError(f"{SPLIT_KEY}={name} is not a split of this run; choose one of: {', '.join(available)} "
                            f"(or add one: eval.splits.NAME=λ)")
    return chosen or available


def scaling(run: LoadedRun, splits: list[str], inner_steps: list[int]) -> list[dict]:
    """MSE (and sampler seconds) on each split for each number of inner energy-descent steps."""
    rows = []
    for k in inner_steps:
        run.cfg.sampler.inner_steps = k
        start = time.perf_counter()
        metrics = run_eval(run, splits)
        rows.append({"inner_steps": k, "seconds": round(time.perf_counter() - start, 3), **metrics})
    return rows


def plot_scaling_run(rows: list[dict], splits: list[str], label: str, path: Path) -> None:
    from ired_mining.report import Line, scaling_figure

    steps = [r["inner_steps"] for r in rows]
    scaling_figure({s: [Line(label, "tab:red", steps, [r[f"{s}/mse"] for r in rows])] for s in splits},
                   {s: rows[0][f"{s}/zero_mse"] for s in splits}, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            print(f"ired-eval: error: {message} (see ired-eval --help)", file=sys.stderr)
            sys.exit(2)

    parser = OneLineParser(prog="ired-eval", description="Evaluate a trained run's EMA model under any "
                           "evaluation setting; results go to RUN_DIR/eval/.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", help="a run directory of ired-train (holds checkpoints/)")
    parser.add_argument("overrides", nargs="*", help="key=value: eval.*, sampler.*, hardware.*, dataset.split")
    parser.add_argument("--scaling", action="store_true", help="MSE against the sampler's inner steps")
    parser.add_argument("--inner-steps", default=",".join(map(str, SCALING_STEPS)),
                        help="inner steps for --scaling, comma-separated (default: %(default)s)")
    return parser.parse_args(argv)


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 0:
        raise EvalError(f"--inner-steps={text} must be comma-separated integers ≥ 0, e.g. 0,5,10,20")
    return sorted(set(steps))


def print_scaling(rows: list[dict], splits: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="MSE vs test-time inner steps")
    for col in ["inner steps", *(f"{s} MSE" for s in splits), "seconds"]:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["inner_steps"]), *(f"{r[f'{s}/mse']:.4g}" for s in splits), f"{r['seconds']:.3g}")
    Console().print(table)


def cli(argv: list[str]) -> None:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    chosen, overrides = choose_splits(args.overrides)
    steps = parse_steps(args.inner_steps) if args.scaling else []
    run = open_run(run_dir, overrides)
    splits = check_splits(chosen, run.cfg)
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    if args.scaling:
        out = record(run, run_dir, args.overrides, splits)
        rows = scaling(run, splits, steps)
        atomic_write_json(out_dir / "scaling.json", out | {"inner_steps": steps, "results": rows})
        plot_scaling_run(rows, splits, f"{run.cfg.mining.name} · seed {run.cfg.seed} · step {run.step}",
                         out_dir / "scaling.png")
        print_scaling(rows, splits)
        print(f"wrote {out_dir / 'scaling.json'} and {out_dir / 'scaling.png'}")
        return
    metrics = run_eval(run, splits)
    path = out_dir / f"{output_name(args.overrides)}.json"
    atomic_write_json(path, record(run, run_dir, args.overrides, splits) | {"metrics": metrics})
    print_summary({"strategy": run.cfg.mining.name, "seed": run.cfg.seed, "step": run.step, **metrics}, run_dir)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: bad input is one line on stderr and a non-zero exit, never a traceback."""
    try:
        cli(sys.argv[1:] if argv is None else argv)
    except (EvalError, CheckpointError) as err:
        print(f"ired-eval: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

