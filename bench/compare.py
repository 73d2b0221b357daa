"""Spoolhouse against its peers: the same no-op workloads, one run, alternating, medians.

Usage (the project's interpreter drives; the peers run from their own virtualenv)::

    .venv/bin/python bench/compare.py            # full: 3 rounds, <= 20 minutes
    .venv/bin/python bench/compare.py --quick    # 1 round, small sizes, <= 3 minutes
    .venv/bin/python bench/compare.py --only spoolhouse-sqlite,huey-sqlite --rounds 1

The first run creates ``bench/.venv-peers`` (huey, rq, celery, dramatiq, redis,
matplotlib at pinned versions, and uWSGI if ``pip install uwsgi`` builds here; it is
skipped with the reason printed if not). Systems: Spoolhouse (SQLite with its
defaults, SQLite with ``synchronous=NORMAL`` for enqueue only, Redis), Huey (SQLite
and Redis, default settings), RQ (its forking worker, and SimpleWorker), Celery
(Redis broker, acks late), Dramatiq (Redis broker) and uWSGI's spooler. Three more
rows measure the machine's own limits for one enqueue per call, in the same run
(``bench/peers/limits_app.py``): a one-row SQLite commit loop at ``synchronous=FULL``
and at ``NORMAL``, and a redis-py ``LPUSH`` loop; their ratio is Spoolhouse's share
of the limit.

Workloads, on every system, in every round (the order of systems rotates per round):

* single: N one-call enqueues (``.spool(i)``, ``task(i)``, ``q.enqueue``, ``.delay``,
  ``.send``, ``uwsgi.spool``) into an empty store with no worker running: jobs/s.
* drain: N jobs enqueued, then 2 worker processes started (each system's own way);
  every task appends ``(i, start, end)`` to a file with one ``write``; the rate is
  jobs / (last end - first start), so start-up is not counted. A drain that runs past
  ``drain_cap`` seconds is stopped and measured on the jobs done by then.
* latency: one idle worker process; a job is enqueued, its task reports its start time
  over a Unix datagram socket; latency = start - time.time() taken just before the
  enqueue call (same clock), p50/p99 of the samples; the next job follows 5-105 ms
  after the previous one started.

Every store is fresh per run: a new SQLite file or spool directory, and a private
``redis-server`` on a free 127.0.0.1 port (no snapshots, no AOF) flushed between
runs and shut down at the end. Every process is started in its own session and
stopped by process group (with its descendants' groups) on exit, error or Ctrl-C.
Results: printed, ``bench/results/compare.json`` and ``bench/results/compare.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / "peers"
VENV = ROOT / "bench" / ".venv-peers"
RESULTS = ROOT / "bench" / "results"

sys.path.insert(0, str(PEERS_DIR))
import probe  # noqa: E402
from systems import BY_KEY, SYSTEMS, Ctx, System  # noqa: E402

PEER_PACKAGES = [
    "huey==3.5.4",
    "rq==3.0.0",
    "celery==5.7.0",
    "dramatiq==2.2.1",
    "redis==8.1.0",
    "matplotlib==3.11.2",
]
UWSGI_PACKAGE = "uwsgi==2.0.31"

MODES: dict[str, dict[str, Any]] = {
    # budget: no new run starts after this many seconds (the venv set-up not counted)
    "full": {"single": 5000, "drain": 20000, "latency": 200, "warmup": 5, "drain_cap": 20.0,
             "rounds": 3, "budget": 18 * 60},
    "quick": {"single": 1000, "drain": 4000, "latency": 40, "warmup": 3, "drain_cap": 6.0,
              "rounds": 1, "budget": 150},
}

#: Seconds a worker gets to run its first job (Celery takes a few to start).
FIRST_JOB_TIMEOUT = 90.0
#: Seconds a stopped process group gets before SIGKILL.
STOP_GRACE = 8.0
#: The same for workers whose run has been measured (their store is thrown away).
STOP_GRACE_MEASURED = 3.0


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


# -- processes ---------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pids: list[int]) -> set[int]:
    children = _children_map()
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Procs:
    """Every process this script starts: each in its own session, stopped by group."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], env: dict[str, str], log: Path,
              stdout: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, env=env, cwd=str(PEERS_DIR), stdin=subprocess.DEVNULL,
                stdout=out if stdout is None else stdout, stderr=out, start_new_session=True,
            )
        self.live.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
        """SIGTERM the process groups of ``procs`` and of all their descendants, then SIGKILL."""
        procs = [p for p in procs if p in self.live]
        if not procs:
            return
        pids = {p.pid for p in procs if p.poll() is None}
        pids |= descendants(list(pids))
        groups = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        groups &= pids | {p.pid for p in procs}  # only groups led by our own processes
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        # anything left (a leader that exited early may leave children behind)
        left = {pid for pid in pids if _alive(pid)}
        left |= descendants(list(left))
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in procs:
            proc.wait()
            self.live.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(self.live), grace=3.0)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the peers' virtualenv -----------------------------------------------------------
def ensure_venv(procs: Procs, log: Path) -> dict[str, str]:
    """Create/update bench/.venv-peers; return {package: reason} for what is missing."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV.relative_to(ROOT)} (first run) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    # git ignores the venv without a line in .gitignore (as virtualenv does)
    (VENV / ".gitignore").write_text("# created by bench/compare.py\n*\n")
    missing: dict[str, str] = {}
    marker = VENV / ".bench-installed"
    wanted = "\n".join(PEER_PACKAGES)
    if not marker.exists() or marker.read_text() != wanted:
        print(f"installing {', '.join(PEER_PACKAGES)} ...", flush=True)
        run = _pip(procs, log, PEER_PACKAGES)
        if run.returncode != 0:
            raise SystemExit(f"pip install of the peers failed; see {log}")
        marker.write_text(wanted)
    failed = VENV / ".uwsgi-failed"
    if not (VENV / "bin" / "uwsgi").exists():
        if failed.exists():
            missing["uwsgi"] = failed.read_text().strip()
        else:
            print(f"building {UWSGI_PACKAGE} (needs a C compiler and Python headers) ...",
                  flush=True)
            run = _pip(procs, log, [UWSGI_PACKAGE])
            if run.returncode != 0:
                tail = [ln for ln in run.stdout.splitlines() if ln.strip()][-3:]
                reason = "pip install uwsgi failed: " + " / ".join(tail)[-400:]
                failed.write_text(reason + "\n(delete this file to try again)\n")
                missing["uwsgi"] = reason
    return missing


def _pip(procs: Procs, log: Path, packages: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
           *packages]
    proc = procs.start(cmd, dict(os.environ), log, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        procs.stop([proc])
    text = out.decode(errors="replace")
    with open(log, "a") as f:
        f.write(text)
    return subprocess.CompletedProcess(cmd, proc.returncode, text, "")


# -- Redis ---------------------------------------------------------------------------
class PrivateRedis:
    """A redis-server of our own on a free loopback port: flushed between runs, killed at the end."""

    def __init__(self, procs: Procs, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.version = "?"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        for _ in range(5):
            self.port = free_port()
            cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
                   "--logfile", str(self.workdir / "redis.log")]
            self.proc = self.procs.start(cmd, dict(os.environ), self.workdir / "redis.out")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.version = self.client().info("server")["redis_version"]
                    return
                except Exception:
                    time.sleep(0.05)
            self.procs.stop([self.proc])
        raise SystemExit("could not start a private redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30)

    def reset(self) -> None:
        """Empty our own server (never the shared one: this port is the one we started)."""
        assert self.proc is not None and self.proc.poll() is None
        client = self.client()
        client.flushall()
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop([self.proc], grace=3.0)
            self.proc = None


# -- the workloads -------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Runner:
    def __init__(self, procs: Procs, redis: PrivateRedis, workdir: Path, sizes: dict[str, Any]) -> None:
        self.procs = procs
        self.redis = redis
        self.workdir = workdir
        self.sizes = sizes
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.serial = 0

    # one run's paths and environment
    def setup(self, system: System, workload: str) -> tuple[Ctx, dict[str, str], Path]:
        self.serial += 1
        name = f"{self.serial:03d}-{system.key}-{workload}"
        run_dir = self.workdir / name
        run_dir.mkdir()
        (run_dir / "spool").mkdir()
        if system.store == "redis":
            self.redis.reset()
        ctx = Ctx(
            main_python=sys.executable, venv=VENV, peers_dir=PEERS_DIR,
            redis_url=self.redis.url, spool_dir=run_dir / "spool", http_port=free_port(),
        )
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.update(
            PYTHONPATH=str(PEERS_DIR),
            PYTHONUNBUFFERED="1",
            BENCH_VARIANT=system.variant,
            BENCH_DB=str(run_dir / "bench.db"),
            BENCH_REDIS_URL=self.redis.url,
            BENCH_PROBE=str(run_dir / "probe.bin"),
            BENCH_UWSGI=f"127.0.0.1:{ctx.http_port}",
        )
        return ctx, env, run_dir

    def log(self, run_dir: Path) -> Path:
        return self.logs / f"{run_dir.name}.log"

    def python(self, system: System) -> str:
        return sys.executable if system.interpreter == "main" else str(VENV / "bin" / "python")

    def helper(self, system: System, env: dict[str, str], run_dir: Path, *args: Any,
               timeout: float = 300) -> dict[str, Any]:
        cmd = [self.python(system), str(PEERS_DIR / "helper.py"), system.app, *map(str, args)]
        proc = self.procs.start(cmd, env, self.log(run_dir), stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{system.key} {args[0]}: client timed out after {timeout}s") from None
        finally:
            self.procs.stop([proc])
        if proc.returncode != 0:
            raise RuntimeError(f"{system.key} {args[0]}: client exited {proc.returncode}; "
                               f"{tail(self.log(run_dir))}")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    def start_workers(self, system: System, ctx: Ctx, env: dict[str, str], run_dir: Path,
                      processes: int, burst: bool) -> list[subprocess.Popen[bytes]]:
        assert system.workers is not None
        return [self.procs.start(cmd, env, self.log(run_dir))
                for cmd in system.workers(ctx, processes, burst)]

    def through_producer(self, system: System, ctx: Ctx, env: dict[str, str], run_dir: Path,
                         *args: Any) -> dict[str, Any]:
        producer = None
        if system.producer is not None:
            producer = self.procs.start(system.producer(ctx), env, self.log(run_dir))
        try:
            return self.helper(system, env, run_dir, *args)
        finally:
            if producer is not None:
                self.procs.stop([producer])

    def single(self, system: System) -> float:
        ctx, env, run_dir = self.setup(system, "single")
        try:
            return float(self.through_producer(system, ctx, env, run_dir, "enqueue",
                                               self.sizes["single"])["rate"])
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def drain(self, system: System) -> dict[str, Any]:
        n = self.sizes["drain"]
        cap = self.sizes["drain_cap"]
        ctx, env, run_dir = self.setup(system, "drain")
        path = env["BENCH_PROBE"]
        try:
            fill = self.through_producer(system, ctx, env, run_dir, "fill", n)
            launched = time.time()
            workers = self.start_workers(system, ctx, env, run_dir, 2, burst=True)
            first: float | None = None
            capped = exited = False
            try:
                while True:
                    done = probe.count(path)
                    if done >= n:
                        break
                    if all(w.poll() is not None for w in workers):
                        exited = True  # burst workers are done (or a worker died)
                        break
                    if first is None and done:
                        first = min(r[1] for r in probe.read(path))
                    if first is None and time.time() - launched > FIRST_JOB_TIMEOUT:
                        raise RuntimeError(f"{system.key}: no job started within "
                                           f"{FIRST_JOB_TIMEOUT:.0f}s; {tail(self.log(run_dir))}")
                    if first is not None and time.time() - first > cap:
                        capped = True
                        break
                    time.sleep(0.02)
                records = probe.read(path)  # what ran up to now (a shutdown may add a few)
                seen = time.time()
            finally:
                self.procs.stop(workers, grace=STOP_GRACE_MEASURED)
            stop_s = time.time() - seen
            if not records:
                raise RuntimeError(f"{system.key}: workers exited without running a job; "
                                   f"{tail(self.log(run_dir))}")
            start = min(r[1] for r in records)
            end = max(r[2] for r in records)
            unique = len({r[0] for r in records})
            result = {
                "jobs": len(records), "unique": unique, "of": n, "capped": capped,
                "rate": len(records) / (end - start),
                "wall_with_startup_s": seen - launched, "fill_s": fill["seconds"], "stop_s": stop_s,
            }
            if exited and unique < n:
                result["incomplete"] = f"workers exited after {unique} of {n} jobs"
                print(f"    ! {system.key}: {result['incomplete']}", flush=True)
            return result
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def latency(self, system: System) -> dict[str, Any]:
        ctx, env, run_dir = self.setup(system, "latency")
        env["BENCH_NOTIFY"] = str(run_dir / "notify.sock")
        try:
            workers = self.start_workers(system, ctx, env, run_dir, 1, burst=False)
            try:
                res = self.helper(system, env, run_dir, "latency", self.sizes["latency"],
                                  self.sizes["warmup"], timeout=600)
            finally:
                self.procs.stop(workers, grace=STOP_GRACE_MEASURED)
            values = res["ms"]
            if not values:
                raise RuntimeError(f"{system.key}: no latency sample; {tail(self.log(run_dir))}")
            return {
                "p50_ms": statistics.median(values), "p99_ms": percentile(values, 99),
                "max_ms": max(values), "samples": len(values), "lost": res["lost"],
            }
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "log tail:\n      " + "\n      ".join(text[-lines:])


# -- machine and versions --------------------------------------------------------------
def machine(redis_version: str, workdir: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": "?",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": sqlite3.sqlite_version,
        "redis_server": redis_version,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["tmp_filesystem"] = subprocess.run(
            ["stat", "-f", "-c", "%T", str(workdir)], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return info


def versions(missing: dict[str, str]) -> dict[str, str]:
    names = [p.split("==")[0] for p in PEER_PACKAGES if "matplotlib" not in p]
    if "uwsgi" not in missing:
        names.append("uwsgi")
    code = ("import importlib.metadata as m, json, sys; "
            f"print(json.dumps({{n: m.version(n) for n in {names!r}}}))")
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", code], capture_output=True,
                         text=True, timeout=60)
    found: dict[str, str] = json.loads(out.stdout) if out.returncode == 0 else {}
    from importlib.metadata import version

    found["spoolhouse"] = version("spoolhouse")
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        found["spoolhouse"] += f" ({commit}{', src/ modified' if dirty else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return found


# -- summary ---------------------------------------------------------------------------
METRICS = [  # key in "median", header, workload, higher is better
    ("single_per_s", "enqueue/s", "single", True),
    ("drain_per_s", "drain/s", "drain", True),
    ("latency_p50_ms", "p50 ms", "latency", False),
    ("latency_p99_ms", "p99 ms", "latency", False),
]


def summarize(results: dict[str, Any]) -> None:
    for data in results["systems"].values():
        runs = data["runs"]
        med: dict[str, float] = {}
        if runs["single"]:
            med["single_per_s"] = statistics.median(runs["single"])
        if runs["drain"]:
            med["drain_per_s"] = statistics.median(r["rate"] for r in runs["drain"])
        if runs["latency"]:
            med["latency_p50_ms"] = statistics.median(r["p50_ms"] for r in runs["latency"])
            med["latency_p99_ms"] = statistics.median(r["p99_ms"] for r in runs["latency"])
        data["median"] = med
    for key, data in results["systems"].items():
        base = results["systems"].get(data["baseline"])
        ratios: dict[str, float] = {}
        if base is not None and not key.startswith("spoolhouse"):
            for metric, *_ in METRICS:
                if metric in data["median"] and metric in base["median"]:
                    ratios[metric] = base["median"][metric] / data["median"][metric]
        data["ratio_spoolhouse_over_peer"] = ratios


def fmt(value: float | None, ms: bool = False) -> str:
    if value is None:
        return "-"
    if ms:
        return f"{value:.2f}" if value < 10 else f"{value:,.0f}"
    return f"{value:,.0f}"


def ratio_text(r: float) -> str:
    if r >= 10:
        return f"{r:.0f}x"
    if r >= 1:
        return f"{r:.1f}x"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def markdown(results: dict[str, Any]) -> str:
    """The table of medians as Markdown (for docs/benchmarks.md)."""
    lines = ["| system | enqueue, jobs/s | drain, 2 processes, jobs/s | idle latency p50, ms "
             "| p99, ms | compared with |", "|---|---:|---:|---:|---:|---|"]
    for data in results["systems"].values():
        med = data["median"]
        ratio = data["ratio_spoolhouse_over_peer"]
        cells = []
        for metric, _, _, _ in METRICS:
            text = fmt(med.get(metric), metric.endswith("_ms"))
            if metric in ratio:
                text += f" ({ratio_text(ratio[metric])})"
            cells.append(text)
        name = data["label"]
        if name.startswith("Spoolhouse"):
            name = f"**{name}**"
        vs = results["systems"][data["baseline"]]["label"] if ratio else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {vs} |")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    head = (f"{'system':<40} {'enqueue/s':>17} {'drain/s (2 proc)':>17} "
            f"{'latency p50 ms':>16} {'p99 ms':>16}   vs")
    lines = [head, "-" * len(head)]
    for data in results["systems"].values():
        med = data["median"]
        ratio = data["ratio_spoolhouse_over_peer"]
        cells = []
        for metric, _, _, _ in METRICS:
            ms = metric.endswith("_ms")
            text = fmt(med.get(metric), ms)
            if metric in ratio:
                text += f" ({ratio_text(ratio[metric])})"
            cells.append(text)
        vs = results["systems"][data["baseline"]]["label"] if ratio else ""
        lines.append(f"{data['label']:<40} {cells[0]:>17} {cells[1]:>17} {cells[2]:>16} "
                     f"{cells[3]:>16}   {vs}")
    lines.append("(x) = Spoolhouse / peer, against the Spoolhouse of the same kind of store: "
                 "above 1 Spoolhouse is faster for enqueue and drain, below 1 it is faster "
                 "(lower) for latency.")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, small sizes (<= 3 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3, quick: 1)")
    parser.add_argument("--only", help="comma-separated system keys: "
                        + ", ".join(s.key for s in SYSTEMS))
    parser.add_argument("--report", metavar="JSON", help="print the tables of an earlier "
                        "run's JSON (text and Markdown) and redraw its chart; measure nothing")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/"
                        "compare.json; compare-quick.json with --quick, compare-partial.json "
                        "with --only)")
    args = parser.parse_args()
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        print(table(earlier))
        print()
        print(markdown(earlier))
        draw(Path(args.report))
        return 0
    mode = "quick" if args.quick else "full"
    sizes = dict(MODES[mode])
    if args.rounds:
        sizes["rounds"] = args.rounds
    chosen = SYSTEMS
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            parser.error(f"unknown system(s) {unknown}")
        chosen = [BY_KEY[k] for k in keys]
    # a run of some systems only never replaces the committed full run's results
    default_name = ("compare-quick.json" if mode == "quick"
                    else "compare-partial.json" if args.only else "compare.json")
    out_json = Path(args.output) if args.output else RESULTS / default_name

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)
    began = time.monotonic()
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="spoolhouse-compare-"))
    redis = PrivateRedis(procs, workdir)
    results: dict[str, Any] = {}
    try:
        missing = ensure_venv(procs, workdir / "pip.log")
        setup_s = time.monotonic() - began
        for key, reason in missing.items():
            print(f"skipping {key}: {reason}", flush=True)
        systems = [s for s in chosen if not set(s.needs) & set(missing)]
        skipped = {s.key: missing[next(iter(set(s.needs) & set(missing)))]
                   for s in chosen if set(s.needs) & set(missing)}
        redis.start()
        runner = Runner(procs, redis, workdir, sizes)
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "mode": mode,
            "sizes": sizes,
            "machine": machine(redis.version, workdir),
            "versions": versions(missing),
            "skipped": skipped,
            "errors": [],
            "load": [],  # 1-minute load average before each run: other work on the machine
            "systems": {
                s.key: {"label": s.label, "store": s.store, "baseline": s.baseline,
                        "interpreter": s.interpreter, "acks": s.acks, "note": s.note,
                        "runs": {"single": [], "drain": [], "latency": []}}
                for s in systems
            },
        }
        m = results["machine"]
        print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}, "
              f"Redis {m['redis_server']} (private, port {redis.port}); mode {mode}: "
              f"{sizes['rounds']} round(s), single {sizes['single']:,}, drain {sizes['drain']:,} "
              f"(cap {sizes['drain_cap']:.0f}s), latency {sizes['latency']} samples", flush=True)
        measured = time.monotonic()
        stopped = False
        for rnd in range(sizes["rounds"]):
            order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
            print(f"round {rnd + 1}/{sizes['rounds']}", flush=True)
            for system in order:
                for workload in system.workloads:
                    if time.monotonic() - measured > sizes["budget"]:
                        print(f"  time budget ({sizes['budget']}s) spent: stopping here", flush=True)
                        results["errors"].append(f"time budget spent in round {rnd + 1}")
                        stopped = True
                        break
                    t0 = time.monotonic()
                    load = os.getloadavg()[0]
                    try:
                        value = getattr(runner, workload)(system)
                    except RuntimeError as exc:
                        print(f"  {system.key:<26} {workload:<8} FAILED: {exc}", flush=True)
                        results["errors"].append(f"round {rnd + 1} {system.key} {workload}: {exc}")
                        continue
                    results["systems"][system.key]["runs"][workload].append(value)
                    results["load"].append([rnd + 1, system.key, workload, round(load, 2)])
                    print(f"  {system.key:<26} {workload:<8} {describe(workload, value):<44} "
                          f"({time.monotonic() - t0:.1f}s, load {load:.1f})", flush=True)
                if stopped:
                    break
            if stopped:
                break
        summarize(results)
        results["seconds"] = {"setup": round(setup_s, 1),
                              "measuring": round(time.monotonic() - measured, 1)}
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping every process started", flush=True)
        return 130
    finally:
        procs.stop_all()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)

    print()
    print(table(results))
    results["seconds"]["total"] = round(time.monotonic() - began, 1)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    png = draw(out_json)
    print(f"\nwritten {out_json.relative_to(ROOT) if out_json.is_relative_to(ROOT) else out_json}"
          f" and {png.name}; {results['seconds']['total']:.0f}s in all "
          f"(set-up {results['seconds']['setup']:.0f}s)")
    return 0


def draw(json_path: Path) -> Path:
    """The PNG chart beside the JSON, drawn with the peers' matplotlib."""
    png = json_path.with_suffix(".png")
    chart = subprocess.run([str(VENV / "bin" / "python"), str(PEERS_DIR / "chart.py"),
                            str(json_path), str(png)], capture_output=True, text=True, timeout=120)
    if chart.returncode != 0:
        print(f"chart failed: {chart.stderr[-500:]}")
    return png


def describe(workload: str, value: Any) -> str:
    if workload == "single":
        return f"{value:,.0f} jobs/s"
    if workload == "drain":
        note = " (capped)" if value["capped"] else ""
        return f"{value['rate']:,.0f} jobs/s, {value['jobs']:,} jobs{note}"
    return f"p50 {value['p50_ms']:.2f} ms, p99 {value['p99_ms']:.2f} ms"


if __name__ == "__main__":
    sys.exit(main())
