"""Checked by mypy in tests/type_check/test_types.py: lines marked E must be errors."""

from spoolhouse import JobHandle, Spooler

spooler = Spooler("memory://")


@spooler.task(retries=3, timeout=30)
def send_email(to: str, subject: str) -> str:
    return f"sent {subject} to {to}"


@spooler.task
def plain(n: int) -> int:
    return n


ok: JobHandle[str] = send_email.spool("a@b.c", subject="hi")
value: str = send_email("a@b.c", "hi")
ok2: JobHandle[int] = plain.spool(1)
ok3 = send_email.options(delay=5, key="k").spool("a@b.c", "hi")

send_email.spool(1, 2, 3)  # E: wrong arguments
plain.spool("x")  # E: wrong type
send_email.options(colour="red")  # E: unknown option
wrong: JobHandle[int] = send_email.spool("a", "b")  # E: result type
