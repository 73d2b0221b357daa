"""The Lua scripts: one per state transition, registered once per client.

Each script in ``lua/`` opens with a header naming its KEYS and ARGV and the
invariants it keeps. What is sent to Redis is the generated key prelude
(:func:`.keys.lua_prelude`), then ``lua/_lib.lua``, then the script itself.
redis-py's ``register_script`` runs them with EVALSHA and loads them on a
``NOSCRIPT`` reply (after a Redis restart, for example).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .keys import lua_prelude

NAMES = (
    "enqueue",
    "claim",
    "extend_leases",
    "set_progress",
    "complete",
    "retry",
    "fail",
    "release",
    "rescue",
    "rescue_expired",
    "cancel",
    "requeue",
    "prune",
    "purge",
)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The full text sent to Redis for the script ``name``."""
    return lua_prelude() + _read("_lib.lua") + f"-- {name}.lua\n" + _read(f"{name}.lua")


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one client (``redis.commands.core.Script`` objects)."""

    enqueue: Any
    claim: Any
    extend_leases: Any
    set_progress: Any
    complete: Any
    retry: Any
    fail: Any
    release: Any
    rescue: Any
    rescue_expired: Any
    cancel: Any
    requeue: Any
    prune: Any
    purge: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in NAMES})
