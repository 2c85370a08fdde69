"""Learning, not smoke: on a budget of seconds every strategy learns a small problem (n = 4)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from ired_mining.train import Run

from conftest import read_jsonl


def compose_cfg(overrides: list[str]):
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("strategy", ["none", "random", "adversarial"])
def test_each_strategy_learns_and_beats_the_zero_predictor(tmp_path, strategy):
    cfg = compose_cfg(
        [
            f"mining={strategy}",
            "hardware=cpu",
            "dataset.n=4",
            "model.hidden=128",
            "train.batch_size=128",
            "train.steps=400",
            "train.eval_every=100",
            "train.log_every=100",
            "eval.size=256",
            "eval.batch_size=256",
            "checkpoint.every=1000",
        ]
    )
    Run(cfg, tmp_path).fit()
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    first, last = lines[0], lines[-1]
    # the denoising loss of the last 100 steps is well below that of the first 100
    assert last["loss/mse"] < 0.5 * first["loss/mse"]
    # the EMA sampler beats predicting zeros on the same fixed in-distribution set
    assert last["in_dist/mse"] < 0.7 * last["in_dist/zero_mse"]
    assert last["harder/mse"] < last["harder/zero_mse"]
    if strategy != "none":
        # the energy term separates positives from negatives: E⁻ − E⁺ grows
        assert last["neg/gap"] > first["neg/gap"]
