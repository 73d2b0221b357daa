"""Flat cost: does the drain rate hold with a deep backlog, and does a worker's memory stay put?

Usage::

    .venv/bin/python bench/flat.py --backend sqlite            # full: about 5-6 minutes here
    .venv/bin/python bench/flat.py --backend redis             # a private redis-server
    .venv/bin/python bench/flat.py --backend sqlite --quick    # small sizes, about 1 minute
    .venv/bin/python bench/flat.py --logs /tmp/flat-logs       # also keep the workers' logs

Issue 7 asks for "drain rate with 1,000,000 pending or 100,000 scheduled jobs within
10 % of an empty queue; worker RSS <= 40 MB and no growth over 1,000,000 jobs". Every
drain runs no-op jobs with ``spoolhouse worker --processes 2`` (1 thread each), and
every rate is measured the same way, from the store's own timestamps:

    rate = jobs in the window / (last finished_at - first started_at of those jobs)

over a *window* of W consecutive jobs in claim order (W = 20,000; quick: 5,000). Start-up
and the drain's ramp-up and tail are left out: a batch is W + 2 x E jobs (E = W / 10)
and the window is the middle W. Beside each rate, the CPU time the worker's processes
(supervisor and children; on Redis also the private redis-server) spent per job over
the same window, from ``/proc/<pid>/stat`` sampled every 0.1-0.25 s and interpolated:
less sensitive than a rate to what else runs on the machine.

Stores (each a SQLite file in a temporary directory, or a key prefix of its own):

* ``backlog``: B pending jobs (1,000,000; quick 100,000) in queue ``backlog``, filled
  once with ``spool_many`` in batches of 1,000.
* ``scheduled``: S jobs (100,000; quick 10,000) in queue ``default`` with ``run_at``
  1 to 24 hours ahead (``options(delay=...)``, the delay changing every 1,000 jobs).
* ``empty``: a new store for every round.

Batch runs, R rounds (3; quick 1), the order rotating each round; each spools a batch
of W + 2E jobs, then drains it:

* ``empty``: the batch in ``default`` of an empty store; ``worker --burst``.
* ``other-queue``: the batch in ``default`` of the backlog store, whose B jobs wait in
  ``backlog``, a queue the worker does not serve (``--queues default --burst``).
* ``same-queue, lower priority``: the batch in ``backlog`` at priority 1, in front of
  the B jobs at priority 0 (``--queues backlog``). The worker is stopped (SIGTERM to
  its process group; SIGKILL if it has not exited 15 s later) once every job of the
  batch has finished, so it also runs some backlog jobs, a few thousand per round;
  the window is unaffected.
* ``scheduled``: the batch in ``default`` of the scheduled store, beside the S future
  jobs of the same queue; ``--burst``.

Then the deep-backlog drain: ``worker --queues backlog --burst`` runs the whole
backlog store, FIFO: the jobs of the same queue and priority sit behind the one being
claimed, 1,000,000 at first. Its rate is measured on windows of W jobs at 5 %, 15 %,
... 85 % of the backlog (quick: from 35 %) and at its end (fewer than W + E pending
then, but every job drained so far is kept as ``succeeded``: results are stored for a
day by default). During that drain the script samples every 0.25 s the ``VmRSS`` of
the supervisor and of its worker children (``/proc/<pid>/task/*/children``, processes
whose command line is multiprocessing's ``spawn_main``), and reports for each child
the RSS when the first window starts, at each window, the largest, the last sample
and ``VmHWM``. It also records the store's job counts by state afterwards: jobs
claimed by a worker that had to be killed show up there as running or failed.

Every ratio compares a figure with the median of the ``empty`` rounds, which are
interleaved with the others, so a change of load on this shared machine touches both.

SQLite only: after each fill the script runs ``PRAGMA wal_checkpoint(TRUNCATE)`` from
its own connection, so a drain does not start by copying a bulk load's WAL (up to a
few hundred MB for the backlog) into the database; a store filled while workers run
is checkpointed as it goes. The rows are the ones ``spool_many`` wrote.

Redis: by default a private ``redis-server`` on a free 127.0.0.1 port (no snapshots,
no AOF), shut down at the end, so the million jobs never sit in a shared server and
its ``INFO commandstats`` stay clean. ``--redis-url`` uses an existing server instead,
under a key prefix of this run's own, deleted at the end.

Every process is started in its own session and stopped by process group (PID) at
the end, on an error, Ctrl-C, SIGTERM or SIGHUP. Results: printed, and written to
``bench/results/flat-<backend>[-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, ROOT, Bench, machine  # noqa: E402

FINAL = ("succeeded", "failed", "cancelled")
BATCH_CALLS = 1000  # jobs per spool_many call
RSS_EVERY = 0.25  # seconds between RSS and CPU samples in the deep drain


@dataclass
class Store:
    name: str
    url: str
    prefix: str
    spooler: Any
    noop: Any
    path: Path | None = None  # SQLite file
    ids: dict[int, str] = field(default_factory=dict)  # fill position -> job id (kept ones)


class Interrupted(Exception):
    pass


def _interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


class FlatBench(Bench):
    """run.py's Bench (app module, spooler, worker command, stop by process group),
    with several stores alive at once and ``--queues``."""

    def __init__(self, backend: str, workdir: Path, redis_url: str | None) -> None:
        super().__init__(backend, workdir)
        if redis_url is not None:
            self.url_base = redis_url
        self.base_prefix = self.prefix
        self.stores: list[Store] = []
        self.private_redis = False  # a server of our own: stopping it is the cleanup
        self.log_no = 0
        self.log = workdir / "worker-0.log"

    def open_store(self, name: str) -> Store:
        self.prefix = f"{self.base_prefix}-{name}"
        url = self.url(name)
        spooler, noop = self.spooler(url)
        path = self.workdir / f"{name}.db" if self.backend == "sqlite" else None
        store = Store(name, url, self.prefix, spooler, noop, path)
        self.stores.append(store)
        return store

    def drop_store(self, store: Store) -> None:
        if store not in self.stores:
            return
        self.stores.remove(store)
        self.prefix = store.prefix
        if self.private_redis:
            store.spooler.close()
        else:
            self.cleanup_store(store.spooler)
        if store.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store.path}{suffix}").unlink(missing_ok=True)

    def drop_all(self) -> None:
        for store in list(self.stores):
            try:
                self.drop_store(store)
            except Exception as exc:  # keep cleaning the others
                print(f"  could not clean store {store.name}: {exc}", file=sys.stderr)

    def start_worker_on(self, store: Store, queues: str, burst: bool,
                        processes: int = 2) -> subprocess.Popen[bytes]:
        """run.py's worker command, plus ``--queues``."""
        env = dict(os.environ, BENCH_URL=store.url, BENCH_PREFIX=store.prefix,
                   PYTHONPATH=f"{self.workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        cmd = [sys.executable, "-m", "spoolhouse", "--app", "benchapp:spooler", "worker",
               "--processes", str(processes), "--queues", queues, "--log-level", "warning"]
        if burst:
            cmd.append("--burst")
        self.log_no += 1
        self.log = self.workdir / f"worker-{self.log_no}.log"
        with open(self.log, "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=self.workdir, start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def warnings(self) -> dict[str, Any]:
        """What the last worker logged at WARNING or above (its log is a temp file)."""
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines()
                 if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
        lease_lost = sum("lease_lost" in ln for ln in lines)
        others = [ln for ln in lines if "lease_lost" not in ln]
        return {"lease_lost_warnings": lease_lost, "other_warnings": len(others),
                "other_examples": others[:3]}

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one worker (its process group), keeping the others."""
        others = [p for p in self.procs if p is not proc]
        self.procs[:] = [proc]
        try:
            self.stop_all()
        finally:
            self.procs[:] = others


# -- filling ---------------------------------------------------------------------------
def fill(store: Store, n: int, *, queue: str, priority: int = 0, keep: list[range] | None = None,
         delays: list[float] | None = None) -> tuple[float, dict[int, str]]:
    """Spool ``n`` no-op jobs with ``spool_many`` (1,000 per call; argument = position).

    Returns (jobs/s, {position: id}) for the positions in ``keep`` (every one when None).
    """
    ids: dict[int, str] = {}
    t0 = time.perf_counter()
    done = 0
    call = 0
    while done < n:
        size = min(BATCH_CALLS, n - done)
        opts: dict[str, Any] = {"queue": queue, "priority": priority}
        if delays:
            opts["delay"] = delays[call % len(delays)]
        handles = store.noop.options(**opts).spool_many([(done + i,) for i in range(size)])
        for i, handle in enumerate(handles):
            pos = done + i
            if keep is None or any(pos in r for r in keep):
                ids[pos] = handle.id
        done += size
        call += 1
    rate = n / (time.perf_counter() - t0)
    checkpoint(store)
    return rate, ids


def checkpoint(store: Store) -> None:
    """SQLite: copy the WAL into the database and truncate it (see the module doc)."""
    if store.path is None:
        return
    conn = sqlite3.connect(str(store.path), timeout=30)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            print(f"  note: checkpoint of {store.name} could not finish (busy)", file=sys.stderr)
    finally:
        conn.close()


# -- measuring ---------------------------------------------------------------------------
def fetch(store: Store, ids: list[str]) -> list[Any]:
    backend = store.spooler.backend
    return [backend.get(job_id) for job_id in ids]


def is_final(store: Store, job_id: str) -> bool:
    job = store.spooler.backend.get(job_id)
    return job is not None and job.state.value in FINAL


def window_rate(jobs: list[Any], *, after: float | None = None) -> dict[str, Any]:
    """Rate of a window of jobs: len / (last finish - first start); every job must have
    succeeded (and, with ``after``, started after that time)."""
    bad = [j for j in jobs if j is None or j.state.value != "succeeded"
           or (after is not None and (j.started_at or 0) < after)]
    good = [j for j in jobs if j is not None and j not in bad]
    out: dict[str, Any] = {"jobs": len(jobs), "not_succeeded_in_run": len(bad)}
    if len(good) >= 2:
        first = min(j.started_at for j in good)
        last = max(j.finished_at for j in good)
        out.update(rate=len(good) / (last - first), first_start=first, last_finish=last)
    else:
        out["rate"] = None
    return out


def children_of(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


def worker_children(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing spawn children)."""
    found = []
    for pid in children_of(supervisor):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def status_kb(pid: int, *names: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in names:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


class Sampler:
    """RSS and CPU time of a worker (supervisor + its spawn children) and of extra
    processes (the private redis-server), sampled on demand."""

    def __init__(self, supervisor: int, extra: dict[str, int] | None = None) -> None:
        self.supervisor = supervisor
        self.extra = extra or {}
        self.names: dict[int, str] = {supervisor: "supervisor"}
        for name, pid in self.extra.items():
            self.names[pid] = name
        self.series: dict[int, list[tuple[float, int, float]]] = {}  # pid -> (t, rss kB, cpu s)
        self.hwm: dict[int, int] = {}

    def sample(self) -> None:
        now = time.time()
        pids = [self.supervisor, *self.extra.values()]
        for pid in worker_children(self.supervisor):
            self.names.setdefault(pid, f"worker {pid}")
            pids.append(pid)
        for pid in pids:
            st = status_kb(pid, "VmRSS", "VmHWM")
            cpu = cpu_seconds(pid)
            if "VmRSS" in st and cpu is not None:
                self.series.setdefault(pid, []).append((now, st["VmRSS"], cpu))
                if "VmHWM" in st:
                    self.hwm[pid] = st["VmHWM"]

    def cpu_at(self, pid: int, t: float) -> float:
        series = self.series.get(pid, [])
        if not series:
            return 0.0
        if t <= series[0][0]:
            return series[0][2]
        for (t0, _, c0), (t1, _, c1) in zip(series, series[1:], strict=False):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return series[-1][2]

    def cpu_between(self, t0: float, t1: float, worker: bool = True) -> float:
        """CPU seconds used between t0 and t1 by the worker's processes (or the extras)."""
        extra = set(self.extra.values())
        return sum(self.cpu_at(pid, t1) - self.cpu_at(pid, t0) for pid in self.series
                   if (pid not in extra) == worker)


def cpu_per_job(sampler: Sampler, window: dict[str, Any]) -> dict[str, Any]:
    """Microseconds of CPU per job over a window (worker processes; redis-server)."""
    if window.get("rate") is None:
        return {}
    t0, t1 = window["first_start"], window["last_finish"]
    n = window["jobs"] - window["not_succeeded_in_run"]
    out = {"worker_cpu_us_per_job": sampler.cpu_between(t0, t1) / n * 1e6}
    if sampler.extra:
        out["redis_cpu_us_per_job"] = sampler.cpu_between(t0, t1, worker=False) / n * 1e6
    return out


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


# -- the runs ------------------------------------------------------------------------
class Runs:
    def __init__(self, bench: FlatBench, sizes: dict[str, int]) -> None:
        self.bench = bench
        self.sizes = sizes
        self.w = sizes["window"]
        self.e = sizes["edge"]
        self.batch = self.w + 2 * self.e
        self.window = range(self.e, self.e + self.w)
        self.backlog: Store | None = None
        self.scheduled: Store | None = None
        self.round_no = 0
        self.extra: dict[str, int] = {}  # processes whose CPU counts too (redis-server)

    def _batch(self, store: Store, *, queue: str, priority: int = 0) -> list[str]:
        _, ids = fill(store, self.batch, queue=queue, priority=priority)
        return [ids[p] for p in range(self.batch)]

    def _measure(self, store: Store, ids: list[str], *, queues: str, burst: bool,
                 timeout: float) -> dict[str, Any]:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = self.bench.start_worker_on(store, queues, burst)
        sampler = Sampler(proc.pid, self.extra)
        capped = False
        tail = ids[-256:]
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            sampler.sample()
            if time.monotonic() > deadline:
                capped = True
                break
            if not burst and is_final(store, tail[-1]):
                # the batch is ahead of everything else: stop once its last jobs are final
                jobs = fetch(store, tail)
                if all(j is not None and j.state.value in FINAL for j in jobs):
                    sampler.sample()
                    break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        t_stop = time.perf_counter()
        exited = proc.poll() is not None
        self.bench.stop(proc)
        stop_s = time.perf_counter() - t_stop
        result = window_rate(fetch(store, [ids[p] for p in self.window]))
        result.update(cpu_per_job(sampler, result))
        whole = window_rate(fetch(store, ids))
        result.update(batch_rate=whole.get("rate"), wall_s=wall, load1=load, capped=capped,
                      exited_by_itself=exited, stop_s=stop_s, t_start=time.time() - wall - stop_s,
                      batch_not_succeeded=whole["not_succeeded_in_run"], **self.bench.warnings())
        return result

    def empty(self) -> dict[str, Any]:
        self.round_no += 1
        store = self.bench.open_store(f"empty{self.round_no}")
        try:
            ids = self._batch(store, queue="default")
            return self._measure(store, ids, queues="default", burst=True, timeout=self.timeout())
        finally:
            self.bench.drop_store(store)

    def other_queue(self) -> dict[str, Any]:
        assert self.backlog is not None
        ids = self._batch(self.backlog, queue="default")
        return self._measure(self.backlog, ids, queues="default", burst=True,
                             timeout=self.timeout())

    def lower_priority(self) -> dict[str, Any]:
        assert self.backlog is not None
        ids = self._batch(self.backlog, queue="backlog", priority=1)
        return self._measure(self.backlog, ids, queues="backlog", burst=False,
                             timeout=self.timeout())

    def with_scheduled(self) -> dict[str, Any]:
        assert self.scheduled is not None
        ids = self._batch(self.scheduled, queue="default")
        return self._measure(self.scheduled, ids, queues="default", burst=True,
                             timeout=self.timeout())

    def timeout(self) -> float:
        return 60.0 + self.batch / 300.0

    def fill_backlog(self) -> dict[str, Any]:
        n = self.sizes["backlog"]
        store = self.bench.open_store("backlog")
        self.backlog = store
        keep = [range(s, s + self.w) for s in self.window_starts()]
        rate, store.ids = fill(store, n, queue="backlog", keep=keep)
        return {"jobs": n, "spool_many_per_s": rate}

    def fill_scheduled(self) -> dict[str, Any]:
        n = self.sizes["scheduled"]
        store = self.bench.open_store("scheduled")
        self.scheduled = store
        hours = [3600.0 * h for h in range(1, 25)]
        rate, _ = fill(store, n, queue="default", keep=[], delays=hours)
        return {"jobs": n, "spool_many_per_s": rate, "run_at": "1-24 h ahead"}

    def window_starts(self) -> list[int]:
        """Windows of the deep drain: at 5 %, 15 %, ... 85 % of the backlog, and its end.

        The lower-priority rounds run some backlog jobs from its front after their
        batch (a few thousand each, more when a stop hangs): with the small quick
        backlog the windows start at 35 %, clear of them.
        """
        n = self.sizes["backlog"]
        first = 35 if n < 1_000_000 else 5
        return [int(n * f / 100) for f in range(first, 95, 10)] + [n - self.w - self.e]

    def deep_drain(self, cap: float) -> dict[str, Any]:
        """Drain the whole backlog store, sampling the workers' RSS."""
        store = self.backlog
        assert store is not None
        load = os.getloadavg()[0]
        t_start = time.time()
        proc = self.bench.start_worker_on(store, "backlog", burst=True)
        sampler = Sampler(proc.pid, self.extra)
        deadline = time.monotonic() + cap
        capped = False
        while proc.poll() is None:
            sampler.sample()
            if time.monotonic() > deadline:
                capped = True
                break
            time.sleep(RSS_EVERY)
        wall = time.time() - t_start
        self.bench.stop(proc)
        windows = []
        for s in self.window_starts():
            jobs = fetch(store, [store.ids[p] for p in range(s, s + self.w)])
            r = window_rate(jobs, after=t_start)
            r.update(cpu_per_job(sampler, r))
            r.update(position=s, pending_behind=self.sizes["backlog"] - s - self.w)
            windows.append(r)
        counts = store.spooler.backend.counts()  # every job of the store, by queue and state
        failed = [
            {"id": j.id, "worker_id": j.worker_id, "attempt": j.attempt, "lost": j.lost,
             "started_after_drain_start_s": None if j.started_at is None else j.started_at - t_start,
             "finished_after_drain_start_s": None if j.finished_at is None else j.finished_at - t_start,
             "error": (j.error or "")[:200]}
            for j in store.spooler.backend.list_jobs(state="failed", limit=10)
        ]
        return {"jobs": self.sizes["backlog"], "wall_s": wall, "load1": load, "capped": capped,
                "store_counts_after": counts, "failed_examples": failed,
                "t_start": t_start, **self.bench.warnings(), "windows": windows, "rss": rss_report(sampler, windows)}


def rss_report(sampler: Sampler, windows: list[dict[str, Any]]) -> dict[str, Any]:
    by_pid = {pid: [(t, kb) for t, kb, _ in series] for pid, series in sampler.series.items()}
    hwm = sampler.hwm
    first_window = windows[0].get("first_start")
    out: dict[str, Any] = {"unit": "MB", "every_s": RSS_EVERY, "processes": {}}

    def at(series: list[tuple[float, int]], t: float | None) -> float | None:
        if t is None or not series:
            return None
        best = min(series, key=lambda s: abs(s[0] - t))
        return round(best[1] / 1024, 1)

    for pid, series in by_pid.items():
        name = sampler.names.get(pid, str(pid))
        start = at(series, first_window)
        last = round(series[-1][1] / 1024, 1)
        entry: dict[str, Any] = {
            "samples": len(series),
            "first_sample": round(series[0][1] / 1024, 1),
            "at_first_window": start,
            "at_windows": [at(series, w.get("first_start")) for w in windows],
            "max": round(max(kb for _, kb in series) / 1024, 1),
            "last": last,
            "hwm": round(hwm[pid] / 1024, 1) if pid in hwm else None,
        }
        entry["growth_first_window_to_last"] = (
            None if start is None else round(last - start, 1)
        )
        # a thinned series for plotting: about 60 points
        step = max(1, len(series) // 60)
        entry["series"] = [(round(t - series[0][0], 1), round(kb / 1024, 1))
                           for t, kb in series[::step]]
        out["processes"][name] = entry
    return out


# -- report -------------------------------------------------------------------------------
def summarize(results: dict[str, Any]) -> None:
    rounds = results["rounds"]
    def med(runs: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in runs if r.get(key)]
        return statistics.median(values) if values else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    ref = med(rounds["empty"], "rate")
    ref_cpu = med(rounds["empty"], "worker_cpu_us_per_job")
    ref_redis = med(rounds["empty"], "redis_cpu_us_per_job")
    results["empty_median_per_s"] = ref
    summary: dict[str, Any] = {}
    for name, runs in rounds.items():
        rate = med(runs, "rate")
        cpu = med(runs, "worker_cpu_us_per_job")
        redis_cpu = med(runs, "redis_cpu_us_per_job")
        summary[name] = {
            "median_per_s": rate, "rates": [r.get("rate") for r in runs],
            "vs_empty": ratio(rate, ref),
            "worker_cpu_us_per_job": cpu, "cpu_vs_empty": ratio(cpu, ref_cpu),
            "redis_cpu_us_per_job": redis_cpu, "redis_cpu_vs_empty": ratio(redis_cpu, ref_redis),
        }
    for w in results["deep_drain"]["windows"]:
        w["vs_empty"] = ratio(w.get("rate"), ref)
        w["cpu_vs_empty"] = ratio(w.get("worker_cpu_us_per_job"), ref_cpu)
        w["redis_cpu_vs_empty"] = ratio(w.get("redis_cpu_us_per_job"), ref_redis)
    results["summary"] = summary


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    s = results["sizes"]
    print()
    print(f"flat cost, backend {results['backend']}: {m.get('cpu', '?')}, {m['cpus']} cpus, "
          f"Python {m['python']}, SQLite {m['sqlite']}")
    print(f"window {s['window']:,} jobs (middle of {s['window'] + 2 * s['edge']:,}), "
          f"backlog {s['backlog']:,}, scheduled {s['scheduled']:,}, rounds {s['rounds']}")
    print()
    labels = {
        "empty": "empty store",
        "other_queue": f"{s['backlog']:,} pending in another queue",
        "lower_priority": f"{s['backlog']:,} pending, same queue, lower priority",
        "scheduled": f"{s['scheduled']:,} scheduled, same queue",
    }
    redis = results["backend"] == "redis"
    cpu_head = f"{'cpu us/job':>10} {'vs empty':>9}" + (f" {'redis us':>8} {'vs':>6}" if redis else "")

    def cpu_cols(row: dict[str, Any]) -> str:
        text = (f"{'-' if row.get('worker_cpu_us_per_job') is None else format(row['worker_cpu_us_per_job'], '.0f'):>10} "
                f"{fmt_ratio(row.get('cpu_vs_empty')):>9}")
        if redis:
            value = row.get("redis_cpu_us_per_job")
            text += (f" {'-' if value is None else format(value, '.0f'):>8} "
                     f"{fmt_ratio(row.get('redis_cpu_vs_empty')):>6}")
        return text

    print(f"  {'batch drain (window of the batch)':<46} {'jobs/s':>8} {'vs empty':>9} {cpu_head}")
    for name, label in labels.items():
        row = results["summary"].get(name)
        if row is None:
            continue
        print(f"  {label:<46} {fmt_rate(row['median_per_s']):>8} "
              f"{fmt_ratio(row['vs_empty']):>9} {cpu_cols(row)}")
    print("  (medians; every round's jobs/s: " + "; ".join(
        f"{name} " + " / ".join(fmt_rate(r) for r in row["rates"])
        for name, row in results["summary"].items()) + ")")
    d = results["deep_drain"]
    print()
    print(f"  deep backlog, FIFO in one queue ({s['backlog']:,} jobs, {d['wall_s']:.0f} s"
          f"{', CAPPED' if d['capped'] else ''})")
    print(f"  {'window at':<14} {'pending behind':>15} {'jobs/s':>8} {'vs empty':>9} {cpu_head}")
    for w in d["windows"]:
        note = f"  ({w['not_succeeded_in_run']} not run in this drain)" if w[
            "not_succeeded_in_run"] else ""
        print(f"  {w['position']:<14,} {w['pending_behind']:>15,} {fmt_rate(w.get('rate')):>8} "
              f"{fmt_ratio(w.get('vs_empty')):>9} {cpu_cols(w)}{note}")
    lost = sum(r.get("lease_lost_warnings", 0) for runs in results["rounds"].values()
               for r in runs) + d.get("lease_lost_warnings", 0)
    other = sum(r.get("other_warnings", 0) for runs in results["rounds"].values()
                for r in runs) + d.get("other_warnings", 0)
    print(f"  worker log: {lost} 'lease_lost' warnings, {other} other warnings or errors "
          "(examples in the JSON)")
    print()
    print(f"  RSS, MB {'':<18} {'1st window':>10} {'max':>7} {'last':>7} {'growth':>7} {'HWM':>7}")
    for name, p in d["rss"]["processes"].items():
        growth = p["growth_first_window_to_last"]
        print(f"  {name:<26} {p['at_first_window'] or '-':>10} {p['max']:>7} {p['last']:>7} "
              f"{'-' if growth is None else f'{growth:+.1f}':>7} {p['hwm'] or '-':>7}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (about 1 min)")
    parser.add_argument("--rounds", type=int, default=None, help="batch rounds (default 3; quick 1)")
    parser.add_argument("--logs", default=None, metavar="DIR",
                        help="copy the workers' logs (warnings and up) into DIR at the end")
    parser.add_argument("--redis-url", default=None,
                        help="use this Redis (own key prefix, deleted at the end) instead of "
                             "starting a private redis-server")
    args = parser.parse_args()
    sizes = {
        "window": 5_000 if args.quick else 20_000,
        "backlog": 100_000 if args.quick else 1_000_000,
        "scheduled": 10_000 if args.quick else 100_000,
        "rounds": args.rounds or (1 if args.quick else 3),
    }
    sizes["edge"] = sizes["window"] // 10
    cap = 120.0 if args.quick else 480.0  # the deep drain stops here and is measured as is
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    t_begin = time.monotonic()
    results: dict[str, Any] = {"backend": args.backend, "sizes": sizes, "machine": machine(),
                               "date": time.strftime("%Y-%m-%d %H:%M"),
                               "command": "worker --processes 2 (1 thread each)"}
    with tempfile.TemporaryDirectory(prefix="spoolhouse-flat-") as tmp:
        workdir = Path(tmp)
        private = procs = None
        redis_url = args.redis_url
        if args.backend == "redis" and redis_url is None:
            from compare import PrivateRedis, Procs  # a redis-server of our own

            procs = Procs()
            private = PrivateRedis(procs, workdir)
            private.start()
            redis_url = private.url
            results["redis"] = {"server": "private", "version": private.version}
        elif args.backend == "redis":
            results["redis"] = {"server": "given"}
        bench = FlatBench(args.backend, workdir, redis_url)
        bench.private_redis = private is not None
        runs = Runs(bench, sizes)
        if private is not None and private.proc is not None:
            runs.extra = {"redis-server": private.proc.pid}
        try:
            print(f"filling {sizes['backlog']:,} backlog jobs ...", flush=True)
            results["fill_backlog"] = runs.fill_backlog()
            print(f"  {results['fill_backlog']['spool_many_per_s']:,.0f} jobs/s; filling "
                  f"{sizes['scheduled']:,} scheduled jobs ...", flush=True)
            results["fill_scheduled"] = runs.fill_scheduled()
            order = ["empty", "other_queue", "lower_priority", "scheduled"]
            kinds = {"empty": runs.empty, "other_queue": runs.other_queue,
                     "lower_priority": runs.lower_priority, "scheduled": runs.with_scheduled}
            rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
            for r in range(sizes["rounds"]):
                for name in order[r % 4:] + order[:r % 4]:
                    res = kinds[name]()
                    rounds[name].append(res)
                    print(f"  round {r + 1} {name:<15} {fmt_rate(res.get('rate')):>8} jobs/s "
                          f"(load {res['load1']:.1f}, {time.monotonic() - t_begin:.0f} s)",
                          flush=True)
            # one more empty round right before the deep drain, to bracket it
            rounds["empty"].append(runs.empty())
            results["rounds"] = rounds
            print(f"draining the {sizes['backlog']:,} backlog jobs ...", flush=True)
            results["deep_drain"] = runs.deep_drain(cap)
            rounds["empty"].append(runs.empty())
        finally:
            bench.stop_all()
            bench.drop_all()
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for log in workdir.glob("worker-*.log"):
                    shutil.copy(log, Path(args.logs) / log.name)
            if private is not None and procs is not None:
                private.stop()
                procs.stop_all()
    results["elapsed_s"] = time.monotonic() - t_begin
    summarize(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"flat-{args.backend}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2))
    print_report(results)
    print(f"\n  {results['elapsed_s']:.0f} s; written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); workers stopped", file=sys.stderr)
        sys.exit(130)
