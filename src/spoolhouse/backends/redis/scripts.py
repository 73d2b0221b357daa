"""The Lua scripts: one per state transition, registered once per client.

Each script in ``lua/`` opens with a header naming its KEYS and ARGV and the
invariants it keeps. What is sent to Redis is the generated key prelude
(:func:`.keys.lua_prelude`), then ``lua/_lib.lua``, then the script itself; on
Redis 7 and later a shebang line first gives the flags (see :data:`ALLOW_OOM`).
Only the definitions of the prelude and the library that the script uses (directly
or through another definition) are sent: Redis runs the whole text on every call,
and each ``local function`` left in costs a closure per call (see :func:`shake`).
For the same reason the key builders (``k_job(id)`` ...) are written out as the
concatenation they stand for (:func:`inline_builders`).
On Redis 7 the backend runs the same scripts as the functions of one library
(:func:`library`), whose definitions Redis runs once, at ``FUNCTION LOAD``; the
texts of :func:`source` are its fallback (``EVAL``) and Redis 6's (``EVALSHA``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .keys import BUILDERS, FIXED, WAKE_MAX, lua_prelude

NAMES = (
    "enqueue",
    "enqueue_batch",
    "enqueue_one",
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
    "next_due",
    "migrate",
    "counts",
)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text(encoding="utf-8")


#: Scripts that may run when Redis is over ``maxmemory`` (Redis 7 script flags): every one
#: but those that make new jobs (enqueue, enqueue_batch, enqueue_one, schedule_tick), so that workers
#: can still claim, finish and prune (which frees memory), operators delete and dashboards
#: read stats, while new jobs are refused with ``StorageFull``.
ALLOW_OOM = frozenset(NAMES) - {"enqueue", "enqueue_batch", "enqueue_one", "schedule_tick"}

#: Scripts that only read (Redis 7 flag ``no-writes``): they also run while writes are
#: paused (``CLIENT PAUSE WRITE``), like the plain reads of inspection.
READ_ONLY = frozenset({"stats", "next_due", "counts"})


# A top-level definition of the prelude or the library: `local function NAME` or `local NAME`.
_DEFINITION = re.compile(r"^local\s+(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT_LINE = re.compile(r"^\s*--.*$", re.MULTILINE)


def _names(code: str) -> set[str]:
    """The identifiers in ``code`` outside whole-line comments (a superset of those it uses)."""
    return set(_NAME.findall(_COMMENT_LINE.sub("", code)))


def shake(library: str, script: str) -> str:
    """The parts of ``library`` that ``script`` needs, in their order.

    ``library`` is cut into pieces, one per top-level ``local`` definition (with the
    comment lines in front of it); a piece is kept when its name is used by
    ``script`` or by a kept piece, together with any text before the first
    definition. Names are read outside whole-line comments; a name that is not a
    use (in a string or a trailing comment) keeps a piece that is not needed, which
    costs time, never correctness.
    """
    starts = [m.start() for m in _DEFINITION.finditer(library)]
    if not starts:
        return library
    head = library[: starts[0]]
    pieces: list[tuple[str, str]] = []  # (name, text)
    lead = ""  # the comment lines in front of the next definition
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(library)
        lines = library[start:end].splitlines(keepends=True)
        cut = len(lines)
        if i + 1 < len(starts):
            while cut > 1 and (not lines[cut - 1].strip() or lines[cut - 1].startswith("--")):
                cut -= 1
        match = _DEFINITION.match(lines[0])
        assert match is not None
        pieces.append((match.group(1), lead + "".join(lines[:cut])))
        lead = "".join(lines[cut:])
    needed = _names(script)
    keep = [False] * len(pieces)
    for i in range(len(pieces) - 1, -1, -1):  # a piece only uses pieces above it
        name, text = pieces[i]
        if name in needed:
            keep[i] = True
            needed |= _names(text)
    return head + "".join(text for (_, text), kept in zip(pieces, keep, strict=True) if kept)


_BUILDER_CALL = re.compile(r"(?<![A-Za-z0-9_.:])(" + "|".join(BUILDERS) + r")\(")


def inline_builders(code: str) -> str:
    """``code`` with every call of a key builder written out: ``k_job(id)`` becomes
    ``(ROOT .. 'job:' .. (id))``. The argument is on one line; it may hold
    parentheses and quoted strings without backslashes."""
    out: list[str] = []
    pos = 0
    while (match := _BUILDER_CALL.search(code, pos)) is not None:
        depth, end = 1, match.end()
        while depth:
            char = code[end]
            if char in "'\"":
                close = code.index(char, end + 1)
                if "\\" in code[end:close] or "\n" in code[end:close]:
                    raise ValueError(f"cannot inline {code[match.start() : close + 1]!r}")
                end = close
            elif char == "\n":
                raise ValueError(f"cannot inline {code[match.start() : end]!r}")
            depth += {"(": 1, ")": -1}.get(char, 0)
            end += 1
        argument = inline_builders(code[match.end() : end - 1])
        suffix = BUILDERS[match.group(1)]
        out += [code[pos : match.start()], f"(ROOT .. '{suffix}' .. ({argument}))"]
        pos = end
    out.append(code[pos:])
    return "".join(out)


@cache
def source(name: str, flags: bool = False) -> str:
    """The full text sent to Redis for the script ``name``.

    With ``flags`` (Redis 7 and later), a shebang line declares the script's flags.
    """
    shebang = ""
    if flags and name in ALLOW_OOM:
        shebang = "#!lua flags=" + ("no-writes," if name in READ_ONLY else "") + "allow-oom\n"
    script = inline_builders(f"-- {name}.lua\n" + _read(f"{name}.lua"))
    library = inline_builders(lua_prelude(builders=False) + _read("_lib.lua"))
    return shebang + shake(library, script) + script


@cache
def library() -> tuple[str, str]:
    """Every script as a Redis 7 function: (the library's name, its source for
    ``FUNCTION LOAD``).

    The library runs the key names and ``_lib.lua`` once, when Redis loads it; each
    function sets the call's ``KEYS``, ``ARGV`` and root (the fixed key names are
    built again only when the root changes) and runs its script's body. An
    ``EVALSHA`` runs all the definitions a script keeps on every call (about 20,000
    instructions for the enqueue). The name carries a hash of the source, so a
    library of another version never stands in for this one.
    """
    fixed = ", ".join(name for name, _ in FIXED)
    names = "\n".join(f"    {name} = ROOT .. '{suffix}'" for name, suffix in FIXED)
    head = (
        "-- generated by spoolhouse.backends.redis.scripts.library: the scripts as functions\n"
        f"local KEYS, ARGV, ROOT\nlocal {fixed}\nlocal WAKE_MAX = {WAKE_MAX}\n"
        "local function enter(keys, args)\n  KEYS, ARGV = keys, args\n"
        f"  if args[1] ~= ROOT then\n    ROOT = args[1]\n{names}\n  end\nend\n"
        + inline_builders(_read("_lib.lua"))
    )
    bodies = [(name, inline_builders(_read(f"{name}.lua"))) for name in NAMES]
    digest = hashlib.sha1((head + "".join(b for _, b in bodies)).encode()).hexdigest()[:16]
    lib = f"spoolhouse_{digest}"
    out = [f"#!lua name={lib}\n", head]
    for name, body in bodies:
        flags = ["'no-writes'"] if name in READ_ONLY else []
        flags += ["'allow-oom'"] if name in ALLOW_OOM else []
        out.append(
            f"redis.register_function{{function_name = '{lib}_{name}', "
            f"flags = {{{', '.join(flags)}}}, callback = function(keys, args)\n"
            f"enter(keys, args)\n{body}\nend}}\n"
        )
    return lib, "".join(out)


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one client (``redis.commands.core.Script`` objects)."""

    enqueue: Any
    enqueue_batch: Any
    enqueue_one: Any
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
    next_due: Any
    migrate: Any
    counts: Any

    @classmethod
    def register(cls, client: Any, flags: bool) -> Scripts:
        """The scripts, with Redis 7 flags or without (older servers reject a shebang)."""
        return cls(**{name: client.register_script(source(name, flags)) for name in NAMES})
