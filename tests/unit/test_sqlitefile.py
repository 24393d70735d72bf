from __future__ import annotations

import threading
from pathlib import Path

from cloudlet.sqlitefile import ThreadConnections


def test_connections_of_dead_threads_are_closed(tmp_path: Path) -> None:
    conns = ThreadConnections(tmp_path / "x.db")

    def touch() -> None:
        conns.get().execute("SELECT 1")

    for _ in range(50):
        t = threading.Thread(target=touch)
        t.start()
        t.join()
    touch()
    assert conns.count() <= 2  # this thread's, and at most the last dead one's
    conns.close_all()
    assert conns.count() == 0


def test_one_connection_per_thread(tmp_path: Path) -> None:
    conns = ThreadConnections(tmp_path / "x.db")
    assert conns.get() is conns.get()
    assert conns.get().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
