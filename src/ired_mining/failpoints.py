"""Named moments at which the fault drill (scripts/fault_drill.py) SIGKILLs a run from inside.

Some moments cannot be hit reliably from outside the process: half-way through writing a
checkpoint, an evaluation done but not yet recorded, half of a metrics line written. Each is a
`hit(NAME)` call in the code. Unarmed (the default) a hit is one dict lookup and does nothing.
`IRED_FAILPOINT=NAME:N` arms one: the Nth time this process passes NAME, it kills itself with
SIGKILL, as the OOM killer or a node failure would, so nothing of Python's shutdown runs.

    checkpoint-write   half of a checkpoint's bytes are in its temporary file (checkpoint.py)
    metrics-line       half of a metrics.jsonl line is appended (rundir.py)
    evaluate           an evaluation has run, its line is not yet written (train.py)
"""

from __future__ import annotations

import functools
import os
import signal

NAMES = ("checkpoint-write", "metrics-line", "evaluate")


@functools.cache  # read at the first hit, not at import: the drill may fork after importing
def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("IRED_FAILPOINT", "")
    name, _, count = spec.partition(":")
    if name not in NAMES or not count.isdigit():
        return None
    return name, int(count)


_passes: dict[str, int] = {}


def hit(name: str) -> None:
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
