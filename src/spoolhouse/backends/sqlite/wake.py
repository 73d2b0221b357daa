"""Cross-process wake-ups for processes sharing one SQLite file, without polling.

SQLite has no LISTEN/NOTIFY, so idle workers would otherwise poll. Instead
each thread that waits binds a Unix datagram socket in a directory derived
from the database's absolute path::

    <tmp>/spoolhouse-<uid>/<sha256(path)[:16]>/<pid>-<random>.sock

After a write that makes work available commits, the writer sends one small
datagram (the queue name) to every socket in that directory, without
blocking. A waiter blocks in ``poll`` on its socket and returns when a
datagram for one of its queues arrives.

It is best-effort by design: a lost datagram only delays a job until the
waiter's timeout, because workers always re-check with ``claim`` and never
wait longer than their own timeout. Sockets whose owner died refuse
datagrams (``ECONNREFUSED``) and are unlinked by the next sender. The
directory is private to the user (mode 0700), so wake-ups reach processes of
the same user; others fall back to their timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import select
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Sequence

log = logging.getLogger("spoolhouse.sqlite")

#: ``sun_path`` holds 108 bytes on Linux and 104 on macOS; stay below both.
MAX_SOCKET_PATH = 100
#: Queue names longer than this are sent as b"" ("any queue").
_MAX_MESSAGE = 200
#: A directory listing younger than this may miss a socket bound in the same
#: coarse mtime tick, so it is re-read on every notify until it ages.
_RACY_NS = 2_000_000_000
#: Re-read the listing at least this often even when the mtime says nothing changed.
_MAX_LISTING_AGE = 10.0

_SUFFIX = ".sock"


def default_wake_root() -> str:
    """``<tmp>/spoolhouse-<uid>``: the per-user parent of every database's wake directory."""
    return os.path.join(tempfile.gettempdir(), f"spoolhouse-{_uid()}")


def wake_dir_for(db_path: str, root: str | None = None) -> str:
    """The wake directory shared by every process that opens ``db_path``."""
    digest = hashlib.sha256(os.path.abspath(db_path).encode("utf-8", "surrogateescape"))
    return os.path.join(root or default_wake_root(), digest.hexdigest()[:16])


# Paths bound by this process, unlinked at exit. Keyed by path, valued by the
# binding pid so that a forked child never unlinks its parent's sockets.
_BOUND: dict[str, int] = {}
_BOUND_LOCK = threading.Lock()


def _unlink_bound_at_exit() -> None:
    pid = os.getpid()
    with _BOUND_LOCK:
        mine = [path for path, owner in _BOUND.items() if owner == pid]
    for path in mine:
        with contextlib.suppress(OSError):
            os.unlink(path)


atexit.register(_unlink_bound_at_exit)


def _reset_lock_in_child() -> None:
    global _BOUND_LOCK
    _BOUND_LOCK = threading.Lock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_in_child)


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _owned_directory(path: str) -> bool:
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == _uid()


class _Listener:
    """One thread's bound receiving socket."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            for _ in range(5):
                path = os.path.join(directory, f"{self.pid}-{secrets.token_hex(4)}{_SUFFIX}")
                try:
                    self.sock.bind(path)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    continue
                break
            else:
                raise OSError(errno.EADDRINUSE, "no free wake socket name")
        except BaseException:
            self.sock.close()
            raise
        self.path = path
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN)
        with _BOUND_LOCK:
            _BOUND[path] = self.pid

    def drain(self) -> list[bytes]:
        messages: list[bytes] = []
        while True:
            try:
                messages.append(self.sock.recv(_MAX_MESSAGE + 1))
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                return messages

    def close(self) -> None:
        """Close the socket; unlink its file only in the process that bound it."""
        if self.pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            # the last waiter leaves no empty directory behind (fails if others remain)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path))
            with _BOUND_LOCK:
                _BOUND.pop(self.path, None)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __del__(self) -> None:
        # A thread that exits drops its threading.local; do not leave the file behind.
        # (No contextlib here: module globals may already be gone at interpreter exit.)
        try:  # noqa: SIM105 - see above
            self.close()
        except Exception:
            pass


class _ThreadState(threading.local):
    listener: _Listener | None = None


class WakeChannel:
    """Wake-ups between processes using one database file. Thread-safe, fork-safe."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock_pair = (os.getpid(), threading.Lock())
        self._local = _ThreadState()
        self._paths: list[str] = []
        self._listing_mtime: int | None = None
        self._listing_at = 0.0
        # one socket connected to each waiter's socket: send() skips the path
        # lookup sendto() does (about 2 us per waiter per notify); used and
        # closed only under _lock, and only in the process that made them
        self._peers: dict[str, socket.socket] = {}
        self._peers_pid = 0
        self._usable: bool | None = None

    def _lock_for(self, pid: int) -> threading.Lock:
        # A lock held by another thread at fork() would stay held in the child.
        owner, lock = self._lock_pair
        if owner != pid:
            lock = threading.Lock()
            self._lock_pair = (pid, lock)
        return lock

    # -- setup -------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Whether wake-ups can work here: Unix sockets, ``poll``, and a short enough path."""
        if self._usable is None:
            self._usable = self._supported()
        return self._usable

    def _supported(self) -> bool:
        if not hasattr(socket, "AF_UNIX") or not hasattr(select, "poll"):
            return False
        longest = os.path.join(self.directory, f"{2**32}-{'f' * 8}{_SUFFIX}")
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            log.warning(
                "wake-ups disabled: socket paths under %s would exceed %d bytes; pass a "
                "shorter wake_dir= to the SQLite backend",
                self.directory,
                MAX_SOCKET_PATH,
            )
            return False
        return True

    def _make_directories(self) -> bool:
        """Create the per-user root and this database's directory, private to this user.

        Only waiters create them; a sender with nobody to wake finds no directory.
        """
        try:
            for path in (os.path.dirname(self.directory), self.directory):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path, 0o700)
                if not _owned_directory(path):
                    log.warning(
                        "wake-ups disabled: %s is not a directory owned by this user; remove "
                        "it or pass wake_dir= to the SQLite backend",
                        path,
                    )
                    return False
        except OSError as exc:
            log.warning("wake-ups disabled: cannot create %s (%s)", self.directory, exc)
            return False
        return True

    # -- sending -----------------------------------------------------------------
    def notify(self, queue: str | None = None) -> int:
        """Wake every waiter of this database; return how many sockets took the datagram.

        ``queue`` names the queue that gained work; ``None`` wakes waiters of
        every queue. Never blocks and never raises.
        """
        if not self.enabled:
            return 0
        message = b"" if queue is None else queue.encode("utf-8", "surrogateescape")
        if len(message) > _MAX_MESSAGE:
            message = b""
        try:
            # Sending under the lock is cheap (non-blocking sockets) and lets a
            # socket be closed without another thread still sending on it.
            pid = os.getpid()  # read once: a system call
            with self._lock_for(pid):
                return self._send_to_all(message, pid)
        except OSError:
            return 0

    def _send_to_all(self, message: bytes, pid: int) -> int:
        paths = self._listing(pid)
        if not paths:
            return 0
        peers = self._peers_here(pid)
        delivered = 0
        stale = False
        for path in paths:
            try:
                peer = peers.get(path)
                if peer is None:
                    peer = peers[path] = self._connect(path)
                peer.send(message)
                delivered += 1
            except (BlockingIOError, InterruptedError):
                delivered += 1  # its buffer is full of wake-ups it has not read yet
            except ConnectionRefusedError:
                # nobody is bound: the owner died without cleaning up (or closed
                # the socket we were connected to, and unlinked it already)
                self._drop_peer(path)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                stale = True
            except FileNotFoundError:
                self._drop_peer(path)
                stale = True
            except OSError:
                self._drop_peer(path)
        if stale:
            self._listing_mtime = None
        return delivered

    def _peers_here(self, pid: int) -> dict[str, socket.socket]:
        """This process's sockets to waiters; ``pid`` is ``os.getpid()``."""
        if self._peers_pid != pid:
            # inherited across fork: close this process's copies (the parent keeps its own)
            for peer in self._peers.values():
                with contextlib.suppress(OSError):
                    peer.close()
            self._peers = {}
            self._peers_pid = pid
        return self._peers

    @staticmethod
    def _connect(path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _drop_peer(self, path: str) -> None:
        peer = self._peers.pop(path, None)
        if peer is not None:
            with contextlib.suppress(OSError):
                peer.close()

    def _listing(self, pid: int) -> list[str]:
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            self._listing_mtime = None
            for path in list(self._peers_here(pid)):
                self._drop_peer(path)
            return []  # no waiter has ever bound here, or the last one left
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != _uid():
            return []  # not ours: send nothing into it
        now = time.monotonic()
        racy = time.time_ns() - info.st_mtime_ns < _RACY_NS
        if (
            racy
            or info.st_mtime_ns != self._listing_mtime
            or now - self._listing_at > _MAX_LISTING_AGE
        ):
            self._paths = [
                os.path.join(self.directory, n)
                for n in os.listdir(self.directory)
                if n.endswith(_SUFFIX)
            ]
            self._listing_mtime = info.st_mtime_ns
            self._listing_at = now
            listed = set(self._paths)
            for path in [p for p in self._peers_here(pid) if p not in listed]:
                self._drop_peer(path)  # its waiter left
        return self._paths

    # -- waiting -----------------------------------------------------------------
    def listen(self) -> bool:
        """Bind this thread's socket if it is not bound yet; return whether it was just bound.

        Wake-ups sent after this returns are kept until the next :meth:`wait`.
        A socket inherited across fork belongs to the parent, and one whose file
        vanished (a temp-dir cleaner) can no longer be found by senders: both
        are replaced.
        """
        listener = self._local.listener
        if listener is not None:
            if listener.pid == os.getpid() and os.path.lexists(listener.path):
                return False
            self._local.listener = None
            listener.close()  # in a forked child this closes only the child's copy
        if not self.enabled:
            return False
        for _ in range(3):
            if not self._make_directories():
                return False
            try:
                self._local.listener = _Listener(self.directory)
            except FileNotFoundError:
                continue  # the last waiter of another process removed the directory
            except OSError as exc:
                log.warning(
                    "wake-ups unavailable in this thread: cannot bind in %s (%s)",
                    self.directory,
                    exc,
                )
                return False
            return True
        return False

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a wake-up for one of ``queues``.

        Returns ``True`` when woken (possibly spuriously) and ``False`` on
        timeout. The first call in a thread binds its socket and returns ``True``
        at once: anything enqueued before the socket existed was not announced
        to it, so the caller must look (claim) again before waiting.
        Wake-ups already queued when the call starts also return at once,
        whatever their queue, since some may have been dropped while the
        socket's buffer was full.
        """
        if self.listen():
            return True
        listener = self._local.listener
        if listener is None:
            # no wake-ups here: a plain timed sleep; callers re-check on return
            threading.Event().wait(max(0.0, timeout))
            return False
        if listener.drain():
            return True
        wanted = {q.encode("utf-8", "surrogateescape") for q in queues}
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                ready = listener.poller.poll(max(1, int(remaining * 1000 + 0.999)))
            except InterruptedError:
                continue
            if not ready:
                continue  # poll rounds to milliseconds; the loop re-checks the deadline
            messages = listener.drain()
            if not wanted or any(m == b"" or m in wanted for m in messages):
                return True

    def close(self) -> None:
        """Close and unlink this thread's socket.

        The process's sockets connected to waiters stay open: other threads
        keep notifying through them (each is closed when its waiter leaves).
        """
        listener = self._local.listener
        self._local.listener = None
        if listener is not None:
            listener.close()
