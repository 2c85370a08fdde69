"""A config key's closed set of values, typed in the schema.

OmegaConf (2.3) has no Literal type, but it checks an Enum field while Hydra composes: a value
outside the set is refused like a value of the wrong type, before anything runs, and
compose.explain turns the refusal into the one line `key=value is invalid; it must be a or b`.
The set of values is then stated once, by the Enum, for the schema, the message and the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Choice(str, Enum):
    """One value of a closed set that every reader takes for its plain string: it compares equal
    to it (`cfg.optim.schedule == "cosine"`), str() and f-strings give it (Python's own str-Enum
    prints `Schedule.cosine` from 3.12 on, and str() does on every version), json.dumps writes it.

    Each member's name is its value: OmegaConf matches a string to a member by name, and writes the
    name to yaml, so a run's .hydra/config.yaml keeps the plain string that older runs and the
    report read."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    @classmethod
    def allowed(cls) -> str:
        """The values, for a message: `a or b`, `a, b or c`."""
        return alternatives(member.value for member in cls)


def alternatives(values: Iterable[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    *rest, last = values
    return f"{', '.join(rest)} or {last}" if rest else last
