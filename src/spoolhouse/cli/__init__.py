"""The ``spoolhouse`` command. ``flask spool …`` reuses these commands.

Each command finds its spooler through :class:`CliState`, which the
standalone group builds from ``--app`` and the Flask group builds from the
Flask app.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from ..context import Progress
from ..errors import SpoolhouseError
from ..job import Job, JobState, shown_status
from ..lifecycle import parse_error
from ..spooler import Spooler
from .logs import configure_logging

__all__ = ["CliState", "main", "add_commands"]


@dataclass
class CliState:
    """How commands reach the spooler: ``app_ref`` for worker processes to import."""

    app_ref: str | None
    load: Callable[[], Spooler]
    _spooler: Spooler | None = None

    @property
    def spooler(self) -> Spooler:
        if self._spooler is None:
            try:
                self._spooler = self.load()
            except SpoolhouseError as exc:
                raise click.ClickException(str(exc)) from exc
        return self._spooler


def _state(ctx: click.Context) -> CliState:
    state = ctx.find_object(CliState)
    if state is None:
        raise click.UsageError("no app given: pass --app module:spooler or set SPOOLHOUSE_APP")
    return state


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def job_dict(job: Job, now: float) -> dict[str, Any]:
    """A job as plain data for ``--json`` output (payload and result left out)."""
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "status": shown_status(job, now),
        "state": job.state.value,
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "key": job.key,
        "timeout": job.timeout,
        "worker_id": job.worker_id,
        "lost": job.lost,
        "error": parse_error(job.error) or None,
        "progress": json.loads(job.progress) if job.progress else None,
    }


def progress_bar(progress: Progress | None, width: int = 30) -> str:
    if progress is None:
        return "-"
    fraction = progress.fraction
    if fraction is None:
        return f"{progress.current:g} {progress.message}".strip()
    filled = int(round(fraction * width))
    total = f"{progress.total:g}" if progress.total is not None else "?"
    return f"[{'#' * filled}{'.' * (width - filled)}] {progress.current:g}/{total} {progress.message}".rstrip()


# -- commands ------------------------------------------------------------------------
@click.command("worker")
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(1),
              help="Worker processes (uWSGI spooler-processes).")
@click.option("--threads", "-t", default=1, show_default=True, type=click.IntRange(1),
              help="Jobs run at once in each process.")
@click.option("--queues", "-q", default=None,
              help="Comma-separated queues, served in this order (default: every task's queue).")
@click.option("--max-tasks", default=None, type=click.IntRange(1),
              help="Recycle a process after this many jobs (uWSGI spooler-max-tasks).")
@click.option("--shutdown-timeout", default=30.0, show_default=True, type=float,
              help="Seconds running jobs get to finish after the first SIGTERM/SIGINT.")
@click.option("--burst", is_flag=True, help="Run what is due, then exit.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
@click.option("--health-file", default=None, type=click.Path(dir_okay=False),
              help="Rewrite this JSON file every second (for liveness probes: spoolhouse health).")
@click.option("--metrics-port", default=None, type=int,
              help="Serve Prometheus metrics on this port (needs spoolhouse[metrics]).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.pass_context
def worker_command(
    ctx: click.Context, processes: int, threads: int, queues: str | None, max_tasks: int | None,
    shutdown_timeout: float, burst: bool, log_level: str, log_format: str,
    health_file: str | None, metrics_port: int | None, metrics_host: str,
) -> None:
    """Run worker processes that execute spooled jobs."""
    from ..worker.supervisor import Supervisor, WorkerConfig

    state = _state(ctx)
    level = getattr(logging, log_level.upper())
    configure_logging(level, log_format)
    if state.app_ref is None:
        raise click.UsageError("the worker needs --app module:spooler so that its processes can import it")
    spooler = state.spooler
    queue_list = tuple(q.strip() for q in queues.split(",") if q.strip()) if queues else None
    config = WorkerConfig(
        app_ref=state.app_ref, queues=queue_list, threads=threads, max_tasks=max_tasks,
        shutdown_timeout=shutdown_timeout, burst=burst, log_level=level, log_format=log_format,
    )
    supervisor = Supervisor(config, processes=processes, spooler=spooler,
                            maintenance_interval=min(5.0, spooler.lease / 2),
                            health_file=health_file)
    if metrics_port is not None:
        from ..metrics import serve_metrics

        try:
            serve_metrics(supervisor, host=metrics_host, port=metrics_port)
        except SpoolhouseError as exc:
            raise click.ClickException(str(exc)) from exc
    logging.getLogger("spoolhouse").info(
        "spoolhouse worker: %d process(es) x %d thread(s), queues %s, store %s",
        processes, threads, ",".join(queue_list or spooler.queues()), spooler.backend.url,
    )
    sys.exit(supervisor.run())


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Job counts per queue and state."""
    spooler = _state(ctx).spooler
    counts = spooler.backend.counts()
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
        return
    states = [s.value for s in JobState]
    click.echo(f"{'queue':<20}" + "".join(f"{s:>11}" for s in states))
    for queue in sorted(counts):
        row = counts[queue]
        click.echo(f"{queue:<20}" + "".join(f"{row.get(s, 0):>11}" for s in states))
    if not counts:
        click.echo("(no jobs)")


@click.command("health")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False),
              help="The worker's --health-file.")
@click.option("--max-age", default=30.0, show_default=True, type=float,
              help="Seconds after which the file counts as stale.")
def health_command(path: str, max_age: float) -> None:
    """Exit 0 if the worker supervisor is alive (its health file is fresh), else 1."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        click.echo(f"unhealthy: cannot read {path}: {exc}")
        sys.exit(1)
    age = time.time() - float(data.get("time", 0))
    children = data.get("children", [])
    alive = sum(1 for c in children if c.get("alive"))
    if age > max_age:
        click.echo(f"unhealthy: health file is {age:.0f}s old (max {max_age:g}s)")
        sys.exit(1)
    if alive == 0 and not data.get("stopping"):
        click.echo("unhealthy: no worker process alive")
        sys.exit(1)
    click.echo(f"healthy: supervisor {data.get('pid')}, {alive}/{data.get('processes')} "
               f"processes alive, updated {age:.1f}s ago")


@click.group("jobs")
def jobs_group() -> None:
    """List, inspect, retry, cancel and purge jobs."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--cursor", default=None, help="Last id of the previous page.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_list(ctx: click.Context, state: str | None, queue: str | None, task: str | None,
              limit: int, cursor: str | None, as_json: bool) -> None:
    """Jobs, newest first."""
    spooler = _state(ctx).spooler
    jobs = spooler.backend.list_jobs(state=state, queue=queue, task=task, limit=limit, cursor=cursor)
    now = spooler.clock.now()
    if as_json:
        click.echo(json.dumps([job_dict(j, now) for j in jobs], indent=2))
        return
    for j in jobs:
        click.echo(f"{j.id}  {shown_status(j, now):<10} {j.queue:<12} {j.task:<40} "
                   f"attempt {j.attempt}/{j.max_attempts}  run_at {_when(j.run_at)}")
    if not jobs:
        click.echo("(no jobs)")


@jobs_group.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """One job in full, with its progress bar and last error."""
    spooler = _state(ctx).spooler
    job = spooler.backend.get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    now = spooler.clock.now()
    data = job_dict(job, now)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for name in ("id", "task", "queue", "status", "priority", "key", "worker_id"):
        click.echo(f"{name + ':':<13}{data[name] if data[name] is not None else '-'}")
    click.echo(f"{'attempt:':<13}{job.attempt}/{job.max_attempts} (lost {job.lost})")
    for name in ("created_at", "run_at", "started_at", "finished_at"):
        click.echo(f"{name + ':':<13}{_when(getattr(job, name))}")
    click.echo(f"{'progress:':<13}{progress_bar(Progress.from_json(job.progress))}")
    error = parse_error(job.error)
    if error:
        click.echo(f"{'error:':<13}[{error.get('reason')}] {error.get('type')}: {error.get('message')}")
        if error.get("traceback"):
            click.echo(error["traceback"].rstrip())


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_retry(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Requeue failed or cancelled jobs (attempts reset)."""
    spooler = _state(ctx).spooler
    now = spooler.clock.now()
    done = {jid: spooler.backend.requeue(jid, now=now) for jid in job_ids}
    _report(done, "requeued", as_json)


@jobs_group.command("cancel")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_cancel(ctx: click.Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel pending jobs; ask running ones to abort."""
    spooler = _state(ctx).spooler
    now = spooler.clock.now()
    results = {jid: spooler.backend.cancel(jid, now=now).value for jid in job_ids}
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for jid, outcome in results.items():
        click.echo(f"{jid}: {outcome}")
    if all(v == "noop" for v in results.values()):
        sys.exit(1)


@jobs_group.command("purge")
@click.option("--state", "states", multiple=True, default=("succeeded",), show_default=True,
              type=click.Choice(["succeeded", "failed", "cancelled"]))
@click.option("--queue", default=None)
@click.option("--older-than", type=float, default=None, help="Only jobs finished this many seconds ago.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_purge(ctx: click.Context, states: tuple[str, ...], queue: str | None,
               older_than: float | None, yes: bool, as_json: bool) -> None:
    """Delete finished jobs."""
    spooler = _state(ctx).spooler
    if not yes:
        click.confirm(f"Delete {'/'.join(states)} jobs{' of ' + queue if queue else ''}?", abort=True)
    before = None if older_than is None else spooler.clock.now() - older_than
    n = spooler.backend.purge(states=list(states), queue=queue, before=before)
    click.echo(json.dumps({"deleted": n}) if as_json else f"deleted {n} job(s)")


@click.group("periodic")
def periodic_group() -> None:
    """Periodic tasks."""


@periodic_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def periodic_list(ctx: click.Context, as_json: bool) -> None:
    """Every schedule, in words, with its next and last run."""
    spooler = _state(ctx).spooler
    now = spooler.clock.now()
    ticks = spooler.backend.schedule_ticks() if spooler.schedules else {}
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "task": schedule.task.name,
            "schedule": schedule.describe(),
            "next_run": schedule.next_tick(now),
            "last_run": ticks.get(name),
            "missed": schedule.missed,
        }
        for name, schedule in sorted(spooler.schedules.items())
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(no periodic tasks)")
    for row in rows:
        click.echo(f"{row['name']}\n  {row['schedule']}\n  next run {_when(row['next_run'])} UTC, "
                   f"last run {_when(row['last_run'])}")


def _report(done: dict[str, bool], verb: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(done, indent=2))
    else:
        for jid, ok in done.items():
            click.echo(f"{jid}: {verb if ok else 'unchanged (not found, or not in a state that allows it)'}")
    if not any(done.values()):
        sys.exit(1)


@click.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8077, show_default=True, type=int)
@click.option("--read-only", is_flag=True, help="Allow viewing only: no retry, cancel or delete.")
@click.option("--insecure-local", is_flag=True,
              help="Serve without an access check (development on your own machine only).")
@click.pass_context
def dashboard_command(ctx: click.Context, host: str, port: int, read_only: bool,
                      insecure_local: bool) -> None:
    """Serve the dashboard as a standalone web app."""
    from ..dashboard import serve

    try:
        serve(_state(ctx).spooler, host=host, port=port, read_only=read_only,
              insecure_local=insecure_local)
    except SpoolhouseError as exc:
        raise click.ClickException(str(exc)) from exc


COMMANDS: list[click.Command] = [
    worker_command, status_command, jobs_group, periodic_group, dashboard_command, health_command,
]


def add_commands(group: click.Group) -> None:
    """Attach every spoolhouse command to ``group`` (the Flask CLI group uses this)."""
    for command in COMMANDS:
        group.add_command(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--app", "app_ref", envvar="SPOOLHOUSE_APP", metavar="MODULE:SPOOLER",
              help="Where the Spooler is: module:attribute, or module:create_app() for a Flask app. "
                   "[env: SPOOLHOUSE_APP]")
@click.version_option(package_name="spoolhouse")
@click.pass_context
def main(ctx: click.Context, app_ref: str | None) -> None:
    """Spoolhouse: durable background jobs."""
    from ..loader import load_spooler

    if app_ref is not None:
        ref = app_ref
        ctx.obj = CliState(app_ref=ref, load=lambda: load_spooler(ref))


add_commands(main)


