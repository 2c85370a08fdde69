"""The fault drill: small training runs taken through random faults, resumed after each, and held
against the same run uninterrupted, bit for bit.

    .venv/bin/python scripts/fault_drill.py --faults 12                     # the short drill (tests/test_survive.py)
    nice -n 15 .venv/bin/python scripts/fault_drill.py --faults 200 --json drill.json   # the long one

Each attempt of a run gets one fault, chosen at random among:

    kill-step        SIGKILL at a random moment of training (from outside, once the run is in its loop)
    kill-eval        SIGKILL after an evaluation, before its metrics line is written (failpoint evaluate)
    kill-checkpoint  SIGKILL half-way through writing a checkpoint (failpoint checkpoint-write)
    kill-line        SIGKILL half-way through appending a metrics line (failpoint metrics-line)
    sigint           Ctrl-C at a random moment: exit 130, its one line, a checkpoint at the step it names
    sigint-twice     two Ctrl-C 50 ms apart: exit 130, one line, no traceback
    disk-full        the run's filesystem filled to a random margin below a checkpoint's size while it
                     trains: exit 1, one line naming the file, metrics.json `failed`, no temporary file left
    truncated        SIGKILL, then the newest checkpoint cut to half its size; the next attempt runs with
                     checkpoint.fallback=true

After `--per-run` faults a run is resumed to its end without one. It counts as lost if any attempt
ends otherwise than its fault should, or if its final metrics.json and metrics.jsonl differ from the
uninterrupted run's (every metric bit for bit; timings aside). disk-full needs a tmpfs of its own,
so root (mount); without it that kind is skipped and the report says so.

Attempts are forked from this process after torch is imported (`--exec` runs the installed
ired-train instead): the same main() as the console script, without paying the seconds of start-up
per fault on a busy machine. Figures go to stdout and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent

RUN = [
    "dataset.n=4",
    "model.hidden=16",
    "model.time_dim=16",
    "train.batch_size=32",
    "train.steps=60",
    "train.log_every=5",
    "train.eval_every=10",
    "checkpoint.every=15",
    "checkpoint.keep=2",
    "eval.size=32",
    "eval.batch_size=32",
    "hardware=cpu",
    "hardware.threads=1",
    "mining=adversarial",
]
STEPS, EVAL_EVERY, CKPT_EVERY = 60, 10, 15
KINDS = ["kill-step", "kill-eval", "kill-checkpoint", "kill-line", "sigint", "sigint-twice", "disk-full", "truncated"]
TIMING_KEYS = ("train_seconds", "mine_ms", "seconds_per_step", "env")


# ================================================================ one attempt


@dataclass
class Ended:
    rc: int  # exit code; -N for a signal
    stderr: str
    seconds: float


class Attempt:
    """One ired-train process on a run directory: forked from here, or the installed script."""

    def __init__(self, run_dir: Path, extra: list[str], env: dict, use_exec: bool, log_dir: Path):
        self.argv = [*RUN, *extra, f"hydra.run.dir={run_dir}"]
        self.err_path = log_dir / "stderr.txt"
        self.out_path = log_dir / "stdout.txt"
        self.start = time.monotonic()
        full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "120", **env}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            if use_exec:
                self.proc = subprocess.Popen(
                    [str(BIN / "ired-train"), *self.argv], stdout=out, stderr=err, env=full_env, cwd=run_dir.parent
                )
                self.pid = self.proc.pid
            else:
                self.proc = None
                self.pid = _fork(self.argv, full_env, out.fileno(), err.fileno())
        self.rc: int | None = None

    def poll(self) -> int | None:
        if self.rc is None:
            if self.proc is not None:
                self.rc = self.proc.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.rc = os.waitstatus_to_exitcode(status)
        return self.rc

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float = 3600) -> Ended:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
            time.sleep(0.01)
        return Ended(self.rc, self.err_path.read_text(), time.monotonic() - self.start)


def _fork(argv: list[str], env: dict, out_fd: int, err_fd: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["ired-train", *argv]
        from ired_mining.entry import train

        train()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# ================================================================ what a run directory holds


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def newest_step(run_dir: Path) -> int:
    kept = checkpoints(run_dir)
    return int(kept[-1].stem.split("_")[1]) if kept else 0


def temporaries(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob(".*.tmp-*"))


def lines(run_dir: Path) -> list[dict]:
    from ired_mining.rundir import read_jsonl

    return read_jsonl(run_dir / "metrics.jsonl")


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def in_loop(run_dir: Path, before: tuple, attempt: Attempt, timeout: float = 600) -> bool:
    """Wait until the attempt has written something of record (a checkpoint or a metrics line):
    it is then in its training loop. False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if attempt.poll() is not None:
            return False
        if progress_mark(run_dir) != before:
            return True
        time.sleep(0.005)
    return False


def progress_mark(run_dir: Path) -> tuple:
    metrics = run_dir / "metrics.jsonl"
    return tuple(p.name for p in checkpoints(run_dir)), metrics.stat().st_size if metrics.exists() else 0


# ================================================================ the faults


@dataclass
class Drill:
    work: Path  # where the runs are (the tmpfs, when there is one)
    logs: Path  # each attempt's stdout and stderr: off the disk that fills up
    rng: random.Random
    use_exec: bool
    disk: Path | None  # a tmpfs of our own for disk-full, or None
    counts: collections.Counter = field(default_factory=collections.Counter)
    no_effect: collections.Counter = field(default_factory=collections.Counter)  # the run ended first
    resumes: int = 0
    problems: list = field(default_factory=list)
    deadline: float = float("inf")  # time.monotonic() after which no new fault is injected

    def attempt(self, run_dir: Path, extra=(), env=None) -> Attempt:
        log_dir = self.logs
        log_dir.mkdir(exist_ok=True)
        if (run_dir / ".hydra").exists():
            self.resumes += 1
        return Attempt(run_dir, list(extra), env or {}, self.use_exec, log_dir)

    def possible(self, kind: str, run_dir: Path) -> bool:
        start = newest_step(run_dir)
        if kind == "disk-full":
            return self.disk is not None
        if kind in ("kill-eval", "kill-line"):
            return remaining(start, EVAL_EVERY) > 0
        return remaining(start, CKPT_EVERY) > 0

    def inject(self, kind: str, run_dir: Path, extra: list[str]) -> str | None:
        """Run one attempt with the fault `kind`; return what went wrong, or None."""
        start = newest_step(run_dir)
        env = {}
        if kind in ("kill-eval", "kill-line"):
            env["IRED_FAILPOINT"] = (
                f"{'evaluate' if kind == 'kill-eval' else 'metrics-line'}:"
                f"{self.rng.randint(1, remaining(start, EVAL_EVERY))}"
            )
        if kind == "kill-checkpoint":
            env["IRED_FAILPOINT"] = f"checkpoint-write:{self.rng.randint(1, remaining(start, CKPT_EVERY))}"
        before = progress_mark(run_dir)
        att = self.attempt(run_dir, extra, env)
        filler = None
        if kind in ("kill-step", "truncated", "sigint", "sigint-twice", "disk-full"):
            if not in_loop(run_dir, before, att):
                ended = att.wait()
                return None if ended.rc == 0 else f"{kind}: ended rc={ended.rc} before the fault: {tail(ended)}"
            time.sleep(self.rng.uniform(0, 0.5))
            if kind in ("kill-step", "truncated"):
                att.signal(signal.SIGKILL)
            elif kind == "sigint":
                att.signal(signal.SIGINT)
            elif kind == "sigint-twice":
                att.signal(signal.SIGINT)
                time.sleep(0.05)
                att.signal(signal.SIGINT)
            else:
                filler = fill(self.disk, self.rng.randint(0, max(1, checkpoint_size(run_dir) - 1)))
        ended = att.wait()
        if filler is not None:
            filler.unlink()
        if ended.rc == 0:
            self.no_effect[kind] += 1  # finished before the fault struck: nothing to check
            return None
        self.counts[kind] += 1
        return check(kind, ended, run_dir)


def remaining(start: int, every: int) -> int:
    """Evaluations (or checkpoints) still to come after `start`, the final one included."""
    return len(set(range(start - start % every + every, STEPS + 1, every)) | {STEPS})


def checkpoint_size(run_dir: Path) -> int:
    kept = checkpoints(run_dir)
    return kept[-1].stat().st_size if kept else 50_000


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all of the disk's free space but `leave` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    path = disk / "filler"
    with open(path, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))
    return path


def tail(ended: Ended) -> str:
    return " | ".join(ended.stderr.strip().splitlines()[-3:])


def check(kind: str, ended: Ended, run_dir: Path) -> str | None:
    """What an attempt's ending says about its fault: None if it ended as it should."""
    err = [ln for ln in ended.stderr.strip().splitlines() if ln.strip()]
    if kind.startswith("kill") or kind == "truncated":
        if ended.rc != -signal.SIGKILL:
            return f"{kind}: rc={ended.rc}, not killed: {tail(ended)}"
        if kind == "truncated" and (kept := checkpoints(run_dir)):
            kept[-1].write_bytes(kept[-1].read_bytes()[: kept[-1].stat().st_size // 2])
        return None
    if "Traceback" in ended.stderr or len(err) != 1:
        return f"{kind}: stderr is not one line: {tail(ended)}"
    if temporaries(run_dir):
        return f"{kind}: temporary files left: {temporaries(run_dir)}"
    if kind.startswith("sigint"):
        if ended.rc != 130:
            return f"{kind}: rc={ended.rc}: {tail(ended)}"
        if "interrupted at step" in err[0]:
            step = int(err[0].split("interrupted at step ")[1].split(";")[0])
            if newest_step(run_dir) != step:
                return f"{kind}: says step {step}, newest checkpoint is {newest_step(run_dir)}"
        elif kind == "sigint" or "stopped at once" not in err[0]:
            return f"{kind}: unexpected line {err[0]!r}"
        return None
    # disk-full
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    if ended.rc != 1 or "No space left on device" not in err[0] or "could not write" not in err[0]:
        return f"disk-full: rc={ended.rc}: {err[0]!r}"
    # metrics.json records it when its few bytes still fit (not when the failed write was a metrics
    # line that left less than a page free)
    if final and (final.get("status") != "failed" or "No space left" not in final.get("error", "")):
        return f"disk-full: metrics.json does not record the failure: {final}"
    return None


# ================================================================ runs


def reference(drill: Drill) -> dict:
    run_dir = drill.work / "reference"
    ended = drill.attempt(run_dir).wait()
    if ended.rc != 0:
        raise SystemExit(f"fault_drill: the uninterrupted run failed (rc {ended.rc}): {tail(ended)}")
    return {"final": json.loads((run_dir / "metrics.json").read_text()), "lines": lines(run_dir)}


def drill_run(drill: Drill, run_dir: Path, faults: int, ref: dict) -> dict:
    """One run through `faults` faults, then to its end; what went wrong in it."""
    injected, problems, extra = 0, [], []
    guard = 0
    while injected < faults and guard < 4 * faults + 10 and time.monotonic() < drill.deadline:
        guard += 1
        kinds = [k for k in KINDS if drill.possible(k, run_dir)]
        if (
            not kinds
            or (run_dir / "metrics.json").exists()
            and json.loads((run_dir / "metrics.json").read_text()).get("status") == "finished"
        ):
            break
        kind = drill.rng.choice(kinds)
        before = sum(drill.counts.values())
        if problem := drill.inject(kind, run_dir, extra):
            problems.append(problem)
            break
        injected += sum(drill.counts.values()) - before
        extra = ["checkpoint.fallback=true"] if kind == "truncated" else []
        # an attempt with no effect finished the run: start the next run afresh
        final = run_dir / "metrics.json"
        if final.exists() and json.loads(final.read_text()).get("status") == "finished":
            break
    if not problems:
        ended = drill.attempt(run_dir, extra).wait() if not finished(run_dir) else Ended(0, "", 0)
        if ended.rc != 0:
            problems.append(f"the last attempt failed (rc {ended.rc}): {tail(ended)}")
    got = lines(run_dir)
    ref_steps, got_steps = [r["step"] for r in ref["lines"]], [r["step"] for r in got]
    lost = len(set(ref_steps) - set(got_steps))
    doubled = len(got_steps) - len(set(got_steps))
    if not problems:
        final = json.loads((run_dir / "metrics.json").read_text())
        if comparable(final) != comparable(ref["final"]):
            problems.append("final metrics differ from the uninterrupted run's")
        if [comparable(r) for r in got] != [comparable(r) for r in ref["lines"]]:
            problems.append(f"metrics.jsonl differs: steps {got_steps} against {ref_steps}")
        if temporaries(run_dir):
            problems.append(f"temporary files left at the end: {temporaries(run_dir)}")
    return {"faults": injected, "problems": problems, "lines_lost": lost, "lines_doubled": doubled}


def finished(run_dir: Path) -> bool:
    final = run_dir / "metrics.json"
    return final.exists() and json.loads(final.read_text()).get("status") == "finished"


@contextlib.contextmanager
def own_tmpfs(where: Path, size: str = "16m"):
    """A tmpfs mounted at `where` for the runs (the disk the drill fills), or None without root."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        != 0
    ):
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=12, help="faults to inject in all (default 12)")
    parser.add_argument("--per-run", type=int, default=8, help="faults per run before it is resumed to its end")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drill's choices (not of training)")
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a new one under /tmp)")
    parser.add_argument("--exec", dest="use_exec", action="store_true", help="run the installed ired-train per attempt")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="inject no new fault after this long (each run still ends and is checked)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="split the faults over this many drills at once (each its own process, seed and "
        "tmpfs) and sum their figures: more of a busy machine's CPU",
    )
    args = parser.parse_args(argv)
    if args.faults < 1 or args.per_run < 1:
        parser.error(f"--faults and --per-run must be ≥ 1 (got {args.faults}, {args.per_run})")

    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="fault_drill."))
    work.mkdir(parents=True, exist_ok=True)
    if args.parallel > 1:
        return in_parallel(args, work)
    if not args.use_exec:
        import ired_mining.entry  # noqa: F401  torch and Hydra once, before the forks
        import ired_mining.train  # noqa: F401
    start = time.monotonic()
    with own_tmpfs(work / "disk") as disk:
        base = disk or work
        drill = Drill(base, work / "logs", random.Random(args.seed), args.use_exec, disk)
        if args.minutes is not None:
            drill.deadline = start + 60 * args.minutes
        ref = reference(drill)
        drill.resumes = 0
        runs = []
        while sum(drill.counts.values()) < args.faults and time.monotonic() < drill.deadline:
            n = len(runs)
            want = min(args.per_run, args.faults - sum(drill.counts.values()))
            result = drill_run(drill, base / f"run{n:03d}", want, ref)
            runs.append(result)
            print(
                f"run {n}: {result['faults']} faults; so far {dict(sorted(drill.counts.items()))}, "
                f"{'ok' if not result['problems'] else result['problems']}",
                flush=True,
            )
            shutil.rmtree(base / f"run{n:03d}")  # the tmpfs is small
            if len(runs) > 4 * args.faults:
                break
    figures = {
        "faults": sum(drill.counts.values()),
        "faults_by_kind": dict(sorted(drill.counts.items())),
        "faults_with_no_effect": dict(sorted(drill.no_effect.items())),
        "disk_full": "tested on a tmpfs" if disk else "skipped: no root to mount a tmpfs",
        "runs": len(runs),
        "resumes": drill.resumes,
        "runs_lost": sum(bool(r["problems"]) for r in runs),
        "lines_lost": sum(r["lines_lost"] for r in runs),
        "lines_doubled": sum(r["lines_doubled"] for r in runs),
        "problems": [p for r in runs for p in r["problems"]],
        "wall_seconds": round(time.monotonic() - start, 1),
        "mode": "exec" if args.use_exec else "fork",
    }
    return report(figures, args.json)


def report(figures: dict, path: Path | None) -> int:
    print(json.dumps(figures, indent=2))
    if path:
        path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["runs_lost"] == 0 and not figures["lines_lost"] and not figures["lines_doubled"] else 1


def in_parallel(args, work: Path) -> int:
    """`--parallel N`: N drills of this script at once, their figures summed."""
    start = time.monotonic()
    share = -(-args.faults // args.parallel)
    children = []
    for i in range(args.parallel):
        cmd = [
            sys.executable,
            __file__,
            "--faults",
            str(share),
            "--per-run",
            str(args.per_run),
            "--seed",
            str(args.seed * 1000 + i),
            "--work",
            str(work / f"drill{i}"),
            "--json",
            str(work / f"drill{i}.json"),
        ]
        cmd += ["--exec"] if args.use_exec else []
        cmd += ["--minutes", str(args.minutes)] if args.minutes is not None else []
        children.append(subprocess.Popen(cmd, stdout=open(work / f"drill{i}.log", "w"), stderr=subprocess.STDOUT))
    for child in children:
        child.wait()
    parts = [
        json.loads((work / f"drill{i}.json").read_text())
        for i in range(args.parallel)
        if (work / f"drill{i}.json").exists()
    ]
    if len(parts) != args.parallel:
        raise SystemExit(f"fault_drill: {args.parallel - len(parts)} of the drills wrote no figures; see {work}")
    summed = {}
    for key in ("faults_by_kind", "faults_with_no_effect"):
        summed[key] = dict(sorted(sum((collections.Counter(p[key]) for p in parts), collections.Counter()).items()))
    figures = {
        key: sum(p[key] for p in parts)
        for key in ("faults", "runs", "resumes", "runs_lost", "lines_lost", "lines_doubled")
    }
    figures |= summed | {
        "disk_full": parts[0]["disk_full"],
        "problems": [x for p in parts for x in p["problems"]],
        "wall_seconds": round(time.monotonic() - start, 1),
        "mode": parts[0]["mode"],
        "parallel": args.parallel,
    }
    return report(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
