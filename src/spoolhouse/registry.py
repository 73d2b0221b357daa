"""Task names to task objects. The only way a stored job reaches code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, UnknownTask

if TYPE_CHECKING:
    from .task import Task


class Registry:
    """Maps task names to tasks; rejects duplicates."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def add(self, task: Task[Any, Any]) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.fn is not task.fn:
            raise ConfigurationError(
                f"a task named {task.name!r} is already registered (by {existing.fn!r}); "
                "pass a distinct name=... to @spooler.task"
            )
        self._tasks[task.name] = task

    def get(self, name: str) -> Task[Any, Any]:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(
                f"no task named {name!r} is registered with this spooler; decorate the "
                "function with @spooler.task and make sure the worker imports its module "
                "(spoolhouse worker --app <module:spooler>, or spooler.autodiscover(...))"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


def default_name(fn: Any) -> str:
    """``module.qualname``, refusing names a worker could not import the same way."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not module or not qualname:
        raise ConfigurationError(f"cannot name task {fn!r}; pass name=... to @spooler.task")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigurationError(
            f"task {qualname!r} is defined inside a function, so a worker cannot find it "
            "by the same name; pass name=... to @spooler.task"
        )
    if module == "__main__":
        raise ConfigurationError(
            f"task {qualname!r} is defined in a script run as __main__, and a worker would "
            "import it under another module name; pass name=... to @spooler.task, or move "
            "the task into an importable module"
        )
    return f"{module}.{qualname}"
