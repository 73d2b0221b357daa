"""The systems ``bench/compare.py`` measures: how each one's workers are started.

Standard library only (the driver imports it in the project's interpreter). Each
system names the module its client side imports (``helper.py APP ...``), the
interpreter it runs in, and how to start its workers for a drain (``processes=2``)
or a latency run (``processes=1``). Logging is cut to warnings everywhere, so no
system pays for a log line per job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Ctx:
    """What a command line needs: interpreters, paths, ports of this run."""

    main_python: str
    venv: Path  # the peers' virtualenv
    peers_dir: Path
    redis_url: str
    spool_dir: Path  # uWSGI's spooler directory for this run
    http_port: int  # uWSGI's HTTP socket for this run

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


Commands = list[list[str]]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    app: str  # module imported by helper.py (the client side)
    variant: str  # BENCH_VARIANT
    interpreter: str  # "main" (the project's venv) or "peers"
    store: str  # "sqlite", "redis" or "files"
    baseline: str  # the Spoolhouse system it is compared with
    workers: Callable[[Ctx, int, bool], Commands] | None  # (ctx, processes, burst)
    producer: Callable[[Ctx], list[str]] | None = None  # a server the client enqueues through
    workloads: tuple[str, ...] = ("single", "drain", "latency")
    needs: tuple[str, ...] = field(default_factory=tuple)  # packages in the peers venv
    acks: str = ""  # what it acknowledges when (for the docs)
    note: str = ""  # why some workloads are not run


def spoolhouse_workers(ctx: Ctx, processes: int, burst: bool) -> Commands:
    cmd = [ctx.main_python, "-m", "spoolhouse", "--app", "spoolhouse_app:spooler", "worker",
           "--processes", str(processes), "--log-level", "warning"]
    return [cmd + (["--burst"] if burst else [])]


def huey_workers(ctx: Ctx, processes: int, burst: bool) -> Commands:
    return [[ctx.bin("huey_consumer"), "huey_app.huey", "-k", "process", "-w", str(processes), "-q"]]


def rq_workers(worker_class: str | None) -> Callable[[Ctx, int, bool], Commands]:
    def commands(ctx: Ctx, processes: int, burst: bool) -> Commands:
        cmd = [ctx.bin("rq"), "worker", "-u", ctx.redis_url, "--logging_level", "WARNING"]
        if burst:
            cmd.append("--burst")
        if worker_class:
            cmd += ["-w", worker_class]
        return [[*cmd, "bench"] for _ in range(processes)]

    return commands


def celery_workers(ctx: Ctx, processes: int, burst: bool) -> Commands:
    return [[ctx.bin("celery"), "-A", "celery_app", "worker", "-c", str(processes),
             "--pool", "prefork", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"]]


def dramatiq_workers(ctx: Ctx, processes: int, burst: bool) -> Commands:
    return [[ctx.bin("dramatiq"), "dramatiq_app", "--processes", str(processes), "--threads", "1"]]


def _uwsgi(ctx: Ctx) -> list[str]:
    return [ctx.bin("uwsgi"), "--master", "--http-socket", f"127.0.0.1:{ctx.http_port}",
            "--processes", "1", "--module", "uwsgi_app", "--import", "uwsgi_app",
            "--pythonpath", str(ctx.peers_dir), "--virtualenv", str(ctx.venv),
            "--disable-logging", "--spooler-quiet", "--die-on-term", "--need-app"]


def uwsgi_workers(ctx: Ctx, processes: int, burst: bool) -> Commands:
    return [[*_uwsgi(ctx), "--spooler", str(ctx.spool_dir), "--spooler-processes", str(processes)]]


def uwsgi_producer(ctx: Ctx) -> list[str]:
    # Writes into the spool directory without running a spooler on it.
    return [*_uwsgi(ctx), "--spooler-external", str(ctx.spool_dir)]


SYSTEMS: list[System] = [
    System("spoolhouse-sqlite", "Spoolhouse SQLite", "spoolhouse_app", "sqlite", "main", "sqlite",
           "spoolhouse-sqlite", spoolhouse_workers,
           acks="enqueue: committed (WAL, synchronous=FULL: fsynced) before spool() returns; "
                "run: leased, success recorded after the task returns (batched within 5 ms; "
                "claims and acks committed without fsync, worker_synchronous=NORMAL); "
                "a dead worker's job is rescued when its lease expires"),
    System("spoolhouse-sqlite-normal", "Spoolhouse SQLite (synchronous=NORMAL)", "spoolhouse_app",
           "sqlite-normal", "main", "sqlite", "spoolhouse-sqlite", None, workloads=("single",),
           note="enqueue only",
           acks="enqueue: committed to the WAL, fsynced at the next checkpoint (survives a "
                "process crash, not a power loss)"),
    System("spoolhouse-redis", "Spoolhouse Redis", "spoolhouse_app", "redis", "main", "redis",
           "spoolhouse-redis", spoolhouse_workers,
           acks="enqueue: in Redis when spool() returns; run: leased, acked after the task "
                "returns (batched), rescued after the lease expires"),
    System("huey-sqlite", "Huey SQLite", "huey_app", "sqlite", "peers", "sqlite",
           "spoolhouse-sqlite", huey_workers, needs=("huey",),
           acks="enqueue: committed (WAL; fsync=None leaves SQLite's default synchronous, FULL "
                "here); run: the row is deleted when dequeued, before the task runs "
                "(at-most-once: a worker killed mid-task loses the job)"),
    System("huey-redis", "Huey Redis", "huey_app", "redis", "peers", "redis",
           "spoolhouse-redis", huey_workers, needs=("huey",),
           acks="enqueue: LPUSH; run: BRPOP removes the message before the task runs "
                "(at-most-once)"),
    System("rq", "RQ (fork per job)", "rq_app", "redis", "peers", "redis", "spoolhouse-redis",
           rq_workers(None), needs=("rq",),
           acks="enqueue: job hash + queue push in a pipeline; run: job moved to the "
                "StartedJobRegistry; a job whose worker died is requeued by the registry "
                "cleanup only if it has retries left (here Retry(max=3)), else failed "
                "(AbandonedJobError)"),
    System("rq-simple", "RQ SimpleWorker", "rq_app", "redis", "peers", "redis", "spoolhouse-redis",
           rq_workers("rq.worker.SimpleWorker"), workloads=("drain", "latency"), needs=("rq",),
           note="enqueue: the same call as RQ's",
           acks="as RQ, without the fork per job (enqueue is the same call as RQ's)"),
    System("celery", "Celery (Redis broker)", "celery_app", "redis", "peers", "redis",
           "spoolhouse-redis", celery_workers, needs=("celery",),
           acks="enqueue: LPUSH; run: task_acks_late=True (ack after the task returns) and "
                "task_reject_on_worker_lost=True; unacked messages come back after the "
                "visibility timeout (1 h by default)"),
    System("dramatiq", "Dramatiq (Redis broker)", "dramatiq_app", "redis", "peers", "redis",
           "spoolhouse-redis", dramatiq_workers, needs=("dramatiq",),
           acks="enqueue: Lua script (hash + list); run: acked after the actor returns "
                "(its default); a dead worker's unacked messages are requeued by the "
                "others' heartbeat maintenance"),
    System("uwsgi", "uWSGI spooler", "uwsgi_client", "files", "peers", "files",
           "spoolhouse-sqlite", uwsgi_workers, producer=uwsgi_producer, needs=("uwsgi",),
           acks="enqueue: one spool file written and closed (no fsync); run: the file is "
                "deleted after the function returns SPOOL_OK, so a spooler killed mid-task "
                "re-runs it (at-least-once)"),
    # The machine's limits, in the same run: the ratio is Spoolhouse's share of each.
    System("limit-sqlite-full", "limit: SQLite one-row commit, FULL", "limits_app", "sqlite-full",
           "main", "sqlite", "spoolhouse-sqlite", None, workloads=("single",),
           note="not a job system: INSERT + COMMIT of one row per call (WAL, "
                "synchronous=FULL, one fsync each), the ceiling of a durable single enqueue",
           acks="committed and fsynced"),
    System("limit-sqlite-normal", "limit: SQLite one-row commit, NORMAL", "limits_app",
           "sqlite-normal", "main", "sqlite", "spoolhouse-sqlite-normal", None,
           workloads=("single",),
           note="not a job system: the same with synchronous=NORMAL (no fsync per commit)",
           acks="committed to the WAL"),
    System("limit-redis", "limit: Redis round trip (LPUSH)", "limits_app", "redis", "main",
           "redis", "spoolhouse-redis", None, workloads=("single",),
           note="not a job system: one LPUSH per call through redis-py and hiredis, the "
                "ceiling of any single-call enqueue on Redis",
           acks="in Redis"),
]

BY_KEY = {s.key: s for s in SYSTEMS}
