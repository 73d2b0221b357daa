"""The dashboard as a Flask blueprint: access control, CSRF, pages and actions.

The only module of the dashboard that imports Flask. Templates are rendered
by a Jinja environment of our own, with autoescaping on for every template
whatever the host app configured, and the host's context processors kept out.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import jinja2
from flask import Blueprint, Request, current_app, g, redirect, request, url_for
from werkzeug.wrappers import Response

from ..backends.base import CancelResult
from ..errors import ConfigurationError, SpoolhouseError
from ..job import FINAL_STATES, JobState
from ..redact import Redactor
from ..spooler import Spooler
from .chart import throughput_chart
from .present import SHORT, Presenter, ago, clip, iso, when

log = logging.getLogger("spoolhouse.dashboard")

HERE = Path(__file__).parent

#: ``access(request)`` returns one of these (``None`` counts as forbidden), or a
#: response to send instead (a 401 asking for credentials, a redirect to a login page).
Level = Literal["full", "read-only", "forbidden"]
AccessCheck = Callable[[Request], "str | None | Response"]

NO_ACCESS_CHECK = (
    "The Spoolhouse dashboard refuses every request until it is told who may see it. "
    "Pass access= to spooler.dashboard_blueprint() (a function of the request that returns "
    "'full', 'read-only' or 'forbidden'), or insecure_local=True for local development only "
    "(spoolhouse dashboard --insecure-local), which serves requests from this machine alone."
)
NOT_LOCAL = (
    "insecure_local=True serves requests from this machine only (a loopback address, a "
    "localhost Host header, no proxy headers). To open the dashboard to others, pass access= "
    "with a check of your own."
)
REFUSED = "The dashboard's access check refused this request."

#: Name of the cookie holding the random value that CSRF tokens are bound to.
CSRF_COOKIE = "spoolhouse_csrf"
#: Seconds a CSRF token (a rendered form) stays valid.
CSRF_MAX_AGE = 12 * 3600
#: Running jobs read to show the workers on the overview.
RUNNING_SHOWN = 200
#: Selected jobs one bulk action may name.
MAX_SELECTED = 1000
#: Jobs one "retry all" click requeues; the page says when more remain.
RETRY_ALL_LIMIT = 10_000

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_DONE: dict[str, str] = {
    "requeued": "Requeued: the job is pending again, with its attempts reset.",
    "requeue-refused": "Not requeued: only failed or cancelled jobs can be retried, and not "
                       "while another live job holds the same key.",
    "cancelled": "Cancelled: the job will not run.",
    "aborting": "Cancellation requested: the worker running the job has been asked to stop.",
    "cancel-refused": "Nothing to cancel: the job had already finished.",
    "delete-refused": "Not deleted: only finished jobs can be deleted; cancel it first.",
    "none-selected": "No job was selected.",
}
_COUNTED: dict[str, str] = {
    "retry": "Requeued {n} of {of} selected job(s).",
    "cancel": "Cancelled {n} of {of} selected job(s) (running ones were asked to stop).",
    "delete": "Deleted {n} of {of} selected job(s) (only finished jobs are deleted).",
    "deleted": "Deleted the job.",
    "purged": "Deleted {n} job(s).",
    "retried-all": "Requeued {n} job(s).",
    "retried-some": "Requeued {n} job(s); more remain, run it again for the next batch.",
}


def _local(req: Request) -> bool:
    """A request from this machine, directly (not through a proxy), for a localhost name."""
    try:
        address = ipaddress.ip_address((req.remote_addr or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_loopback:
        return False
    if any(h in req.headers for h in ("Forwarded", "X-Forwarded-For", "X-Real-Ip")):
        return False  # a proxy on this machine relays requests from elsewhere
    # A page elsewhere may point a DNS name at 127.0.0.1 (DNS rebinding); such
    # requests carry that name in Host.
    host = req.host.rsplit(":", 1)[0] if not req.host.endswith("]") else req.host
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The options of one mounted dashboard and the helpers its views share."""

    def __init__(
        self,
        spooler: Spooler,
        *,
        access: AccessCheck | None,
        read_only: bool,
        insecure_local: bool,
        redact: Iterable[str | re.Pattern[str]],
        page_size: int,
        refresh: float,
        secret_key: str | bytes | None,
    ) -> None:
        if not isinstance(spooler, Spooler):
            raise ConfigurationError(f"the dashboard takes a Spooler, not {type(spooler).__name__}")
        if access is not None and not callable(access):
            raise ConfigurationError(
                "access= takes a function of the request returning 'full', 'read-only' or "
                f"'forbidden', not {type(access).__name__}"
            )
        if access is not None and insecure_local:
            raise ConfigurationError(
                "pass access= or insecure_local=True, not both: insecure_local skips the "
                "access check for requests from this machine"
            )
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 500:
            raise ConfigurationError(f"page_size= must be an int from 1 to 500, not {page_size!r}")
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) or not (
            refresh == 0 or 0.5 <= refresh <= 3600
        ):
            raise ConfigurationError(
                f"refresh= is seconds between live updates (0.5 to 3600, or 0 for none), not {refresh!r}"
            )
        self.spooler = spooler
        self.access = access
        self.read_only = bool(read_only)
        self.insecure_local = bool(insecure_local)
        self.page_size = page_size
        self.refresh = float(refresh)
        self.secret_key = secret_key
        self.presenter = Presenter(spooler, Redactor(redact))
        # used when neither secret_key= nor the app's SECRET_KEY is set
        self._process_secret = secrets.token_bytes(32)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, iso=iso, clip=clip)
        self.env.globals.update(url_for=url_for, SHORT=SHORT, csrf_token=self.csrf_token)

    # -- access ------------------------------------------------------------------------
    def level(self, req: Request) -> tuple[Level, str] | Response:
        """Who is asking: the access level and, when forbidden, why."""
        if self.access is not None:
            verdict = self.access(req)
            if isinstance(verdict, Response):
                return verdict
            if verdict is None or verdict == "forbidden":
                return "forbidden", REFUSED
            if verdict not in ("full", "read-only"):
                log.warning(
                    "the dashboard's access check returned %s; it must return 'full', "
                    "'read-only', 'forbidden' or None (the request was refused)",
                    type(verdict).__name__,
                )
                return "forbidden", REFUSED
            level: Level = "full" if verdict == "full" else "read-only"
        elif self.insecure_local:
            if not _local(req):
                return "forbidden", NOT_LOCAL
            level = "full"
        else:
            return "forbidden", NO_ACCESS_CHECK
        if self.read_only:
            level = "read-only"
        return level, ""

    # -- CSRF --------------------------------------------------------------------------
    def _csrf_key(self) -> bytes:
        secret = self.secret_key or current_app.config.get("SECRET_KEY") or self._process_secret
        if isinstance(secret, str):
            secret = secret.encode()
        return hmac.new(bytes(secret), b"spoolhouse.dashboard.csrf", hashlib.sha256).digest()

    def _nonce(self) -> str:
        nonce: str | None = g.get("spoolhouse_csrf_nonce")
        if nonce is None:
            cookie = request.cookies.get(CSRF_COOKIE, "")
            if re.fullmatch(r"[0-9a-f]{32}", cookie):
                nonce = cookie
            else:
                nonce = secrets.token_hex(16)
                g.spoolhouse_csrf_new = nonce  # set as a cookie on the response
            g.spoolhouse_csrf_nonce = nonce
        return nonce

    def _mac(self, nonce: str, stamp: str) -> str:
        return hmac.new(self._csrf_key(), f"{nonce}|{stamp}".encode(), hashlib.sha256).hexdigest()

    def csrf_token(self) -> str:
        """A token for one form: a time stamp and an HMAC binding it to this browser's cookie."""
        stamp = str(int(time.time()))
        return f"{stamp}.{self._mac(self._nonce(), stamp)}"

    def csrf_problem(self, req: Request) -> str | None:
        """Why a POST must be refused, or ``None`` when its token is good."""
        origin = req.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != req.host:
            return "Refused: the form was sent from another site (cross-origin POST)."
        token = req.form.get("csrf_token") or req.headers.get("X-CSRF-Token") or ""
        nonce = req.cookies.get(CSRF_COOKIE, "")
        stamp, _, mac = token.partition(".")
        if not token or not nonce:
            return "Refused: the form carries no CSRF token. Reload the page and try again."
        if not stamp.isdigit() or not hmac.compare_digest(mac, self._mac(nonce, stamp)):
            return "Refused: the CSRF token is not valid. Reload the page and try again."
        age = time.time() - int(stamp)
        if age > CSRF_MAX_AGE or age < -300:
            return "Refused: the form has expired. Reload the page and try again."
        return None

    # -- rendering ---------------------------------------------------------------------
    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        level = g.get("spoolhouse_dashboard_access")
        html = self.env.get_template(template).render(
            access=level,
            can_act=level == "full",
            refresh=self.refresh,
            now=self.spooler.clock.now(),
            **context,
        )
        return Response(html, status=status, mimetype="text/html")

    def error(self, status: int, message: str) -> Response:
        return self.render("error.html", status=status, message=message, title=str(status))

    def ago(self, ts: float | None) -> str:
        return ago(ts, self.spooler.clock.now())


def build_blueprint(
    spooler: Spooler,
    *,
    access: AccessCheck | None,
    read_only: bool,
    insecure_local: bool,
    redact: Iterable[str | re.Pattern[str]],
    page_size: int,
    refresh: float,
    secret_key: str | bytes | None,
    name: str,
) -> Blueprint:
    dash = Dashboard(
        spooler, access=access, read_only=read_only, insecure_local=insecure_local,
        redact=redact, page_size=page_size, refresh=refresh, secret_key=secret_key,
    )
    dash.env.filters["ago"] = dash.ago
    bp = Blueprint(name, __name__, static_folder=str(HERE / "static"), static_url_path="/assets")
    backend_of: Callable[[], Any] = lambda: spooler.backend  # noqa: E731  # opened lazily, per process

    # -- every request ---------------------------------------------------------------
    @bp.before_request
    def guard() -> Response | None:
        if (request.endpoint or "").rsplit(".", 1)[-1] == "static":
            return None  # the package's CSS and JS: no secrets
        verdict = dash.level(request)
        if isinstance(verdict, Response):
            return verdict
        level, reason = verdict
        if level == "forbidden":
            return dash.error(403, reason)
        g.spoolhouse_dashboard_access = level
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if level != "full":
                return dash.error(403, "Read-only access: actions are not allowed.")
            problem = dash.csrf_problem(request)
            if problem is not None:
                return dash.error(403, problem)
        return None

    @bp.after_request
    def secure_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if (request.endpoint or "").rsplit(".", 1)[-1] != "static":
            response.headers["Cache-Control"] = "no-store"
        nonce = g.get("spoolhouse_csrf_new")
        if nonce is not None:
            response.set_cookie(
                CSRF_COOKIE, nonce, httponly=True, samesite="Strict", secure=request.is_secure,
                path=url_for(".overview"),
            )
        return response

    @bp.errorhandler(SpoolhouseError)
    def store_error(exc: SpoolhouseError) -> Response:
        log.warning("dashboard: %s", exc)
        return dash.error(503, f"The job store cannot be read right now: {exc}")

    # -- pages -----------------------------------------------------------------------
    def overview_context() -> dict[str, Any]:
        backend = backend_of()
        now = spooler.clock.now()
        counts: dict[str, dict[str, int]] = backend.counts()
        states = [s.value for s in JobState]
        totals = {s: sum(row.get(s, 0) for row in counts.values()) for s in states}
        try:
            stats = backend.stats(since=now - 3600)
        except (AttributeError, NotImplementedError):
            stats = None
        running = backend.list_jobs(state=JobState.RUNNING.value, limit=RUNNING_SHOWN)
        workers: dict[str, list[Any]] = {}
        for job in running:
            workers.setdefault(job.worker_id or "(unknown)", []).append(
                dash.presenter.view(job, now=now, full=False)
            )
        return {
            "counts": [(q, counts[q]) for q in sorted(counts)],
            "states": states,
            "totals": totals,
            "chart": None if stats is None else throughput_chart(stats, now=now),
            "workers": sorted(workers.items()),
            "running_capped": len(running) >= RUNNING_SHOWN,
            "running_shown": RUNNING_SHOWN,
        }

    @bp.get("/")
    def overview() -> Response:
        return dash.render("overview.html", title="Overview", page="overview",
                           store=backend_of().url, **overview_context())

    @bp.get("/live/overview")
    def overview_live() -> Response:
        return dash.render("_overview_live.html", **overview_context())

    @bp.get("/jobs")
    def jobs() -> Response:
        args = request.args
        filters = {k: (args.get(k) or "").strip()[:500] or None for k in ("state", "queue", "task", "key")}
        if filters["state"] is not None and filters["state"] not in {s.value for s in JobState}:
            return dash.error(400, "Unknown state: choose pending, running, succeeded, failed or cancelled.")
        search = (args.get("q") or "").strip()[:500]
        backend = backend_of()
        searched_key = False
        if search:
            if len(search) <= 64 and backend.get(search) is not None:
                return _redirect(".job", job_id=search)
            filters["key"] = search
            searched_key = True
        cursor = (args.get("cursor") or "").strip()[:64] or None
        page = backend.list_jobs(limit=dash.page_size + 1, cursor=cursor, **filters)
        more = len(page) > dash.page_size
        page = page[: dash.page_size]
        now = spooler.clock.now()
        active = {k: v for k, v in filters.items() if v is not None}
        return dash.render(
            "jobs.html",
            title="Jobs",
            page="failed" if filters["state"] == "failed" else "jobs",
            rows=[dash.presenter.view(j, now=now, full=False) for j in page],
            filters=filters,
            active=active,
            search=search,
            searched_key=searched_key,
            cursor=cursor,
            next_cursor=page[-1].id if more and page else None,
            states=[s.value for s in JobState],
            queues=spooler.queues(),
            tasks=list(spooler.registry),
            notice=_notice(args),
            retryable=filters["state"] in ("failed", "cancelled"),
            purgeable=filters["state"] in {s.value for s in FINAL_STATES},
        )

    @bp.get("/jobs/<job_id>")
    def job(job_id: str) -> Response:
        found = backend_of().get(job_id) if len(job_id) <= 64 else None
        if found is None:
            return dash.error(404, "No such job: it was never stored, or it was pruned or deleted.")
        view = dash.presenter.view(found, now=spooler.clock.now(), full=True)
        return dash.render("job.html", title=f"Job {found.id}", page="jobs", view=view,
                           notice=_notice(request.args))

    @bp.get("/jobs/<job_id>/live")
    def job_live(job_id: str) -> Response:
        found = backend_of().get(job_id) if len(job_id) <= 64 else None
        if found is None:
            return dash.error(404, "No such job.")
        view = dash.presenter.view(found, now=spooler.clock.now(), full=True)
        return dash.render("_job_live.html", view=view)

    @bp.get("/periodic")
    def periodic() -> Response:
        now = spooler.clock.now()
        ticks = backend_of().schedule_ticks() if spooler.schedules else {}
        rows = []
        for sched_name, schedule in sorted(spooler.schedules.items()):
            try:
                described, next_run = schedule.describe(), schedule.next_tick(now)
            except ConfigurationError as exc:
                described, next_run = str(exc), None
            rows.append({"name": sched_name, "task": schedule.task.name, "schedule": described,
                         "next_run": next_run, "last_run": ticks.get(sched_name),
                         "missed": schedule.missed})
        return dash.render("periodic.html", title="Periodic tasks", page="periodic", rows=rows)

    # -- actions (POST only; the guard checked access and the CSRF token) ----------------
    @bp.post("/jobs/<job_id>/retry")
    def retry_job(job_id: str) -> Response:
        ok = backend_of().requeue(job_id, now=spooler.clock.now())
        return _redirect(".job", job_id=job_id, done="requeued" if ok else "requeue-refused")

    @bp.post("/jobs/<job_id>/cancel")
    def cancel_job(job_id: str) -> Response:
        outcome = backend_of().cancel(job_id, now=spooler.clock.now())
        done = {CancelResult.CANCELLED: "cancelled", CancelResult.ABORTING: "aborting"}.get(
            outcome, "cancel-refused")
        return _redirect(".job", job_id=job_id, done=done)

    @bp.post("/jobs/<job_id>/delete")
    def delete_job(job_id: str) -> Response:
        if request.form.get("confirm") != "yes":
            return dash.render(
                "confirm.html", title="Delete this job?", page="jobs",
                question=f"Delete job {job_id}? Its record, arguments and result are removed for good.",
                action=url_for(".delete_job", job_id=job_id), fields=[], ids=[],
                back=url_for(".job", job_id=job_id), button="Delete the job",
            )
        n = backend_of().delete([job_id])
        if n == 0:
            return _redirect(".job", job_id=job_id, done="delete-refused")
        return _redirect(".jobs", done="deleted", n=1, of=1)

    @bp.post("/bulk")
    def bulk() -> Response:
        form = request.form
        action = form.get("action", "")
        if action not in ("retry", "cancel", "delete"):
            return dash.error(400, "Unknown action: use retry, cancel or delete.")
        ids = list(dict.fromkeys(i for i in form.getlist("job_id") if 0 < len(i) <= 64))
        back = _list_filters(form)
        if not ids:
            return _redirect(".jobs", done="none-selected", **back)
        if len(ids) > MAX_SELECTED:
            return dash.error(400, f"Select at most {MAX_SELECTED} jobs at once.")
        if form.get("confirm") != "yes":
            verbs = {
                "retry": "Requeue {n} selected job(s)? Failed and cancelled ones run again with "
                         "their attempts reset; others are left alone.",
                "cancel": "Cancel {n} selected job(s)? Pending ones will not run; running ones "
                          "are asked to stop.",
                "delete": "Delete {n} selected job(s) for good? Only finished jobs (succeeded, "
                          "failed, cancelled) are deleted.",
            }
            return dash.render(
                "confirm.html", title="Confirm", page="jobs",
                question=verbs[action].format(n=len(ids)), action=url_for(".bulk"),
                fields=[("action", action), *back.items()], ids=ids,
                back=url_for(".jobs", **back), button=f"{action.capitalize()} {len(ids)} job(s)",
            )
        backend = backend_of()
        now = spooler.clock.now()
        if action == "retry":
            n = sum(1 for i in ids if backend.requeue(i, now=now))
        elif action == "cancel":
            n = sum(1 for i in ids if backend.cancel(i, now=now) is not CancelResult.NOOP)
        else:
            n = backend.delete(ids)
        return _redirect(".jobs", done=action, n=n, of=len(ids), **back)

    @bp.post("/purge")
    def purge() -> Response:
        form = request.form
        state = form.get("state", "")
        if state not in {s.value for s in FINAL_STATES}:
            return dash.error(400, "Only succeeded, failed or cancelled jobs can be deleted.")
        queue = form.get("queue") or None
        where = f" in queue {queue!r}" if queue else " in every queue"
        if form.get("confirm") != "yes":
            fields = [("state", state)] + ([("queue", queue)] if queue else [])
            return dash.render(
                "confirm.html", title="Confirm", page="jobs",
                question=f"Delete every {state} job{where}, for good?",
                action=url_for(".purge"), fields=fields, ids=[],
                back=url_for(".jobs", state=state, queue=queue), button=f"Delete all {state} jobs",
            )
        n = backend_of().purge(states=[state], queue=queue)
        return _redirect(".jobs", done="purged", n=n, state=state, queue=queue)

    @bp.post("/retry-all")
    def retry_all() -> Response:
        form = request.form
        back = _list_filters(form)
        state = back.get("state")
        if state not in ("failed", "cancelled"):
            return dash.error(400, "Only failed or cancelled jobs can be retried.")
        if form.get("confirm") != "yes":
            scope = ", ".join(f"{k} {v!r}" for k, v in back.items() if k != "state")
            return dash.render(
                "confirm.html", title="Confirm", page="jobs",
                question=f"Requeue every {state} job{' with ' + scope if scope else ''}? "
                         f"(At most {RETRY_ALL_LIMIT} per run.)",
                action=url_for(".retry_all"), fields=list(back.items()), ids=[],
                back=url_for(".jobs", **back), button=f"Requeue all {state} jobs",
            )
        backend = backend_of()
        now = spooler.clock.now()
        n, cursor, exhausted = 0, None, False
        while n < RETRY_ALL_LIMIT:
            batch = backend.list_jobs(limit=min(500, RETRY_ALL_LIMIT - n), cursor=cursor, **back)
            if not batch:
                exhausted = True
                break
            n += sum(1 for j in batch if backend.requeue(j.id, now=now))
            cursor = batch[-1].id
        return _redirect(".jobs", done="retried-all" if exhausted else "retried-some", n=n, **back)

    return bp


def _list_filters(form: Any) -> dict[str, Any]:
    """The list filters a form carried, to return to the same list."""
    out: dict[str, Any] = {}
    for key in ("state", "queue", "task", "key"):
        value = (form.get(key) or "").strip()[:500]
        if value:
            out[key] = value
    if "state" in out and out["state"] not in {s.value for s in JobState}:
        del out["state"]
    return out


def _redirect(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **{k: v for k, v in values.items() if v is not None}), 303)


def _notice(args: Any) -> str | None:
    """The message after an action, from a fixed list (never text from the URL)."""
    done = args.get("done", "")
    if done in _DONE:
        return _DONE[done]
    if done in _COUNTED:
        try:
            n, of = int(args.get("n", "0")), int(args.get("of", "0"))
        except ValueError:
            return None
        return _COUNTED[done].format(n=n, of=of)
    return None


__all__ = ["AccessCheck", "Dashboard", "build_blueprint"]
