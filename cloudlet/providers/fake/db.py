"""The fake cloud's SQLite file, which CLI runs, the daemon and test
subprocesses open at once (so it is opened as ``cloudlet.sqlitefile`` says)."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from cloudlet.errors import ProviderError
from cloudlet.sqlitefile import ThreadConnections, ensure_dir, file_errors

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


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_dir(path.parent)
        self._conns = ThreadConnections(path)
        with file_errors(path):
            self.conn().executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: never share one)."""
        try:
            return self._conns.get()
        except sqlite3.OperationalError as err:
            raise ProviderError(
                f"fake cloud: cannot open its database: {err}", transient=True
            ) from err

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; a ``ProviderError`` raised inside still commits.

        A refusal is an answer the cloud gave: its call count and violation
        record must survive it.
        """
        self.conn()  # a ProviderError if the file cannot be opened
        return self._conns.write(commit_on=(ProviderError,))

    def close(self) -> None:
        self._conns.close_all()
