"""``Task.check_call`` refuses exactly the calls that cannot bind, fast path or not."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import pytest

from spoolhouse import Spooler


def f0() -> None: ...
def f1(a: int) -> None: ...
def f2(a: int, b: int = 2) -> None: ...
def f3(a: int, /, b: int, c: int = 3) -> None: ...
def f4(a: int, *rest: int) -> None: ...
def f5(a: int, *, k: int) -> None: ...
def f6(a: int, *, k: int = 1) -> None: ...
def f7(a: int, **extra: int) -> None: ...


@pytest.mark.parametrize("fn", [f0, f1, f2, f3, f4, f5, f6, f7])
def test_check_call_agrees_with_signature_bind(fn: Any) -> None:
    sp = Spooler("memory://")
    task = sp.task(name=fn.__name__)(fn)
    signature = inspect.signature(fn)
    keyword_sets: list[dict[str, int]] = [{}, {"a": 1}, {"b": 1}, {"k": 1}, {"zz": 1}]
    for count, kwargs in itertools.product(range(5), keyword_sets):
        args = tuple(range(count))
        try:
            signature.bind(*args, **kwargs)
            binds = True
        except TypeError:
            binds = False
        if binds:
            task.check_call(args, kwargs)
        else:
            with pytest.raises(TypeError, match=fn.__name__):
                task.check_call(args, kwargs)
