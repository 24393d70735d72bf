"""Opening an SQLite file that several processes and threads share.

Both the embedded store and the simulated cloud live in such files. Outside
the layers (like ``errors``) so that neither has to import the other.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


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
    So each new connection first closes those of threads no longer alive,
    and connections inherited through fork are dropped, never used or closed.
    """

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        key = (os.getpid(), threading.get_ident())
        conn = self._conns.get(key)
        if conn is None:
            conn = connect_shared(self.path, self.busy_timeout)
            with self._lock:
                self._prune()
                self._conns[key] = conn
        return conn

    def _prune(self) -> None:
        alive = {t.ident for t in threading.enumerate()}
        pid = os.getpid()
        for key in list(self._conns):
            if key[0] != pid:
                del self._conns[key]
            elif key[1] not in alive:
                self._conns.pop(key).close()

    def count(self) -> int:
        with self._lock:
            return len(self._conns)

    def close_all(self) -> None:
        with self._lock:
            conns = [c for k, c in self._conns.items() if k[0] == os.getpid()]
            self._conns.clear()
        for conn in conns:
            conn.close()
