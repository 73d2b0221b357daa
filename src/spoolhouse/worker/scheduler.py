"""Turns periodic schedules into jobs, exactly once per tick across all hosts.

Every supervisor runs :meth:`Scheduler.tick` about once a second. There is no
leader to elect: the backend's ``schedule_tick`` records the tick and enqueues
the job atomically, so when several schedulers see the same tick exactly one
enqueues it, and a scheduler that restarts at the tick neither repeats nor
skips it.

Missed ticks (downtime, a clock set forward): only the latest tick runs, once
(``missed="once"``) or not at all (``missed="skip"``); never one run per missed
tick. A clock set back is detected by a recorded tick later than ``now``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..periodic import FIRST_TICK_GRACE, Schedule
from ..task import SpoolOptions

if TYPE_CHECKING:
    from ..spooler import Spooler

log = logging.getLogger("spoolhouse.scheduler")

#: headers of a periodic run: the schedule's name and the tick (Unix seconds) it runs for
PERIODIC_HEADER = "spoolhouse-periodic"
TICK_HEADER = "spoolhouse-tick"


class Scheduler:
    """Enqueues the due ticks of ``spooler.schedules``."""

    def __init__(self, spooler: Spooler) -> None:
        self.spooler = spooler

    def due(self, schedule: Schedule, last: float | None, now: float) -> float | None:
        """The tick to run now, or ``None``: the pure decision, without I/O."""
        tick = schedule.latest_tick(now)
        if last is not None and tick <= last <= now:
            return None  # already ran (and the clock did not go back)
        late = now - tick
        if last is None and late > FIRST_TICK_GRACE:
            return None  # a new schedule does not run a tick from before it existed
        if schedule.missed == "skip" and late > FIRST_TICK_GRACE:
            return None
        return tick

    def tick(self, now: float | None = None) -> int:
        """Enqueue every schedule's due tick; return how many jobs this call enqueued."""
        schedules = self.spooler.schedules
        if not schedules:
            return 0
        at = self.spooler.clock.now() if now is None else now
        backend = self.spooler.backend
        recorded = backend.schedule_ticks()
        started = 0
        for schedule in schedules.values():
            tick = self.due(schedule, recorded.get(schedule.name), at)
            if tick is None:
                continue
            # no unique key: schedule_tick already records each tick once, and a key
            # would hold a succeeded run's tick against a replay after the clock is set back
            job = self.spooler.build_job(
                schedule.task, schedule.args, dict(schedule.kwargs), SpoolOptions(), at,
                headers={PERIODIC_HEADER: schedule.name, TICK_HEADER: f"{tick:.0f}"},
            )
            stored = backend.schedule_tick(schedule.name, tick, job, now=at)
            if stored is not None and stored.id == job.id:
                started += 1
                log.info("periodic %s: tick %.0f enqueued as job %s", schedule.name, tick, job.id)
        return started
