"""Opening an SQLite file that several processes and threads share.

Both the embedded store and the simulated cloud live in such files. Outside
the layers (like ``errors``) so that neither has to import the other.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cloudlet.errors import StateDirError, StateFileError, StateFileLocked

BUSY_TIMEOUT_S = 30.0

# Threads of one process queue for a file's write lock on a Python lock rather
# than in SQLite's busy handler, whose sleeps (up to 100 ms each) would
# throttle a busy thread pool; other processes still wait in SQLite's.
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer(path: str) -> threading.Lock:
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(path, threading.Lock())


def _forget_writers_after_fork() -> None:
    """A lock some other thread held at fork time would never be released."""
    global _WRITERS_GUARD
    _WRITERS_GUARD = threading.Lock()
    _WRITERS.clear()


os.register_at_fork(after_in_child=_forget_writers_after_fork)


def ensure_dir(path: Path) -> None:
    """Make the directory an SQLite file lives in, or say in one line why not
    (``--state-dir`` naming a file is an operator's slip, not a bug)."""
    if path.exists() and not path.is_dir():
        raise StateDirError(f"state directory {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StateDirError(f"cannot create state directory {path}: {err.strerror}") from None


def _openers(path: Path) -> list[int]:
    """The other processes that have ``path`` open (Linux /proc; best effort):
    SQLite does not record which one holds its write lock."""
    target, found = os.path.realpath(path), []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()) if os.path.isdir("/proc") else ():
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                found.append(int(pid))
        except OSError:
            continue
    return sorted(found)


def file_error(path: Path, err: sqlite3.Error) -> StateFileError:
    """What an SQLite error says about the file, in one line naming it."""
    text = str(err)
    if "locked" in text or "busy" in text:
        pids = _openers(path)
        holder = f" (open in pid {', '.join(map(str, pids))})" if pids else ""
        return StateFileLocked(f"{path} is locked by another writer{holder}; try again later")
    if "readonly" in text or "read-only" in text:
        return StateFileError(f"{path} is read-only ({text}); nothing was changed")
    if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
        return StateFileError(
            f"{path} is not a usable SQLite database ({text}): truncated or corrupt? "
            "nothing was changed; restore it or move it aside"
        )
    return StateFileError(f"cannot use {path}: {text}")


@contextlib.contextmanager
def file_errors(path: Path) -> Iterator[None]:
    """Turn SQLite's errors inside into a ``StateFileError`` naming ``path``."""
    try:
        yield
    except sqlite3.Error as err:
        raise file_error(path, err) from err


def connect_shared(path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A WAL-mode connection with a busy timeout; BEGIN/COMMIT are the caller's.

    ``check_same_thread=False`` only so that an owner can close every thread's
    connection; each connection is still used by one thread.
    """
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")
    _enable_wal(conn, busy_timeout)
    return conn


def _enable_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Switching a fresh file to WAL can lose a race with another process that
    is creating it; SQLite answers "locked" at once instead of waiting."""
    deadline = time.monotonic() + patience
    while True:
        try:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"cannot switch {conn} to WAL mode")
        time.sleep(0.01)


class ThreadConnections:
    """One connection per live thread of this process.

    A daemon makes new worker threads for every sync; a connection kept per
    thread that died would leak three file descriptors each (db, wal, shm).
    So each new connection first closes those whose thread has ended. The
    registry is keyed by thread object, never by ident: idents are reused,
    and a reused ident must not hand a live thread a connection being closed.
    Connections inherited through fork are dropped, never used or closed.
    """

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._file = str(path.resolve())  # one writer lock per file, however it is spelt

    def get(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            conn: sqlite3.Connection = local.conn
            return conn
        conn = connect_shared(self.path, self.busy_timeout)
        with self._lock:
            if self._pid != os.getpid():
                self._conns, self._pid = {}, os.getpid()
            for thread in [t for t in self._conns if not t.is_alive()]:
                self._conns.pop(thread).close()
            self._conns[threading.current_thread()] = conn
        local.conn, local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def write(
        self, commit_on: tuple[type[BaseException], ...] = ()
    ) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection that holds SQLite's
        write lock from the start (``BEGIN IMMEDIATE``: no lock upgrade, so no
        deadlock, and a read-check-write cannot interleave with another
        writer). ``commit_on``: errors that still commit what came before."""
        conn = self.get()
        with _writer(self._file):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except commit_on:
                conn.execute("COMMIT")
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def count(self) -> int:
        with self._lock:
            return len(self._conns)

    def close_all(self) -> None:
        with self._lock:
            conns = list(self._conns.values()) if self._pid == os.getpid() else []
            self._conns.clear()
        for conn in conns:
            conn.close()
        self._local = threading.local()
