"""``flask spool …``: the standalone commands, run against the app Flask loaded."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from flask import Flask

from spoolhouse import ConfigurationError, FakeClock, Spooler, current_job
from spoolhouse.cli import COMMANDS
from spoolhouse.flask.cli import queue_list, worker_app_ref
from spoolhouse.worker import supervisor as supervisor_module
from spoolhouse.worker.supervisor import WorkerConfig

MakeApp = Callable[..., Flask]


@pytest.fixture(autouse=True)
def no_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.delenv("SPOOLHOUSE_APP", raising=False)


def test_init_app_registers_the_spool_group_with_every_standalone_command(
    make_app: MakeApp,
) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_URL="memory://")
    group = app.cli.commands["spool"]
    assert isinstance(group, click.Group)
    assert set(group.commands) == {c.name for c in COMMANDS}
    assert group.commands["worker"] is next(c for c in COMMANDS if c.name == "worker")
    result = app.test_cli_runner().invoke(args=["spool", "--help"])
    assert result.exit_code == 0
    for name in ("worker", "status", "jobs"):
        assert name in result.output


def test_status_and_jobs_commands_read_the_apps_store(make_app: MakeApp,
                                                      clock: FakeClock) -> None:
    spooler = Spooler(clock=clock)

    @spooler.task(name="steps")
    def steps(n: int) -> int:
        for i in range(n):
            current_job().progress(i + 1, n, message="stepping")
        return n

    app = make_app(spooler, SPOOLHOUSE_URL="memory://")
    job = steps.spool(4)
    clock.advance(1)  # ids order jobs by creation time within a millisecond
    steps.spool(1)
    assert spooler.drain(max_jobs=1) == 1
    runner = app.test_cli_runner()

    result = runner.invoke(args=["spool", "status", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["default"]["succeeded"] == 1 and counts["default"]["pending"] == 1

    result = runner.invoke(args=["spool", "jobs", "list", "--state", "succeeded"])
    assert result.exit_code == 0 and job.id in result.output

    result = runner.invoke(args=["spool", "jobs", "show", job.id])
    assert result.exit_code == 0
    assert "4/4 stepping" in result.output and "#" * 30 in result.output


def test_worker_needs_an_import_string_and_says_which_setting(make_app: MakeApp) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_URL="memory://")
    result = app.test_cli_runner().invoke(args=["spool", "worker", "--burst"])
    assert result.exit_code == 2
    assert "SPOOLHOUSE_APP" in result.output and "create_app()" in result.output


def test_config_keys_become_worker_option_defaults(make_app: MakeApp,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[WorkerConfig, int]] = []

    class FakeSupervisor:
        def __init__(self, config: WorkerConfig, *, processes: int, **kwargs: object) -> None:
            started.append((config, processes))

        def run(self) -> int:
            return 0

    monkeypatch.setattr(supervisor_module, "Supervisor", FakeSupervisor)
    app = make_app(
        Spooler(), SPOOLHOUSE_URL="memory://", SPOOLHOUSE_PROCESSES=7, SPOOLHOUSE_THREADS=3,
        SPOOLHOUSE_QUEUES=["mail", "default"], SPOOLHOUSE_MAX_TASKS=50,
        SPOOLHOUSE_SHUTDOWN_TIMEOUT=12.5, SPOOLHOUSE_APP="somewhere:create_app()",
    )
    runner = app.test_cli_runner()
    result = runner.invoke(args=["spool", "worker", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for shown in ("default: 7", "default: 3", "default: 12.5"):
        assert shown in text, shown

    result = runner.invoke(args=["spool", "worker"])
    assert result.exit_code == 0, result.output
    config, processes = started[-1]
    assert processes == 7
    assert config.app_ref == "somewhere:create_app()"
    assert config.threads == 3 and config.max_tasks == 50 and config.shutdown_timeout == 12.5
    assert config.queues == ("mail", "default")

    result = runner.invoke(args=["spool", "worker", "-p", "1", "--queues", "mail"])
    assert result.exit_code == 0, result.output
    config, processes = started[-1]
    assert processes == 1 and config.queues == ("mail",)  # the command line wins


def test_queue_list_accepts_lists_and_comma_strings() -> None:
    assert queue_list(None) is None and queue_list("") is None
    assert queue_list("a, b,,c") == ("a", "b", "c")
    assert queue_list(["x", "y"]) == ("x", "y")
    with pytest.raises(ConfigurationError, match="SPOOLHOUSE_QUEUES"):
        queue_list(3)


# -- what worker processes import ---------------------------------------------------------------
@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("shfakeapp")

    def create_app() -> Flask:
        return Flask("shfakeapp")

    module.create_app = create_app  # type: ignore[attr-defined]
    module.app = Flask("shfakeapp")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shfakeapp", module)
    return module


def test_app_ref_from_the_flask_import_path(fake_module: types.ModuleType) -> None:
    app = Flask("elsewhere")
    assert worker_app_ref(app, "shfakeapp:create_app") == "shfakeapp:create_app()"
    assert worker_app_ref(app, "shfakeapp:create_app()") == "shfakeapp:create_app()"
    assert worker_app_ref(app, "shfakeapp:app") == "shfakeapp:app"
    # a bare module: the app itself when the module holds it, else its factory
    assert worker_app_ref(fake_module.app, "shfakeapp") == "shfakeapp:app"
    assert worker_app_ref(app, "shfakeapp") == "shfakeapp:create_app()"
    with pytest.raises(ConfigurationError, match="factory with arguments.*SPOOLHOUSE_APP"):
        worker_app_ref(app, "shfakeapp:create_app('dev')")


def test_app_ref_from_a_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "shfilemod.py").write_text("def create_app(): ...\n")
    ref = worker_app_ref(Flask("x"), f"{tmp_path}/shfilemod.py:create_app()")
    assert ref == "shfilemod:create_app()"
    assert str(tmp_path) in sys.path  # where the workers find it (spawn copies sys.path)


def test_app_ref_precedence(fake_module: types.ModuleType,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    app = Flask("shfakeapp")  # import_name names the fake module, which has a factory
    assert worker_app_ref(app) == "shfakeapp:create_app()"
    monkeypatch.setenv("SPOOLHOUSE_APP", "from_env:spooler")
    assert worker_app_ref(app) == "from_env:spooler"
    monkeypatch.setenv("FLASK_APP", "shfakeapp:app")
    assert worker_app_ref(app) == "shfakeapp:app"
    assert worker_app_ref(app, "shfakeapp:create_app") == "shfakeapp:create_app()"
    app.config["SPOOLHOUSE_APP"] = "explicit:create_app()"
    assert worker_app_ref(app, "shfakeapp:app") == "explicit:create_app()"


def test_no_way_to_import_the_app_is_an_error_naming_spoolhouse_app() -> None:
    with pytest.raises(ConfigurationError, match=r"app.config\['SPOOLHOUSE_APP'\]"):
        worker_app_ref(Flask("no_such_module_here"))


# -- a real worker, started by `flask spool worker` -----------------------------------------------
@pytest.mark.slow
def test_flask_spool_worker_runs_jobs_in_the_apps_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "shcliapp.py"
    module.write_text(textwrap.dedent(f"""
        from flask import Flask, current_app
        from spoolhouse import Spooler

        spooler = Spooler()

        @spooler.task
        def whoami(tag: str) -> str:
            return f"{{tag}} in {{current_app.name}} with {{current_app.config['SECRET_WORD']}}"

        def create_app():
            app = Flask("shcliapp")
            app.config.update(
                SPOOLHOUSE_URL="sqlite:///{tmp_path}/cli.db",
                SPOOLHOUSE_APP="shcliapp:create_app()",
                SECRET_WORD="swordfish",
            )
            spooler.init_app(app)
            return app
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import shcliapp  # type: ignore[import-not-found]

    app = shcliapp.create_app()
    try:
        jobs = [shcliapp.whoami.spool("one"), shcliapp.whoami.spool("two")]
        result = app.test_cli_runner().invoke(
            args=["spool", "worker", "--burst", "--processes", "1", "--log-level", "warning"]
        )
        assert result.exit_code == 0, result.output
        assert [j.result(timeout=10) for j in jobs] == [
            "one in shcliapp with swordfish", "two in shcliapp with swordfish",
        ]
    finally:
        shcliapp.spooler.close()
        sys.modules.pop("shcliapp", None)
