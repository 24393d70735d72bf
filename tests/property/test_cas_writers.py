"""Writers of one cloudlet's desired spec never lose an update (issue 5).

Each writer reads the spec, then writes an edit conditional on what it read,
in an order hypothesis chooses; a plain model says which writes must win.
Run on both stores: the embedded one and a real etcd. The properties:

- a conditional write wins exactly when nobody wrote since its read, and
  otherwise fails with ``ConflictError`` (never overwrites silently);
- an unconditional write (``apply`` without ``--expect``) always wins;
- the history holds every winning write, in order, and nothing else; the
  current spec is the last winner.

The threads variant lets real concurrency pick the order: N writers doing
read-modify-write with retry on conflict; every one of their edits must end
up in the history, each exactly once.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcd_server import EtcdServer, shared_server
from harness import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudlet.errors import ConflictError
from cloudlet.store.base import Store
from cloudlet.store.etcd import EtcdStore
from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store

WRITERS = 3
NAME = "berlin-1"


_DIRS: list[Path] = []


def _sqlite() -> Store:
    _DIRS.append(Path(tempfile.mkdtemp(prefix="cloudlet-cas-")))
    return open_store(_DIRS[-1])


def _etcd() -> Store:
    server: EtcdServer = shared_server()
    return EtcdStore(server.endpoint, prefix=f"/cas-{time.monotonic_ns()}")


STORES = {"sqlite": _sqlite, "etcd": _etcd}


@pytest.fixture(params=sorted(STORES))
def new_store(request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        opened.append(STORES[request.param]())
        return opened[-1]

    yield make
    for store in opened:
        store.close()
    while _DIRS:
        shutil.rmtree(_DIRS.pop(), ignore_errors=True)


def _doc(edit: int) -> dict[str, object]:
    return {"spec": {"edit": edit}}


steps = st.lists(
    st.tuples(
        st.sampled_from(["read", "write", "blind"]), st.integers(min_value=0, max_value=WRITERS - 1)
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps)
def test_conditional_writes_win_exactly_when_nobody_wrote_since_their_read(
    new_store: Callable[[], Store], schedule: list[tuple[str, int]]
) -> None:
    store = new_store()
    repos = [StateRepo(store) for _ in range(WRITERS)]  # one client each, one store
    seen: list[int | None] = [None] * WRITERS  # what each writer last read (revision)
    read_version: list[int] = [0] * WRITERS  # the model's version at that read
    version = 0  # the model: how many writes have won
    winners: list[int] = []
    last_revision = 0
    for edit, (op, w) in enumerate(schedule):
        repo = repos[w]
        if op == "read":
            current = repo.get_desired(NAME)
            seen[w] = current.revision if current else 0
            read_version[w] = version
            continue
        expect = seen[w] if op == "write" else None
        if op == "write" and expect is None:
            continue  # a conditional write needs a read first
        should_win = op == "blind" or read_version[w] == version
        try:
            revision = repo.put_desired(NAME, _doc(edit), at=float(edit), expect_revision=expect)
        except ConflictError:
            assert not should_win, f"step {edit}: {op} by {w} refused, yet nobody wrote since"
            continue
        assert should_win, f"step {edit}: {op} by {w} overwrote a write it never saw"
        assert revision > last_revision
        last_revision = revision
        version += 1
        winners.append(edit)
    history = repos[0].history(NAME)
    assert [h.document for h in history] == [_doc(e) for e in winners]
    current = repos[0].get_desired(NAME)
    if winners:
        assert current is not None and current.document == _doc(winners[-1])
        assert current.revision == last_revision
    else:
        assert current is None


@settings(
    max_examples=examples(6),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=1, max_value=15))
def test_racing_read_modify_write_loses_no_edit(
    new_store: Callable[[], Store], writers: int, each: int
) -> None:
    store = new_store()
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(w: int) -> None:
        repo = StateRepo(store)
        try:
            start.wait(10)
            for i in range(each):
                while True:
                    current = repo.get_desired(NAME)
                    base = current.revision if current else 0
                    edits = list(current.document["edits"]) if current else []
                    doc = {"edits": [*edits, f"{w}.{i}"]}
                    try:
                        repo.put_desired(NAME, doc, at=0.0, expect_revision=base)
                        break
                    except ConflictError:
                        continue
        except BaseException as err:  # surfaced below, on the test's thread
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    final = StateRepo(store).get_desired(NAME)
    assert final is not None
    made = final.document["edits"]
    assert sorted(made) == sorted(f"{w}.{i}" for w in range(writers) for i in range(each))
    history = StateRepo(store).history(NAME)
    assert len(history) == writers * each  # one revision per edit, none lost
    assert [len(h.document["edits"]) for h in history] == list(range(1, writers * each + 1))
