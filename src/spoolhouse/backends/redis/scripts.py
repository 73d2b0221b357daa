"""The Lua scripts: one per state transition, registered once per client.

Each script in ``lua/`` opens with a header naming its KEYS and ARGV and the
invariants it keeps. What is sent to Redis is the generated key prelude
(:func:`.keys.lua_prelude`), then ``lua/_lib.lua``, then the script itself; on
Redis 7 and later a shebang line first gives the flags (see :data:`ALLOW_OOM`).
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
    "abort",
    "release",
    "rescue",
    "rescue_expired",
    "cancel",
    "requeue",
    "prune",
    "purge",
    "delete",
    "schedule_tick",
    "stats",
)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


#: Scripts that may run when Redis is over ``maxmemory`` (Redis 7 script flags): every one
#: but those that make new jobs (enqueue, schedule_tick), so that workers can still claim,
#: finish and prune (which frees memory), operators delete and dashboards read stats, while
#: new jobs are refused with ``StorageFull``.
ALLOW_OOM = frozenset(NAMES) - {"enqueue", "schedule_tick"}


@cache
def source(name: str, flags: bool = False) -> str:
    """The full text sent to Redis for the script ``name``.

    With ``flags`` (Redis 7 and later), a shebang line declares the script's flags.
    """
    shebang = "#!lua flags=allow-oom\n" if flags and name in ALLOW_OOM else ""
    body = lua_prelude() + _read("_lib.lua") + f"-- {name}.lua\n" + _read(f"{name}.lua")
    return shebang + body


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
    abort: Any
    release: Any
    rescue: Any
    rescue_expired: Any
    cancel: Any
    requeue: Any
    prune: Any
    purge: Any
    delete: Any
    schedule_tick: Any
    stats: Any

    @classmethod
    def register(cls, client: Any, flags: bool) -> Scripts:
        """The scripts, with Redis 7 flags or without (older servers reject a shebang)."""
        return cls(**{name: client.register_script(source(name, flags)) for name in NAMES})
