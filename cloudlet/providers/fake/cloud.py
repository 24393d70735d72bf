"""A simulated cloud in SQLite: the orchestrator behind the ``fake`` platform.

It is a cloud, not a mock of the provider: it hands out its own ids, refuses
what a real orchestrator refuses (a port on a missing subnet, deleting a
network a subnet still uses), allocates addresses, and is slow and flaky on
request. The engine must get ordering, idempotency and retries right to
converge on it, and every refusal it provokes is kept in ``violations`` so a
test can assert that a sync provoked none. Its state is one database per
state directory (``db``), shared by every process using that directory.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cloudlet.errors import NotFound, ProviderError
from cloudlet.model.kinds import ADDRESSED, EXTERNAL, KINDS, is_external, ref, with_computed
from cloudlet.model.resources import AttrValue, Observed, freeze_value
from cloudlet.providers.fake.db import Database
from cloudlet.providers.fake.rules import disk_shrink, fixed_changes

T = TypeVar("T")

DB_FILE = "fake-cloud.db"
PUBLIC_POOL = "@public"
PUBLIC_CIDR = ipaddress.ip_network("198.18.0.0/15")

UID_PREFIX: Mapping[str, str] = {
    "network": "net",
    "subnet": "subnet",
    "router": "router",
    "security-group": "sg",
    "vip": "vip",
    "port": "port",
    "vm": "vm",
    "floating-ip": "fip",
    "k8s-node": "node",
    "lb": "lb",
    "lb-listener": "lsnr",
}

_COLUMNS = "uid, tag, kind, attrs, deps, pool, addr"
Row = tuple[str, str | None, str, str, str, str | None, int | None]

_INSTANCES = itertools.count()


def _observed(row: Row) -> Observed:
    return Observed(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]))


def _count(conn: sqlite3.Connection, op: str) -> None:
    conn.execute(
        "INSERT INTO calls (op, n) VALUES (?, 1) ON CONFLICT (op) DO UPDATE SET n = n + 1", (op,)
    )


def _parse_value(value: str) -> AttrValue:
    """Lets the CLI say ``flavor=m1.large`` and ``ports=["a"]`` alike."""
    try:
        return freeze_value(json.loads(value))
    except ValueError:
        return value


class FakeCloud:
    """The simulated orchestrator; knobs apply to the API calls only.

    ``observe``/``create``/``update``/``delete`` are the cloud's API, with
    latency and injected failures. The other public methods are the
    operator's console (for the CLI and tests): immediate and never failing.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        failure_rate: float = 0.0,
        seed: int = 0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], not {failure_rate}")
        self.path = Path(path)
        self._latency = max(0.0, latency_ms) / 1000
        self._jitter = max(0.0, jitter_ms) / 1000
        self._failure_rate = failure_rate
        self._sleep = sleep
        # Faults replay from the seed and the calls made (see ``_draw``); uids
        # also mix in the process so that two processes with the same seed
        # never draw the same ids.
        self._seed = str(seed)
        self._uid_rng = random.Random(f"{seed}:{os.getpid()}:{next(_INSTANCES)}")
        self._db = Database(self.path)

    @classmethod
    def for_state_dir(cls, state_dir: Path | str, **knobs: Any) -> FakeCloud:
        return cls(Path(state_dir) / DB_FILE, **knobs)

    # -- the cloud's API ---------------------------------------------------

    def observe(self, owner: str) -> list[Observed]:
        rows = self._call("observe", lambda conn: self._rows(conn, owner))
        return [_observed(row) for row in rows]

    def create(
        self, owner: str, kind: str, tag: str, attrs: Mapping[str, AttrValue], deps: Iterable[str]
    ) -> Observed:
        """Create, or return the object already named ``tag``: names are unique."""
        deps = sorted(set(deps))
        return self._call("create", lambda conn: self._create(conn, owner, kind, tag, attrs, deps))

    def update(
        self, owner: str, uid: str, attrs: Mapping[str, AttrValue], deps: Iterable[str]
    ) -> Observed:
        deps = sorted(set(deps))
        return self._call("update", lambda conn: self._update(conn, owner, uid, attrs, deps))

    def delete(self, owner: str, uid: str) -> None:
        self._call("delete", lambda conn: self._delete(conn, owner, uid))

    # -- the operator's console ---------------------------------------------

    def list_objects(self, owner: str) -> list[Observed]:
        return [_observed(row) for row in self._rows(self._db.conn(), owner)]

    def remove(self, owner: str, uid_or_id: str) -> None:
        """Delete behind the engine's back, dependents or not (that is drift)."""
        with self._db.write() as conn:
            self._drop(conn, self._find(conn, owner, uid_or_id))

    def set_attr(self, owner: str, uid_or_id: str, key: str, value: str) -> Observed:
        with self._db.write() as conn:
            row = self._find(conn, owner, uid_or_id)
            values = json.loads(row[3])
            values[key] = _parse_value(value)
            conn.execute("UPDATE objects SET attrs = ? WHERE uid = ?", (json.dumps(values), row[0]))
            return Observed(row[0], row[1], row[2], values, json.loads(row[4]))

    def copy(self, owner: str, uid_or_id: str) -> Observed:
        """A second object with the same tag, attributes and dependencies.

        Names are not unique in a real cloud, so a client that retries a
        create whose answer was lost can end up with two servers of one name;
        the engine must then delete all but one. The cloud's own ``create``
        never makes one (it adopts by tag); the operator's console does. The
        copy reuses the original's address rather than allocating one.
        """
        with self._db.write() as conn:
            row = self._find(conn, owner, uid_or_id)
            values, deps = json.loads(row[3]), json.loads(row[4])
            return self._insert(conn, owner, row[2], row[1], values, deps, None)

    def add_untagged(self, owner: str, kind: str, attrs: Mapping[str, AttrValue]) -> Observed:
        """A foreign object (made by hand, or by another tool) in the owner's project."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        values = dict(attrs)
        if kind == "vm":
            values.setdefault("status", "ACTIVE")
        with self._db.write() as conn:
            return self._insert(conn, owner, kind, None, values, [], None)

    def violations(self, owner: str | None = None) -> list[str]:
        rows = self._db.conn().execute(
            "SELECT owner, op, message FROM violations WHERE ? IS NULL OR owner = ? ORDER BY seq",
            (owner, owner),
        )
        return [f"{o}: {op}: {message}" for o, op, message in rows]

    def calls(self) -> dict[str, int]:
        return dict(self._db.conn().execute("SELECT op, n FROM calls ORDER BY op"))

    def close(self) -> None:
        self._db.close()

    # -- plumbing -------------------------------------------------------------

    def _draw(self) -> tuple[float, str | None]:
        """This call's latency and fault: draw n of the seed's one stream.

        Where the stream stands is kept in the database, so it advances
        across processes. Restarted from the seed in each process, a seed
        whose first draws fail would fail every CLI run's first calls alike,
        and no run would ever converge. Draw n comes from ``seed:n`` alone,
        so one seed and one sequence of calls replay the same faults.
        """
        if not self._failure_rate and not self._jitter:
            return self._latency, None
        with self._db.write() as conn:
            ((n,),) = conn.execute(
                "INSERT INTO draws (seed, n) VALUES (?, 0)"
                " ON CONFLICT (seed) DO UPDATE SET n = n + 1 RETURNING n",
                (self._seed,),
            ).fetchall()
        rng = random.Random(f"{self._seed}:{n}")
        jitter = rng.uniform(-self._jitter, self._jitter) if self._jitter else 0.0
        failed = rng.random() < self._failure_rate
        before = rng.random() < 0.5
        fault = ("before" if before else "after") if failed else None
        return max(0.0, self._latency + jitter), fault

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._sleep(seconds)

    def _call(self, op: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """One API call: half the latency, the committed work, the other half.

        Committing before answering is what a real cloud does, so a client
        killed (or timed out) mid-call leaves a real object behind.
        """
        delay, fault = self._draw()
        self._pause(delay / 2)
        if fault == "before":
            with self._db.write() as conn:
                _count(conn, op)
            raise ProviderError(f"{op}: injected failure before the work (503)", transient=True)
        with self._db.write() as conn:
            _count(conn, op)
            result = work(conn)
        self._pause(delay / 2)
        if fault == "after":
            raise ProviderError(f"{op}: injected failure after the work committed", transient=True)
        return result

    def _rows(self, conn: sqlite3.Connection, owner: str) -> list[Row]:
        sql = f"SELECT {_COLUMNS} FROM objects WHERE owner = ? ORDER BY seq"
        return conn.execute(sql, (owner,)).fetchall()

    def _find(self, conn: sqlite3.Connection, owner: str, uid_or_id: str) -> Row:
        sql = (
            f"SELECT {_COLUMNS} FROM objects WHERE owner = ? AND (uid = ? OR tag = ?)"
            " ORDER BY uid <> ?, seq"  # a uid first, else the oldest copy of a tag
        )
        row: Row | None = conn.execute(sql, (owner, uid_or_id, uid_or_id, uid_or_id)).fetchone()
        if row is None:
            raise NotFound(f"{owner}: no object {uid_or_id}")
        return row

    def _refuse(self, conn: sqlite3.Connection, owner: str, op: str, message: str) -> None:
        conn.execute(
            "INSERT INTO violations (owner, op, message) VALUES (?, ?, ?)", (owner, op, message)
        )

    def _require(
        self, conn: sqlite3.Connection, owner: str, op: str, tag: str, needed: set[str]
    ) -> None:
        """Refuse a reference to something that does not exist (yet)."""
        if not needed:
            return
        marks = ",".join("?" * len(needed))
        sql = f"SELECT tag FROM objects WHERE owner = ? AND tag IN ({marks})"
        present = {r[0] for r in conn.execute(sql, (owner, *needed))}
        missing = sorted(needed - present)
        if missing:
            message = f"{tag}: missing dependency {', '.join(missing)}"
            self._refuse(conn, owner, op, message)
            raise ProviderError(message, transient=False)

    def _create(
        self,
        conn: sqlite3.Connection,
        owner: str,
        kind: str,
        tag: str,
        attrs: Mapping[str, AttrValue],
        deps: list[str],
    ) -> Observed:
        sql = f"SELECT {_COLUMNS} FROM objects WHERE owner = ? AND tag = ?"
        existing: Row | None = conn.execute(sql, (owner, tag)).fetchone()
        if existing is not None:
            return _observed(existing)
        if kind not in KINDS:
            raise ProviderError(f"{tag}: unknown kind {kind!r}", transient=False)
        needed = set(deps)
        subnet = ref(attrs, "subnet")
        if kind in ("port", "vip") and subnet is not None:
            needed.add(subnet)  # the cloud resolves it, listed in deps or not
        self._require(conn, owner, "create", tag, needed)
        values = dict(attrs)
        if kind == "vm":
            values["status"] = "ACTIVE"
        pool = self._assign_address(conn, owner, kind, tag, values)
        return self._insert(conn, owner, kind, tag, values, deps, pool)

    def _assign_address(
        self, conn: sqlite3.Connection, owner: str, kind: str, tag: str, values: dict[str, Any]
    ) -> tuple[str, int] | None:
        if kind not in ADDRESSED:
            return None
        pool, net = PUBLIC_POOL, PUBLIC_CIDR
        if kind != "floating-ip" and not is_external(values):
            if ref(values, "subnet") is None:
                raise ProviderError(f"{tag}: needs a subnet or network {EXTERNAL}", transient=False)
            sql = "SELECT uid, attrs FROM objects WHERE owner = ? AND tag = ?"
            uid, subnet_attrs = conn.execute(sql, (owner, values["subnet"])).fetchone()
            pool, net = uid, ipaddress.ip_network(json.loads(subnet_attrs)["cidr"], strict=False)
        offset = self._allocate(conn, pool, net, tag)
        values["address"] = str(net.network_address + offset)
        return pool, offset

    @staticmethod
    def _allocate(
        conn: sqlite3.Connection,
        pool: str,
        net: ipaddress.IPv4Network | ipaddress.IPv6Network,
        tag: str,
    ) -> int:
        """Lowest free host offset: freed ones first, else the next never used."""
        (freed,) = conn.execute(
            "SELECT MIN(addr) FROM pool_free WHERE pool = ?", (pool,)
        ).fetchone()
        if freed is not None:
            conn.execute("DELETE FROM pool_free WHERE pool = ? AND addr = ?", (pool, freed))
            return int(freed)
        row = conn.execute("SELECT next FROM pool_next WHERE pool = ?", (pool,)).fetchone()
        offset = int(row[0]) if row else 2  # skip the network address and the .1 gateway
        if offset > net.num_addresses - 2:  # the last one is the broadcast address
            raise ProviderError(f"{tag}: no free address left in {net}", transient=False)
        conn.execute(
            "INSERT OR REPLACE INTO pool_next (pool, next) VALUES (?, ?)", (pool, offset + 1)
        )
        return offset

    def _insert(
        self,
        conn: sqlite3.Connection,
        owner: str,
        kind: str,
        tag: str | None,
        values: dict[str, Any],
        deps: list[str],
        address: tuple[str, int] | None,
    ) -> Observed:
        prefix = UID_PREFIX.get(kind, kind[:4])
        while True:  # a clash is rare (32 bits) but possible, e.g. after pid reuse
            uid = f"{prefix}-{self._uid_rng.getrandbits(32):08x}"
            if conn.execute("SELECT 1 FROM objects WHERE uid = ?", (uid,)).fetchone() is None:
                break
        pool, addr = address or (None, None)
        conn.execute(
            "INSERT INTO objects (uid, owner, tag, kind, attrs, deps, pool, addr)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (uid, owner, tag, kind, json.dumps(values), json.dumps(deps), pool, addr),
        )
        conn.executemany(
            "INSERT INTO edges (uid, dep, owner) VALUES (?, ?, ?)", [(uid, d, owner) for d in deps]
        )
        return Observed(uid, tag, kind, values, deps)

    def _update(
        self,
        conn: sqlite3.Connection,
        owner: str,
        uid: str,
        attrs: Mapping[str, AttrValue],
        deps: list[str],
    ) -> Observed:
        sql = f"SELECT {_COLUMNS} FROM objects WHERE owner = ? AND uid = ?"
        row: Row | None = conn.execute(sql, (owner, uid)).fetchone()
        if row is None:
            raise ProviderError(f"{uid}: not found", transient=False)
        _, tag, kind, old_json, _, _, _ = row
        old = json.loads(old_json)
        name = tag or uid
        changed = fixed_changes(kind, old, attrs)
        if changed:
            message = f"{name}: cannot change immutable {', '.join(changed)} in place"
            self._refuse(conn, owner, "update", message)
            raise ProviderError(message, transient=False)
        shrink = disk_shrink(kind, old, attrs)
        if shrink is not None:
            self._refuse(conn, owner, "update", f"{name}: {shrink}")
            raise ProviderError(f"{name}: {shrink}", transient=False)
        self._require(conn, owner, "update", name, set(deps))
        values = with_computed(kind, attrs, old)
        sql = "UPDATE objects SET attrs = ?, deps = ? WHERE uid = ?"
        conn.execute(sql, (json.dumps(values), json.dumps(deps), uid))
        conn.execute("DELETE FROM edges WHERE uid = ?", (uid,))
        conn.executemany(
            "INSERT INTO edges (uid, dep, owner) VALUES (?, ?, ?)", [(uid, d, owner) for d in deps]
        )
        return Observed(uid, tag, kind, values, deps)

    def _delete(self, conn: sqlite3.Connection, owner: str, uid: str) -> None:
        sql = f"SELECT {_COLUMNS} FROM objects WHERE owner = ? AND uid = ?"
        row: Row | None = conn.execute(sql, (owner, uid)).fetchone()
        if row is None:
            return
        tag = row[1]
        users = conn.execute(
            "SELECT o.tag FROM edges e JOIN objects o ON o.uid = e.uid"
            " WHERE e.owner = ? AND e.dep = ? ORDER BY o.tag LIMIT 3",
            (owner, tag),
        ).fetchall()
        # Users name what they use; while another copy of that name remains
        # (see ``copy``), they are not left without it.
        other = conn.execute(
            "SELECT 1 FROM objects WHERE owner = ? AND tag = ? AND uid <> ?", (owner, tag, uid)
        ).fetchone()
        if tag is not None and users and other is None:
            message = f"{tag}: conflict: still in use by {', '.join(u[0] for u in users)}"
            self._refuse(conn, owner, "delete", message)
            raise ProviderError(message, transient=True)
        self._drop(conn, row)

    @staticmethod
    def _drop(conn: sqlite3.Connection, row: Row) -> None:
        uid, pool, addr = row[0], row[5], row[6]
        conn.execute("DELETE FROM objects WHERE uid = ?", (uid,))
        conn.execute("DELETE FROM edges WHERE uid = ?", (uid,))
        # A subnet's uid names its address pool, which goes with it.
        conn.execute("DELETE FROM pool_next WHERE pool = ?", (uid,))
        conn.execute("DELETE FROM pool_free WHERE pool = ?", (uid,))
        if pool is not None:
            conn.execute(
                "INSERT OR IGNORE INTO pool_free (pool, addr)"
                " SELECT ?, ? WHERE EXISTS (SELECT 1 FROM pool_next WHERE pool = ?)",
                (pool, addr, pool),
            )
