"""One writer per run directory: an exclusive lock that a training run holds for its whole life.

    acquire(run_dir)      # raises RunLocked (one line naming the holder's pid and host) if it is taken
    release(run_dir)

The lock is a POSIX record lock (fcntl F_SETLK, through fcntl.lockf) on RUN_DIR/train.lock, not
flock(2). The kernel drops it when the process dies, however it dies (SIGKILL included), so a
killed run never leaves a stale lock. POSIX locks are the ones cluster filesystems make coherent
across nodes: NFSv3 through its lock manager (NLM), NFSv4 in the protocol itself, Lustre when
mounted with `-o flock`. On Linux, flock(2) on NFS is emulated with POSIX locks anyway, and on
Lustre with `-o localflock` it is node-local only. A filesystem that cannot lock at all
(Lustre's default `noflock`) is refused in one line rather than run unguarded.

POSIX locks belong to the process, and closing *any* descriptor of the file releases them. So the
lock file is opened once per directory and the descriptor kept here until release; a second
acquire of the same directory in the same process (a sweep's job under Hydra's basic launcher
after ired-train's main() took it) is a no-op.

The holder writes its pid, host and start time into the file once it holds the lock, for the
refusal message. The file itself is never deleted: deleting a lock file while another process
opens it would give two holders of two different files.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import time
from pathlib import Path

from ired_mining.rundir import RunDir

# directory (resolved) -> the descriptor that holds its lock
_held: dict[Path, int] = {}


class RunLocked(RuntimeError):
    """The run directory is held by another process (or cannot be locked); one line for the user."""


def acquire(run_dir: Path) -> None:
    """Hold the lock of `run_dir` until release() or the end of the process; raise RunLocked if
    another process holds it. Creates the directory and the lock file, nothing else."""
    import fcntl

    key = Path(run_dir).resolve()
    if key in _held:
        return
    key.mkdir(parents=True, exist_ok=True)
    path = RunDir(key).lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)  # this process held no lock on the file, so closing releases nothing
        if err.errno in (errno.EACCES, errno.EAGAIN):
            raise RunLocked(
                f"{run_dir} is in use by another ired-train ({holder(path)}); wait for it to end, "
                f"or use another run directory (hydra.run.dir=...)"
            ) from None
        raise RunLocked(
            f"cannot lock {path}: {err.strerror} (the filesystem refuses POSIX locks; on Lustre mount it with -o flock)"
        ) from None
    _held[key] = fd
    record = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the refusal message will lack the holder


def release(run_dir: Path) -> None:
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # releases the lock


def holds(run_dir: Path) -> bool:
    return Path(run_dir).resolve() in _held


def holder(path: Path, wait: float = 1.0) -> str:
    """'pid N on HOST since T' from a lock file. The holder writes it just after it locks, so an
    empty file is read again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            record = json.loads(Path(path).read_text())
            return f"pid {record['pid']} on {record['host']} since {record['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "holder unknown"
            time.sleep(0.05)
