"""uWSGI's spooler API on Spoolhouse: change the imports, keep the code.

::

    # before                                      # after
    import uwsgi                                  from spoolhouse.contrib import uwsgi
    from uwsgidecorators import spool, thread     from spoolhouse.contrib.uwsgi import spool, thread
    from uwsgi_tasks import task                  from spoolhouse.contrib.uwsgi import task

and run ``spoolhouse --app tasks worker`` (or ``flask spool worker``) instead of
``uwsgi --ini uwsgi.ini``. Jobs go to the module-level :data:`spooler`, whose
store is ``$SPOOLHOUSE_URL`` or ``sqlite:///spoolhouse.db`` in the working
directory; :func:`configure` changes it.

What a spooler function receives (``@spool``, ``@spoolraw``, ``@spoolforever``
without ``pass_arguments``): one dict with **str keys and str values**, what
``uwsgidecorators`` hands a spooler function on Python 3 (it decodes both).
The caller may pass bytes or str keys and values (the bytes-only dicts uWSGI
forced on Python 3 work), and numbers, which are turned into str. Values that
are not valid UTF-8 stay bytes. Other values are refused: pass them with
``pass_arguments=True``, which stores the call's own arguments (JSON with
tagged types, never pickle) and calls the function with them.

The keys ``at`` (Unix time; a datetime or timedelta also works) and
``priority`` are options, not arguments, exactly as in uWSGI: they set when
the job runs and its priority, and the function does not receive them.
``spooler`` (a spool directory, in uWSGI) is ignored: there is one store.

Return codes, honoured by all three decorators (``uwsgidecorators.spool``
reported ``SPOOL_OK`` whatever the function returned; the seed's code, which
returns ``SPOOL_RETRY`` to ask for a retry, shows what people expect):

``SPOOL_OK`` (or ``None``, or any other value)
    done: the job succeeds.
``SPOOL_RETRY``
    run again later, with backoff; each retry counts, and after ``retries``
    of them the job ends ``failed`` (uWSGI looped forever).
``SPOOL_IGNORE``
    skip: the job ends ``succeeded`` without doing anything more.

An exception counts like ``SPOOL_RETRY``. ``@spoolforever`` runs the job again
``interval`` seconds after every run that does not ask otherwise.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..backends import DEFAULT_URL
from ..errors import Retry
from ..handle import JobHandle
from ..registry import default_name
from ..spooler import Spooler
from ..task import BoundTask, Task
from ..threads import thread_decorator

__all__ = [
    "SPOOL_OK",
    "SPOOL_RETRY",
    "SPOOL_IGNORE",
    "spooler",
    "configure",
    "spool",
    "spoolraw",
    "spoolforever",
    "thread",
    "timer",
    "rbtimer",
    "cron",
    "task",
    "TaskExecutor",
    "RetryTaskException",
    "SpoolFunction",
    "UwsgiTask",
]

log = logging.getLogger("spoolhouse.contrib.uwsgi")

#: The task is done (uWSGI's value).
SPOOL_OK = -2
#: Run the task again later (uWSGI's value); here counted, with backoff, then ``failed``.
SPOOL_RETRY = -1
#: Skip the task (uWSGI's value).
SPOOL_IGNORE = 0

#: Seconds between runs of a ``@spoolforever`` task (uWSGI's spooler-frequency default).
FOREVER_INTERVAL = 30.0

#: The spooler every decorator here uses unless given ``spooler=``. Its store
#: is ``$SPOOLHOUSE_URL``, else ``sqlite:///spoolhouse.db`` in the working directory.
#: Run workers for it with ``spoolhouse --app tasks worker`` (the module that
#: defines the tasks) or ``spoolhouse --app spoolhouse.contrib.uwsgi:spooler
#: worker`` with ``SPOOLHOUSE_IMPORT=tasks`` (uWSGI's ``spooler-import``).
spooler = Spooler(os.environ.get("SPOOLHOUSE_URL") or DEFAULT_URL)

#: Option keys of a uWSGI spool dict: never passed to the function.
_OPTION_KEYS = ("at", "priority", "spooler")
#: Keys ``uwsgidecorators`` takes out of the keyword arguments with ``pass_arguments``.
_PASS_ARGUMENTS_OPTION_KEYS = ("at", "priority", "spooler", "message_dict")


def default_spooler() -> Spooler:
    """The module-level :data:`spooler` (for code where a parameter shadows the name)."""
    return spooler


def configure(url: str | None = None, **backend_options: Any) -> None:
    """Point the module-level :data:`spooler` at another store.

    >>> from spoolhouse.contrib import uwsgi
    >>> uwsgi.configure("sqlite:////var/spool/app.db")   # doctest: +SKIP
    """
    spooler.configure(url, **backend_options)


# -- spool / spoolraw / spoolforever ------------------------------------------------------
class SpoolFunction:
    """What ``@spool``, ``@spoolraw`` and ``@spoolforever`` return.

    As in uWSGI, calling it (or its ``.spool``) **stores a job** instead of
    running the function, and returns a :class:`~spoolhouse.JobHandle` (uWSGI
    returned the spool file's name). The function itself is at ``.fn``; the
    Spoolhouse task that runs it is at ``.task``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        kind: str,
        pass_arguments: bool,
        spooler: Spooler,
        name: str | None,
        queue: str,
        retries: int,
        backoff: float,
        timeout: float | None,
        interval: float,
    ) -> None:
        if kind not in ("spool", "spoolraw", "spoolforever"):
            raise ValueError(kind)
        self.fn = fn
        self.kind = kind
        self.pass_arguments = pass_arguments
        self.spooler = spooler
        self.interval = interval
        functools.update_wrapper(self, fn)
        task_name = name or default_name(fn)
        if pass_arguments:

            @functools.wraps(fn)
            def run_call(*args: Any, **kwargs: Any) -> None:
                return self._finish(fn(*args, **kwargs))

            runner: Callable[..., Any] = run_call
        else:

            def run_dict(arguments: dict[str, Any]) -> None:
                return self._finish(fn(arguments))

            runner = run_dict
        self.task: Task[..., Any] = spooler.task(
            name=task_name, queue=queue, retries=retries, backoff=backoff, timeout=timeout
        )(runner)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.task.name}>"

    def _finish(self, returned: object) -> None:
        code = _code(returned)
        if code == SPOOL_RETRY:
            raise Retry(reason="the task returned SPOOL_RETRY")
        if code == SPOOL_IGNORE:
            log.info("%s returned SPOOL_IGNORE; skipped", self.task.name)
            return None
        if self.kind == "spoolforever":
            raise Retry(delay=self.interval, count=False, reason="spoolforever: run again")
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> JobHandle[Any]:
        """Store a job: ``f.spool({'duration': '5'})``, ``f.spool(duration=5, at=ts)``."""
        if self.pass_arguments:
            options = {key: kwargs.pop(key) for key in _PASS_ARGUMENTS_OPTION_KEYS
                       if key in kwargs}
            return self._with(options).spool(*args, **kwargs)
        if len(args) > 1:
            raise TypeError(
                f"{self.task.name}.spool() takes one dict of arguments and/or keyword "
                f"arguments, not {len(args)} positional arguments; to pass a call's own "
                "arguments decorate the function with @spool(pass_arguments=True)"
            )
        merged: dict[str, Any] = {}
        if args:
            if not isinstance(args[0], Mapping):
                raise TypeError(
                    f"{self.task.name}.spool() takes a dict of arguments, not "
                    f"{type(args[0]).__name__}; or use @spool(pass_arguments=True)"
                )
            for key, value in args[0].items():
                merged[_text_key(key)] = value
        for key, value in kwargs.items():
            merged[key] = value
        options = {key: merged.pop(key) for key in _OPTION_KEYS if key in merged}
        arguments = {key: _text_value(key, value) for key, value in merged.items()}
        return self._with(options).spool(arguments)

    spool = __call__

    def _with(self, options: dict[str, Any]) -> Task[..., Any] | BoundTask[..., Any]:
        options.pop("spooler", None)
        options.pop("message_dict", None)
        when = _when(options.pop("at", None))
        priority = options.pop("priority", None)
        if priority is not None:
            # uWSGI runs lower priority numbers first (spooler-ordered); Spoolhouse higher
            when["priority"] = -_number(priority, "priority", int)
        return self.task.options(**when) if when else self.task


def _code(returned: object) -> int | None:
    if isinstance(returned, bool) or not isinstance(returned, int):
        return None
    return returned if returned in (SPOOL_OK, SPOOL_RETRY, SPOOL_IGNORE) else None


def _text_key(key: object) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8")
    if isinstance(key, str):
        return key
    raise TypeError(f"spool argument names are str or bytes, not {key!r}")


def _text_value(key: str, value: object) -> str | bytes:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(
        f"spool argument {key!r} is a {type(value).__name__}; a uWSGI spool dict holds "
        "strings (numbers are turned into strings). Pass it as a string, or decorate the "
        "function with @spool(pass_arguments=True) to pass any JSON-able value"
    )


def _number(value: object, what: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{what}= takes a number, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise TypeError(f"{what}= takes a number, not {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{what}= must be a finite number, not {value!r}")
    return int(number) if kind is int else number


def _when(at: object) -> dict[str, Any]:
    """uWSGI's ``at`` (Unix time as int/float/str/bytes), a datetime or a timedelta."""
    if at is None:
        return {}
    if isinstance(at, timedelta):
        return {"delay": at}
    if isinstance(at, datetime):
        # naive datetimes are UTC, as uwsgi_tasks read them
        return {"at": at if at.tzinfo is not None else at.replace(tzinfo=UTC)}
    return {"at": datetime.fromtimestamp(_number(at, "at", float), UTC)}


def _decorator(
    kind: str,
    f: Callable[..., Any] | None,
    pass_arguments: bool,
    options: dict[str, Any],
) -> Any:
    def decorate(fn: Callable[..., Any]) -> SpoolFunction:
        return SpoolFunction(
            fn,
            kind=kind,
            pass_arguments=pass_arguments,
            spooler=options.get("spooler") or default_spooler(),
            name=options.get("name"),
            queue=options.get("queue", "default"),
            retries=options.get("retries", 3),
            backoff=options.get("backoff", 1.0),
            timeout=options.get("timeout"),
            interval=options.get("interval", FOREVER_INTERVAL),
        )

    if f is not None:
        return decorate(f)
    return decorate


def spool(
    f: Callable[..., Any] | None = None,
    pass_arguments: bool = False,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | None = None,
    spooler: Spooler | None = None,
) -> Any:
    """uWSGI's ``@spool``: calling the function (or ``.spool``) stores a job.

    ``retries``, ``backoff`` (seconds before the first retry, doubling),
    ``timeout`` (uWSGI's ``spooler-harakiri``, per task), ``queue``, ``name``
    and ``spooler`` are Spoolhouse's additions.

    Example (the seed's task, imports changed)::

        from spoolhouse.contrib import uwsgi
        from spoolhouse.contrib.uwsgi import spool

        @spool
        def spool_task(args):
            duration = int(args['duration'])
            ...
            return uwsgi.SPOOL_OK

        spool_task.spool({b'duration': b'5', b'at': b'1700000000'})
    """
    return _decorator("spool", f, pass_arguments, {
        "name": name, "queue": queue, "retries": retries, "backoff": backoff,
        "timeout": timeout, "spooler": spooler,
    })


def spoolraw(
    f: Callable[..., Any] | None = None,
    pass_arguments: bool = False,
    *,
    name: str | None = None,
    queue: str = "default",
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | None = None,
    spooler: Spooler | None = None,
) -> Any:
    """uWSGI's ``@spoolraw``: like :func:`spool` (here both honour the return code)."""
    return _decorator("spoolraw", f, pass_arguments, {
        "name": name, "queue": queue, "retries": retries, "backoff": backoff,
        "timeout": timeout, "spooler": spooler,
    })


def spoolforever(
    f: Callable[..., Any] | None = None,
    pass_arguments: bool = False,
    *,
    interval: float = FOREVER_INTERVAL,
    name: str | None = None,
    queue: str = "default",
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float | None = None,
    spooler: Spooler | None = None,
) -> Any:
    """uWSGI's ``@spoolforever``: the job runs again ``interval`` seconds after each run.

    It stops only when the function returns ``SPOOL_IGNORE``, when it is
    cancelled (``spoolhouse jobs cancel``), or when it fails more than
    ``retries`` times in a row.
    """
    return _decorator("spoolforever", f, pass_arguments, {
        "name": name, "queue": queue, "retries": retries, "backoff": backoff,
        "timeout": timeout, "spooler": spooler, "interval": interval,
    })


# -- thread / timer / cron ----------------------------------------------------------------
def thread(f: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """uWSGI's ``@thread``, on a bounded pool: see :mod:`spoolhouse.threads`.

    Calling the function returns a :class:`~concurrent.futures.Future` at once
    (uWSGI returned the function). At most ``max_workers`` (4) threads and
    ``max_pending`` (64) waiting calls; one more raises ``QueueFull`` where
    uWSGI started yet another thread. Not durable: use :func:`spool` for work
    that must survive a restart.
    """
    return thread_decorator(options.pop("spooler", None) or default_spooler(), f, **options)


def _periodic_name(kind: str, fn: Callable[..., Any]) -> str:
    return f"uwsgi.{kind}:{fn.__module__}.{fn.__qualname__}"


def _signal_handler(fn: Callable[..., Any], signum: int) -> Callable[[], Any]:
    """uWSGI calls timer and cron handlers with the signal number; keep that shape."""

    def run() -> Any:
        return fn(signum)

    run.__module__ = fn.__module__
    run.__qualname__ = fn.__qualname__
    run.__name__ = fn.__name__
    return run


def timer(
    secs: float, target: str = "", *, spooler: Spooler | None = None, signum: int = 0
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """uWSGI's ``@timer(secs)``: run the function every ``secs`` seconds, as a periodic task.

    It runs once per tick across every worker process and host sharing the
    store, inside a worker (``target`` is accepted and ignored: uWSGI's
    ``target='spooler'`` is what Spoolhouse always does). The function is
    called with ``signum`` like a uWSGI signal handler; calling the decorated
    function directly still works. See :meth:`spoolhouse.Spooler.periodic`.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        owner = spooler or default_spooler()
        owner.periodic(every=secs, name=_periodic_name("timer", fn), retries=0)(
            _signal_handler(fn, signum)
        )
        return fn

    return decorate


def rbtimer(
    secs: float, target: str = "", *, spooler: Spooler | None = None, signum: int = 0
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """uWSGI's ``@rbtimer``: the same as :func:`timer` here (one run per tick)."""
    return timer(secs, target, spooler=spooler, signum=signum)


def _cron_field(value: int) -> str:
    if value == -1:
        return "*"
    if value < -1:
        return f"*/{-value}"  # uWSGI: -N means every N
    return str(value)


def cron(
    minute: int,
    hour: int,
    day: int,
    month: int,
    dayweek: int,
    target: str = "",
    *,
    spooler: Spooler | None = None,
    tz: str | None = None,
    signum: int = 0,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """uWSGI's ``@cron(minute, hour, day, month, dayweek)``: -1 is ``*``, -N is ``*/N``.

    Runs once per matching minute across every worker process and host, in
    ``tz`` (UTC by default; uWSGI used the server's local time, so pass
    ``tz=`` to keep that behaviour). The function is called with ``signum``.
    """
    expression = " ".join(_cron_field(v) for v in (minute, hour, day, month, dayweek))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        owner = spooler or default_spooler()
        owner.periodic(cron=expression, tz=tz, name=_periodic_name("cron", fn), retries=0)(
            _signal_handler(fn, signum)
        )
        return fn

    return decorate


# -- uwsgi_tasks ----------------------------------------------------------------------------
class TaskExecutor:
    """``uwsgi_tasks.TaskExecutor``: every executor but ``RUNTIME`` stores a job here."""

    AUTO = 1
    SPOOLER = 2
    MULE = 3  # no mules: stored and run by the workers, like SPOOLER
    RUNTIME = 4  # runs in the caller, at once


class RetryTaskException(Retry):
    """``uwsgi_tasks.RetryTaskException``: raise it in a task to run it again.

    ``timeout`` is the delay in seconds; ``count`` is accepted and ignored (the
    task's ``retry_count`` bounds the retries).
    """

    def __init__(self, count: int | None = None, timeout: float | timedelta | None = None) -> None:
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        super().__init__(delay=timeout)
        self.requested_count = count


class UwsgiTask:
    """What ``@task`` returns: calling it stores a job that calls the function.

    The call's own arguments are stored (JSON with tagged types), and the job
    handle is returned. The function is at ``.fn``, its task at ``.task``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        spooler: Spooler,
        executor: int,
        retry_count: int,
        retry_timeout: float | timedelta,
        at: datetime | timedelta | float | None,
        priority: int | None,
        name: str | None,
        queue: str,
        timeout: float | None,
    ) -> None:
        if isinstance(retry_count, bool) or not isinstance(retry_count, int):
            raise TypeError(f"retry_count must be an int, not {retry_count!r}")
        if isinstance(retry_timeout, timedelta):
            retry_timeout = retry_timeout.total_seconds()
        self.fn = fn
        self.executor = executor
        self.at = at
        self.priority = priority
        self.spooler = spooler
        functools.update_wrapper(self, fn)

        @functools.wraps(fn)
        def run_call(*args: Any, **kwargs: Any) -> None:
            if _code(fn(*args, **kwargs)) == SPOOL_RETRY:
                raise Retry(reason="the task returned SPOOL_RETRY")

        # uwsgi_tasks' retry_count counts runs: retry_count=3 runs at most 3 times
        self.task: Task[..., Any] = spooler.task(
            name=name or default_name(fn), queue=queue, retries=max(retry_count - 1, 0),
            backoff=float(retry_timeout or 0.0), backoff_factor=1.0, jitter=0.0,
            timeout=timeout,
        )(run_call)

    def __repr__(self) -> str:
        return f"<task {self.task.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> JobHandle[Any] | None:
        if self.executor == TaskExecutor.RUNTIME:
            self.fn(*args, **kwargs)
            return None
        options = _when(self.at)
        if self.priority is not None:
            options["priority"] = -_number(self.priority, "priority", int)
        target = self.task.options(**options) if options else self.task
        return target.spool(*args, **kwargs)

    spool = __call__


def task(
    func: Callable[..., Any] | None = None,
    /,
    *,
    executor: int = TaskExecutor.AUTO,
    retry_count: int = 0,
    retry_timeout: float | timedelta = 0,
    at: datetime | timedelta | float | None = None,
    priority: int | None = None,
    name: str | None = None,
    queue: str = "default",
    timeout: float | None = None,
    spooler: Spooler | None = None,
) -> Any:
    """``uwsgi_tasks.task``: calling the function stores a job with its arguments.

    :param retry_count: runs at most this many times when it raises or returns
        ``SPOOL_RETRY`` (as in uwsgi_tasks; 0 or 1: no retry).
    :param retry_timeout: seconds (or a timedelta) between those runs.
    :param at: when to run: a datetime (naive means UTC), a timedelta from the
        call, or a Unix time.

    Example::

        @task(retry_count=3, retry_timeout=5)
        def send_email(to, subject): ...

        send_email("a@b.c", "hi")     # stored; a worker runs it
    """

    def decorate(fn: Callable[..., Any]) -> UwsgiTask:
        return UwsgiTask(
            fn, spooler=spooler or default_spooler(), executor=executor,
            retry_count=retry_count, retry_timeout=retry_timeout, at=at, priority=priority,
            name=name, queue=queue, timeout=timeout,
        )

    if func is not None:
        return decorate(func)
    return decorate


def _import_spooler_modules() -> None:
    """uWSGI's ``spooler-import``: import the modules named in ``$SPOOLHOUSE_IMPORT``.

    So that ``spoolhouse --app spoolhouse.contrib.uwsgi:spooler worker`` knows
    the tasks (``SPOOLHOUSE_IMPORT=tasks,more_tasks``). The names come from
    the operator's environment, never from a stored job.
    """
    names = [n.strip() for n in os.environ.get("SPOOLHOUSE_IMPORT", "").split(",") if n.strip()]
    if not names:
        return
    from ..loader import load_object

    for module_name in names:
        load_object(module_name)


_import_spooler_modules()
