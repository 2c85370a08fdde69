"""Files that must survive a crash: atomic writes, checkpoints that resume exactly, RNG capture.

Every file is written to a temporary name in the same directory, fsynced, then renamed, so a
reader sees the old file or the new one, never half of one. Checkpoints are numbered by step and
never overwritten; a file that cannot be read is reported, and is set aside (never deleted) only
when the user asked to fall back to an older one. A write that fails (a full disk) removes its
temporary file, leaves the old file as it was and raises WriteFailed with one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ired_mining import failpoints

FORMAT = "ired-mining-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line for the user."""


# ---------------------------------------------------------------- atomic files


class WriteFailed(RuntimeError):
    """A file of the run could not be written (a full disk, a failing one, no permission); the
    message is one line naming the file, the error and, for a full disk, the space it needed."""


def write_failure(path: Path, err: OSError, size: int) -> WriteFailed:
    message = f"could not write {path}: {err.strerror or err}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        message += f" (the write needed {_size(size)}; {_size(free_space(path.parent))} free there)"
    return WriteFailed(message)


def free_space(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `directory` (0 if unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes, failpoint: str = "") -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one. On any failure
    (an OS error, a second Ctrl-C) the temporary file is removed and `path` is left as it was; an
    OS error becomes WriteFailed. `failpoint`: where the fault drill may kill the writer half-way
    (failpoints.py)."""
    path = Path(path)
    tmp = temporary_name(path)
    view = memoryview(data)
    try:
        with open(tmp, "wb") as f:
            f.write(view[: len(view) // 2])
            failpoints.hit(failpoint)
            f.write(view[len(view) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise write_failure(path, err, len(data)) from None
        raise
    # The rename itself is durable only once the directory entry is on disk.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that killed writers left in `directory` (a SIGKILL mid-write
    cannot clean up after itself). Only safe while holding the run's lock (runlock.py): then no
    other process is writing there."""
    directory = Path(directory)
    stale = sorted(directory.glob(".*.tmp-*")) if directory.is_dir() else []
    for tmp in stale:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return stale


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- RNG state


def rng_state(generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "stream": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["stream"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(parts: dict) -> str:
    """A short hash of the settings a checkpoint must agree with to be resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- checkpoints


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:09d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in a directory, newest (highest step) last."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("step_*.pt"))


def save_checkpoint(directory: Path, step: int, state: dict, keep: int) -> Path:
    """Write `state` atomically as the checkpoint of `step`; keep the newest `keep` of them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    if path.exists():
        raise CheckpointError(f"refusing to overwrite existing checkpoint {path}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "step": step, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue(), failpoint="checkpoint-write")
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load one checkpoint, or raise CheckpointError saying in one line why it is unusable."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an ired-mining checkpoint")
    return state


def latest_checkpoint(directory: Path, fallback: bool, map_location="cpu", log=print) -> dict | None:
    """The newest usable checkpoint in `directory`, or None if there is none.

    A newest file that cannot be read raises CheckpointError unless `fallback` is set; then it is
    renamed to `*.bad` (kept for inspection) and the next older one is tried.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path, map_location)
        except CheckpointError as err:
            if not fallback:
                raise CheckpointError(f"{err}; pass checkpoint.fallback=true to resume from the previous one") from None
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            log(f"{err}; set aside as {bad.name}, trying the previous checkpoint")
    return None
