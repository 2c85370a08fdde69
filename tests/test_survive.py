"""Runs that survive people and machines: Ctrl-C, a full disk, two launches in one directory, the
strategies' ranges, and the fault drill. Every case goes through the installed ired-train."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import RUN as RESUME_RUN
from test_resume import assert_same_result  # bit for bit, every line, none lost or doubled

from conftest import BIN, read_json, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parents[1]

# ~200 steps of a tiny model: long enough to be interrupted, seconds on an idle CPU.
# test_resume's run with a narrower model (a later override wins in Hydra).
RUN = [*RESUME_RUN, "model.hidden=32"]
# A checkpoint of this model is ~93 kB: a 200 kB disk fills up within the run.
SMALL = [*RUN, "model.hidden=16"]
# Seconds a run may take: generous, for a CI machine that other jobs keep busy (a niced run took
# over 10 minutes of wall-clock here with the load at 25).
PATIENCE = 3600
INTERRUPTED = re.compile(r"^ired-train: interrupted at step (\d+); checkpoint written; run the same command to resume$")


def start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ired-train"), *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "120"},
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = PATIENCE) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.stderr.read()}"
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.01)


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:09d}.pt"


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def uninterrupted(run_dir: Path, config: list[str]) -> dict:
    run_cli("ired-train", *config, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, check=True, timeout=PATIENCE)
    return {"final": read_json(run_dir / "metrics.json"), "lines": read_jsonl(run_dir / "metrics.jsonl")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return uninterrupted(tmp_path_factory.mktemp("reference") / "run", RUN)


# ================================================================ Ctrl-C and SIGTERM


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_checkpoints_at_the_step_reached_and_the_same_command_resumes_exactly(tmp_path, reference, sig, code):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *RUN)
    wait_for(checkpoint(run_dir, 20), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and (m := INTERRUPTED.match(lines[0])), err
    assert "Traceback" not in out + err
    step = int(m[1])
    assert step >= 20 and checkpoint(run_dir, step).exists()  # the step reached, not the last periodic one
    assert not (run_dir / "metrics.json").exists()  # not a final state: the run is to be resumed
    assert not list(run_dir.rglob(".*.tmp-*"))

    run_cli("ired-train", *RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True, timeout=PATIENCE)
    assert f"resumed from step {step}" in (run_dir / "train.log").read_text()
    assert_same_result(run_dir, reference)


def wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = PATIENCE) -> None:
    """Until `path` (a log the run appends to) holds `text`."""
    deadline = time.time() + timeout
    while not (path.exists() and text in path.read_text()):
        assert proc.poll() is None, f"the run ended before {path.name} said {text!r}: {proc.stderr.read()}"
        assert time.time() < deadline, f"{path} did not say {text!r} within {timeout} s"
        time.sleep(0.01)


def test_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path):
    # Steps of several seconds, so that both Ctrl-C come long before the next step boundary.
    run_dir = tmp_path / "run"
    slow = [
        "dataset.n=16",
        "model.hidden=512",
        "train.batch_size=2048",
        "mining.steps=200",
        "train.steps=50",
        "checkpoint.every=1",
        "train.log_every=1",
        "eval.size=64",
        "eval.batch_size=64",
        "hardware=cpu",
        "hardware.threads=1",
    ]
    # A first attempt, stopped by one Ctrl-C at a step boundary, leaves a checkpoint to resume from.
    first = start(run_dir, *slow)
    wait_for(checkpoint(run_dir, 1), first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=PATIENCE)
    assert first.returncode == 130 and (m := INTERRUPTED.match(err.strip())), err
    resumed_from = int(m[1])

    # The second attempt writes "resumed from step N" after its handler is in place, and has no step
    # boundary before the end of step N + 1: a Ctrl-C from then on is inside that stretch, never at
    # the boundary (where a first one would stop the run before a second could arrive). Ctrl-C again
    # until it stops, as an impatient user does: the first is noted, the next one stops it at once
    # (two sent back to back may reach Python's handler as one).
    proc = start(run_dir, *slow)
    wait_for_line(run_dir / "train.log", f"resumed from step {resumed_from} (", proc)
    deadline = time.time() + PATIENCE
    while proc.poll() is None:
        assert time.time() < deadline, f"still running {PATIENCE} s after the first Ctrl-C"
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        "ired-train: interrupted; stopped at once; the newest checkpoint is kept; run the same command to resume"
    ], err
    assert "Traceback" not in out + err
    assert not list(run_dir.rglob(".*.tmp-*"))
    kept = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert kept[-1] == checkpoint(run_dir, resumed_from)  # stopped within the step after it: nothing newer


# ================================================================ a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 200 kB tmpfs (needs root, as CI has)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_full_disk_stops_in_one_line_keeps_what_was_written_and_records_it(tmp_path, small_disk):
    run_dir = small_disk / "run"
    proc = run_cli("ired-train", *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=PATIENCE)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(err) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    m = re.match(
        r"ired-train: error: could not write (\S+): No space left on device \(the write needed ([\d.]+ kB); "
        r"[\d.]+ (kB|bytes) free there\)$",
        err[0],
    )
    assert m, err[0]
    assert Path(m[1]).parent == run_dir / "checkpoints"  # a checkpoint did not fit
    assert not list(run_dir.rglob(".*.tmp-*"))  # its temporary file is gone, so is the space it took
    final = read_json(run_dir / "metrics.json")
    assert final["status"] == "failed" and final["error"] in err[0]

    # Every earlier checkpoint and metrics line is as it was: moved to a disk with room, the run
    # resumes from them and ends as the same run uninterrupted does, bit for bit.
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    kept = sorted((moved / "checkpoints").glob("step_*.pt"))
    assert kept, "no checkpoint fitted at all"
    run_cli("ired-train", *SMALL, f"hydra.run.dir={moved}", cwd=tmp_path, check=True, timeout=PATIENCE)
    assert f"resumed from step {int(kept[-1].stem.split('_')[1])}" in (moved / "train.log").read_text()
    assert_same_result(moved, uninterrupted(tmp_path / "small_ref", SMALL))


# ================================================================ one writer per run directory


def test_second_ired_train_is_refused_and_touches_nothing_while_readers_do_no_harm(tmp_path, reference):
    run_dir = tmp_path / "run"
    first = start(run_dir, *RUN)
    wait_for(checkpoint(run_dir, 40), first)
    first.send_signal(signal.SIGSTOP)  # it holds the lock, and nothing moves while we look
    try:
        before = files(run_dir)
        second = run_cli("ired-train", *RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=PATIENCE)
        assert second.returncode == 1
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"pid {first.pid} on {platform.node()}" in err[0] and "in use" in err[0], err
        assert files(run_dir) == before  # not a byte changed: not .hydra/, not train.log

        # Readers need no lock: they read what is complete (atomic files, whole lines).
        evaluated = run_cli("ired-eval", str(run_dir), "eval.size=32", cwd=tmp_path, timeout=PATIENCE)
        assert evaluated.returncode == 0, evaluated.stderr
        reported = run_cli("ired-report", str(run_dir), cwd=tmp_path, timeout=PATIENCE)
        assert "Traceback" not in reported.stdout + reported.stderr
        after = {k: v for k, v in files(run_dir).items() if k in before}
        assert after == before  # they added their own files and changed none of the run's
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=PATIENCE)
    assert first.returncode == 0
    assert_same_result(run_dir, reference)


def test_a_killed_run_leaves_no_stale_lock(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *RUN)
    wait_for(checkpoint(run_dir, 20), proc)
    proc.kill()
    proc.communicate()
    assert (run_dir / "train.lock").exists()  # the file stays; the lock went with the process
    run_cli("ired-train", *RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True, timeout=PATIENCE)
    assert_same_result(run_dir, reference)


# ================================================================ ranges of the strategies' options


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("mining.corruption=-1", "a finite number ≥ 0"),
        ("mining.step_scale=-1", "a finite number > 0"),
        ("mining.step_scale=0", "a finite number > 0"),
        ("sampler.step_scale=0", "a finite number > 0"),
    ],
)
def test_out_of_range_strategy_option_is_one_line(tmp_path, tiny, override, allowed):
    proc = run_cli("ired-train", *tiny, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=PATIENCE)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    key, value = override.split("=")
    assert len(err) == 1 and err[0].startswith(
        f"ired-train: error: {key}={float(value)} is invalid; it must be {allowed}"
    ), err


# ================================================================ the fault drill


@pytest.mark.slow
def test_short_fault_drill_loses_nothing(tmp_path):
    out = tmp_path / "drill.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fault_drill.py"),
            "--faults",
            "10",
            "--per-run",
            "5",
            "--seed",
            "1",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=3 * PATIENCE,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["faults"] >= 10 and figures["resumes"] >= 10
    assert figures["runs_lost"] == 0 and figures["lines_lost"] == 0 and figures["lines_doubled"] == 0
    assert figures["problems"] == []
