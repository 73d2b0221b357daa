"""Embedded workers: ``SPOOLHOUSE_EMBEDDED_WORKERS = N`` runs N worker processes beside the web server.

Off by default: workers never start inside a web process unless asked. When
asked, the rules that keep it safe are:

* **One set per store.** Each web process that wants to run them first takes
  an exclusive ``fcntl.flock`` on a lock file next to the SQLite database
  (``<db>.embedded.lock``; for other stores, a file in the instance folder, so
  one set per host). The others stand by and try again every second, so when
  the process holding the lock exits (a gunicorn worker recycled), another
  takes over. Jobs stay in the store meanwhile: none is lost, and those whose
  worker died are rescued when their lease expires.
* **Only processes that serve.** Under ``flask run`` the workers start when
  the app loads, except in the reloader's watcher process (with the debug
  reloader only its child, ``WERKZEUG_RUN_MAIN=true``, serves). Under any other
  server they start on the first request a process handles, or when
  :func:`spoolhouse.flask.start_embedded_workers` is called (e.g. from
  gunicorn's ``post_worker_init``). Never in other ``flask`` commands, and never
  in the worker processes themselves, which load the same app.
* **They stop with the web process.** The supervisor runs in a spawned
  process of its own session (so a terminal's Ctrl-C reaches only the web
  server, which then asks for a warm stop at exit); if the web process dies
  without exiting cleanly, the supervisor notices and stops too.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click
from flask import Flask
from flask.cli import ScriptInfo
from flask.helpers import get_debug_flag

from ..errors import ConfigurationError
from ..worker.supervisor import WorkerConfig

if TYPE_CHECKING:
    from . import SpoolhouseState

__all__ = ["EmbeddedWorkers", "setup_embedded", "in_worker_process", "lock_path_for"]

log = logging.getLogger("spoolhouse.flask")

#: Set in the embedded supervisor's environment, so it and its workers never embed again.
EMBEDDED_ENV = "SPOOLHOUSE_EMBEDDED_CHILD"
#: Seconds between a standing-by process's tries to take the lock.
LOCK_POLL = 1.0
#: Extra seconds past the shutdown timeout before the supervisor is killed.
STOP_GRACE = 10.0
#: A supervisor that exits sooner than this after starting is restarted with a backoff.
FAST_DEATH = 5.0


def in_worker_process() -> bool:
    """``True`` in the embedded supervisor, in any worker process, and in their children."""
    if os.environ.get(EMBEDDED_ENV):
        return True
    return multiprocessing.current_process().name.startswith("spoolhouse-")


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return path or None


def lock_path_for(url: str, instance_path: str) -> str:
    """The lock file that elects the one process running embedded workers for ``url``."""
    path = sqlite_path(url)
    if path is not None and path != ":memory:":
        return path + ".embedded.lock"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(instance_path, f"spoolhouse-{digest}.embedded.lock")


class EmbeddedWorkers:
    """A supervisor of ``processes`` workers, run by whichever web process holds the lock.

    :param config: what each worker process needs (``app_ref`` above all).
    :param lock_path: the lock file shared by every web process of one store.
    """

    def __init__(self, config: WorkerConfig, processes: int, lock_path: str) -> None:
        self.config = config
        self.processes = processes
        self.lock_path = lock_path
        self.holding = False  # this process holds the lock and runs the supervisor
        self._pid = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: Any = None  # multiprocessing Process (spawn context)

    def __repr__(self) -> str:
        return f"<EmbeddedWorkers {self.processes} x {self.config.app_ref} lock={self.lock_path}>"

    @property
    def supervisor_pid(self) -> int | None:
        """The pid of the supervisor process this process started, if it runs."""
        proc = self._proc
        if proc is None or self._pid != os.getpid() or not proc.is_alive():
            return None
        return int(proc.pid)

    def start(self) -> bool:
        """Start standing by for the lock, once per process; ``False`` in a worker process."""
        if in_worker_process():
            return False
        if self._pid == os.getpid() and self._thread is not None:
            return True
        if self._pid != os.getpid():
            # a forked copy (gunicorn's pre-fork workers): the parent's thread,
            # lock and process belong to the parent
            self._lock = threading.Lock()
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None:
                return True
            self._pid = os.getpid()
            self._stop = threading.Event()
            self._proc = None
            self.holding = False
            self._thread = threading.Thread(
                target=self._run, name="spoolhouse-embedded", daemon=True
            )
            self._thread.start()
        atexit.register(self.stop)
        return True

    def stop(self) -> None:
        """Stop the supervisor (a warm stop: running jobs get the shutdown timeout)."""
        if self._pid != os.getpid() or self._thread is None:
            return
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(self.config.shutdown_timeout + STOP_GRACE)
            if proc.is_alive():
                log.warning("embedded workers: supervisor pid %s did not stop; killing it",
                            proc.pid)
                proc.kill()
                proc.join(5.0)
        thread = self._thread
        if thread is not threading.current_thread():
            thread.join(LOCK_POLL + 5.0)

    # -- the standby thread ---------------------------------------------------------
    def _run(self) -> None:
        try:
            directory = os.path.dirname(self.lock_path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.error("embedded workers: cannot open the lock file %s (%s); not starting them",
                      self.lock_path, exc)
            return
        announced = False
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                        raise
                    if not announced:
                        log.info("embedded workers: another process holds %s and runs them; "
                                 "pid %d stands by", self.lock_path, os.getpid())
                        announced = True
                    self._stop.wait(LOCK_POLL)
                    continue
                self.holding = True
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    self._supervise()
                finally:
                    self.holding = False
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except Exception:
            log.exception("embedded workers: the standby thread failed; no embedded workers "
                          "in pid %d", os.getpid())
        finally:
            os.close(fd)

    def _supervise(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        fast_deaths = 0
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                proc = ctx.Process(
                    target=embedded_main, args=(self.config, self.processes),
                    name="spoolhouse-embedded", daemon=False,
                )
                proc.start()
                self._proc = proc
            log.info("embedded workers: supervisor pid %s started by web process pid %d",
                     proc.pid, os.getpid())
            started = time.monotonic()
            while proc.is_alive() and not self._stop.is_set():
                proc.join(LOCK_POLL)
            if self._stop.is_set():
                return  # stop() asks it to finish and reaps it
            proc.join()
            fast_deaths = fast_deaths + 1 if time.monotonic() - started < FAST_DEATH else 0
            pause = min(0.5 * 2**fast_deaths, 30.0)
            log.warning("embedded workers: supervisor pid %s exited with code %s; starting "
                        "it again in %.1fs", proc.pid, proc.exitcode, pause)
            self._stop.wait(pause)


def embedded_main(config: WorkerConfig, processes: int) -> None:
    """Entry point of the spawned supervisor process."""
    from ..cli.logs import configure_logging
    from ..worker.supervisor import Supervisor

    os.environ[EMBEDDED_ENV] = "1"  # inherited by the workers it spawns
    with contextlib.suppress(OSError):
        os.setsid()  # a terminal's Ctrl-C goes to the web server only; it stops us at exit
    configure_logging(config.log_level or logging.INFO, config.log_format)
    _stop_with_parent()
    supervisor = Supervisor(config, processes=processes)
    logging.getLogger("spoolhouse").info(
        "spoolhouse embedded workers: %d process(es) x %d thread(s), store %s",
        processes, config.threads, supervisor.spooler.backend.url,
    )
    sys.exit(supervisor.run())


def _stop_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        logging.getLogger("spoolhouse").warning(
            "embedded workers: web process %s is gone; stopping", parent.pid
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="spoolhouse-parent-watch", daemon=True).start()


# -- wiring from init_app -------------------------------------------------------------
def setup_embedded(app: Flask, state: SpoolhouseState, processes: int) -> None:
    """Prepare ``app``'s embedded workers and start them when this process serves."""
    from .cli import queue_list, worker_app_ref

    if state.url.split(":", 1)[0] in ("memory", "inline"):
        raise ConfigurationError(
            f"SPOOLHOUSE_EMBEDDED_WORKERS needs a store that worker processes share, not "
            f"{state.url}; use sqlite:///path/to/spool.db or redis://…, or set "
            "SPOOLHOUSE_EMBEDDED_WORKERS = 0"
        )
    if in_worker_process():
        return  # the workers load this app too; they never embed workers of their own
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx is not None else None
    config = app.config
    worker_config = WorkerConfig(
        app_ref=worker_app_ref(app, info.app_import_path if info else None),
        queues=queue_list(config.get("SPOOLHOUSE_QUEUES")),
        threads=int(config.get("SPOOLHOUSE_THREADS") or 1),
        max_tasks=config.get("SPOOLHOUSE_MAX_TASKS") or None,
        shutdown_timeout=float(config.get("SPOOLHOUSE_SHUTDOWN_TIMEOUT") or 30.0),
        log_level=logging.INFO,
    )
    embedded = EmbeddedWorkers(worker_config, processes, lock_path_for(state.url,
                                                                       app.instance_path))
    state.embedded = embedded
    when = _when_to_start(ctx)
    if when == "now":
        embedded.start()
    elif when == "first-request":

        def start_embedded_workers() -> None:
            embedded.start()

        app.before_request(start_embedded_workers)


def _when_to_start(ctx: click.Context | None) -> str:
    """``now`` under ``flask run`` (not in the reloader's watcher), ``never`` in other
    ``flask`` commands, ``first-request`` under any other server."""
    if ctx is None:
        return "first-request"
    if ctx.info_name != "run":
        return "never"
    reload = ctx.params.get("reload")
    if reload is None:
        reload = get_debug_flag()
    if reload and os.environ.get("WERKZEUG_RUN_MAIN") != "true":
        return "never"  # the reloader's watcher: only its child serves
    return "now"
