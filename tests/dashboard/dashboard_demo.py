"""An hour of plausible traffic for the browser test and the documentation's screenshot.

``demo()`` returns a spooler on a memory store and a FakeClock, after an hour
of jobs spooled and run minute by minute: some fail, some retry, a few are
still running with progress, a few wait, and two schedules are registered.
One task takes an ``api_key``: it must never show on a page.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from spoolhouse import FakeClock, Spooler
from spoolhouse.context import Progress
from spoolhouse.worker.scheduler import Scheduler

CANARY = "CANARY-7f3a"
START = 1_772_460_000.0  # 2026-03-02 14:00 UTC


class CardDeclined(Exception):
    pass


@dataclass
class Demo:
    spooler: Spooler
    clock: FakeClock


def demo(seed: int = 7) -> Demo:
    clock = FakeClock(START - 3600)
    spooler = Spooler("memory://", clock=clock)
    rng = random.Random(seed)

    @spooler.task(name="mail.send_welcome", queue="emails", retries=3, backoff=20)
    def send_welcome(user_id: int, template: str = "welcome") -> str:
        if user_id % 23 == 0:
            raise ConnectionError("smtp.example.org:587 timed out")
        return f"queued message for user {user_id}"

    @spooler.task(name="billing.charge_card", queue="billing", retries=0)
    def charge_card(customer_id: int, amount_cents: int, api_key: str) -> dict[str, object]:
        if customer_id % 11 == 0:
            raise CardDeclined(f"card of customer {customer_id} declined (insufficient funds)")
        return {"charge": f"ch_{customer_id}", "amount": amount_cents}

    @spooler.task(name="images.resize", queue="images", retries=2, backoff=30)
    def resize(path: str, width: int) -> None:
        if path.endswith("7.png"):
            raise OSError(f"cannot identify image file {path!r}")

    @spooler.task(name="reports.build_monthly", queue="reports", retries=1, timeout=600)
    def build_monthly(account_id: int, month: str) -> int:
        return account_id * 3

    @spooler.periodic(every=300, name="reports.refresh_dashboards", queue="reports")
    def refresh_dashboards() -> None:
        pass

    @spooler.periodic(cron="0 6 * * *", tz="Europe/Paris", name="reports.nightly_export",
                      queue="reports")
    def nightly_export() -> None:
        pass

    scheduler = Scheduler(spooler)
    user = 1000
    for minute in range(60):
        wave = 6 + 4 * math.sin(minute / 7.0) + rng.randint(0, 3)
        for _ in range(int(wave)):
            user += 1
            send_welcome.spool(user)
        for _ in range(rng.randint(1, 4)):
            customer = rng.randint(100, 999)
            charge_card.spool(customer, rng.randint(500, 9000), api_key=f"sk_live_{CANARY}")
        for _ in range(rng.randint(0, 3)):
            resize.spool(f"/uploads/{rng.randint(1000, 9999)}.png", 640)
        if minute % 10 == 0:
            build_monthly.spool(rng.randint(1, 50), "2026-02")
        scheduler.tick()
        spooler.drain()
        clock.advance(60)
    # now: a backlog, scheduled work and two workers busy
    for _ in range(5):
        user += 1
        send_welcome.spool(user)
    build_monthly.options(delay=900).spool(7, "2026-03")
    backend = spooler.backend
    now = clock.now()
    for worker, queue, steps in (("web-1:4211", "images", (3, 8)), ("web-2:877", "reports", (41, 100))):
        for _ in range(2 if queue == "images" else 1):
            if queue == "images":
                resize.spool(f"/uploads/{rng.randint(1000, 9999)}.jpg", 1280)
            else:
                build_monthly.spool(12, "2026-03")
        for job in backend.claim([queue], worker_id=worker, now=now, lease=30, limit=2):
            backend.set_progress(job.id, job.lease or "", Progress(
                current=steps[0], total=steps[1], message="resizing" if queue == "images"
                else "aggregating invoices").to_json())
    return Demo(spooler=spooler, clock=clock)


if __name__ == "__main__":  # pragma: no cover - for a look by hand
    from spoolhouse.dashboard import serve

    serve(demo().spooler, port=8077, insecure_local=True)
