"""The run directory's contract (ired_mining.rundir): metrics lines, the final state, the environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ired_mining.checkpoint import save_checkpoint
from ired_mining.rundir import FAILED, FINISHED, INCOMPLETE, Environment, RunDir


def test_metrics_lines_come_back_and_a_torn_last_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_metrics() == []
    for step in (10, 20, 30):
        run.append_metrics({"step": step, "in_dist/mse": 1.0 / step})
    with open(run.metrics, "a") as f:
        f.write('{"step": 40, "in_dist/m')  # a kill in the middle of an append
    assert [r["step"] for r in run.read_metrics()] == [10, 20, 30]
    assert run.read_metrics()[1] == {"step": 20, "in_dist/mse": 0.05}


def test_truncating_keeps_the_lines_up_to_the_step_and_drops_a_torn_one(tmp_path):
    run = RunDir(tmp_path)
    for step in (10, 20, 30):
        run.append_metrics({"step": step})
    with open(run.metrics, "a") as f:
        f.write('{"st')
    run.truncate_metrics(20)
    assert run.metrics.read_text() == '{"step": 10}\n{"step": 20}\n'
    RunDir(tmp_path / "none").truncate_metrics(5)  # nothing written yet: nothing to do, nothing made
    assert not (tmp_path / "none").exists()


def test_final_state_of_each_kind(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.final_state() is None  # never started: the sweep calls it missing

    run.hydra_dir.mkdir(parents=True)
    state = run.final_state()
    assert state.status == INCOMPLETE and "no checkpoint" in state.error and not state.finished
    save_checkpoint(run.checkpoints, 10, {"x": 1}, keep=2)
    assert "last checkpoint step_000000010.pt" in run.final_state().error

    written = run.write_final(FAILED, error="loss became non-finite at step 7", step=7)
    assert run.final_state() == type(state)(FAILED, "loss became non-finite at step 7", written)

    written = run.write_final(FINISHED, step=20, **{"in_dist/mse": 0.01})
    state = run.final_state()
    assert state.finished and state.error == "" and state.summary == written
    assert json.loads(run.final.read_text()) == {"status": "finished", "step": 20, "in_dist/mse": 0.01}


@pytest.mark.parametrize("content", ['{"status": "finis', "[1, 2]", '{"step": 3}'])
def test_an_unreadable_final_state_is_a_failure_with_one_line(tmp_path, content):
    run = RunDir(tmp_path)
    run.final.write_text(content)
    state = run.final_state()
    assert state.status == FAILED and "holds no readable final state" in state.error
    assert "\n" not in state.error


def test_only_finished_or_failed_is_written(tmp_path):
    with pytest.raises(ValueError):
        RunDir(tmp_path).write_final(INCOMPLETE)
    assert not RunDir(tmp_path).final.exists()


def test_environment_names_the_cpu_and_the_threads():
    # Each value against a source of its own: a thread count set here, the modules' own version
    # strings, the host's name from the socket module, the CPU as /proc/cpuinfo spells it.
    import socket

    import hydra

    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        env = Environment.of(torch.device("cpu")).as_dict()
    finally:
        torch.set_num_threads(threads)
    assert env["device"] == "cpu" and env["threads"] == 3
    assert env["torch"] == torch.__version__ and env["hydra"] == hydra.__version__
    assert env["python"] == sys.version.split()[0] and env["host"] == socket.gethostname()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if "model name" in cpuinfo:  # Linux on x86: the CPU's name is that line's
        assert f": {env['device_name']}\n" in cpuinfo
    assert set(env) == {"python", "torch", "hydra", "device", "device_name", "threads", "host"}


def test_reading_runs_does_not_load_torch(tmp_path):
    # The report and the sweep's table run wherever run directories were copied, without torch.
    run = RunDir(tmp_path)
    run.final.write_text('{"status": "finished"}')
    code = (
        "import sys; import ired_mining.report, ired_mining.sweep; from ired_mining.rundir import RunDir; "
        f"assert RunDir({str(tmp_path)!r}).final_state().finished; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
