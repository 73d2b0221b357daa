"""The Flask extension: app factory, configuration, state, app context per job."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app, g

import spoolhouse.flask as ext
from spoolhouse import ConfigurationError, FakeClock, Spooler, current_job
from spoolhouse.flask import SpoolhouseState, bound_app, check_unbound, get_state

MakeApp = Callable[..., Flask]


def test_factory_pattern_binds_a_module_level_spooler(make_app: MakeApp) -> None:
    spooler = Spooler()
    app = make_app()
    assert spooler.url is None
    spooler.init_app(app)
    state = app.extensions["spoolhouse"]
    assert isinstance(state, SpoolhouseState) and state.spooler is spooler
    assert get_state(app) is state
    assert not hasattr(spooler, "app")  # the extension never keeps the app


def test_spooler_app_constructor_calls_init_app(make_app: MakeApp) -> None:
    app = make_app(SPOOLHOUSE_URL="memory://")
    spooler = Spooler(app)
    assert app.extensions["spoolhouse"].spooler is spooler
    assert spooler.url == "memory://"


def test_second_init_app_on_the_same_app_is_an_error_that_says_so(make_app: MakeApp) -> None:
    spooler = Spooler()
    app = make_app(spooler, SPOOLHOUSE_URL="memory://")
    with pytest.raises(ConfigurationError, match="already registered.*once per app"):
        spooler.init_app(app)
    with pytest.raises(ConfigurationError, match="already registered"):
        Spooler().init_app(app)


def test_default_store_is_sqlite_in_the_instance_folder_which_is_created(
    make_app: MakeApp,
) -> None:
    app = make_app()
    assert not os.path.exists(app.instance_path)
    spooler = Spooler()
    spooler.init_app(app)
    expected = "sqlite:///" + os.path.join(app.instance_path, "spoolhouse.db")
    assert app.config["SPOOLHOUSE_URL"] == expected
    assert spooler.url == expected
    assert os.path.isdir(app.instance_path)
    assert expected.startswith("sqlite:////")  # an absolute path


def test_every_config_key_gets_a_documented_default(make_app: MakeApp) -> None:
    app = make_app(Spooler(), SPOOLHOUSE_URL="memory://")
    defaults = {
        "SPOOLHOUSE_BACKEND_OPTIONS": {},
        "SPOOLHOUSE_IMMEDIATE": False,
        "SPOOLHOUSE_QUEUES": None,
        "SPOOLHOUSE_PROCESSES": 2,
        "SPOOLHOUSE_THREADS": 1,
        "SPOOLHOUSE_MAX_TASKS": None,
        "SPOOLHOUSE_SHUTDOWN_TIMEOUT": 30.0,
        "SPOOLHOUSE_APP": None,
        "SPOOLHOUSE_APP_CONTEXT": True,
        "SPOOLHOUSE_EMBEDDED_WORKERS": 0,
    }
    for key, value in defaults.items():
        assert app.config[key] == value, key
    doc = ext.init_app.__doc__ or ""
    for key in [*defaults, "SPOOLHOUSE_URL"]:
        assert f"``{key}``" in doc, f"{key} is not documented in init_app's docstring"


def test_values_set_before_init_app_are_kept(make_app: MakeApp, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mine.db"
    app = make_app(Spooler(), SPOOLHOUSE_URL=url, SPOOLHOUSE_PROCESSES=7)
    assert app.config["SPOOLHOUSE_URL"] == url
    assert app.config["SPOOLHOUSE_PROCESSES"] == 7
    assert app.extensions["spoolhouse"].spooler.url == url


def test_a_url_given_to_the_spooler_is_the_default_for_its_apps(make_app: MakeApp,
                                                               tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/own.db"
    spooler = Spooler(url)
    first = make_app(spooler)
    second = make_app(spooler)
    assert first.config["SPOOLHOUSE_URL"] == second.config["SPOOLHOUSE_URL"] == url


def test_immediate_runs_jobs_inline_inside_spool(make_app: MakeApp) -> None:
    spooler = Spooler()

    @spooler.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    app = make_app(spooler, SPOOLHOUSE_IMMEDIATE=True, SPOOLHOUSE_URL="sqlite:///never.db")
    assert spooler.url == "inline://"
    with app.app_context():
        job = double.spool(21)
        assert job.status() == "succeeded"
        assert job.result(timeout=0) == 42


def test_bad_config_values_name_the_fix(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="SPOOLHOUSE_URL must be a backend URL"):
        make_app(Spooler(), SPOOLHOUSE_URL=42)
    with pytest.raises(ConfigurationError, match="SPOOLHOUSE_BACKEND_OPTIONS must be a dict"):
        make_app(Spooler(), SPOOLHOUSE_URL="memory://", SPOOLHOUSE_BACKEND_OPTIONS=[1])
    with pytest.raises(ConfigurationError, match="SPOOLHOUSE_EMBEDDED_WORKERS must be an int"):
        make_app(Spooler(), SPOOLHOUSE_URL="memory://", SPOOLHOUSE_EMBEDDED_WORKERS="two")


def test_get_state_errors_name_init_app(make_app: MakeApp) -> None:
    app = make_app()
    with pytest.raises(ConfigurationError, match=r"call spooler.init_app\(app\)"):
        get_state(app)
    with pytest.raises(ConfigurationError, match="no Flask app is current"):
        get_state()


# -- the app context around every job -------------------------------------------------------
def test_each_job_runs_in_a_fresh_app_context_of_its_app(make_app: MakeApp,
                                                          clock: FakeClock) -> None:
    spooler = Spooler(clock=clock)
    seen: list[tuple[str, Any, bool]] = []
    torn_down: list[str] = []

    @spooler.task(name="look")
    def look(tag: str) -> str:
        seen.append((current_app.name, current_app.config["GREETING"], hasattr(g, "mark")))
        g.mark = tag  # must not leak into the next job
        current_job().progress(1, 1, message=tag)
        return tag

    app = make_app(spooler, SPOOLHOUSE_URL="memory://", GREETING="hello")

    @app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(getattr(g, "mark", "-"))

    first = look.spool("one")
    clock.advance(1)  # ids order jobs by creation time within a millisecond
    second = look.spool("two")
    assert spooler.drain() == 2  # outside any app context, like a worker process
    assert seen == [(app.name, "hello", False), (app.name, "hello", False)]
    assert torn_down == ["one", "two"]  # popped (and torn down) after each job
    assert first.result(timeout=0) == "one" and second.result(timeout=0) == "two"


def test_the_app_context_is_fresh_even_inside_a_request_in_immediate_mode(
    make_app: MakeApp,
) -> None:
    spooler = Spooler()

    @spooler.task(name="peek")
    def peek() -> bool:
        return hasattr(g, "from_request")

    app = make_app(spooler, SPOOLHOUSE_IMMEDIATE=True)

    @app.get("/")
    def index() -> dict[str, Any]:
        g.from_request = True
        job = peek.spool()
        return {"job_saw_request_g": job.result(timeout=0), "request_g": g.from_request}

    assert app.test_client().get("/").get_json() == {"job_saw_request_g": False,
                                                     "request_g": True}


def test_exceptions_in_a_job_still_pop_the_context(make_app: MakeApp) -> None:
    spooler = Spooler()
    errors: list[str] = []

    @spooler.task(name="boom", retries=0)
    def boom() -> None:
        raise ValueError("boom")

    app = make_app(spooler, SPOOLHOUSE_URL="memory://")

    @app.teardown_appcontext
    def teardown(exc: BaseException | None) -> None:
        errors.append(type(exc).__name__)

    job = boom.spool()
    spooler.drain()
    assert job.status() == "failed"
    assert errors == ["ValueError"]


def test_app_context_can_be_turned_off(make_app: MakeApp) -> None:
    spooler = Spooler()

    @spooler.task(name="has_app")
    def has_app() -> bool:
        from flask import has_app_context

        return has_app_context()

    make_app(spooler, SPOOLHOUSE_URL="memory://", SPOOLHOUSE_APP_CONTEXT=False)
    job = has_app.spool()
    spooler.drain()
    assert job.result(timeout=0) is False


def test_several_apps_one_spooler_uses_the_current_app_else_the_last_bound(
    make_app: MakeApp,
) -> None:
    spooler = Spooler()

    @spooler.task(name="who")
    def who() -> str:
        return str(current_app.name)

    first = make_app(spooler, SPOOLHOUSE_URL="memory://")
    second = make_app(spooler, SPOOLHOUSE_URL="memory://")
    assert bound_app(spooler) is second
    job = who.spool()
    spooler.drain()
    assert job.result(timeout=0) == second.name  # no app current: the last bound
    with first.app_context():
        job = who.spool()
        spooler.drain()
        assert job.result(timeout=0) == first.name  # the current app, if bound to it
    other = make_app(Spooler(), SPOOLHOUSE_URL="memory://")
    with other.app_context():
        assert bound_app(spooler) is second  # the current app uses another spooler
    # a middleware is added once per spooler, not once per app
    assert len(spooler.middleware) == 1


def test_the_registry_holds_earlier_apps_weakly_and_the_last_one_strongly(
    make_app: MakeApp,
) -> None:
    spooler = Spooler()
    keep = make_app(spooler, SPOOLHOUSE_URL="memory://")
    temporary = make_app(spooler, SPOOLHOUSE_URL="memory://")
    gone = weakref.ref(temporary)
    latest = weakref.ref(make_app(spooler, SPOOLHOUSE_URL="memory://"))
    del temporary
    gc.collect()
    assert gone() is None  # an earlier app is freed once the caller drops it
    assert latest() is not None  # the last one stays: a worker process has only it
    assert bound_app(spooler) is latest()
    assert keep.extensions["spoolhouse"].spooler is spooler


def test_last_init_app_decides_the_store(make_app: MakeApp, tmp_path: Path) -> None:
    spooler = Spooler()
    make_app(spooler, SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/a.db")
    make_app(spooler, SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/b.db")
    assert spooler.url == f"sqlite:///{tmp_path}/b.db"


def test_plain_spooler_with_a_url_works_outside_any_app_context(tmp_path: Path) -> None:
    spooler = Spooler(f"sqlite:///{tmp_path}/plain.db")

    @spooler.task(name="plain")
    def plain() -> str:
        return "ok"

    check_unbound(spooler)  # a URL: nothing to refuse
    job = plain.spool()
    spooler.drain()
    assert job.result(timeout=0) == "ok"
    spooler.close()


def test_check_unbound_names_the_fix(make_app: MakeApp) -> None:
    spooler = Spooler()
    with pytest.raises(ConfigurationError, match=r"init_app\(app\).*or give it a URL"):
        check_unbound(spooler)
    unrelated = make_app()
    with unrelated.app_context(), pytest.raises(
        ConfigurationError, match=f"never bound to app '{unrelated.name}'"
    ):
        check_unbound(spooler)
    app = make_app(spooler)
    spooler.url = None  # simulate a spooler that is bound but has no URL of its own
    check_unbound(spooler)  # bound: no error
    assert app.extensions["spoolhouse"].spooler is spooler


# -- Flask-SQLAlchemy --------------------------------------------------------------------------
def test_flask_sqlalchemy_session_is_scoped_and_removed_per_job(make_app: MakeApp,
                                                                tmp_path: Path) -> None:
    fsa = pytest.importorskip("flask_sqlalchemy")
    db = fsa.SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined, misc]
        __tablename__ = "notes"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50))

    spooler = Spooler()
    sessions: list[Any] = []

    @spooler.task(name="add_note")
    def add_note(text: str) -> int:
        sessions.append(db.session())  # kept alive, so two sessions never share an id()
        note = Note(text=f"{text} ({current_app.config['NOTE_SUFFIX']})")
        db.session.add(note)
        db.session.commit()
        assert db.session.scalar(db.select(db.func.count()).select_from(Note)) >= 1
        return note.id

    app = make_app(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/app.db",
        SPOOLHOUSE_URL="memory://",
        NOTE_SUFFIX="from a job",
    )
    db.init_app(app)
    spooler.init_app(app)
    with app.app_context():
        db.create_all()

    jobs = [add_note.spool("first"), add_note.spool("second")]
    assert spooler.drain() == 2
    assert [j.result(timeout=0) for j in jobs] == [1, 2]
    assert sessions[0] is not sessions[1]  # a session per job: each context tore its own down
    with app.app_context():
        texts = db.session.scalars(db.select(Note.text).order_by(Note.id)).all()
    assert texts == ["first (from a job)", "second (from a job)"]
