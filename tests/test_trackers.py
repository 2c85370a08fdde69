"""Trackers (logger=tensorboard, logger=wandb) through the real CLI, read back with each tracker's own
reader: TensorBoard's EventAccumulator, and W&B's offline transaction log decoded with W&B's own
record messages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ired_mining.checkpoint import list_checkpoints

from conftest import BIN, TINY, read_jsonl, run_cli

pytest.importorskip("tensorboard", reason="the trackers extra is not installed (pip install -e '.[trackers]')")
pytest.importorskip("wandb", reason="the trackers extra is not installed (pip install -e '.[trackers]')")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

TRAIN_TAGS = [
    "loss/mse",
    "loss/energy",
    "loss/total",
    "neg/gap",
    "neg/dist",
    "train/mine_ms",
    "train/grad_norm",
    "train/steps_per_s",
]
EVAL_TAGS = [f"{split}/{m}" for split in ("in_dist", "harder") for m in ("mse", "zero_mse", "exact_mse", "residual")]


# ================================================================ readers


def tensorboard_scalars(run_dir: Path, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows it (purge=True) or as the event files hold it."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=purge).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_hparams(run_dir: Path) -> plugin_data_pb2.HParamsPluginData:
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    content = acc.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def wandb_records(path: Path):
    """The records of a W&B transaction log (run-ID.wandb): a LevelDB-style log of 32 KiB blocks,
    each chunk `crc32c (4) | length (2) | type (1) | data`, type 1 full, 2 first, 3 middle, 4 last;
    the file opens with a 7-byte W&B header. Each record is W&B's own protobuf Record message."""
    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(parts)
            parts = b""


def wandb_runs(run_dir: Path) -> list[dict]:
    """Each offline W&B run under RUN_DIR/wandb, oldest first: its run record and its history."""
    runs = []
    for file in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        run, history = None, []
        for rec in wandb_records(file):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run = rec.run
            elif kind == "history":
                history.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
                )
        runs.append({"file": file, "run": run, "history": history})
    return runs


def wandb_points(runs: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """key -> [(step, value)] over all the runs' history rows, in order."""
    points: dict[str, list] = {}
    for run in runs:
        for row in run["history"]:
            for key, value in row.items():
                if not key.startswith("_"):
                    points.setdefault(key, []).append((row["_step"], value))
    return points


def steps(points: list[tuple[int, float]]) -> list[int]:
    return [s for s, _ in points]


# ================================================================ a run with each tracker


def test_no_tracker_by_default():
    out = run_cli("ired-train", "--cfg", "job", check=True).stdout
    assert yaml.safe_load(out).get("logger") in (None, {})  # logger=none: an empty slot, no tracker in it
    assert "tensorboard" not in out and "wandb" not in out


@pytest.mark.slow
def test_tensorboard_scalars_and_hparams_read_back(tmp_path):
    run_dir = tmp_path / "run"
    run_cli("ired-train", *TINY, "logger=tensorboard", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)
    assert not (run_dir / "wandb").exists()
    scalars = tensorboard_scalars(run_dir)
    for tag in TRAIN_TAGS:
        assert steps(scalars[tag]) == [5, 10, 15, 20], tag
    for tag in EVAL_TAGS:
        assert steps(scalars[tag]) == [10, 20], tag

    # The evaluation scalars are metrics.jsonl's (as float32); the training scalars are means over
    # each 5-step window, so two of them average to metrics.jsonl's mean over the 10 steps.
    records = {rec["step"]: rec for rec in read_jsonl(run_dir / "metrics.jsonl")}
    for tag in EVAL_TAGS:
        for step, value in scalars[tag]:
            assert value == pytest.approx(records[step][tag], rel=1e-6)
    for tag in ("loss/mse", "loss/energy", "neg/gap", "neg/dist"):
        windows = dict(scalars[tag])
        for step in (10, 20):
            assert (windows[step - 5] + windows[step]) / 2 == pytest.approx(records[step][tag], rel=1e-5, abs=1e-7)
    assert all(v > 0 for _, v in scalars["train/steps_per_s"])

    # HParams: the run's settings, and as metrics the evaluation tags.
    hp = tensorboard_hparams(run_dir)
    start = hp["_hparams_/session_start_info"].session_start_info.hparams
    assert start["mining.name"].string_value == "adversarial"
    assert start["train.batch_size"].number_value == 32
    assert start["status"].string_value == "finished"
    metrics = {m.name.tag for m in hp["_hparams_/experiment"].experiment.metric_infos}
    assert metrics == set(EVAL_TAGS)


@pytest.mark.slow
def test_wandb_offline_run_read_back(tmp_path):
    run_dir = tmp_path / "run"
    run_cli(
        "ired-train",
        *TINY,
        "mining=random",
        "logger=wandb",
        "logger.wandb.project=tiny",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        check=True,
    )
    assert not list(run_dir.glob("events.out.tfevents.*"))
    runs = wandb_runs(run_dir)
    assert len(runs) == 1
    run = runs[0]["run"]
    assert run.run_id == json.loads((run_dir / "wandb" / "resume.json").read_text())["id"]
    assert run.project == "tiny"
    assert "mining=random" in run.display_name and "logger" not in run.display_name
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["mining"]["name"] == "random" and config["train"]["steps"] == 20

    points = wandb_points(runs)
    assert steps(points["loss/mse"]) == [5, 10, 15, 20]
    assert "loss/energy" in points and "train/steps_per_s" in points
    records = {rec["step"]: rec for rec in read_jsonl(run_dir / "metrics.jsonl")}
    for tag in EVAL_TAGS:
        assert points[tag] == [(step, records[step][tag]) for step in (10, 20)]  # exactly: both are JSON floats


@pytest.mark.slow
def test_both_trackers_from_a_list_in_a_sweep(tmp_path):
    """logger=[tensorboard,wandb] selects both; each job is named by its overrides (not the logger)
    and W&B groups the jobs by the sweep directory."""
    sweep = tmp_path / "sweep"
    run_cli(
        "ired-train",
        "-m",
        *TINY,
        "train.steps=10",
        "logger=[tensorboard,wandb]",
        "mining=none,random",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=True,
    )
    for mining in ("none", "random"):
        [job] = sweep.glob(f"mining={mining}")  # named by what varies: the strategy alone
        assert "logger" not in job.name
        assert steps(tensorboard_scalars(job)["loss/mse"]) == [5, 10]
        runs = wandb_runs(job)
        assert runs[0]["run"].display_name == job.name
        assert runs[0]["run"].run_group == str(sweep)
        assert steps(wandb_points(runs)["loss/mse"]) == [5, 10]


@pytest.mark.slow
def test_a_failed_run_still_closes_its_trackers(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "ired-train", *TINY, "optim.lr=1e30", "logger=[tensorboard,wandb]", f"hydra.run.dir={run_dir}", cwd=tmp_path
    )
    assert proc.returncode == 1 and "non-finite" in proc.stderr
    hp = tensorboard_hparams(run_dir)
    assert hp["_hparams_/session_start_info"].session_start_info.hparams["status"].string_value == "failed"
    [file] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    exits = [rec.exit.exit_code for rec in wandb_records(file) if rec.WhichOneof("record_type") == "exit"]
    assert exits == [1]


# ================================================================ killed and resumed

# A tiny run, checkpointed every 50 steps and logged every 2: a kill soon after a checkpoint
# lands after the trackers logged a few steps past it, which the resumed run logs again.
RESUMABLE = [
    *TINY,
    "train.steps=200",
    "train.log_every=2",
    "train.eval_every=50",
    "checkpoint.every=50",
    "hardware.threads=1",
    "logger=[tensorboard,wandb]",
]


def newest_checkpoint_step(run_dir: Path) -> int:
    """The step of the run's newest checkpoint (0 if none yet)."""
    newest = list_checkpoints(run_dir / "checkpoints")
    return int(newest[-1].stem.split("_")[1]) if newest else 0


def last_logged_step(outbox: Path) -> int:
    """The newest step in the W&B tracker's outbox (0 if none yet; a line being written is skipped)."""
    steps_seen = [0]
    for line in outbox.read_text().splitlines() if outbox.exists() else []:
        with contextlib.suppress(ValueError):
            steps_seen.append(json.loads(line)["step"])
    return max(steps_seen)


def wandb_held_step(run_dir: Path) -> int:
    """The newest training step W&B's own log holds (0 if none yet, or a record is half-written)."""
    with contextlib.suppress(Exception):
        return max(steps(wandb_points(wandb_runs(run_dir)).get("loss/mse", [])), default=0)
    return 0


def kill_soon_after_checkpoint(run_dir: Path, step: int, env: dict, wait_for_wandb: bool) -> None:
    """SIGKILL the run once the trackers have logged past its newest checkpoint (at or after `step`)
    and at least 10 steps before the next one (every 50), and, with `wait_for_wandb`, once W&B's own
    log holds a step past it too. Timed by what the run has logged, not by a sleep, so that it holds
    on a fast machine and on a slow one."""
    proc = subprocess.Popen(
        [str(BIN / "ired-train"), *RESUMABLE, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **env},
    )
    outbox, deadline = run_dir / "wandb" / "outbox.jsonl", time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        newest = newest_checkpoint_step(run_dir)
        logged = last_logged_step(outbox)
        held = wandb_held_step(run_dir) if wait_for_wandb else logged
        if newest >= step and min(logged, held) > newest and logged <= newest + 40:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"


# W&B writes its transaction log every 15 s by default, so the killed run's log is empty and the
# resumed run sends every step up to the checkpoint again (from the tracker's outbox); flushed every
# 0.1 s, the log holds steps past the checkpoint too, which the resumed run must not send again.
@pytest.mark.slow
@pytest.mark.parametrize("wandb_flush", ["default", "0.1"])
def test_killed_and_resumed_run_logs_every_step_once(tmp_path, wandb_flush):
    env = {} if wandb_flush == "default" else {"WANDB__TRANSACTION_LOG_FLUSH_INTERVAL": wandb_flush}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    kill_soon_after_checkpoint(run_dir, 50, env, wait_for_wandb=wandb_flush != "default")
    resumed_from = newest_checkpoint_step(run_dir)
    sent_before = [row["step"] for row in read_jsonl(run_dir / "wandb" / "outbox.jsonl")]
    raw_before = steps(tensorboard_scalars(run_dir, purge=False)["loss/mse"])
    # The kill must land after the trackers logged past the checkpoint, or the test shows nothing.
    assert sent_before[-1] > resumed_from and raw_before[-1] > resumed_from, (resumed_from, sent_before, raw_before)
    held_before = steps(wandb_points(wandb_runs(run_dir)).get("loss/mse", []))
    if wandb_flush != "default":
        assert held_before and held_before[-1] > resumed_from, (resumed_from, held_before)

    run_cli("ired-train", *RESUMABLE, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env, check=True)

    every_log, every_eval = list(range(2, 201, 2)), [50, 100, 150, 200]
    scalars = tensorboard_scalars(run_dir)
    assert steps(scalars["loss/mse"]) == every_log
    assert steps(scalars["in_dist/mse"]) == every_eval
    raw = steps(tensorboard_scalars(run_dir, purge=False)["loss/mse"])
    assert len(raw) > len(every_log)  # the killed attempt's extra steps are in the files, purged on reading

    runs = wandb_runs(run_dir)
    run_id = json.loads((run_dir / "wandb" / "resume.json").read_text())["id"]
    assert len(runs) == 2 and all(run["file"].name == f"run-{run_id}.wandb" for run in runs)  # one W&B run
    assert runs[1]["run"].run_id == run_id
    points = wandb_points(runs)
    assert steps(points["loss/mse"]) == every_log
    assert steps(points["in_dist/mse"]) == every_eval
    assert steps(points["train/steps_per_s"]) == every_log

    # The resumed run reproduces the killed one's numbers, so what each tracker kept is metrics.jsonl's.
    records = {rec["step"]: rec for rec in read_jsonl(run_dir / "metrics.jsonl")}
    assert points["in_dist/mse"] == [(s, records[s]["in_dist/mse"]) for s in every_eval]


# ================================================================ a tracker that is not installed


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_missing_tracker_is_one_line_saying_how_to_install(tmp_path, package):
    # A package of that name that fails to import, ahead of the real one on the path.
    shim = tmp_path / "shim" / package
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(f"raise ImportError(\"No module named '{package}'\")\n")
    proc = run_cli(
        "ired-train",
        *TINY,
        f"logger={package}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "shim")},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ired-train: error: logger={package} needs the {package} package")
    assert "pip install 'ired-mining[trackers]'" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unknown_tracker_is_one_line():
    proc = run_cli("ired-train", "logger=bogus")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "ired-train: error: logger: no option 'bogus'; choose one of: none, tensorboard, wandb"
    )
