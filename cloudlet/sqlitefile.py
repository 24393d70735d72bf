"""Opening an SQLite file that several processes and threads share.

Both the embedded store and the simulated cloud live in such files. Outside
the layers (like ``errors``) so that neither has to import the other.
"""

from __future__ import annotations

import sqlite3
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
