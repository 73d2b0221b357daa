"""The spoolhouse command, driven through click's runner on a SQLite file."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from spoolhouse.cli import main


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"cliapp_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        from spoolhouse import Spooler, current_job
        spooler = Spooler("sqlite:///{tmp_path}/cli.db")

        @spooler.task(name="add", retries=0)
        def add(a: int, b: int) -> int:
            current_job().progress(1, 2, message="half")
            return a + b

        @spooler.task(name="boom", retries=0)
        def boom() -> None:
            raise ValueError("kaboom")

        @spooler.periodic(every=300, name="tidy")
        def tidy() -> None: ...
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def run(app: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--app", f"{app}:spooler", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_status_jobs_show_retry_cancel_purge(app_module: str) -> None:
    mod = __import__(app_module)
    ok = mod.add.spool(1, 2)
    bad = mod.boom.spool()
    waiting = mod.add.options(delay=3600).spool(3, 4)
    mod.spooler.drain()

    code, out = run(app_module, "status", "--json")
    assert code == 0 and json.loads(out) == {"default": {"succeeded": 1, "failed": 1, "pending": 1}}
    code, out = run(app_module, "status")
    assert "default" in out and "succeeded" in out

    code, out = run(app_module, "jobs", "list", "--state", "failed", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [bad.id] and rows[0]["error"]["type"] == "ValueError"

    code, out = run(app_module, "jobs", "show", ok.id)
    assert "succeeded" in out and "[" in out and "1/2 half" in out
    code, out = run(app_module, "jobs", "show", bad.id)
    assert "kaboom" in out and "Traceback" in out

    code, out = run(app_module, "jobs", "retry", bad.id)
    assert code == 0 and bad.status() == "pending"
    code, out = run(app_module, "jobs", "retry", ok.id)
    assert code == 1 and "unchanged" in out

    code, out = run(app_module, "jobs", "cancel", waiting.id, "--json")
    assert json.loads(out) == {waiting.id: "cancelled"}

    code, out = run(app_module, "jobs", "purge", "--state", "succeeded", "--state", "cancelled", "--yes")
    assert code == 0 and "deleted 2" in out

    code, out = run(app_module, "jobs", "show", "nope")
    assert code == 1 and "no job" in out


def test_periodic_list(app_module: str) -> None:
    code, out = run(app_module, "periodic", "list", "--json")
    (row,) = json.loads(out)
    assert row["name"] == "tidy" and row["schedule"] == "every 5 minutes" and row["last_run"] is None


def test_missing_app_says_how_to_fix() -> None:
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code != 0 and "--app" in result.output
    result = CliRunner().invoke(main, ["--app", "no_such_module_xyz:spooler", "status"])
    assert result.exit_code != 0 and "PYTHONPATH" in result.output
