"""The closed sets of values the schema types as Enums (choices.Choice): each reads, prints and is
saved as its plain string, and a value outside the set is refused while composing, in one line."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from ired_mining.checks import ConfigError
from ired_mining.choices import Choice, alternatives
from ired_mining.compose import check_command_line
from ired_mining.mining import Source
from ired_mining.schema import Device, Schedule

CHOICES = {"mining.source": Source, "optim.schedule": Schedule, "hardware.device": Device}


def test_each_member_is_named_by_its_value():
    # OmegaConf matches a string to a member by name and writes the name: they must be the value.
    for choice in CHOICES.values():
        assert [m.name for m in choice] == [m.value for m in choice]


def test_a_choice_is_its_plain_string():
    with initialize_config_module("ired_mining.conf", version_base="1.3"):
        cfg = compose("config", overrides=["mining=random", "mining.source=gaussian", "optim.schedule=cosine"])
    assert isinstance(cfg.mining.source, Source) and isinstance(cfg.optim.schedule, Choice)
    assert cfg.mining.source == "gaussian" and str(cfg.mining.source) == f"{cfg.mining.source}" == "gaussian"
    assert json.dumps({"s": cfg.optim.schedule}) == '{"s": "cosine"}'
    # What a run writes to .hydra/config.yaml and its checkpoints: the plain string, as older runs hold it.
    saved = yaml.safe_load(OmegaConf.to_yaml(cfg))
    assert saved["mining"]["source"] == "gaussian" and type(saved["optim"]["schedule"]) is str


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["optim.schedule=linear"], "optim.schedule=linear is invalid; it must be constant or cosine"),
        (["mining=random", "mining.source=foo"], "mining.source=foo is invalid; it must be derangement or gaussian"),
        (["hardware.device=gpu"], "hardware.device=gpu is invalid; it must be auto, cpu or cuda"),
        (["optim.schedule=null"], "optim.schedule=null is invalid; it must be constant or cosine"),
        (["-m", "seed=0,1", "optim.schedule=constant,linear"], "optim.schedule=linear is invalid; it must be"),
    ],
)
def test_a_value_outside_the_choices_is_one_line(overrides, line):
    with pytest.raises(ConfigError) as refused:
        check_command_line(overrides)
    assert str(refused.value).startswith(line)


def test_alternatives():
    assert [alternatives(v) for v in (["a"], ["a", "b"], ["a", "b", "c"])] == ["a", "a or b", "a, b or c"]
