"""The README's pilot, exactly as a user runs it: it finishes and it learns. (How long it takes is
measured by scripts/bench.py and stated in the README, not asserted: a test must hold on any CPU.)"""

from __future__ import annotations

import pytest

from conftest import read_json, run_cli


@pytest.mark.slow
def test_pilot_finishes_and_beats_the_zero_predictor(tmp_path):
    run_cli(
        "ired-train", "experiment=pilot", f"hydra.run.dir={tmp_path / 'pilot'}", cwd=tmp_path, timeout=1800, check=True
    )  # a guard against a hang, not a speed requirement
    final = read_json(tmp_path / "pilot" / "metrics.json")
    assert final["status"] == "finished"
    assert final["in_dist/mse"] <= 0.9 * final["in_dist/zero_mse"], final
