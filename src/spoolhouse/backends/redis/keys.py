"""The whole Redis key namespace of one spooler, in one place.

Every key starts with ``{<prefix>}:``. The braces are a Redis Cluster hash
tag: all keys of a spooler hash to one slot, so every Lua script touches keys
of a single node and stays atomic. The price is that one spooler is served by
one shard (see ``docs/redis.md``).

Layout (``R`` is the root ``{<prefix>}:``; ids, queue and task names and unique keys
are appended verbatim, which is safe because the hash tag closes at the first ``}``
and ``<prefix>`` may not contain braces):

=========================  ======  ==========================================================
key                        type    content and invariant
=========================  ======  ==========================================================
``R job:<id>``             hash    one job: the :class:`~spoolhouse.job.Job` fields (absent
                                   field = ``None``) plus ``_rk``, the member of the job in
                                   its queue's ready set
``R ready:<queue>``        zset    pending jobs already found due; score ``-priority``,
                                   member ``_rk`` = 16 hex digits of ``run_at`` (order
                                   preserving) followed by the id, so ``ZRANGE 0 0`` is the
                                   next job to claim
``R sched:<queue>``        zset    pending jobs not yet found due; score ``run_at``, member id.
                                   Every pending job is in exactly one of ready and sched
``R wake:<queue>``         list    wake-up tokens for idle workers (BLPOP), at most
                                   :data:`WAKE_MAX` long
``R jobs:<state>:<queue>`` zset    ids of every job in that state and queue; score 0
                                   (lexicographic: newest last). ``list_jobs`` merges the
                                   ones it needs, ``counts`` reads their sizes
``R ids``                  zset    legacy (schema 1): ids of every job. Only the migration
                                   reads it (see :data:`LEGACY`)
``R running``              zset    running jobs with a lease; score ``lease_expires_at``
``R expiring``             zset    final jobs with an ``expires_at``; score ``expires_at``
``R uniq``                 hash    unique key -> id of the live (pending/running) job holding it
``R uniq_done``            hash    unique key -> id of the succeeded job holding it until its
                                   ``expires_at`` (the latest one when several succeeded);
                                   the enqueue scripts check the expiry, entries go when the
                                   job is deleted
``R queues``               set     every queue that was given a job (enqueue adds it; never
                                   removed): the directory of the ``jobs:`` sets
``R busy``                 hash    task -> number of running jobs of the task (no zero
                                   entries); the concurrency limits of ``claim``
``R started:<task>``       zset    jobs of the task claimed by a claim that gave the task a
                                   rate limit; score ``started_at`` of that attempt, member
                                   id. The rate limits of ``claim`` count the window and trim
                                   what is older; a deleted job leaves it
``R ticks``                hash    schedule name -> last tick recorded by ``schedule_tick``
``R bykey:<key>``          zset    ids of every stored job with unique key ``<key>``, in any
                                   state; score 0 (lexicographic). Written when the job is
                                   stored (``put_job``), removed when it is deleted
                                   (``delete_job``): a job's key never changes
``R stats``                hash    ``<minute>:s``, ``<minute>:f``, ``<minute>:r`` -> jobs that
                                   succeeded, failed, were retried in that minute
                                   (``<minute>`` = floor(now / 60) of the transition, in
                                   decimal; no zero entries)
``R stat_minutes``         zset    every ``<minute>`` with a field in ``stats``; score and
                                   member the minute. ``stats`` reads a range of it, ``prune``
                                   trims minutes older than the retention with their fields
=========================  ======  ==========================================================

Schema 1 (releases before the ``jobs:<state>:<queue>`` index) kept ``ids``,
``state:<state>``, ``queue:<queue>`` and ``pending:<queue>`` instead; ``migrate.lua``
moves a store written by it to schema 2 on the first use of a worker-side
connection (see ``docs/redis.md``).

The Lua scripts receive the root as ``ARGV[1]`` and build every name from it:
the fixed keys (see :data:`FIXED`), and the per-job, -queue, -state and -task names are built by
the functions of :func:`lua_prelude`, generated from this module, so a name is
spelled once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigurationError

#: Most wake-up tokens kept per queue; more would only cause spurious wake-ups.
WAKE_MAX = 16

# suffixes, each used once below and in the generated Lua prelude
_JOB = "job:"
_READY = "ready:"
_SCHED = "sched:"
_WAKE = "wake:"
_JOBS = "jobs:"
_IDS = "ids"
_RUNNING = "running"
_EXPIRING = "expiring"
_UNIQ = "uniq"
_QUEUES = "queues"
_COUNTS = "counts"  # schema 2 before ``queues``: a hash of counts, deleted by migrate.lua
_BUSY = "busy"
_STARTED = "started:"
_TICKS = "ticks"
_UNIQ_DONE = "uniq_done"
_BYKEY = "bykey:"
_STATS = "stats"
_STAT_MINUTES = "stat_minutes"

#: Key families of schema 1 that schema 2 dropped (deleted by ``migrate.lua``).
LEGACY = ("state:", "queue:", "pending:")

#: The fixed keys, by their Lua names in the prelude. Scripts build them from the root
#: (``local K_UNIQ = ROOT .. 'uniq'``, kept only where used) instead of receiving them in
#: ``KEYS``: every ``KEYS`` element costs Redis a parsed argument and a Lua string on
#: every call. ``KEYS`` holds one key of the spooler's slot, :attr:`Keyspace.declared`,
#: so that a cluster-aware proxy routes the call.
FIXED = (
    ("K_IDS", _IDS),
    ("K_UNIQ", _UNIQ),
    ("K_QUEUES", _QUEUES),
    ("K_COUNTS", _COUNTS),
    ("K_RUNNING", _RUNNING),
    ("K_EXPIRING", _EXPIRING),
    ("K_BUSY", _BUSY),
    ("K_TICKS", _TICKS),
    ("K_UNIQ_DONE", _UNIQ_DONE),
    ("K_STATS", _STATS),
    ("K_STAT_MINUTES", _STAT_MINUTES),
)

_PER_NAME = (
    ("k_job", _JOB),
    ("k_ready", _READY),
    ("k_sched", _SCHED),
    ("k_wake", _WAKE),
    ("k_jobs", _JOBS),
    ("k_started", _STARTED),
    ("k_bykey", _BYKEY),
)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Key names of the spooler stored under ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ConfigurationError(
                f"invalid Redis key prefix {self.prefix!r}: use a non-empty name without "
                "braces, e.g. prefix='myapp' (the braces are added as the Cluster hash tag)"
            )

    @property
    def root(self) -> str:
        """``{prefix}:``, the start of every key (and ARGV[1] of every script)."""
        return "{" + self.prefix + "}:"

    @property
    def declared(self) -> list[str]:
        """The ``KEYS`` of every script call: one key of the spooler's slot (``queues``)."""
        return [self.root + _QUEUES]

    @property
    def pattern(self) -> str:
        """A SCAN MATCH pattern for every key of this spooler."""
        return _glob_escape(self.root) + "*"

    def job(self, job_id: str) -> str:
        return self.root + _JOB + job_id

    def wake(self, queue: str) -> str:
        return self.root + _WAKE + queue

    def jobs(self, state: str, queue: str) -> str:
        """The index of the jobs in ``state`` and ``queue``."""
        return self.root + _JOBS + state + ":" + queue

    def sched(self, queue: str) -> str:
        return self.root + _SCHED + queue

    def ready(self, queue: str) -> str:
        return self.root + _READY + queue

    def started(self, task: str) -> str:
        return self.root + _STARTED + task

    def bykey(self, key: str) -> str:
        return self.root + _BYKEY + key

    @property
    def ids(self) -> str:
        return self.root + _IDS

    @property
    def queues(self) -> str:
        return self.root + _QUEUES

    @property
    def counts(self) -> str:
        """The legacy counts hash (see ``migrate.lua``)."""
        return self.root + _COUNTS

    @property
    def busy(self) -> str:
        return self.root + _BUSY

    @property
    def ticks(self) -> str:
        return self.root + _TICKS

    @property
    def stats(self) -> str:
        return self.root + _STATS

    @property
    def stat_minutes(self) -> str:
        return self.root + _STAT_MINUTES


#: The key builders of the Lua code, name -> suffix: ``k_job(x)`` is ``ROOT .. 'job:' .. x``.
BUILDERS = dict(_PER_NAME)


def lua_prelude(builders: bool = True) -> str:
    """Lua that names the keys: the fixed keys and one builder per keyed family.

    Without ``builders``, the functions of :data:`BUILDERS` are left out: the caller
    writes their calls out (see :func:`.scripts.inline_builders`).
    """
    lines = [
        "-- generated by spoolhouse.backends.redis.keys: the key namespace",
        "local ROOT = ARGV[1]",
    ]
    for name, suffix in FIXED:
        lines.append(f"local {name} = ROOT .. '{suffix}'")
    if builders:
        for name, suffix in _PER_NAME:
            lines.append(f"local function {name}(x) return ROOT .. '{suffix}' .. x end")
    lines.append(f"local WAKE_MAX = {WAKE_MAX}")
    return "\n".join(lines) + "\n"
