"""Hydra's refusals of an override of a key (`+` on a key that is set, `~` on one that is not or on a
schema's field, `@` on a key that is no group) carry no fields: compose names them from the
overrides themselves, in the same one line for a single run and for a sweep."""

from __future__ import annotations

import pytest

from ired_mining.checks import ConfigError
from ired_mining.compose import check_command_line

REFUSED = [
    (["+seed=3"], "seed: already set; override it without the + (seed=VALUE)"),
    (["+foo=1", "+foo=2"], "foo: already set; override it without the + (foo=VALUE)"),  # set by the first
    (["+mining.source=x", "mining=random"], "mining.source: already set;"),  # the option chosen decides
    (["~bogus"], "bogus: not a key, so it cannot be deleted"),
    (["~train.bogus"], "train.bogus: not a key, so it cannot be deleted"),
    (
        ["~train.batch_size"],
        "train.batch_size: required, cannot be deleted; set it instead, e.g. train.batch_size=VALUE",
    ),
    (["~mining.steps"], "mining.steps: required, cannot be deleted; set it instead"),
    (["foo@bar=baz"], "foo: no such config group (in foo@bar=baz); see ired-train --help for the groups"),
    (["-m", "seed=0,1", "+seed=3"], "seed: already set;"),
    (["-m", "mining=random,adversarial", "~mining.source"], "mining.source: not a key, so it cannot be deleted"),
]


@pytest.mark.parametrize("argv, line", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_refused_override_of_a_key_is_named(argv, line):
    with pytest.raises(ConfigError) as refused:
        check_command_line(argv)
    assert str(refused.value).startswith(line), str(refused.value)


def test_what_is_not_refused_there_keeps_its_own_line():
    with pytest.raises(ConfigError, match=r"^train.batch_size: got 'abc'; it must be an integer$"):
        check_command_line(["+foo=1", "train.batch_size=abc"])
    # A deletion whose value does not match: no field to name it by, so Hydra's own words, one line.
    with pytest.raises(ConfigError, match=r"^Could not delete from config. The value of 'seed' is 0 and not 5.$"):
        check_command_line(["~seed=5"])
