"""The embedded store: the etcd-shaped Store in one SQLite file.

It exists so that ``cloudlet sync`` works on a single machine with no server.
Several CLI processes and a daemon may share one state directory, so:

- connections and write transactions are ``cloudlet.sqlitefile``'s: one
  connection per thread in WAL mode, writes under ``BEGIN IMMEDIATE``, so a
  read-check-write (compare-and-swap) cannot interleave with another writer;
- like etcd, one global revision counter is bumped by every successful write,
  and each key remembers the revision that created it and the one that last
  changed it, so CAS callers can say "only if nobody wrote since I read".

Locks are not kept in the database: a row lock would outlive a process killed
with SIGKILL. ``fcntl.flock`` on a file in ``<dir>/locks`` is released by the
kernel when its holder dies, which is exactly the recovery an operator
expects after a crashed sync. Nor can a living holder lose it, so a held
lock here has no fence and is never ``lost``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from cloudlet.errors import LockTimeout
from cloudlet.sqlitefile import BUSY_TIMEOUT_S, ThreadConnections, ensure_dir, file_errors
from cloudlet.store.base import Entry, Fences, HeldLock, conflict, fence_list, fenced_out

STATE_DB = "state.db"
LOCK_DIR = "locks"
LOCK_POLL_S = 0.02

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
"""


F = TypeVar("F", bound=Callable[..., Any])


def _named(method: F) -> F:
    """SQLite's errors (corrupt, read-only, locked file) name the store's file."""

    def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        with file_errors(self.path):
            return method(self, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper  # type: ignore[return-value]


class SqliteStore:
    """A revisioned key-value store with CAS in the SQLite file ``path``.

    Safe to use from many threads and processes at once; lock files live in
    ``path.parent / "locks"``.
    """

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_dir = self.path.parent / LOCK_DIR
        self._connections = ThreadConnections(self.path, busy_timeout)
        self._closed = False
        ensure_dir(self.path.parent)
        self._init_schema()

    # -- connections -------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"store {self.path} is closed")
        return self._connections.get()

    @_named
    def _init_schema(self) -> None:
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        self._conn()  # refused once closed
        return self._connections.write()

    # -- the Store protocol ------------------------------------------------

    @_named
    def get(self, key: str) -> Entry | None:
        row = (
            self._conn()
            .execute(
                "SELECT key, value, mod_revision, create_revision FROM kv WHERE key = ?", (key,)
            )
            .fetchone()
        )
        return _entry(row) if row else None

    @_named
    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        fence: Fences | None = None,
    ) -> int:
        with self._write() as conn:
            _check_fences(conn, fence)
            row = conn.execute(
                "SELECT create_revision, mod_revision FROM kv WHERE key = ?", (key,)
            ).fetchone()
            _check_expectation(key, expect_revision, row[1] if row else 0)
            rev = _bump(conn)
            created = row[0] if row else rev
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision)"
                " VALUES (?, ?, ?, ?)",
                (key, bytes(value), created, rev),
            )
            return rev

    @_named
    def delete(
        self, key: str, *, expect_revision: int | None = None, fence: Fences | None = None
    ) -> bool:
        with self._write() as conn:
            _check_fences(conn, fence)
            row = conn.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            _check_expectation(key, expect_revision, row[0] if row else 0)
            if row is None:
                # Like etcd, deleting nothing is not a write: no new revision.
                return False
            _bump(conn)
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            return True

    @_named
    def list(self, prefix: str) -> list[Entry]:
        # Keys sharing a prefix are contiguous in key order, so a range scan
        # from the prefix that stops at the first non-match is exact and uses
        # the primary key index, with no "successor string" arithmetic.
        cursor = self._conn().execute(
            "SELECT key, value, mod_revision, create_revision FROM kv WHERE key >= ? ORDER BY key",
            (prefix,),
        )
        out: list[Entry] = []
        for row in cursor:
            if not row[0].startswith(prefix):
                break
            out.append(_entry(row))
        cursor.close()
        return out

    @_named
    def revision(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return int(row[0])

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[HeldLock]:
        fd = _acquire_file_lock(self.lock_dir, name, timeout)
        try:
            yield HeldLock(name, fence=None)  # held until released or the process dies
        finally:
            _release_file_lock(fd)

    def close(self) -> None:
        self._closed = True
        self._connections.close_all()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


def open_store(state_dir: Path) -> SqliteStore:
    """The embedded store of a state directory, creating the directory."""
    state_dir = Path(state_dir)
    ensure_dir(state_dir)
    return SqliteStore(state_dir / STATE_DB)


# -- helpers ---------------------------------------------------------------


def _entry(row: tuple[str, bytes, int, int]) -> Entry:
    return Entry(key=row[0], value=bytes(row[1]), mod_revision=row[2], create_revision=row[3])


def _bump(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
    row = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
    return int(row[0])


def _check_fences(conn: sqlite3.Connection, fence: Fences | None) -> None:
    """Raise ``FencedOut`` for the first fence that moved; inside the write's
    transaction, so all of them are checked at once with the write."""
    for f in fence_list(fence):
        if f.lock:
            raise ValueError(f"lock {f.key!r}: this store's locks have no fence")
        row = conn.execute("SELECT create_revision FROM kv WHERE key = ?", (f.key,)).fetchone()
        actual = row[0] if row else 0
        if actual != f.revision:
            raise fenced_out(f, actual)


def _check_expectation(key: str, expected: int | None, actual: int) -> None:
    """Raise when a CAS expectation fails; ``actual`` is 0 for an absent key."""
    if expected is not None and expected != actual:
        raise conflict(key, expected, actual)


def lock_path(lock_dir: Path, name: str) -> Path:
    """The lock file for ``name``; quoting keeps any name inside ``lock_dir``
    and distinct names distinct (``a/b`` and ``a_b`` must not share a lock)."""
    if not name:
        raise ValueError("lock name must not be empty")
    return lock_dir / f"{quote(name, safe='')}.lock"


def _acquire_file_lock(lock_dir: Path, name: str, timeout: float) -> int:
    """Poll a non-blocking flock until ``timeout``; returns the held fd.

    Each call opens its own file description, so two threads of one process
    exclude each other too (flock conflicts between descriptions, not pids).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(lock_dir, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(timeout, 0.0)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _timeout_error(name, timeout, _holder_pid(fd)) from None
                time.sleep(min(LOCK_POLL_S, remaining))
        # Recorded only so that a waiter's error can name the holder.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release_file_lock(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _timeout_error(name: str, timeout: float, pid: int | None) -> LockTimeout:
    holder = f"pid {pid}" if pid is not None else "holder unknown"
    return LockTimeout(
        f"lock {name} is held by another process ({holder}); gave up after {timeout:g} s",
        holder=holder,
        waited=timeout,
    )
