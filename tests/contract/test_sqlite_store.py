"""The Store contract for the embedded SQLite store, plus what only it promises:
exact +1 revisions, a file on disk shared by processes, and lock files that
stay inside the state directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_contract import StoreCaps, StoreContract, concurrent_increments

from cloudlet.store.base import Store
from cloudlet.store.sqlite import lock_path, open_store


class TestSqliteStoreContract(StoreContract):
    caps = StoreCaps(child_factory="cloudlet.store.sqlite:open_store")

    @staticmethod
    def make_store(path: Path) -> Store:
        return open_store(path)


def test_open_store_creates_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    with open_store(state) as store:
        assert store.path == state / "state.db"
        assert store.path.exists()
        assert store.revision() == 0


def test_revisions_count_writes_exactly(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert [store.put(f"/k/{i}", b"v") for i in range(3)] == [1, 2, 3]
        assert store.delete("/k/missing") is False
        assert store.revision() == 3  # deleting nothing is not a write
        assert store.delete("/k/0") is True
        assert store.revision() == 4


def test_data_survives_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.put("/k", b"v")
    with open_store(tmp_path) as store:
        entry = store.get("/k")
        assert entry is not None and entry.value == b"v" and store.revision() == 1


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    with pytest.raises(RuntimeError):
        store.get("/k")


@pytest.mark.parametrize("name", ["a/b", "../escape", "..", "x y", "berlin-1"])
def test_lock_files_stay_in_lock_dir(tmp_path: Path, name: str) -> None:
    with open_store(tmp_path) as store, store.lock(name, 0.2):
        path = lock_path(store.lock_dir, name)
        assert path.parent == tmp_path / "locks" and path.exists()


def test_lock_names_do_not_collide(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    assert lock_path(lock_dir, "a/b") != lock_path(lock_dir, "a_b")
    with open_store(tmp_path) as store, store.lock("a/b", 0.2), store.lock("a_b", 0.2):
        pass


_INCREMENTER = """
import sys
from pathlib import Path
from cloudlet.errors import ConflictError
from cloudlet.store.sqlite import open_store
store = open_store(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    while True:
        e = store.get("/counter")
        try:
            store.put("/counter", str(int(e.value) + 1).encode(), expect_revision=e.mod_revision)
            break
        except ConflictError:
            pass
"""


def test_processes_share_one_file_without_lost_updates(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.put("/counter", b"0")
    procs = [
        subprocess.Popen([sys.executable, "-c", _INCREMENTER, str(tmp_path), "40"])
        for _ in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    with open_store(tmp_path) as store:
        entry = store.get("/counter")
        assert entry is not None and entry.value == b"120"
        assert store.revision() == 121


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    writers=st.integers(min_value=2, max_value=6),
    increments=st.integers(min_value=1, max_value=15),
    own_handles=st.booleans(),
)
def test_concurrent_cas_writers_never_lose_an_update(
    tmp_path_factory: pytest.TempPathFactory, writers: int, increments: int, own_handles: bool
) -> None:
    state = tmp_path_factory.mktemp("cas")
    shared = open_store(state)
    stores = [open_store(state) if own_handles else shared for _ in range(writers)]
    concurrent_increments(shared, stores, increments, 60, final_revision=writers * increments)
