"""Spoolhouse benchmarks: enqueue rates, drain rate with worker processes, idle latency.

Usage::

    .venv/bin/python bench/run.py                    # SQLite (FULL), default sizes
    .venv/bin/python bench/run.py --backend redis    # needs SPOOLHOUSE_BENCH_REDIS_URL or local Redis
    .venv/bin/python bench/run.py --quick            # small sizes, a smoke run

Workloads (no-op jobs):

* single: ``task.spool()`` one call per job, each a committed transaction.
* bulk: ``task.spool_many()`` in batches of 1,000.
* drain: N pending jobs, ``spoolhouse worker --processes 2 --burst``; the rate is
  jobs / (last finish - first start), read from the store's own timestamps,
  so process start-up is not counted.
* latency: one idle worker process; one job spooled at a time, waiting for it
  to finish; latency = the moment the task's function began (``time.time()``,
  which it returns) - the moment just before ``spool()`` was called, p50/p99.
  The enqueue's own commit, the wake-up, the claim and the hand-off to the
  task all count, as in ``bench/compare.py``.

Everything runs on loopback or a temp directory, and the worker processes the
script starts are stopped by PID. Results are printed and written to
``bench/results/<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

APP = textwrap.dedent(
    """
    import os
    import time
    from spoolhouse import Spooler

    options = {}
    if os.environ["BENCH_URL"].startswith("redis"):
        options["prefix"] = os.environ["BENCH_PREFIX"]
    spooler = Spooler(os.environ["BENCH_URL"], **options)

    @spooler.task(name="noop", retries=0)
    def noop(i: int) -> None:
        return None

    @spooler.task(name="stamp", retries=0)
    def stamp(i: int) -> float:
        return time.time()  # when the task began
    """
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        if backend == "sqlite":
            self.url_base = f"sqlite:///{workdir}"
        else:
            self.url_base = os.environ.get("SPOOLHOUSE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        (workdir / "benchapp.py").write_text(APP)
        sys.path.insert(0, str(workdir))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runs = 0

    def fresh(self, name: str) -> str:
        """A store name used once: each round starts from an empty store."""
        self.runs += 1
        return f"{name}-{self.runs}"

    def url(self, name: str, synchronous: str = "FULL") -> str:
        if self.backend == "sqlite":
            return f"{self.url_base}/{name}.db?synchronous={synchronous}"
        return self.url_base

    def spooler(self, url: str) -> Any:
        os.environ["BENCH_URL"] = url
        os.environ["BENCH_PREFIX"] = self.prefix
        import importlib

        import benchapp  # type: ignore[import-not-found]

        module = importlib.reload(benchapp)
        return module.spooler, module.noop

    def stamp_task(self) -> Any:
        import benchapp  # type: ignore[import-not-found]

        return benchapp.stamp

    def cleanup_store(self, spooler: Any) -> None:
        destroy = getattr(spooler.backend, "destroy", None)
        if callable(destroy):
            destroy()
        spooler.close()

    def start_worker(self, url: str, processes: int, burst: bool) -> subprocess.Popen[bytes]:
        env = dict(os.environ, BENCH_URL=url, BENCH_PREFIX=self.prefix,
                   PYTHONPATH=f"{self.workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        cmd = [sys.executable, "-m", "spoolhouse", "--app", "benchapp:spooler", "worker",
               "--processes", str(processes), "--log-level", "warning"]
        if burst:
            cmd.append("--burst")
        proc = subprocess.Popen(cmd, env=env, cwd=self.workdir, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        self.procs.clear()

    # -- workloads ------------------------------------------------------------------
    def single(self, n: int, synchronous: str = "FULL") -> float:
        spooler, noop = self.spooler(self.url(self.fresh(f"single-{synchronous}"), synchronous))
        noop.spool(-1)  # open the store and create the schema outside the timing
        t0 = time.perf_counter()
        for i in range(n):
            noop.spool(i)
        elapsed = time.perf_counter() - t0
        self.cleanup_store(spooler)
        return n / elapsed

    def bulk(self, n: int, batch: int = 1000) -> float:
        spooler, noop = self.spooler(self.url(self.fresh("bulk")))
        noop.spool(-1)
        calls = [(i,) for i in range(batch)]
        t0 = time.perf_counter()
        for _ in range(n // batch):
            noop.spool_many(calls)
        elapsed = time.perf_counter() - t0
        self.cleanup_store(spooler)
        return (n // batch) * batch / elapsed

    def drain(self, n: int, processes: int = 2) -> dict[str, float]:
        # a new store each round: one holding an earlier round's jobs would count them
        url = self.url(self.fresh("drain"))
        spooler, noop = self.spooler(url)
        calls = [(i,) for i in range(1000)]
        for _ in range(n // 1000):
            noop.spool_many(calls)
        t0 = time.perf_counter()
        proc = self.start_worker(url, processes, burst=True)
        proc.wait(timeout=600)
        wall = time.perf_counter() - t0
        jobs = []
        cursor = None
        while True:
            page = spooler.backend.list_jobs(state="succeeded", limit=1000, cursor=cursor)
            if not page:
                break
            jobs.extend(page)
            cursor = page[-1].id
        done = len(jobs)
        first = min(j.started_at for j in jobs)
        last = max(j.finished_at for j in jobs)
        self.cleanup_store(spooler)
        return {"jobs": done, "rate": done / (last - first), "wall_with_startup_s": wall}

    def latency(self, samples: int) -> dict[str, float]:
        url = self.url(self.fresh("latency"))
        spooler, _ = self.spooler(url)
        stamp = self.stamp_task()
        self.start_worker(url, 1, burst=False)
        warm = stamp.spool(-1)
        warm.result(timeout=60)
        values = []
        for i in range(samples):
            before = time.time()
            began = stamp.spool(i).result(timeout=30)
            values.append((began - before) * 1000)
            time.sleep(0.002)  # pacing: let the worker go idle again (not a synchronisation)
        self.stop_all()
        self.cleanup_store(spooler)
        return {
            "p50_ms": statistics.median(values),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
            "samples": samples,
        }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per workload; medians reported")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    sizes = {
        "single": int(5000 * scale),
        "bulk": max(1000, int(100_000 * scale)),
        "drain": max(1000, int(20_000 * scale)),
        "latency": max(20, int(300 * scale)),
    }
    rounds = 1 if args.quick else args.rounds
    results: dict[str, Any] = {"backend": args.backend, "sizes": sizes, "machine": machine(),
                               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="spoolhouse-bench-") as tmp:
        bench = Bench(args.backend, Path(tmp))
        try:
            runs: dict[str, list[Any]] = {k: [] for k in ("single", "single_normal", "bulk", "drain", "latency")}
            for _ in range(rounds):
                runs["single"].append(bench.single(sizes["single"]))
                if args.backend == "sqlite":
                    runs["single_normal"].append(bench.single(sizes["single"], "NORMAL"))
                runs["bulk"].append(bench.bulk(sizes["bulk"]))
                runs["drain"].append(bench.drain(sizes["drain"]))
                runs["latency"].append(bench.latency(sizes["latency"]))
        finally:
            bench.stop_all()
    results["single_enqueue_per_s"] = statistics.median(runs["single"])
    if runs["single_normal"]:
        results["single_enqueue_normal_per_s"] = statistics.median(runs["single_normal"])
    results["bulk_enqueue_per_s"] = statistics.median(runs["bulk"])
    results["drain_2proc_per_s"] = statistics.median(r["rate"] for r in runs["drain"])
    results["latency_p50_ms"] = statistics.median(r["p50_ms"] for r in runs["latency"])
    results["latency_p99_ms"] = statistics.median(r["p99_ms"] for r in runs["latency"])
    results["runs"] = runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.backend}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"backend: {args.backend}   machine: {results['machine'].get('cpu', '?')}, "
          f"{results['machine']['cpus']} cpus, Python {results['machine']['python']}")
    print(f"  single enqueue ({'FULL' if args.backend == 'sqlite' else 'one call each'}): "
          f"{results['single_enqueue_per_s']:>10,.0f} jobs/s")
    if "single_enqueue_normal_per_s" in results:
        print(f"  single enqueue (NORMAL):     {results['single_enqueue_normal_per_s']:>10,.0f} jobs/s")
    print(f"  bulk enqueue (1,000/batch):  {results['bulk_enqueue_per_s']:>10,.0f} jobs/s")
    print(f"  drain, 2 processes:          {results['drain_2proc_per_s']:>10,.0f} jobs/s")
    print(f"  idle latency p50 / p99:      {results['latency_p50_ms']:.2f} / {results['latency_p99_ms']:.2f} ms")
    print(f"  written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
