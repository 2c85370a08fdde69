"""A checkpoint at the current step when SLURM warns a job that it is about to be stopped.

SLURM warns a job before it stops it: USR2 `hydra.launcher.signal_delay_s` seconds before its time
limit (submitit asks for it with `--signal`), SIGTERM when it is preempted (SIGKILL follows
KillWait seconds later; SLURM requeues the job itself). submitit's own handlers act at once:
USR2 requeues the job and exits, SIGTERM is ignored. Either way the requeued run resumed from its
last periodic checkpoint and lost up to `checkpoint.every` steps.

`install` puts a handler in front of each: it only notes the signal. The training loop asks
`requested()` at every step boundary (never inside a step, whose tensors are half updated), writes
a checkpoint there, and calls `hand_over()`, which runs the handler that was there before:
submitit's requeue, which exits the job, or its SIGTERM bypass, after which training goes on
until SLURM kills it. A run that ends before its next step boundary simply finishes.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("ired")

# The noted signals, each with the handler it deferred, in arrival order. Written by the signal
# handler (the main thread, between two bytecodes), read by the loop.
_pending: dict[int, object] = {}


def time_limit_signal() -> signal.Signals | None:
    """The signal submitit asks SLURM for before a time limit: USR2 unless SUBMITIT_PREEMPT_SIGNAL
    names another; None if it names no signal."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def warning_signals() -> list[signal.Signals]:
    """The time-limit signal (USR2 where SUBMITIT_PREEMPT_SIGNAL names no signal) and SIGTERM."""
    return [time_limit_signal() or signal.SIGUSR2, signal.SIGTERM]


def install(signals: list[signal.Signals] | None = None) -> None:
    """Defer each signal's current handler until the training loop has written a checkpoint."""
    for sig in signals or warning_signals():
        previous = signal.getsignal(sig)

        def note(signum, frame, previous=previous):
            # Nothing but a dict write here: the loop may be anywhere, even inside the logging lock.
            _pending.setdefault(signum, previous)

        signal.signal(sig, note)


def requested() -> bool:
    """Whether a warning signal has arrived since the last hand_over."""
    return bool(_pending)


def hand_over(step: int) -> None:
    """After the checkpoint of `step`: run the handlers the noted signals deferred (submitit's
    requeue does not return: it exits the job)."""
    while _pending:
        signum = next(iter(_pending))
        previous = _pending.pop(signum)
        log.warning(
            f"{signal.Signals(signum).name}: checkpoint written at step {step}; handing over to the job's own handler"
        )
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            # No handler before ours: do what the signal would have done (SIGTERM ends the process).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
