"""``@spooler.thread``: a bounded thread pool in this process, for work that may be lost.

The seed's first two options, a ``Thread`` per request and uWSGI's ``@thread``,
start one thread per call with no limit, and lose the work when the process
exits. This keeps the convenience and fixes the first problem only:

* at most ``max_workers`` threads per decorated function, and at most
  ``max_pending`` calls waiting for one; past that a call raises
  :class:`~spoolhouse.errors.QueueFull` (or, with ``block=True``, waits up to
  ``timeout`` seconds for room, then raises);
* the function runs inside a Flask app context when one is current at the call
  (the app is captured then) or when the spooler is bound to an app;
* an exception is logged on the ``spoolhouse.threads`` logger and is also
  available from the returned :class:`~concurrent.futures.Future`;
* the pool is created on the first call and created again in a forked child
  (gunicorn's pre-fork workers get their own threads, never the parent's).

It is **not durable**: a call still queued or running when the process exits,
crashes or is recycled is gone. Use ``.spool()`` for anything that matters.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import ConfigurationError, QueueFull

if TYPE_CHECKING:
    from .spooler import Spooler

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("spoolhouse.threads")

#: Default threads per decorated function.
DEFAULT_MAX_WORKERS = 4
#: Default calls that may wait for a thread before the next call is refused.
DEFAULT_MAX_PENDING = 64

_OPTIONS = frozenset({"max_workers", "max_pending", "block", "timeout", "name"})


class ThreadTask(Generic[P, R]):
    """A function that runs on a bounded pool of threads when called.

    Calling it returns a :class:`~concurrent.futures.Future` at once; the
    function itself is at ``.fn``. Made by ``@spooler.thread``::

        @spooler.thread(max_workers=2)
        def warm_cache(key: str) -> int: ...

        future = warm_cache("home")   # returns at once
        future.result(timeout=5)      # only if you want to wait

    :param max_workers: threads that run calls at the same time.
    :param max_pending: calls that may wait for a free thread; one more raises
        :class:`~spoolhouse.errors.QueueFull`.
    :param block: when full, wait for room instead of raising (a web request
        then waits too, so keep it off in views).
    :param timeout: with ``block``, seconds to wait before raising (``None``: forever).
    :param name: prefix of the thread names (default: the function's name).
    """

    def __init__(
        self,
        spooler: Spooler | None,
        fn: Callable[P, R],
        *,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_pending: int = DEFAULT_MAX_PENDING,
        block: bool = False,
        timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an int >= 1, not {max_workers!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 0:
            raise ConfigurationError(f"max_pending must be an int >= 0, not {max_pending!r}")
        if timeout is not None and timeout < 0:
            raise ConfigurationError(f"timeout must be >= 0 seconds or None, not {timeout!r}")
        self.spooler = spooler
        self.fn = fn
        self.max_workers = max_workers
        self.max_pending = max_pending
        self.block = block
        self.timeout = timeout
        self.name = name or getattr(fn, "__qualname__", None) or "spoolhouse-thread"
        functools.update_wrapper(self, fn)
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        # Called at creation and in a forked child, where the parent's pool
        # threads do not exist and its locks may be held forever.
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._slots = threading.BoundedSemaphore(self.max_workers + self.max_pending)

    def __repr__(self) -> str:
        return f"<ThreadTask {self.name} max_workers={self.max_workers}>"

    def _executor(self) -> ThreadPoolExecutor:
        if self._pid != os.getpid():
            self._reset()
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix=f"spoolhouse-{self.name}"
                )
            return self._pool

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Hand the call to a pool thread; raise ``QueueFull`` when the pool is full."""
        pool = self._executor()
        slots = self._slots
        if self.block:
            acquired = slots.acquire(timeout=self.timeout)
        else:
            acquired = slots.acquire(blocking=False)
        if not acquired:
            raise QueueFull(
                f"{self.name}: {self.max_workers} thread(s) are busy and {self.max_pending} "
                "call(s) are waiting; raise max_pending=/max_workers= on @spooler.thread, pass "
                "block=True to wait, or use a task's .spool() so the work waits durably"
            )
        app = _flask_app(self.spooler)
        try:
            future = pool.submit(_run, app, self.fn, args, kwargs)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(functools.partial(self._done, slots))
        return future

    submit = __call__

    def _done(self, slots: threading.BoundedSemaphore, future: Future[Any]) -> None:
        slots.release()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("thread task %s raised %s: %s", self.name, type(exc).__name__, exc,
                      exc_info=exc)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the pool: queued calls are cancelled; ``wait`` for running ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=wait, cancel_futures=True)


def _run(app: Any, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
    if app is None:
        return fn(*args, **kwargs)
    with app.app_context():
        return fn(*args, **kwargs)


def _flask_app(spooler: Spooler | None) -> Any:
    """The Flask app to push in the thread: the current one, else the spooler's."""
    if "flask" not in sys.modules:  # the core never imports Flask itself
        return None
    from .flask import app_for_thread

    return app_for_thread(spooler)


_LIVE: weakref.WeakSet[ThreadTask[Any, Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for task in list(_LIVE):
        task._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def thread_decorator(spooler: Spooler | None, fn: Callable[..., Any] | None = None,
                     /, **options: Any) -> Any:
    """``@spooler.thread`` and ``@spooler.thread(max_workers=…, …)``; see :class:`ThreadTask`."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for @spooler.thread; options are "
            f"{sorted(_OPTIONS)}"
        )

    def decorate(f: Callable[..., Any]) -> ThreadTask[Any, Any]:
        return ThreadTask(spooler, f, **options)

    if fn is not None:
        return decorate(fn)
    return decorate
