"""Ctrl-C (SIGINT), and SIGTERM outside a SLURM job: stop at the next step boundary with a checkpoint.

The protocol: `install()` for the life of a training run. The first signal is only noted (the
handler may run anywhere, even inside the logging lock or half-way through Adam's update). The loop
asks `requested()` at every step boundary, writes a checkpoint at that step and calls
`stop_if_requested(step)`, which raises Interrupted; ired-train prints its one line and exits
128 + the signal (130 for SIGINT, 143 for SIGTERM), and the same command resumes from that step.
A second signal raises KeyboardInterrupt at once, wherever the program is: a file being written
then removes its temporary file (checkpoint.py), and the newest complete checkpoint is the resume
point. `uninstall()` puts the previous handlers back, unless the run is stopping: then further
signals are ignored until the process has exited, so that a late Ctrl-C prints no traceback on the
way out.

Inside a SLURM job submitit's handlers and preemption.py own SIGTERM (a preempted job checkpoints
and trains on until SLURM kills it, then is requeued), so SIGTERM is left to them there.
"""

from __future__ import annotations

import os
import signal
import threading

_noted: list[int] = []
_previous: dict[int, object] = {}
_stopping = False  # the run is on its way out: further signals are ignored, not a traceback mid-exit


class Interrupted(KeyboardInterrupt):
    """The run stopped at a step boundary after writing its checkpoint."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = signum, step

    def __str__(self) -> str:
        return f"interrupted at step {self.step}; checkpoint written; run the same command to resume"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _signals() -> list[int]:
    in_slurm_job = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    return [signal.SIGINT] + ([] if in_slurm_job else [signal.SIGTERM])


def _note(signum, frame):
    if _noted:
        _stop()
        raise KeyboardInterrupt  # the second signal: stop now, without waiting for the step
    _noted.append(signum)


def _stop() -> None:
    global _stopping
    _stopping = True
    for sig in _signals():
        signal.signal(sig, signal.SIG_IGN)


def install() -> None:
    global _stopping
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; a run elsewhere keeps Python's default
    _noted.clear()
    _stopping = False
    for sig in _signals():
        _previous.setdefault(sig, signal.getsignal(sig))
        signal.signal(sig, _note)


def uninstall() -> None:
    while _previous:
        sig, handler = _previous.popitem()
        if not _stopping:
            signal.signal(sig, handler)
    _noted.clear()


def requested() -> bool:
    return bool(_noted)


def stop_if_requested(step: int) -> None:
    """After the checkpoint of `step`: raise Interrupted if a signal was noted."""
    if _noted:
        _stop()
        raise Interrupted(_noted[0], step)
