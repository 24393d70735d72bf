"""The reconcile daemon on a real etcd: a lost cluster member, an etcd
restart, and a replica killed with ``kill -9``. Real processes throughout;
the simulated cloud (in the state dir) is read in-process to poll fast.

Every wait polls with a generous bound, for a loaded 2-core CI machine; the
bounds that matter to the design (acting on a change after a member loss,
takeover within the lease TTL) are asserted separately and stay tight.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROUTER, cli, cli_argv, cli_env, edited_copy, ok
from etcd_cluster import EtcdCluster
from etcd_server import (
    EtcdServer,
    etcd,  # noqa: F401 - the fixture, used by name
)
from test_daemon import NAME, tagged, wait_for

from cloudlet.errors import FencedOut
from cloudlet.providers.fake import FakeCloud
from cloudlet.store.base import Fence
from cloudlet.store.etcd import EtcdStore
from cloudlet.store.ownership import OWNERS, preferred
from cloudlet.store.records import StateRepo

RESOURCES = 23  # objects the router example makes


class Daemon:
    """``cloudlet reconcile`` in the background; stderr goes to a file (a
    pipe nobody reads could fill up during a long outage and block it)."""

    def __init__(
        self,
        state_dir: Path,
        endpoints: str,
        *args: str,
        prefix: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.etcd = endpoints
        self.env = {"CLOUDLET_ETCD_PREFIX": prefix} if prefix else {}
        tag = "-".join(a for a in args if a.isalnum())[:20] or "daemon"
        self.log = state_dir.parent / f"reconcile-{tag}-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                cli_argv(
                    state_dir,
                    *(["--verbose"] if verbose else []),
                    "--etcd",
                    endpoints,
                    "reconcile",
                    *args,
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=cli_env(self.env),
                cwd=state_dir,
            )

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.stderr}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM; it must exit 0 with no traceback."""
        print(f"--- daemon log ---\n{self.stderr}")  # pytest shows it if the test failed
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"daemon ignored SIGTERM:\n{self.stderr}") from None
        assert "Traceback" not in self.stderr, self.stderr
        assert self.proc.returncode == 0, self.stderr

    def cli(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """The CLI against the daemon's etcd and prefix."""
        return ok(cli("--etcd", self.etcd, *args, state_dir=self.state_dir, env=self.env))


def tagged_ids(state_dir: Path, name: str = NAME) -> list[str]:
    """Every tagged object's id, repeats included (``tagged`` folds them)."""
    cloud = FakeCloud(state_dir / "fake-cloud.db")
    try:
        return [o.id for o in cloud.list_objects(name) if o.id]
    finally:
        cloud.close()


def duplicates(ids: list[str]) -> list[str]:
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def cache(state_dir: Path, attr: str, name: str = NAME) -> object:
    """An attribute of ``vm/cache``, None while it is absent (a replace is
    a delete then a create: a poll may fall in between)."""
    return tagged(state_dir, name).get("vm/cache", {}).get(attr)


def flavor(state_dir: Path, name: str = NAME) -> object:
    return cache(state_dir, "flavor", name)


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster() as c:
        yield c


def test_daemon_keeps_working_when_an_etcd_member_dies(
    cluster: EtcdCluster, state_dir: Path, tmp_path: Path
) -> None:
    # The leader, listed first: the member whose loss hurts most (an
    # election, and the client's first endpoint refusing connections).
    leader = cluster.wait_leader()
    endpoints = cluster.endpoints_from(leader)
    daemon = Daemon(state_dir, endpoints, "--resync", "60")
    try:
        daemon.cli("apply", ROUTER)
        wait_for("first convergence", lambda: len(tagged(state_dir)) >= RESOURCES, timeout=30)
        assert flavor(state_dir) == "m1.small"

        victim = cluster.leader()
        victim = leader if victim is None else victim
        cluster.kill(victim)
        killed = time.monotonic()
        # A store call made before the survivors elect a new leader (about
        # 1 s) stalls in etcd for its request timeout (7 s), beyond the CLI's
        # default 5 s budget: the CLI would fail, so it waits for the election.
        # The daemon lives through the election on its own.
        cluster.wait_leader()
        bigger = edited_copy(
            ROUTER, tmp_path / "large.yaml", "flavor: m1.small", "flavor: m1.large"
        )
        daemon.cli("apply", bigger)  # the CLI, too, gets past the dead member
        wait_for("the edit acted on", lambda: flavor(state_dir) == "m1.large", timeout=30)
        daemon.assert_alive()
        elapsed = time.monotonic() - killed
        assert elapsed <= 15, f"with member {victim} dead, the edit took {elapsed:.1f} s"

        # The member comes back and rejoins; the daemon is none the worse.
        cluster.restart_member(victim)
        newer = edited_copy(bigger, tmp_path / "redis8.yaml", "image: redis-7", "image: redis-8")
        daemon.cli("apply", newer)
        wait_for("a second edit", lambda: cache(state_dir, "image") == "redis-8")
        daemon.assert_alive()
        assert not duplicates(tagged_ids(state_dir))
    finally:
        daemon.stop()


def test_etcd_restart_is_survived_with_no_lost_action(state_dir: Path, tmp_path: Path) -> None:
    server = EtcdServer().start()
    try:
        # --verbose: its log (shown if the test fails) says what it was doing
        daemon = Daemon(state_dir, server.endpoint, "--resync", "2", verbose=True)
        try:
            _restart_scenario(server, daemon, state_dir, tmp_path)
        finally:
            daemon.stop()
    finally:
        server.cleanup()


def _restart_scenario(server: EtcdServer, daemon: Daemon, state_dir: Path, tmp_path: Path) -> None:
    daemon.cli("apply", ROUTER)
    wait_for("first convergence", lambda: len(tagged(state_dir)) >= RESOURCES, timeout=30)
    before = sorted(tagged_ids(state_dir))
    assert len(before) == RESOURCES and not duplicates(before)

    server.stop()  # SIGTERM: etcd is gone
    # Drift made during the outage cannot be healed yet: every sync starts
    # by taking its lock in etcd, so no action runs without the store.
    ok(cli("fake", "rm", NAME, "vm/edge.worker.1", state_dir=state_dir))
    wait_for(
        "the daemon to notice the outage",
        lambda: "cannot reach etcd" in daemon.stderr or "cannot read" in daemon.stderr,
        timeout=20,
    )
    daemon.assert_alive()
    assert "vm/edge.worker.1" not in tagged(state_dir)

    server.start()  # same ports, same data
    bigger = edited_copy(ROUTER, tmp_path / "large.yaml", "flavor: m1.small", "flavor: m1.large")
    daemon.cli("apply", bigger)
    wait_for("the edit acted on", lambda: flavor(state_dir) == "m1.large", timeout=30)
    wait_for("drift healed", lambda: "vm/edge.worker.1" in tagged(state_dir), timeout=30)
    daemon.assert_alive()

    after = tagged_ids(state_dir)
    assert not duplicates(after), duplicates(after)
    assert sorted(after) == before
    with EtcdStore(server.endpoint) as store:
        repo = StateRepo(store)
        desired = repo.get_desired(NAME)
        assert desired is not None

        def synced() -> bool:
            last = (repo.get_status(NAME) or {}).get("lastSync") or {}
            return last.get("revision") == desired.revision and last.get("outcome") == "converged"

        wait_for("the edit recorded as converged", synced, timeout=30)
        assert repo.journal_pending(NAME) == []  # no action left half-done


def _split_names(replicas: tuple[str, str], count: int) -> list[str]:
    """``count`` cloudlet names that rendezvous hashing spreads over both replicas."""
    names = [f"site-{i}" for i in range(count)]
    i = count
    while {preferred(n, replicas) for n in names} != set(replicas):
        names[-1] = f"site-{i}"
        i += 1
    return names


def test_two_replicas_on_etcd_take_over_after_kill_9(
    etcd: EtcdServer,  # noqa: F811
    state_dir: Path,
    tmp_path: Path,
) -> None:
    prefix = f"/replicas-{tmp_path.name}"
    ids = ("a", "b")
    names = _split_names(ids, 4)
    ttl = 3.0
    replicas = {
        rid: Daemon(
            state_dir,
            etcd.endpoint,
            "--resync",
            "60",
            "--lease-ttl",
            str(ttl),
            "--replica-id",
            rid,
            prefix=prefix,
        )
        for rid in ids
    }
    store = EtcdStore(etcd.endpoint, prefix=prefix)
    repo = StateRepo(store)

    def owners() -> dict[str, str]:
        return {e.key.rsplit("/", 1)[1]: json.loads(e.value)["replica"] for e in store.list(OWNERS)}

    def last_sync(name: str) -> float:
        return float(((repo.get_status(name) or {}).get("lastSync") or {}).get("at") or 0.0)

    try:
        for name in names:
            spec = edited_copy(ROUTER, tmp_path / f"{name}.yaml", f"name: {NAME}", f"name: {name}")
            replicas["a"].cli("apply", spec)
        wait_for(
            "all converged",
            lambda: all(len(tagged(state_dir, n)) >= RESOURCES for n in names),
            timeout=45,
        )
        wait_for("both replicas own some", lambda: set(owners().values()) == set(ids), timeout=20)
        wait_for("every status written", lambda: all(last_sync(n) > 0 for n in names))
        split = owners()
        assert sorted(split) == sorted(names)
        victim = split[names[0]]
        survivor = next(r for r in ids if r != victim)
        lost = sorted(n for n, r in split.items() if r == victim)
        fences = {n: Fence(OWNERS + n, _create_revision(store, n)) for n in lost}

        replicas[victim].kill()  # SIGKILL: no graceful hand-over
        killed_at = time.time()
        t0 = time.monotonic()
        wait_for(
            "takeover",
            lambda: set(owners().values()) == {survivor} and len(owners()) == len(names),
            timeout=ttl + 10,
        )
        took = time.monotonic() - t0
        assert took <= ttl + 3, f"takeover took {took:.1f} s with a {ttl:g} s lease"

        # The fence the dead replica held is void: a takeover re-creates the
        # ownership record, so any write it could still attempt is refused.
        for name, fence in fences.items():
            assert _create_revision(store, name) != fence.revision
            with pytest.raises(FencedOut):
                store.put(f"/probe/{name}", b"late write", fence=fence)
            assert store.get(f"/probe/{name}") is None
        # ... while the survivor's writes land: it reconciles what it gained.
        wait_for(
            "the survivor's status writes",
            lambda: all(last_sync(n) > killed_at for n in lost),
            timeout=30,
        )
        for name in names:
            assert not duplicates(tagged_ids(state_dir, name)), name
            assert repo.journal_pending(name) == []
        replicas[survivor].assert_alive()
    finally:
        for daemon in replicas.values():
            if daemon.proc.poll() is None:
                daemon.stop()
        store.close()


def _create_revision(store: EtcdStore, name: str) -> int:
    entry = store.get(OWNERS + name)
    assert entry is not None, f"{name} has no owner"
    return entry.create_revision


def _journal_overlaps(store: EtcdStore, since: int, dead: dict[str, int]) -> list[str]:
    """Replay the journal's history from etcd and report every action begun for a
    cloudlet while another live replica had one open on it.

    An entry is a put when an action starts and a delete when it ends; ``dead``
    maps a killed replica to the revision of its death, after which what it
    left open is a crash leftover, not an action.
    """
    import threading

    from cloudlet.store.etcdwatch import watch_changes
    from cloudlet.store.records import JOURNAL

    end = store.put(f"{JOURNAL}~end/replay", b"{}")  # a last event to stop the replay at
    open_: dict[str, dict[str, str]] = {}
    overlaps: list[str] = []
    begun: Counter[str] = Counter()
    stop = threading.Event()
    for change in watch_changes(store, JOURNAL, since, stop):
        if change.mod_revision >= end:
            break
        name = change.key[len(JOURNAL) :].partition("/")[0]
        if name == "~end":  # an earlier replay's marker
            continue
        entries = open_.setdefault(name, {})
        if change.value is None:
            entries.pop(change.key, None)
            continue
        by = json.loads(change.value)["by"]
        begun[by] += 1
        live = {
            other
            for other in entries.values()
            if other != by and change.mod_revision <= dead.get(other, change.mod_revision)
        }
        if live:
            overlaps.append(f"{name} @ {change.mod_revision}: {by} began while {live} acted")
        entries[change.key] = by
    stop.set()
    assert set(begun) == {"a", "b"}, f"both replicas must have acted: {begun}"
    return overlaps


def test_two_replicas_never_act_on_one_cloudlet_at_once_by_the_journal(
    etcd: EtcdServer,  # noqa: F811
    state_dir: Path,
    tmp_path: Path,
) -> None:
    """A replica joins while the first is mid-sync (slow cloud: 1 s a call), then
    the first is killed mid-work; etcd's history of the journal must show one
    acting replica per cloudlet at any time."""
    prefix = f"/journal-{tmp_path.name}"
    ids = ("a", "b")
    names = _split_names(ids, 6)
    store = EtcdStore(etcd.endpoint, prefix=prefix)
    since = store.revision() + 1
    args = ("--resync", "60", "--lease-ttl", "3", "--workers", "4")
    replicas = {"a": Daemon(state_dir, etcd.endpoint, *args, "--replica-id", "a", prefix=prefix)}
    specs = {}
    try:
        for name in names:
            spec = edited_copy(ROUTER, tmp_path / f"{name}.yaml", f"name: {NAME}", f"name: {name}")
            slow = tmp_path / f"{name}-slow.yaml"
            specs[name] = edited_copy(spec, slow, "latencyMs: 10", "latencyMs: 1000")
            replicas["a"].cli("apply", specs[name])
        wait_for("a acts", lambda: any(tagged(state_dir, n) for n in names), timeout=30)
        replicas["b"] = Daemon(state_dir, etcd.endpoint, *args, "--replica-id", "b", prefix=prefix)
        wait_for(
            "all converged",
            lambda: all(len(tagged(state_dir, n)) >= RESOURCES for n in names),
            timeout=120,
        )
        for name in names:  # more work for both, then a dies in the middle of it
            bigger = edited_copy(specs[name], tmp_path / f"{name}-2.yaml", "m1.small", "m1.medium")
            replicas["a"].cli("apply", bigger)
        time.sleep(0.5)
        replicas["a"].kill()
        dead = {"a": store.revision()}
        wait_for(
            "b converges everything",
            lambda: all(
                not StateRepo(store).journal_pending(n)
                and "m1.small" not in json.dumps(tagged(state_dir, n))
                for n in names
            ),
            timeout=120,
        )
        assert _journal_overlaps(store, since, dead) == []
        for name in names:
            assert not duplicates(tagged_ids(state_dir, name)), name
        replicas["b"].assert_alive()
    finally:
        for daemon in replicas.values():
            if daemon.proc.poll() is None:
                daemon.stop()
        store.close()


def test_the_journal_replay_finds_an_overlap_when_there_is_one(
    etcd: EtcdServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The checker above, on a hand-made history: b begins while a's action is open."""
    store = EtcdStore(etcd.endpoint, prefix=f"/replay-{tmp_path.name}")
    since = store.revision() + 1
    a = StateRepo(store, actor="a")
    b = StateRepo(store, actor="b")

    def begin(repo: StateRepo, name: str, rid: str, at: float) -> str:
        return repo.journal_begin(name, f"create:{rid}", "create", at, resource=rid)

    first = begin(a, "site-x", "vm/one", 1.0)
    a.journal_end(first)
    b.journal_end(begin(b, "site-x", "vm/two", 2.0))  # after a: fine
    begin(a, "site-x", "vm/three", 3.0)  # left open...
    begin(b, "site-x", "vm/four", 4.0)  # ... while b begins: overlap
    begin(b, "site-y", "vm/one", 5.0)  # another cloudlet: fine
    overlaps = _journal_overlaps(store, since, dead={})
    assert len(overlaps) == 1 and overlaps[0].startswith("site-x @ ")
    assert "b began while {'a'} acted" in overlaps[0]
    dead_before = {"a": since}  # had a died before b began, its entry would be a leftover
    assert _journal_overlaps(store, since, dead=dead_before) == []
    store.close()
