"""Job ids: UUIDv7 layout, time-ordered, strictly increasing within a process."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from spoolhouse.job import new_job_id


@pytest.fixture(autouse=True)
def _restore_last_id() -> Iterator[None]:
    """These tests set the process's last id to chosen times; put the real one back."""
    from spoolhouse import job as job_module

    saved = job_module._last
    yield
    with job_module._id_lock:
        job_module._last = saved


def test_ids_are_version_7_and_carry_the_time() -> None:
    job_id = new_job_id(1_700_000_000.123)
    parsed = uuid.UUID(job_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert (parsed.int >> 80) >= 1_700_000_000_123


def test_ids_made_in_one_millisecond_keep_their_order() -> None:
    ids = [new_job_id(1_800_000_000.0) for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_from_many_threads_are_unique() -> None:
    out: list[list[str]] = [[] for _ in range(8)]

    def make(i: int) -> None:
        out[i].extend(new_job_id() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for chunk in out for i in chunk]
    assert len(set(every)) == len(every)
    assert all(chunk == sorted(chunk) for chunk in out)


def test_a_batch_of_ids_continues_the_sequence_of_single_ones() -> None:
    from spoolhouse.job import new_job_ids

    at = 1_900_000_000.0
    ids = [new_job_id(at), *new_job_ids(3000, at), new_job_id(at), *new_job_ids(2, at)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert all((uuid.UUID(i).int >> 80) >= 1_900_000_000_000 for i in ids)
    assert new_job_ids(0) == []


def test_job_from_values_is_the_job_the_constructor_makes() -> None:
    import pytest

    from spoolhouse.job import FIELDS, Job, JobState, job_from_values

    job = Job(id=new_job_id(), task="t", queue="q", payload=b"[]", state=JobState.RUNNING,
              priority=3, run_at=1.5, timeout=2.0, key="k", lease="x", headers='{"a":"b"}')
    copy = job_from_values([getattr(job, name) for name in FIELDS])
    assert copy == job and copy is not job and hash(copy) == hash(job)
    with pytest.raises(ValueError):
        job_from_values([getattr(job, name) for name in FIELDS][:-1])


def test_a_batch_whose_random_bits_run_over_borrows_the_next_millisecond() -> None:
    from spoolhouse import job as job_module

    at = 1_950_000_000.0
    ms = int(at * 1000)
    with job_module._id_lock:
        job_module._last = (ms, job_module._RAND_MASK - 5)  # a step or two from the top
    ids = job_module.new_job_ids(50, at)
    with job_module._id_lock:
        job_module._last = (ms + 1, job_module._RAND_MASK)  # at the very top
    ids.append(job_module.new_job_id(at))  # a single id runs over too
    assert ids == sorted(ids) and len(set(ids)) == 51
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps[0] in (ms, ms + 1) and stamps[-2] == ms + 1 and stamps[-1] == ms + 2
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_a_job_batch_makes_the_jobs_the_constructor_makes() -> None:
    from spoolhouse.job import Job, JobBatch

    template = Job(id="", task="t", queue="q", payload=b"", priority=2, run_at=5.0, key=None,
                   timeout=3.0, created_at=4.0)
    ids = [new_job_id(), new_job_id()]
    batch = JobBatch(template, ids, [b"a", b"b"], [None, '{"h":"1"}'])
    assert len(batch) == 2
    assert batch.jobs() == [
        template.replace(id=ids[0], payload=b"a"),
        template.replace(id=ids[1], payload=b"b", headers='{"h":"1"}'),
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_makes_other_ids_than_its_parent_and_never_blocks() -> None:
    """Parent and child go on from the same last id: the child draws new random bits,
    and gets a new id lock (the parent's may be held by another thread at fork)."""
    from spoolhouse import job as job_module

    at = 1_960_000_000.0
    job_module.new_job_ids(5, at)  # the last id is now in this millisecond
    job_module._id_lock.acquire()  # held by "another thread" while we fork
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its ids, written to the pipe
            try:
                ids = job_module.new_job_ids(500, at) + [job_module.new_job_id(at) for _ in range(500)]
                os.write(write_end, "\n".join(ids).encode())
            finally:
                os._exit(0)
    finally:
        job_module._id_lock.release()
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + 20
    try:
        while True:  # a child stuck on the inherited lock fails the test instead of hanging it
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the forked child did not finish making its ids")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = set(b"".join(chunks).decode().split("\n"))
    parent = set(job_module.new_job_ids(500, at) + [job_module.new_job_id(at) for _ in range(500)])
    assert len(child) == 1000 and len(parent) == 1000
    assert not child & parent
