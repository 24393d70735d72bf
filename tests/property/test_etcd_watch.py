"""Property: a watcher of the etcd store sees every revision, in order, exactly once,
whatever happens to its stream (dropped connections, a restarted etcd) in between.

Each example runs on a private etcd server (so restarts hurt nobody else);
hypothesis picks a sequence of puts, deletes, connection drops and server
restarts; a watcher thread collects what ``watch_changes`` yields from the
revision before the first write, and must end with exactly the writes'
revisions, keys and values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from etcd_server import EtcdServer
from harness import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudlet.errors import WatchCompacted
from cloudlet.store.base import Change
from cloudlet.store.etcd import EtcdStore
from cloudlet.store.etcdwatch import watch_changes

KEYS = [f"/cloudlet/desired/c{i}" for i in range(4)]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(min_size=1, max_size=40)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS)),
        st.tuples(st.just("drop")),
        st.tuples(st.just("restart")),
    ),
    min_size=1,
    max_size=25,
).filter(lambda xs: sum(1 for x in xs if x[0] == "restart") <= 2)


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    s = EtcdServer(durable=True).start()
    yield s
    s.cleanup()


class Collector:
    def __init__(self, store: EtcdStore, start: int) -> None:
        self.seen: list[Change] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(store, start), daemon=True)
        self._thread.start()

    def _run(self, store: EtcdStore, start: int) -> None:
        try:
            for change in watch_changes(store, "/cloudlet/desired/", start, self.stop):
                self.seen.append(change)
        except BaseException as err:  # handed to the test
            self.error = err

    def wait_for(self, revision: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.error is None:
            if self.seen and self.seen[-1].mod_revision >= revision:
                return
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_watchers_see_every_revision_in_order_across_failures(
    server: EtcdServer, steps: list[tuple]
) -> None:
    writer = EtcdStore(server.endpoint, prefix=f"/w{time.monotonic_ns()}", timeout=20)
    watcher_store = EtcdStore(server.endpoint, prefix=writer.prefix, timeout=20)
    start = writer.revision() + 1
    collector = Collector(watcher_store, start)
    expected: list[Change] = []
    try:
        for step in steps:
            if step[0] == "put":
                revision = writer.put(step[1], step[2])
                expected.append(Change(step[1], step[2], revision))
            elif step[0] == "delete":
                if writer.delete(step[1]):
                    expected.append(Change(step[1], None, writer.revision()))
            elif step[0] == "drop":
                # The watch stream's own client: its channel closes under it.
                for client in list(watcher_store.connection._own):
                    client.close()
            else:
                server.restart()
        if expected:
            collector.wait_for(expected[-1].mod_revision, timeout=30)
        else:
            time.sleep(0.2)
    finally:
        collector.close()
        writer.close()
        watcher_store.close()
    assert collector.error is None, collector.error
    assert collector.seen == expected


def test_a_compacted_start_is_reported_not_skipped(server: EtcdServer) -> None:
    store = EtcdStore(server.endpoint, prefix=f"/c{time.monotonic_ns()}", timeout=20)
    first = store.put("/cloudlet/desired/x", b"1")
    last = store.put("/cloudlet/desired/x", b"2")
    _, client = store.connection._client()
    client.compact(last)
    stop = threading.Event()
    with pytest.raises(WatchCompacted) as err:
        next(iter(watch_changes(store, "/cloudlet/desired/", first, stop)))
    assert err.value.compacted >= last - 1
    store.close()
