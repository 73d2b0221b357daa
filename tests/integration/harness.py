"""The reliability harness: an external ledger, real worker processes, the SQLite file.

Nothing here trusts the library's own account of what ran. Every test task
appends a line to a *ledger* file that the test owns (see ``apps/sh_chaos_app.py``)::

    <job_id> <attempt> <pid> <start_ns> 0          written when an execution starts
    <job_id> <attempt> <pid> <start_ns> <end_ns>   written when it finished

Each line is one ``os.write`` on an ``O_APPEND`` descriptor, so lines from
many processes never interleave. Loss and duplication are computed from those
lines against the ids that ``.spool()`` returned (the acknowledged ids), and
the SQLite file is opened directly with :mod:`sqlite3` only to check what the
scenario says about stored states.

Worker processes are started as ``python -m spoolhouse --app ... worker`` in
their own session (process group), with their PIDs recorded; the supervisor's
children are read from ``/proc/<pid>/task/*/children``. Every process a test
starts is killed (its whole group) when the test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
SRC_DIR = HERE.parent.parent / "src"
PYTHON = sys.executable

#: Full RELIABILITY.md sizes instead of the CI sizes.
FULL = os.environ.get("SPOOLHOUSE_FULL", "").lower() in ("1", "true", "yes")

#: The timings every test app uses (RELIABILITY.md: L = 5 s, H = 1 s).
LEASE = 5.0
HEARTBEAT = 1.0
#: The supervisor's maintenance interval, as the CLI sets it: min(5, lease / 2).
SWEEP = min(5.0, LEASE / 2)

T = TypeVar("T")


def size(ci: int, full: int) -> int:
    """The CI size, or the RELIABILITY.md size when ``SPOOLHOUSE_FULL=1``."""
    return full if FULL else ci


# -- waiting ---------------------------------------------------------------------------
class WaitTimeout(AssertionError):
    """A condition polled by :func:`wait_until` did not become true in time."""


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``pred`` until it returns something truthy; return that value.

    Raises :class:`WaitTimeout` naming ``message`` after ``timeout`` seconds.
    This is the only way tests wait for something to happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for: {text}")
        time.sleep(interval)


# -- the ledger ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line."""

    job_id: str
    attempt: int
    pid: int
    start_ns: int
    end_ns: int  # 0 for the line written when the execution started

    @property
    def finished(self) -> bool:
        return self.end_ns != 0


class Ledger:
    """The append-only file the test tasks write to."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # A line being appended right now may be read half-written: only whole lines count.
        text = text[: text.rfind("\n") + 1]
        out: list[Entry] = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 5:
                raise AssertionError(f"malformed ledger line in {self.path}: {line!r}")
            out.append(Entry(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])))
        return out

    def finished(self) -> list[Entry]:
        return [e for e in self.entries() if e.finished]

    def started(self) -> list[Entry]:
        return [e for e in self.entries() if not e.finished]

    def count_finished(self) -> int:
        return len(self.finished())

    def distinct_finished(self) -> set[str]:
        return {e.job_id for e in self.finished()}


@dataclass
class LedgerReport:
    """What the ledger says about a set of acknowledged ids."""

    acknowledged: int
    executions: int  # finished ledger lines for acknowledged ids
    distinct: int  # distinct acknowledged ids with a finished line
    lost: list[str]  # acknowledged, never finished, not failed with a reason
    dup: int  # executions - distinct
    unknown: list[str]  # finished lines for ids nobody acknowledged
    by_job: dict[str, list[Entry]] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"acknowledged={self.acknowledged} executions={self.executions} "
            f"distinct={self.distinct} lost={len(self.lost)} dup={self.dup} "
            f"unknown={len(self.unknown)}"
        )


def analyse(
    acked: Iterable[str], entries: Sequence[Entry], dead_with_reason: Iterable[str] = ()
) -> LedgerReport:
    """lost / dup as RELIABILITY.md defines them.

    lost = acknowledged ids with no finished ledger line and not dead with a
    recorded reason; dup = executions - distinct finished ids.
    """
    acked_set = set(acked)
    dead = set(dead_with_reason)
    by_job: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_job[e.job_id].append(e)
    finished = [e for e in entries if e.finished]
    executions = sum(1 for e in finished if e.job_id in acked_set)
    done_ids = {e.job_id for e in finished if e.job_id in acked_set}
    unknown = sorted({e.job_id for e in finished} - acked_set)
    lost = sorted(acked_set - done_ids - dead)
    return LedgerReport(
        acknowledged=len(acked_set),
        executions=executions,
        distinct=len(done_ids),
        lost=lost,
        dup=executions - len(done_ids),
        unknown=unknown,
        by_job=dict(by_job),
    )


# -- numbers ---------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


FIGURES: list[tuple[str, dict[str, Any]]] = []


def record_figures(scenario: str, **figures: Any) -> None:
    """Print measured figures and keep them for the end-of-run summary.

    Also appended as one JSON line to ``$SPOOLHOUSE_FIGURES`` when set.
    """
    FIGURES.append((scenario, figures))
    text = " ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
    print(f"[figures] {scenario}: {text}", flush=True)
    out = os.environ.get("SPOOLHOUSE_FIGURES")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"scenario": scenario, **figures}, default=str) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# -- processes -------------------------------------------------------------------------
def proc_children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads), from /proc."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tids = list(task_dir.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return []
    for tid in tids:
        with contextlib.suppress(OSError):
            out.extend(int(x) for x in (tid / "children").read_text().split())
    return sorted(set(out))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state letter follows the parenthesised command name
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Processes:
    """Every process a test starts; all of their process groups are killed at the end."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def popen(self, argv: Sequence[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        self._n += 1
        log_path = self.workdir / f"{self._n:02d}-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - kept open by the child
        try:
            proc = subprocess.Popen(
                list(argv), cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.started.append(proc)
        return proc, log_path

    def worker(
        self,
        *,
        processes: int = 4,
        threads: int = 1,
        app: str = "sh_chaos_app:spooler",
        queues: str | None = None,
        shutdown_timeout: float = 10.0,
        max_tasks: int | None = None,
        burst: bool = False,
        log_level: str = "info",
        name: str = "worker",
    ) -> WorkerProcess:
        argv = [PYTHON, "-m", "spoolhouse", "--app", app, "worker",
                "--processes", str(processes), "--threads", str(threads),
                "--shutdown-timeout", str(shutdown_timeout), "--log-level", log_level]
        if queues:
            argv += ["--queues", queues]
        if max_tasks is not None:
            argv += ["--max-tasks", str(max_tasks)]
        if burst:
            argv.append("--burst")
        proc, log_path = self.popen(argv, name)
        return WorkerProcess(proc, log_path, processes)

    def python(self, args: Sequence[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        return self.popen([PYTHON, *args], name)

    def kill_all(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: pgid == pid
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@dataclass
class WorkerProcess:
    """A ``spoolhouse worker`` supervisor we started, and its log."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    processes: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """The supervisor's live worker processes (not multiprocessing's resource tracker)."""
        return [
            c for c in proc_children(self.pid)
            if pid_alive(c) and "spawn_main" in cmdline(c)
        ]

    def wait_children(self, n: int | None = None, timeout: float = 30.0) -> list[int]:
        want = self.processes if n is None else n

        def ready() -> list[int]:
            self.check_running()
            kids = self.children()
            return kids if len(kids) >= want else []

        return wait_until(ready, timeout, message=lambda: f"{want} worker children of {self.pid}; "
                          f"log tail:\n{self.log_tail()}")

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker supervisor {self.pid} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def signal(self, signum: int) -> None:
        """Signal the supervisor process only (as a process manager would)."""
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"worker supervisor {self.pid} still running {timeout:.1f}s later:\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 30.0) -> int:
        """Warm stop (SIGTERM) and wait for the exit."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def spawned(self) -> int:
        """How many worker processes the supervisor started (initial + restarts), from its log."""
        return self.log().count("spawned spoolhouse worker")


# -- the store, read directly -------------------------------------------------------------
def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db), timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    conn = connect(db)
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def job_rows(db: Path) -> dict[str, sqlite3.Row]:
    return {r["id"]: r for r in query(db, "SELECT * FROM all_jobs")}


def state_counts(db: Path) -> dict[str, int]:
    return {r[0]: r[1] for r in query(db, "SELECT state, count(*) FROM all_jobs GROUP BY state")}


def owner_pid(worker_id: str | None) -> int | None:
    """The pid in a worker id (``host:pid:random``)."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def integrity(db: Path) -> str:
    return str(query(db, "PRAGMA integrity_check")[0][0])


def orphaned_running(db: Path) -> list[tuple[str, str | None]]:
    """Running rows whose owning worker process is gone."""
    out = []
    for r in query(db, "SELECT id, worker_id FROM all_jobs WHERE state = 'running'"):
        pid = owner_pid(r["worker_id"])
        if pid is None or not pid_alive(pid):
            out.append((r["id"], r["worker_id"]))
    return out


def assert_store_healthy(db: Path) -> None:
    """Every scenario ends here: integrity_check is ok, no running row owned by a dead worker."""
    result = integrity(db)
    assert result == "ok", f"PRAGMA integrity_check: {result}"
    orphans = orphaned_running(db)
    assert not orphans, f"running rows owned by dead workers: {orphans[:10]} ({len(orphans)})"


def assert_clean_logs(*logs: str, allow: Sequence[str] = ()) -> None:
    """No 'database is locked', no traceback, no crash in worker/producer output."""
    bad_markers = ("database is locked", "Traceback (most recent call last)",
                   "maintenance failed", "heartbeat failed")
    for text in logs:
        for line in text.splitlines():
            if any(m in line for m in bad_markers) and not any(a in line for a in allow):
                raise AssertionError(f"unexpected line in a process log: {line}\n---\n{text[-4000:]}")


# -- the scenario environment ------------------------------------------------------------
@dataclass
class Scenario:
    """Paths and environment of one test: a database, a ledger, a control directory."""

    root: Path
    db: Path
    ledger: Ledger
    ctl: Path
    env: dict[str, str]
    procs: Processes

    def file(self, name: str) -> Path:
        return self.ctl / name

    def spooler(self) -> Any:
        """The test app's spooler bound to this scenario's files, for enqueueing in-process."""
        import sh_chaos_app  # from APPS_DIR

        return sh_chaos_app.make_spooler(str(self.db), str(self.ledger.path), str(self.ctl))

    def producer(
        self, *, task: str, count: int, out: Path, go: Path | None = None,
        sleep_max: float = 0.0, seed: int = 0, rate: float = 0.0, name: str = "producer",
    ) -> tuple[subprocess.Popen[bytes], Path]:
        args = ["-m", "sh_producer", "--task", task, "--count", str(count), "--out", str(out),
                "--sleep-max", str(sleep_max), "--seed", str(seed), "--rate", str(rate)]
        if go is not None:
            args += ["--go", str(go)]
        return self.procs.python(args, name)


def make_scenario(root: Path) -> Scenario:
    root.mkdir(parents=True, exist_ok=True)
    ctl = root / "ctl"
    ctl.mkdir(exist_ok=True)
    db = root / "spool.db"
    ledger = root / "ledger.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APPS_DIR), str(SRC_DIR), *filter(None, [env.get("PYTHONPATH", "")])]
    )
    env["SPOOLHOUSE_DB"] = str(db)
    env["SPOOLHOUSE_LEDGER"] = str(ledger)
    env["SPOOLHOUSE_CTL"] = str(ctl)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SPOOLHOUSE_APP", None)
    return Scenario(root, db, Ledger(ledger), ctl, env, Processes(root, env))


@contextlib.contextmanager
def scenario(root: Path) -> Iterator[Scenario]:
    sc = make_scenario(root)
    try:
        yield sc
    finally:
        sc.procs.kill_all()


# -- producers' output --------------------------------------------------------------------
@dataclass
class Produced:
    """What producer processes report: ids with enqueue start/ack times, and errors."""

    ids: list[str]
    enqueue_start: dict[str, int]
    enqueue_ack: dict[str, int]
    errors: list[str]

    @property
    def latencies(self) -> list[float]:
        """Seconds each ``.spool()`` call took."""
        return [(self.enqueue_ack[i] - self.enqueue_start[i]) / 1e9 for i in self.ids]


def read_produced(paths: Iterable[Path]) -> Produced:
    ids: list[str] = []
    start: dict[str, int] = {}
    ack: dict[str, int] = {}
    errors: list[str] = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("ERR "):
                errors.append(line[4:])
                continue
            job_id, t0, t1 = line.split()
            ids.append(job_id)
            start[job_id] = int(t0)
            ack[job_id] = int(t1)
    return Produced(ids, start, ack, errors)


def run_producers(
    sc: Scenario, n: int, *, task: str, count: int, tag: str, sleep_max: float = 0.0,
    rate: float = 0.0, timeout: float = 120.0,
) -> tuple[Produced, int]:
    """Start ``n`` producer processes together, wait for them; return what they spooled.

    The second value is the wall-clock ns at which they were released.
    """
    go = sc.file(f"go-{tag}")
    outs = [sc.root / f"ids-{tag}-{p}.txt" for p in range(n)]
    prods = [
        sc.producer(task=task, count=count, out=out, go=go, seed=p, sleep_max=sleep_max,
                    rate=rate, name=f"producer-{tag}-{p}")
        for p, out in enumerate(outs)
    ]
    # producers open the database before waiting for the go file
    t_go = time.time_ns()
    go.touch()
    wait_until(lambda: all(p.poll() is not None for p, _ in prods), timeout,
               message=f"{n} producers ({tag}) to finish")
    for p, log in prods:
        # exit status 1: some .spool() calls raised; they are in Produced.errors for the test
        assert p.returncode in (0, 1), f"producer failed:\n{log.read_text()}"
    return read_produced(outs), t_go


def first_starts(entries: Iterable[Entry], ids: set[str]) -> dict[str, int]:
    """Start time (ns) of each job's first execution."""
    out: dict[str, int] = {}
    for e in entries:
        if e.job_id in ids and not e.finished:
            out[e.job_id] = min(out.get(e.job_id, e.start_ns), e.start_ns)
    return out


def start_barrier(sc: Scenario, parties: int, timeout: float = 60.0) -> list[int]:
    """Wait until ``parties`` worker slots are up and running jobs.

    Spools ``parties`` barrier jobs that each block until all of them have
    started, so each occupies its own slot at once; returns the pids that ran them.
    """
    sp = sc.spooler()
    try:
        barrier = sp.registry.get("barrier")
        tag = f"b{time.monotonic_ns()}"
        barrier.spool_many([(tag, parties, timeout)] * parties)
        path = sc.file(f"barrier-{tag}")

        def done() -> list[int]:
            try:
                text = path.read_text()
            except FileNotFoundError:
                return []
            lines = text[: text.rfind("\n") + 1].split()  # whole lines only
            return [int(x) for x in lines] if len(lines) >= parties else []

        pids = wait_until(done, timeout, message=f"{parties} barrier jobs running at once")
        wait_until(
            lambda: not query(sc.db, "SELECT 1 FROM all_jobs WHERE task = 'barrier' AND state != "
                                     "'succeeded' LIMIT 1"),
            timeout, message="barrier jobs to finish",
        )
        return pids
    finally:
        sp.close()
