"""What a page shows of a job: decoded, redacted and clipped text.

No Flask here: :class:`Presenter` turns a :class:`~spoolhouse.job.Job` into a
:class:`JobView` whose every string is safe to show (secrets redacted, sizes
bounded); the templates only escape and lay it out.
"""

from __future__ import annotations

import inspect
import json
import pprint
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..context import Progress
from ..job import FINAL_STATES, Job, JobState, shown_status
from ..lifecycle import parse_error
from ..redact import MARK, Redactor

if TYPE_CHECKING:
    from ..spooler import Spooler

#: Longest argument text in a list row; keeps a page of 50 rows far below 1 MiB.
SHORT = 160
#: Longest argument, result or traceback text on a job's page.
LONG = 64 * 1024

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlevel = 3
_short_repr.maxdict = 5
_short_repr.maxlist = 5
_short_repr.maxtuple = 5
_short_repr.maxset = 5


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def when(ts: float | None) -> str:
    """``2024-05-01 12:00:00 UTC``, or ``-``."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def ago(ts: float | None, now: float) -> str:
    """``5s ago``, ``in 3m``, ``2h 5m ago``."""
    if ts is None:
        return "-"
    delta = now - ts
    future = delta < 0
    seconds = int(abs(delta))
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m"
    elif seconds < 86400:
        text = f"{seconds // 3600}h {seconds % 3600 // 60}m"
    else:
        text = f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    return f"in {text}" if future else f"{text} ago"


@dataclass(frozen=True, kw_only=True)
class JobView:
    """A job as a page shows it. Every text field is redacted and bounded."""

    job: Job
    status: str  # shown_status: pending, scheduled, retrying, running, …
    args: str  # the call, redacted (one line in lists, one argument a line on the job's page)
    args_problem: str | None = None  # why the arguments cannot be shown
    result: str | None = None  # the return value, redacted (job page only)
    result_problem: str | None = None
    error: dict[str, str] = field(default_factory=dict)  # reason, type, message, traceback
    progress: Progress | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def can_retry(self) -> bool:
        return self.job.state in (JobState.FAILED, JobState.CANCELLED)

    @property
    def can_cancel(self) -> bool:
        return self.job.state in (JobState.PENDING, JobState.RUNNING) and not self.job.abort_requested

    @property
    def can_delete(self) -> bool:
        return self.job.state in FINAL_STATES

    @property
    def live(self) -> bool:
        """Whether the job may still change by itself (its page refreshes)."""
        return self.job.state in (JobState.PENDING, JobState.RUNNING)

    @property
    def error_line(self) -> str:
        """``Type: message`` on one short line, for lists."""
        if not self.error:
            return ""
        head = ": ".join(p for p in (self.error.get("type", ""), self.error.get("message", "")) if p)
        return clip(" ".join(head.split()), SHORT)


class Presenter:
    """Builds :class:`JobView` records with a spooler's serializer and a redactor."""

    def __init__(self, spooler: Spooler, redactor: Redactor) -> None:
        self.spooler = spooler
        self.redactor = redactor
        self._names: dict[str, tuple[str, ...]] = {}

    def positional_names(self, task: str) -> tuple[str, ...]:
        """Names of the task's positional parameters, when the task is registered here.

        A ``*args`` parameter names every extra positional argument.
        """
        names = self._names.get(task)
        if names is not None:
            return names
        if task not in self.spooler.registry:
            return ()  # not cached: the store may name any number of unknown tasks
        found: list[str] = []
        try:
            params = list(inspect.signature(self.spooler.registry.get(task).fn).parameters.values())
        except (TypeError, ValueError):  # a callable without a signature
            params = []
        for param in params:
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                found.append(param.name)
            elif param.kind is param.VAR_POSITIONAL:
                found.extend([param.name] * 256)  # the positional arguments that follow
                break
        names = tuple(found)
        self._names[task] = names
        return names

    def view(self, job: Job, *, now: float, full: bool) -> JobView:
        """The job as a list row (``full=False``) or as its own page."""
        # First redact every structure, collecting the hidden values; then
        # scrub all text of the job with the whole collection.
        secrets: set[str] = set()
        call: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        args_problem = None
        try:
            args, kwargs = self.spooler.serializer.loads_call(job.payload)
        except Exception as exc:  # whatever a serializer raises on bytes it did not write
            args_problem = _problem("arguments", exc)
        else:
            call = self.redactor.call(args, kwargs, self.positional_names(job.task), secrets)
        value: Any = None
        result_problem = None
        if full and job.result is not None:
            try:
                value = self.redactor.value(self.spooler.serializer.loads_value(job.result), secrets)
            except Exception as exc:
                result_problem = _problem("result", exc)
        scrub: Callable[[str], str] = lambda text: self.redactor.text(text, secrets)  # noqa: E731
        args_text = ""
        if call is not None:
            limit = None if full else 8  # a preview shows at most 5 items of a container
            shown_args = self.redactor.strings(call[0], secrets, limit=limit)
            shown_kwargs = self.redactor.strings(call[1], secrets, limit=limit)
            if full:
                text = _call_long(shown_args, shown_kwargs, self.positional_names(job.task))
            else:
                text = _call_short(shown_args, shown_kwargs)
            args_text = clip(scrub(text), LONG if full else SHORT)
        result = None
        if full and job.result is not None and result_problem is None:
            shown = self.redactor.strings(value, secrets)
            result = clip(scrub(pprint.pformat(shown, width=100)), LONG)
        error = {
            key: clip(scrub(text), LONG if full else SHORT * 2)
            for key, text in parse_error(job.error).items()
            if full or key != "traceback"
        }
        progress = Progress.from_json(job.progress)
        if progress is not None and progress.message:
            progress = Progress(current=progress.current, total=progress.total,
                                message=clip(scrub(progress.message), 500))
        return JobView(
            job=job,
            status=shown_status(job, now),
            args=args_text,
            args_problem=args_problem,
            result=result,
            result_problem=result_problem,
            error=error,
            progress=progress,
            headers=self._headers(job) if full else {},
        )

    def _headers(self, job: Job) -> dict[str, str]:
        if not job.headers:
            return {}
        try:
            data = json.loads(job.headers)
        except ValueError:
            return {"(unreadable)": MARK}
        if not isinstance(data, dict):
            return {}
        return {
            clip(str(k), 200): MARK if self.redactor.is_secret(k) else clip(str(v), 2000)
            for k, v in data.items()
        }


def _problem(what: str, exc: Exception) -> str:
    # Only the exception's type: its message may quote the undecodable bytes.
    return (
        f"cannot decode the {what} ({type(exc).__name__}); the dashboard decodes with "
        "the spooler's serializer, which must be the one the producer used"
    )


def _call_short(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [_short_repr.repr(a) for a in args]
    parts += [f"{k}={_short_repr.repr(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _call_long(args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...]) -> str:
    lines = [
        f"{names[i] if i < len(names) else f'args[{i}]'} = {pprint.pformat(a, width=100)}"
        for i, a in enumerate(args)
    ]
    lines += [f"{k} = {pprint.pformat(v, width=100)}" for k, v in kwargs.items()]
    return "\n".join(lines) if lines else "(no arguments)"
