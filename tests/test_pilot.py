"""The README's pilot, exactly as a user runs it: ≤ 5 minutes here and it learns."""

from __future__ import annotations

import time

import pytest

from conftest import read_json, run_cli


@pytest.mark.slow
def test_pilot_finishes_in_five_minutes_and_beats_the_zero_predictor(tmp_path):
    start = time.monotonic()
    run_cli("ired-train", "experiment=pilot", f"hydra.run.dir={tmp_path / 'pilot'}", cwd=tmp_path,
            timeout=300, check=True)
    assert time.monotonic() - start <= 300
    final = read_json(tmp_path / "pilot" / "metrics.json")
    assert final["status"] == "finished"
    assert final["in_dist/mse"] <= 0.9 * final["in_dist/zero_mse"], final
