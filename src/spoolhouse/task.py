"""Task[P, R]: a decorated function that stays a function and can also be spooled."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .handle import JobHandle
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .spooler import Spooler

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskConfig:
    """A task's defaults, fixed at decoration time."""

    name: str  # registry name, stored with each job
    queue: str = "default"
    priority: int = 0
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None  # seconds; the supervisor kills an attempt that runs longer
    result_ttl: float | None = 86400.0  # keep a finished job this long; None keeps it forever
    store_result: bool = True  # False: the return value is not stored
    concurrency: int | None = None  # at most this many running at once, across all workers
    rate: tuple[int, float] | None = None  # at most (count, per seconds) started


@dataclass(frozen=True, kw_only=True, slots=True)
class SpoolOptions:
    """Per-call options, given through ``task.options(...)``; never mixed with arguments."""

    at: datetime | None = None
    delay: float | timedelta | None = None
    priority: int | None = None
    queue: str | None = None
    key: str | None = None
    retries: int | None = None
    timeout: float | None = None


def check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue or len(queue) > 200:
        raise ValueError(f"queue must be a non-empty string of at most 200 characters, not {queue!r}")
    return queue


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31:
        raise TypeError(f"priority must be an int (higher runs first), not {priority!r}")
    return priority


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds > 0 (or None), not {timeout!r}")
    return float(timeout)


def check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > 500:
        raise ValueError(f"key must be a non-empty string of at most 500 characters, not {key!r}")
    return key


def _positional_range(signature: inspect.Signature) -> tuple[int, int] | None:
    """``(least, most)`` positional arguments that always bind, when that is all it takes.

    Only for functions whose parameters are plain positional ones (no
    ``*args``, ``**kwargs`` or keyword-only parameters without a default):
    then a call with no keywords binds exactly when the count is in range,
    and ``check_call`` can skip :meth:`inspect.Signature.bind`.
    """
    least = most = 0
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                least += 1
        elif param.kind is param.KEYWORD_ONLY and param.default is not param.empty:
            continue
        else:
            return None
    return least, most


class Task(Generic[P, R]):
    """A function registered with a :class:`~spoolhouse.Spooler`.

    Calling it runs the function here and now. ``.spool(...)`` takes the same
    arguments, stores a job and returns a :class:`~spoolhouse.JobHandle` once
    the job is durable. ``.options(...)`` sets per-call options.
    """

    def __init__(self, spooler: Spooler, fn: Callable[P, R], config: TaskConfig) -> None:
        self.spooler = spooler
        self.fn = fn
        self.config = config
        self._signature = inspect.signature(fn)
        self._positional = _positional_range(self._signature)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def check_call(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` now if the arguments cannot bind to the function."""
        fast = self._positional
        if fast is not None and not kwargs and fast[0] <= len(args) <= fast[1]:
            return  # positional arguments only, as many as the function takes
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}.spool(...): {exc}") from None

    def spool(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Store a job that calls this task with these arguments; return its handle."""
        return self.spooler.enqueue_call(self, args, kwargs, SpoolOptions())

    def spool_many(self, calls: Iterable[Sequence[Any]]) -> list[JobHandle[R]]:
        """Store one job per item (each a tuple of positional arguments) in one transaction."""
        return self.spooler.enqueue_calls(self, [(tuple(c), {}) for c in calls], SpoolOptions())

    def options(
        self,
        *,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int | None = None,
        queue: str | None = None,
        key: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> BoundTask[P, R]:
        """Per-call options: when to run (``at`` aware datetime, or ``delay`` seconds or
        timedelta), ``priority``, ``queue``, unique ``key``, ``retries``, ``timeout``.

        >>> send_email.options(delay=60, key="welcome:42").spool("a@b.c", "hi")  # doctest: +SKIP
        """
        return BoundTask(
            self,
            SpoolOptions(
                at=at, delay=delay, priority=priority, queue=queue, key=key,
                retries=retries, timeout=timeout,
            ),
        )


class BoundTask(Generic[P, R]):
    """A task with per-call options applied; spool it like the task itself."""

    def __init__(self, task: Task[P, R], options: SpoolOptions) -> None:
        self.task = task
        self.opts = options

    def __repr__(self) -> str:
        return f"<BoundTask {self.task.name} {self.opts}>"

    def options(self, **changes: Any) -> BoundTask[P, R]:
        """Further options on top of these."""
        unknown = set(changes) - set(SpoolOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; options are {sorted(SpoolOptions.__dataclass_fields__)}")
        return BoundTask(self.task, replace(self.opts, **changes))

    def spool(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        return self.task.spooler.enqueue_call(self.task, args, kwargs, self.opts)

    def spool_many(self, calls: Iterable[Sequence[Any]]) -> list[JobHandle[R]]:
        return self.task.spooler.enqueue_calls(self.task, [(tuple(c), {}) for c in calls], self.opts)
