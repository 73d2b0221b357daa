"""Many hosts on one Redis: two worker supervisors on two "hosts" (network namespaces).

Where the test runs as root and ``ip netns`` works, it makes two network
namespaces ``shhosts-<pid>-a`` and ``-b``, each joined by a veth pair to a
bridge ``shh<pid>br`` in the root namespace, with addresses in a /24 the test
picks in 10.213.0.0/16 (which exist only on these links). A private
redis-server listens on the bridge's address (and on loopback for the test
itself), and each namespace runs a worker supervisor (``ip netns exec <ns>
python -m spoolhouse ... worker``, 2 processes). Elsewhere (not root, no
``ip``, or ``ip netns add`` refused), or with ``SPOOLHOUSE_NO_NETNS=1``, it
falls back to two supervisors as separate processes on 127.0.0.1 and prints
that it did.

Phase 1: 2,000 jobs, no fault: every job runs exactly once (dup = 0, attempt
1), on both hosts. Phase 2: 2,000 jobs of U(0, 40 ms); a quarter in, host A
is cut off (its veth link set down, so its connections hang; in fallback mode
its whole supervisor process group is SIGKILLed): nothing is lost, every job
ends succeeded, each job A held (its lease expires, the other host's
supervisor rescues it) completes on host B within lease + 5 s of the cut, and
each of them ran at most once more. In namespace mode A's link then comes
back: A's late acks are refused by the lease fencing (no job changes state and
nothing runs again) and both supervisors stop cleanly.

Namespaces, links and processes are removed in a ``finally``; leftovers of an
earlier run whose test process is gone are removed first.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from harness import (
    LEASE,
    PYTHON,
    Entry,
    Scenario,
    WorkerProcess,
    analyse,
    owner_pid,
    percentile,
    pid_alive,
    record_figures,
    wait_until,
)
from redis_chaos_app import job_states, make_spooler, redis_env, start_barrier

from redis_server import PrivateRedis
from spoolhouse import Spooler

pytestmark = [pytest.mark.slow, pytest.mark.redis]

TEST_BOUND = 120  # seconds; the watchdog fails a test that runs longer
# A cut-off host's jobs complete elsewhere within this: its leases run out at most
# LEASE after the cut (heartbeats renew them to LEASE ahead), the other host's
# maintenance pass (every 5 s) rescues them, and then they are claimed and run
# (up to 40 ms each), with 1 s of slack for that. The cut host also holds the jobs
# it claimed ahead: when workers claimed up to 256 whatever their duration, 41 of
# them moved and the last finished 11.9 s after the cut; claiming ahead about
# 50 ms of work (PREFETCH_WORK) keeps that to the jobs that were running.
MAINTENANCE_INTERVAL = 5.0
MOVE_BOUND = LEASE + MAINTENANCE_INTERVAL + 1.0
APP = "redis_chaos_app:spooler"
NS_PREFIX = "shhosts-"  # namespaces: shhosts-<pid>-a, shhosts-<pid>-b
LINK_PREFIX = "shh"  # links: shh<pid>br (bridge), shh<pid>a0 / b0 (root side), a1 / b1 (host side)
PROCESSES = 2  # worker processes per host


# -- the network ---------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def ensure_ip() -> str | None:
    """``ip`` is there (installing iproute2 as root if needed); else why namespaces cannot be made."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        if shutil.which("apt-get") is None:
            return "no ip command and no apt-get"
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "iproute2"]):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0:
                return f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}"
        if shutil.which("ip") is None:
            return "iproute2 installed but no ip command"
    return None


def remove_leftovers() -> list[str]:
    """Namespaces and links of earlier runs whose test process is gone (with their processes)."""
    removed: list[str] = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(re.escape(NS_PREFIX) + r"(\d+)-[ab]", name)
        if not m or pid_alive(int(m.group(1))):
            continue
        for pid in ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)  # a worker an earlier run of this test left
        ip("netns", "del", name, check=False)
        removed.append(name)
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = re.fullmatch(re.escape(LINK_PREFIX) + r"(\d+)(br|a0|b0)", name)
        if m and not pid_alive(int(m.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Hosts:
    """Two hosts, ``a`` and ``b``: network namespaces on a bridge, or (fallback) plain processes."""

    netns: bool
    why_fallback: str = ""
    server_address: str = "127.0.0.1"
    namespaces: dict[str, str] = field(default_factory=dict)
    host_links: dict[str, str] = field(default_factory=dict)  # root-side veth of each host
    links: list[str] = field(default_factory=list)  # root-side links to delete

    @classmethod
    def make(cls) -> Hosts:
        if os.environ.get("SPOOLHOUSE_NO_NETNS", "").lower() in ("1", "true", "yes"):
            return cls(netns=False, why_fallback="SPOOLHOUSE_NO_NETNS is set")
        why = ensure_ip()
        if why is not None:
            return cls(netns=False, why_fallback=why)
        remove_leftovers()
        tag = str(os.getpid())
        hosts = cls(netns=True)
        try:
            used = ip("-o", "addr", "show", check=False).stdout
            octet = random.choice([o for o in range(1, 255) if f" 10.213.{o}." not in used])
            net = f"10.213.{octet}"
            bridge = f"{LINK_PREFIX}{tag}br"
            ip("link", "add", bridge, "type", "bridge")
            hosts.links.append(bridge)
            ip("addr", "add", f"{net}.1/24", "dev", bridge)
            ip("link", "set", bridge, "up")
            hosts.server_address = f"{net}.1"
            for n, host in enumerate("ab", start=2):
                ns = f"{NS_PREFIX}{tag}-{host}"
                outside, inside = f"{LINK_PREFIX}{tag}{host}0", f"{LINK_PREFIX}{tag}{host}1"
                ip("netns", "add", ns)
                hosts.namespaces[host] = ns
                ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
                hosts.links.append(outside)
                hosts.host_links[host] = outside
                ip("link", "set", outside, "master", bridge)
                ip("link", "set", outside, "up")
                ip("-n", ns, "addr", "add", f"{net}.{n}/24", "dev", inside)
                ip("-n", ns, "link", "set", inside, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            hosts.remove()
            return cls(netns=False, why_fallback=f"cannot make network namespaces ({exc})")
        return hosts

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        if not self.netns:
            return list(argv)
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    def cut(self, host: str) -> None:
        ip("link", "set", self.host_links[host], "down")

    def restore(self, host: str) -> None:
        ip("link", "set", self.host_links[host], "up")

    def remove(self) -> None:
        for ns in self.namespaces.values():
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)  # only processes this test started are there
            ip("netns", "del", ns, check=False)
        for link in reversed(self.links):
            ip("link", "del", link, check=False)
        self.namespaces.clear()
        self.links.clear()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    h = Hosts.make()  # before the watchdog: it may install iproute2
    try:
        yield h
    finally:
        h.remove()


# -- the test ------------------------------------------------------------------------------
def spool(sp: Spooler, n: int, max_sleep: float, rng: random.Random) -> set[str]:
    sleepy = sp.registry.get("sleepy")
    ids: set[str] = set()
    for lo in range(0, n, 500):
        calls = [(i, rng.uniform(0, max_sleep)) for i in range(lo, min(n, lo + 500))]
        ids |= {h.id for h in sleepy.spool_many(calls)}
    return ids


def all_succeeded(sp: Spooler, n: int) -> bool:
    counts = sp.backend.counts().get("default", {})
    return set(counts) == {"succeeded"} and counts["succeeded"] == n


def test_many_hosts_on_one_redis(sc: Scenario, hosts: Hosts, bounded: None) -> None:
    seed = int(os.environ.get("SPOOLHOUSE_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    mode = "netns" if hosts.netns else "fallback"
    if not hosts.netns:
        print(f"\n[hosts] FALLBACK MODE: two supervisors on 127.0.0.1, no network namespaces "
              f"({hosts.why_fallback})", flush=True)
    redis_dir = sc.root / "redis"
    redis_dir.mkdir()
    options = ["--protected-mode", "no"]  # reached from the namespaces; the addresses exist only here
    if hosts.netns:
        options += ["--bind", "127.0.0.1", hosts.server_address]
    server = PrivateRedis(redis_dir, *options)
    server.start()
    url = f"redis://{hosts.server_address}:{server.port}/0"
    prefix = "shhosts"
    redis_env(sc, url, prefix).close()  # the workers' URL: the bridge's address
    sp = make_spooler(server.url, prefix, str(sc.ledger.path), str(sc.ctl))  # the test's: loopback
    try:
        supervisors: dict[str, WorkerProcess] = {}
        for host in "ab":
            argv = [PYTHON, "-m", "spoolhouse", "--app", APP, "worker", "--processes", str(PROCESSES),
                    "--threads", "1", "--shutdown-timeout", "10", "--log-level", "info"]
            proc, log = sc.procs.popen(hosts.command(host, argv), f"host-{host}")
            supervisors[host] = WorkerProcess(proc, log, PROCESSES)
        host_of: dict[int, str] = {}
        for host, sup in supervisors.items():
            host_of.update({pid: host for pid in sup.wait_children()})
        start_barrier(sc, sp, 2 * PROCESSES)  # every worker process is connected and claiming
        barrier_jobs = 2 * PROCESSES

        # -- phase 1: no fault, exactly once ---------------------------------------
        t1 = time.monotonic()
        ids1 = spool(sp, 2000, 0.01, rng)
        wait_until(lambda: all_succeeded(sp, barrier_jobs + len(ids1)), 60,
                   message=lambda: f"phase 1 jobs succeeded: {sp.backend.counts()}")
        phase1_s = time.monotonic() - t1
        entries = sc.ledger.entries()
        report1 = analyse(ids1, entries)
        by_host1 = {h: sum(1 for e in entries if e.finished and e.job_id in ids1
                           and host_of.get(e.pid) == h) for h in "ab"}
        stored1 = job_states(sp, ids1)
        attempts1 = {j.attempt for j in stored1.values() if j is not None}

        # -- phase 2: host A cut off mid-run ---------------------------------------
        ids2 = spool(sp, 2000, 0.04, rng)
        t2 = time.monotonic()
        wait_until(lambda: len(ids2 & sc.ledger.distinct_finished()) >= len(ids2) // 4, 60,
                   message="a quarter of phase 2 done")
        cut_ns = time.time_ns()
        if hosts.netns:
            hosts.cut("a")
        else:
            os.killpg(supervisors["a"].pid, signal.SIGKILL)  # the whole host dies
        total = barrier_jobs + len(ids1) + len(ids2)
        wait_until(lambda: all_succeeded(sp, total), 90,
                   message=lambda: f"phase 2 jobs succeeded: {sp.backend.counts()}")
        phase2_s = time.monotonic() - t2
        done_ns = time.time_ns()
        stored2 = job_states(sp, ids2)

        restored_ns = 0
        if hosts.netns:
            hosts.restore("a")
            restored_ns = time.time_ns()
            # host A reconnects by itself; its stale acks are refused, so it stops cleanly
            assert supervisors["a"].stop(timeout=30) == 0
        assert supervisors["b"].stop(timeout=30) == 0
        assert all_succeeded(sp, total), sp.backend.counts()

        entries = sc.ledger.entries()
        report2 = analyse(ids2, [e for e in entries if e.job_id in ids2])
        unknown = {e.job_id for e in entries if e.finished} - ids1 - ids2
        runs: dict[str, list[Entry]] = {}
        for e in entries:
            if e.job_id in ids2 and e.finished:
                runs.setdefault(e.job_id, []).append(e)
        moved = [j for j, job in stored2.items() if job is not None and job.attempt > 1]
        moves: list[float] = []
        bad: list[tuple[str, str]] = []
        for job_id in moved:
            job = stored2[job_id]
            assert job is not None
            finisher = owner_pid(job.worker_id)
            if host_of.get(finisher or 0) != "b":
                bad.append((job_id, f"rescued job finished by {job.worker_id}, not on host b"))
            ends = [e.end_ns for e in runs.get(job_id, []) if e.pid == finisher and e.attempt == job.attempt]
            if not ends:
                bad.append((job_id, "no ledger line of its recorded execution"))
                continue
            moves.append((max(ends) - cut_ns) / 1e9)
        over = [j for j, r in runs.items() if len(r) > 2]
        after_restore = [e for e in entries if restored_ns and not e.finished and e.start_ns > restored_ns]
        a_after_cut = sum(1 for e in entries if e.job_id in ids2 and e.finished and host_of.get(e.pid) == "a"
                          and e.end_ns > cut_ns)
        by_host2 = {h: sum(1 for e in entries if e.finished and e.job_id in ids2 and host_of.get(e.pid) == h)
                    for h in "ab"}
        log_a = supervisors["a"].log()
        record_figures(
            f"Many hosts on Redis ({mode})", hosts=2, processes_per_host=PROCESSES,
            phase1_jobs=len(ids1), phase1_lost=len(report1.lost), phase1_dup=report1.dup,
            phase1_by_host=f"{by_host1['a']}/{by_host1['b']}", phase1_s=phase1_s,
            phase2_jobs=len(ids2), fault="link down" if hosts.netns else "SIGKILL host group",
            phase2_lost=len(report2.lost), phase2_dup=report2.dup, moved_jobs=len(moved),
            a_finished_after_cut=a_after_cut, phase2_by_host=f"{by_host2['a']}/{by_host2['b']}",
            move_p50_s=percentile(moves, 50), move_max_s=max(moves, default=0.0),
            move_bound_s=MOVE_BOUND, phase2_s=phase2_s,
            drained_after_cut_s=(done_ns - cut_ns) / 1e9,
            stale_acks_refused=log_a.count("lease_lost; outcome succeeded not recorded"),
            seed=seed,
        )
        assert report1.lost == [] and report1.unknown == [], report1.summary()
        assert report1.dup == 0, report1.summary()
        assert attempts1 == {1}, attempts1
        assert by_host1["a"] > 0 and by_host1["b"] > 0, by_host1
        assert report2.lost == [] and not unknown, (report2.summary(), sorted(unknown)[:5])
        assert moved, "host A held no job at the cut"
        assert not bad, bad[:10]
        assert not over, f"jobs that ran more than twice: {over[:10]}"
        assert report2.dup <= len(moved), report2.summary()
        late = [m for m in moves if m > MOVE_BOUND]
        assert not late, f"host A's jobs completed more than {MOVE_BOUND}s after the cut: {late}"
        assert after_restore == [], f"jobs ran again once host A was back: {after_restore[:5]}"
        assert supervisors["b"].spawned() == PROCESSES
    finally:
        sc.procs.kill_all()
        sp.close()
        server.kill()
