"""Embedded workers: opt-in, one set per store (flock), only in processes that serve."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from flask import Flask

from spoolhouse import ConfigurationError, Spooler
from spoolhouse.flask import embedded, start_embedded_workers
from spoolhouse.flask.embedded import EmbeddedWorkers, in_worker_process, lock_path_for
from spoolhouse.worker.supervisor import WorkerConfig

MakeApp = Callable[..., Flask]
WAIT = 10.0


class StandIn(EmbeddedWorkers):
    """Takes the lock like the real thing, but 'supervises' by waiting to be stopped."""

    def __init__(self, lock_path: str) -> None:
        super().__init__(WorkerConfig(app_ref="x:y"), 1, lock_path)
        self.supervising = threading.Event()

    def _supervise(self) -> None:
        self.supervising.set()
        self._stop.wait()
        self.supervising.clear()


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[list[StandIn]]:
    made: list[StandIn] = []
    yield made
    for s in made:
        s.stop()


def test_lock_file_sits_next_to_the_sqlite_database(tmp_path: Path) -> None:
    assert lock_path_for("sqlite:////srv/app/spool.db", "/inst") == "/srv/app/spool.db.embedded.lock"
    assert lock_path_for("sqlite:///rel/spool.db?x=1", "/inst") == "rel/spool.db.embedded.lock"
    redis_lock = lock_path_for("redis://h:6379/0", "/inst")
    assert redis_lock.startswith("/inst/spoolhouse-") and redis_lock.endswith(".embedded.lock")
    assert redis_lock != lock_path_for("redis://h:6379/1", "/inst")


def test_one_process_runs_them_the_others_stand_by_and_take_over(
    tmp_path: Path, stand_ins: list[StandIn]
) -> None:
    lock = str(tmp_path / "spool.db.embedded.lock")
    first, second = StandIn(lock), StandIn(lock)
    stand_ins.extend([first, second])
    assert first.start()
    assert first.supervising.wait(WAIT) and first.holding
    assert second.start()
    # flock is per open file, so the second stands by even within one process
    assert not second.supervising.wait(1.5 * embedded.LOCK_POLL)
    assert not second.holding
    assert Path(lock).read_text().strip() == str(os.getpid())
    first.stop()
    assert second.supervising.wait(WAIT), "the standing-by process never took over"
    assert second.holding and not first.holding


def test_start_is_once_per_process_and_refused_in_worker_processes(
    tmp_path: Path, stand_ins: list[StandIn], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = StandIn(str(tmp_path / "l"))
    stand_ins.append(one)
    assert one.start() and one.start()
    assert one.supervising.wait(WAIT)
    monkeypatch.setenv(embedded.EMBEDDED_ENV, "1")
    assert in_worker_process()
    other = StandIn(str(tmp_path / "m"))
    assert other.start() is False


def test_memory_stores_cannot_be_shared_with_worker_processes(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="store that worker processes share"):
        make_app(Spooler(), SPOOLHOUSE_URL="memory://", SPOOLHOUSE_EMBEDDED_WORKERS=2)


def test_immediate_mode_turns_embedded_workers_off(make_app: MakeApp) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_IMMEDIATE=True, SPOOLHOUSE_EMBEDDED_WORKERS=2)
    assert app.extensions["spoolhouse"].embedded is None
    with pytest.raises(ConfigurationError, match="SPOOLHOUSE_EMBEDDED_WORKERS = N"):
        start_embedded_workers(app)


def test_off_by_default(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/s.db")
    assert app.extensions["spoolhouse"].embedded is None
    assert not app.before_request_funcs


@pytest.fixture
def recorded_starts(monkeypatch: pytest.MonkeyPatch) -> list[EmbeddedWorkers]:
    starts: list[EmbeddedWorkers] = []
    monkeypatch.setattr(EmbeddedWorkers, "start", lambda self: starts.append(self) or True)
    return starts


def test_under_another_server_they_start_on_the_first_request(
    make_app: MakeApp, tmp_path: Path, recorded_starts: list[EmbeddedWorkers]
) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/s.db",
                   SPOOLHOUSE_EMBEDDED_WORKERS=3, SPOOLHOUSE_APP="pkg:create_app()",
                   SPOOLHOUSE_QUEUES="a,b", SPOOLHOUSE_THREADS=2)
    state = app.extensions["spoolhouse"]
    assert state.embedded is not None and recorded_starts == []
    assert state.embedded.processes == 3
    assert state.embedded.config.app_ref == "pkg:create_app()"
    assert state.embedded.config.queues == ("a", "b") and state.embedded.config.threads == 2
    assert state.embedded.lock_path == f"{tmp_path}/s.db.embedded.lock"
    app.test_client().get("/")
    assert recorded_starts == [state.embedded]


def test_flask_commands_other_than_run_never_start_them(
    make_app: MakeApp, tmp_path: Path, recorded_starts: list[EmbeddedWorkers]
) -> None:
    def factory() -> Flask:
        return make_app(Spooler(), SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/s.db",
                        SPOOLHOUSE_EMBEDDED_WORKERS=1, SPOOLHOUSE_APP="pkg:create_app()")

    from flask.cli import FlaskGroup

    result = CliRunner().invoke(FlaskGroup(create_app=factory),
                                              ["spool", "status"])
    assert result.exit_code == 0, result.output
    assert recorded_starts == []


@pytest.mark.parametrize(
    ("info_name", "reload", "run_main", "expected"),
    [
        (None, None, None, "first-request"),
        ("spool", None, None, "never"),
        ("shell", None, None, "never"),
        ("run", False, None, "now"),
        ("run", True, None, "never"),  # the reloader's watcher
        ("run", True, "true", "now"),  # the reloader's child, which serves
    ],
)
def test_when_to_start(info_name: str | None, reload: bool | None, run_main: str | None,
                       expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if run_main is None:
        monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    else:
        monkeypatch.setenv("WERKZEUG_RUN_MAIN", run_main)
    ctx = None
    if info_name is not None:
        ctx = click.Context(click.Command(info_name), info_name=info_name)
        ctx.params = {"reload": reload}
    assert embedded._when_to_start(ctx) == expected


@pytest.mark.slow
def test_embedded_workers_run_jobs_in_the_app_and_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shembedapp.py").write_text(
        "from flask import Flask, current_app\n"
        "from spoolhouse import Spooler\n"
        "spooler = Spooler()\n"
        "@spooler.task\n"
        "def where() -> str:\n"
        "    return current_app.config['WHERE']\n"
        "def create_app():\n"
        "    app = Flask('shembedapp')\n"
        f"    app.config.update(SPOOLHOUSE_URL='sqlite:///{tmp_path}/e.db',\n"
        "                      SPOOLHOUSE_EMBEDDED_WORKERS=1, SPOOLHOUSE_SHUTDOWN_TIMEOUT=5,\n"
        "                      WHERE='in the embedded worker')\n"
        "    spooler.init_app(app)\n"
        "    return app\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import shembedapp  # type: ignore[import-not-found]

    app = shembedapp.create_app()
    state = app.extensions["spoolhouse"]
    try:
        assert start_embedded_workers(app)
        job = shembedapp.where.spool()
        assert job.result(timeout=30) == "in the embedded worker"
        supervisor = state.embedded.supervisor_pid
        assert supervisor is not None and state.embedded.holding
    finally:
        state.embedded.stop()
        shembedapp.spooler.close()
    assert state.embedded.supervisor_pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(supervisor, 0)
