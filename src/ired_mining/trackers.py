"""Trackers: TensorBoard and Weights & Biases, to watch a run or a sweep while it trains (`logger=...`).

metrics.jsonl stays the run's record; a tracker is a live view of it. A tracker is a small class
built from the run directory, the step the run starts from and the composed config, with two
methods: `log(step, scalars)` and `finish(hparams, metrics, status)`. `TRACKERS` is the single list
of names. A tracker's package is imported only when it is asked for; one that is not installed is
a one-line error saying how to install it.

Resumed runs log every step once. TensorBoard: the writer purges what a killed attempt wrote after
the checkpoint the run resumes from (its purge_step). W&B: the run id is kept in the run directory,
and what W&B's own logs already hold is not sent again (see WandbTracker).
"""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ired_mining.checkpoint import atomic_write_json, atomic_write_text
from ired_mining.checks import ConfigError
from ired_mining.rundir import FINISHED, flatten, read_jsonl

log = logging.getLogger("ired")

INSTALL = "pip install 'ired-mining[trackers]'"


class TrackerUnavailable(ConfigError):
    """A tracker was asked for whose package cannot be imported; the message says how to install it."""


def require(name: str, module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TrackerUnavailable(
            f"logger={name} needs the {package} package, which cannot be imported "
            f"({reason}); install the trackers with: {INSTALL}"
        ) from None


def flat_hparams(cfg: DictConfig) -> dict:
    """The composed config as `a.b.c` → value, values the HParams plugin takes (lists as text, a
    choice of the schema as the plain string that the run's .hydra/config.yaml holds)."""
    return {
        k: v if isinstance(v, (bool, int, float, str)) else str(v)
        for k, v in flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)).items()
        if v is not None
    }


def hydra_names() -> tuple[str | None, str | None]:
    """(group, name) from Hydra: in a multirun the sweep directory and the job's directory name (the
    overrides that tell the jobs apart); in a single run no group and its overrides (None when there
    are none: W&B then picks a name)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    overrides = hc.job.override_dirname or None
    if hc.mode == RunMode.MULTIRUN:
        from pathlib import Path

        return hc.sweep.dir, Path(hc.runtime.output_dir).name or f"job{hc.job.num}"
    return None, overrides


# ================================================================ the trackers


class TensorBoardTracker:
    """`tensorboard`: event files in the run directory itself, so that `tensorboard --logdir SWEEP_DIR`
    names each job by its directory (its overrides). Flushed at every log step: the newest point is
    on disk for whoever watches, and everything up to a checkpoint is on disk before a kill."""

    module, package = "torch.utils.tensorboard", "tensorboard"

    def __init__(self, run_dir: Path, start_step: int, cfg: DictConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.splits = list(cfg.eval.splits)
        # purge_step: readers drop the events a killed attempt wrote after the resumed checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step + 1)
        # Custom Scalars tab: each split's MSE in one chart with the zero predictor's.
        self.writer.add_custom_scalars(
            {
                "evaluation": {
                    f"{split}: MSE and the zero predictor's": ["Multiline", [f"{split}/mse", f"{split}/zero_mse"]]
                    for split in cfg.eval.splits
                }
            }
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, hparams: dict, metrics: dict, status: str) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # The HParams table: the settings, and as metrics the scalar tags already logged (the table
        # shows their last values), so nothing is logged twice. Written into the run's own event
        # file, not a subdirectory (SummaryWriter.add_hparams), so a sweep's table has one row per job.
        tags = metrics or dict.fromkeys(f"{split}/mse" for split in self.splits)  # no evaluation in this attempt
        for summary in hparams_summaries(hparams | {"status": status}, tags):
            self.writer.file_writer.add_summary(summary)
        self.writer.close()


class WandbTracker:
    """`wandb`: offline by default (no account or network; `wandb sync` later), files in RUN_DIR/wandb/.

    A resumed or requeued run continues the same W&B run (its id in RUN_DIR/wandb/resume.json) and
    sends no step twice. W&B buffers its transaction log (run-ID.wandb) for seconds, so a killed
    run loses what it had sent last; the tracker keeps its own outbox (outbox.jsonl, appended at
    every log step) and, on resuming, sends again what W&B's logs lack and skips what they hold.
    """

    module, package = "wandb", "wandb"

    def __init__(
        self,
        run_dir: Path,
        start_step: int,
        cfg: DictConfig,
        mode: str = "offline",
        project: str = "ired-mining",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        tags: list | tuple = (),
    ):
        import wandb

        self.dir = Path(run_dir) / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        id_path, self.outbox = self.dir / "resume.json", self.dir / "outbox.jsonl"
        if not id_path.exists():
            atomic_write_json(id_path, {"id": uuid.uuid4().hex[:8]})
        run_id = json.loads(id_path.read_text())["id"]
        # Rows after the checkpoint the run resumes from are logged again by this run.
        rows = [row for row in read_jsonl(self.outbox) if row["step"] <= start_step]
        atomic_write_text(self.outbox, "".join(json.dumps(row) + "\n" for row in rows))
        self.sent = wandb_steps_held(self.dir, run_id)
        sweep, job = hydra_names()
        try:
            self.run = wandb.init(
                id=run_id,
                resume="allow",
                dir=str(run_dir),
                mode=mode,
                project=project,
                entity=entity,
                group=group or sweep,
                name=name or job,
                tags=list(tags),
                config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),  # choices as plain strings
                settings=wandb.Settings(console="off", silent=True),
            )  # train.log already has the console
        except wandb.errors.Error as err:  # e.g. mode=online without `wandb login`
            raise TrackerUnavailable(f"logger=wandb could not start its run: {str(err).splitlines()[0]}") from None
        for row in rows:
            self._send(row["step"], row["scalars"])
        if mode == "offline":
            log.info(f"W&B offline run {run_id}; upload it later with: wandb sync {self.dir}/offline-run-*")

    def _send(self, step: int, scalars: dict[str, float]) -> None:
        fresh = {k: v for k, v in scalars.items() if step > self.sent.get(k, -1)}
        if fresh:
            self.run.log(fresh, step=step)
            self.sent.update(dict.fromkeys(fresh, step))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        with open(self.outbox, "a") as f:
            f.write(json.dumps({"step": step, "scalars": scalars}) + "\n")
        self._send(step, scalars)

    def finish(self, hparams: dict, metrics: dict, status: str) -> None:
        self.run.summary.update(metrics | {"status": status})
        self.run.finish(exit_code=0 if status == FINISHED else 1)


def wandb_steps_held(wandb_dir: Path, run_id: str) -> dict[str, int]:
    """Scalar → the last step W&B's transaction logs of the run hold (RUN_DIR/wandb/*/run-ID.wandb).

    The format is W&B's: a 7-byte header, then a LevelDB-style log of 32 KiB blocks whose chunks are
    `crc32c (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last) | data`, each record
    one W&B protobuf Record. A log torn by a kill ends at its last whole record.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    held: dict[str, int] = {}
    for path in sorted(wandb_dir.glob(f"*/run-{run_id}.wandb")):
        data, block, pos, parts = path.read_bytes(), 32768, 7, b""
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
                pos += block - pos % block
                continue
            length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
            if kind == 0 or pos + 7 + length > len(data):
                break
            parts, pos = parts + data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind not in (1, 4):
                continue
            try:
                record, parts = wandb_internal_pb2.Record.FromString(parts), b""
            except DecodeError:
                break
            if record.WhichOneof("record_type") == "history":
                step = record.history.step.num
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    held[key] = max(held.get(key, -1), step)
    return held


TRACKERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


# ================================================================ what training calls


def training_tag(key: str) -> str:
    """Tags group by their prefix: the loss parts and negatives' statistics keep theirs; the rest go under train/."""
    return key if "/" in key else f"train/{key}"


class Trackers:
    """The run's trackers (none, one or several) and the scalars each log step gives them.

    Training scalars are means over the steps since the previous log step, taken as differences of
    the run's running sums (the evaluation resets those, and this window with them); steps/s is
    over training time, evaluation excluded.
    """

    def __init__(
        self, trackers=(), cfg: DictConfig | None = None, step: int = 0, running=None, train_seconds: float = 0.0
    ):
        self.trackers, self.cfg = list(trackers), cfg
        self.splits = list(cfg.eval.splits) if cfg is not None else []
        self.step, self.seconds = step, train_seconds
        self.sums, self.count = self._sums(running), running.count if running is not None else 0
        self.last_eval: dict[str, float] = {}

    @staticmethod
    def _sums(running) -> dict[str, float]:
        return {k: float(v) for k, v in running.sums.items()} if running is not None else {}

    def _send(self, step: int, scalars: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, scalars)

    def log_training(self, step: int, running, train_seconds: float) -> None:
        if not self.trackers:
            return
        sums, n = self._sums(running), running.count - self.count
        scalars = {training_tag(k): (s - self.sums.get(k, 0.0)) / n for k, s in sums.items()} if n > 0 else {}
        if train_seconds > self.seconds:
            scalars["train/steps_per_s"] = (step - self.step) / (train_seconds - self.seconds)
        self.sums, self.count, self.step, self.seconds = sums, running.count, step, train_seconds
        self._send(step, scalars)

    def log_eval(self, step: int, record: dict) -> None:
        self.sums, self.count = {}, 0  # evaluate() has just reset the running sums
        if not self.trackers:
            return
        self.last_eval = {k: v for k, v in record.items() if k.split("/")[0] in self.splits}
        self._send(step, self.last_eval)

    def close(self, status: str) -> None:
        """The settings with the last evaluation's metrics (TensorBoard's HParams, W&B's summary;
        none if this attempt evaluated nothing), then close."""
        if not self.trackers:
            return
        hparams = flat_hparams(self.cfg)
        for tracker in self.trackers:
            tracker.finish(hparams, self.last_eval, status)
        self.trackers = []


def open_trackers(cfg: DictConfig, run_dir: Path, step: int = 0, running=None, train_seconds: float = 0.0) -> Trackers:
    """The trackers `logger` names (none by default), for a run that starts at `step` (after resume)."""
    node = OmegaConf.select(cfg, "logger", default=None)
    chosen = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    for name in chosen:
        if name not in TRACKERS:
            raise ConfigError(f"logger.{name} is not a tracker; choose from: {', '.join(TRACKERS)}")
    classes = {name: TRACKERS[name] for name in chosen}
    for name, cls in classes.items():  # all importable before any opens
        require(name, cls.module, cls.package)
    trackers = [cls(Path(run_dir), step, cfg, **(chosen[name] or {})) for name, cls in classes.items()]
    return Trackers(trackers, cfg, step, running, train_seconds)
