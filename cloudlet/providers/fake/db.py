"""The fake cloud's SQLite file, shared by every process and thread using it.

Several CLI runs, the daemon and test subprocesses open the same file at
once, so: WAL (readers never block the writer), a connection per thread,
``BEGIN IMMEDIATE`` for every write (no lock upgrades, so no deadlocks) and a
generous busy timeout for the waits between processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloudlet.errors import ProviderError
from cloudlet.sqlitefile import ThreadConnections

BUSY_TIMEOUT_MS = 30_000

SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    tag TEXT,
    kind TEXT NOT NULL,
    attrs TEXT NOT NULL,
    deps TEXT NOT NULL,
    pool TEXT,
    addr INTEGER
);
DROP INDEX IF EXISTS objects_tag;
CREATE INDEX IF NOT EXISTS objects_by_tag ON objects (owner, tag, seq);
CREATE INDEX IF NOT EXISTS objects_owner ON objects (owner, seq);
CREATE TABLE IF NOT EXISTS edges (
    uid TEXT NOT NULL, dep TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (uid, dep)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_dep ON edges (owner, dep);
CREATE TABLE IF NOT EXISTS pool_next (pool TEXT PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pool_free (
    pool TEXT NOT NULL, addr INTEGER NOT NULL, PRIMARY KEY (pool, addr)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS violations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    op TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (op TEXT PRIMARY KEY, n INTEGER NOT NULL);
-- The position of each seed's fault stream: the next call draws n + 1.
CREATE TABLE IF NOT EXISTS draws (seed TEXT PRIMARY KEY, n INTEGER NOT NULL);
COMMIT;
"""

# Threads of one process queue on a Python lock rather than on SQLite's busy
# handler, whose sleeps (up to 100 ms each) would throttle a busy thread pool.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _process_lock(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _forget_locks_after_fork() -> None:
    """A lock some other thread held at fork time would never be released."""
    global _LOCKS_GUARD
    _LOCKS_GUARD = threading.Lock()
    _LOCKS.clear()


os.register_at_fork(after_in_child=_forget_locks_after_fork)


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_key = str(path.resolve())  # one lock per file, however it is spelt
        self._conns = ThreadConnections(path, BUSY_TIMEOUT_MS / 1000)
        self.conn().executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: never share one)."""
        try:
            return self._conns.get()
        except sqlite3.OperationalError as err:
            raise ProviderError(
                f"fake cloud: cannot open its database: {err}", transient=True
            ) from err

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; a ``ProviderError`` raised inside still commits.

        A refusal is an answer the cloud gave: its call count and violation
        record must survive it.
        """
        conn = self.conn()
        with _process_lock(self._lock_key):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except ProviderError:
                conn.execute("COMMIT")
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        self._conns.close_all()
