"""ired-eval's overrides in ired-train's grammar (Hydra's override parser), applied to the run's
config typed by the schema: the values, the refusals and the new splits of ired-eval."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ired_mining.evaluate import EvalError, apply_overrides


@pytest.fixture(scope="module")
def run_cfg():
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=pilot"])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # as a checkpoint stores it


def test_values_are_typed_as_ired_train_types_them(run_cfg):
    cfg = apply_overrides(run_cfg, ["sampler.inner_steps='7'", "hardware.precision=32", "eval.splits.mid=1e-1"])
    assert cfg.sampler.inner_steps == 7 and cfg.hardware.precision == "32"
    assert dict(cfg.eval.splits) == {**run_cfg.eval.splits, "mid": 0.1}
    assert apply_overrides(run_cfg, ["+eval.splits.mid=0.25"]).eval.splits.mid == 0.25  # a new split, with +
    # An interpolation resolves against the run's config at once, as in ired-train.
    assert apply_overrides(run_cfg, ["eval.batch_size=${eval.size}"]).eval.batch_size == run_cfg.eval.size
    assert run_cfg.sampler.inner_steps != 7  # the run's own config is left as it was


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["sampler.inner_steps=abc"], "sampler.inner_steps: got 'abc'; it must be an integer"),
        (["hardware.device=gpu"], "hardware.device=gpu is invalid; it must be auto, cpu or cuda"),
        (["hardware.precision=16"], "hardware.precision=16 is invalid; it must be 32 or bf16-mixed"),
        (["sampler.bogus=1"], "sampler.bogus: not a key of sampler; its keys: inner_steps, step_scale, backtrack"),
        (["model.hidden=64"], "model.hidden cannot change at evaluation"),
        (["sampler.inner_steps"], "'sampler.inner_steps' is not an override; write key=value"),
        (["~sampler.inner_steps"], "'~sampler.inner_steps' is not an override; write key=value"),
        (["sampler.inner_steps=3=4"], "cannot parse 'sampler.inner_steps=3=4': "),
        (["+sampler.inner_steps=3"], "sampler.inner_steps: already set; override it without the +"),
        (
            ["sampler.inner_steps=1,2"],
            "sampler.inner_steps: sampler.inner_steps=1,2 is a sweep; ired-eval evaluates one",
        ),
        (["sampler.inner_steps=${nope}"], "sampler.inner_steps: does not resolve"),
        (["sampler.inner_steps=-1"], "sampler.inner_steps=-1 is invalid; it must be an integer ≥ 0"),
    ],
)
def test_a_bad_override_is_one_line(run_cfg, overrides, line):
    with pytest.raises(EvalError) as refused:
        apply_overrides(run_cfg, overrides)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value), str(refused.value)
