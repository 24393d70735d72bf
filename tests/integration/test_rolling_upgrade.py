"""A rolling upgrade as README "Onboarding and upgrades" tells it: two replicas
on one store; stop one (SIGTERM), start its "new" daemon under the same
replica id (what a VM restarting its unit does: the host name stays), then
the other. Throughout, the lease records in the store are sampled every
50 ms: no cloudlet may go unowned for longer than one lease TTL. Owned means
an unexpired lease whose holder is a running process: a lease left behind by
a daemon that has exited counts as no owner (so a SIGKILL instead of the
graceful SIGTERM, which waits out the TTL, fails this test).

The embedded store serves both daemons (they share the state directory, as
test_daemon's two replicas do); the "new" version is this same code."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import NO_ROUTER, cli, cli_argv, cli_env, edited_copy, ok

from cloudlet.store.sqlite import open_store

TTL = 2.0
NAMES = [f"up-{i}" for i in range(6)]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def leases(state_dir: Path) -> dict[str, tuple[str, str, float]]:
    """cloudlet -> (replica, holder, expiry) from the store's lease records."""
    store = open_store(state_dir)
    try:
        out = {}
        for e in store.list("/cloudlet/owners/"):
            d = json.loads(e.value)
            out[e.key.rsplit("/", 1)[1]] = (d["replica"], d["holder"], float(d["expires"]))
        return out
    finally:
        store.close()


class Sampler(threading.Thread):
    """Every 50 ms: which cloudlets hold an unexpired lease; the longest span
    each went without one (from its last owned sample to its next)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(daemon=True)
        self.state_dir = state_dir
        self.halt = threading.Event()
        self.last_owned: dict[str, float] = {}
        self.longest = dict.fromkeys(NAMES, 0.0)
        self.samples = 0
        self.holders: dict[str, str] = {}  # holder -> replica id
        self.dead: set[str] = set()
        self.lock = threading.Lock()

    def retire(self, replica: str) -> None:
        """``replica``'s process has exited: the leases it holds serve nobody."""
        with self.lock:
            self.dead |= {h for h, r in self.holders.items() if r == replica}

    def run(self) -> None:
        self.last_owned = dict.fromkeys(NAMES, time.time())
        while not self.halt.is_set():
            now = time.time()
            held = leases(self.state_dir)
            self.samples += 1
            with self.lock:
                for name in NAMES:
                    lease = held.get(name)
                    if lease is None or lease[2] <= now or lease[1] in self.dead:
                        continue
                    self.longest[name] = max(self.longest[name], now - self.last_owned[name])
                    self.last_owned[name] = now
                    self.holders[lease[1]] = lease[0]
            self.halt.wait(0.05)

    def finish(self) -> float:
        """Stop; count a cloudlet still unowned now as a gap up to now."""
        self.halt.set()
        self.join(timeout=10)
        now = time.time()
        for name in NAMES:
            self.longest[name] = max(self.longest[name], now - self.last_owned[name])
        return max(self.longest.values())


def start(replica: str, state_dir: Path, logs: Path) -> subprocess.Popen[str]:
    """A daemon with its log in a file (a pipe nobody reads could fill and stall it)."""
    argv = cli_argv(state_dir, "reconcile", "--resync", "3", "--lease-ttl", str(TTL))
    log = (logs / f"{replica}-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(
        [*argv, "--replica-id", replica],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        cwd=state_dir,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def owned_by(state_dir: Path, holders_before: set[str], replica: str) -> bool:
    """Some cloudlet leased to ``replica`` by a process not seen before (the new daemon)."""
    return any(r == replica and h not in holders_before for r, h, _ in leases(state_dir).values())


def converged(state_dir: Path, specs: list[Path]) -> bool:
    return all(cli("plan", s, state_dir=state_dir).returncode == 0 for s in specs)


def test_a_rolling_upgrade_leaves_no_cloudlet_unowned_for_a_lease_ttl(
    state_dir: Path, tmp_path: Path
) -> None:
    specs = []
    for name in NAMES:
        spec = edited_copy(NO_ROUTER, tmp_path / f"{name}.yaml", "name: berlin-1", f"name: {name}")
        spec = edited_copy(spec, spec, "latencyMs: 20", "latencyMs: 2")
        ok(cli("apply", spec, state_dir=state_dir))
        specs.append(spec)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {"a": start("a", state_dir, logs), "b": start("b", state_dir, logs)}
    sampler = Sampler(state_dir)
    try:
        wait_for(
            "both replicas own some",
            lambda: (
                {v[0] for v in leases(state_dir).values()} == {"a", "b"}
                and len(leases(state_dir)) == len(NAMES)
            ),
        )
        wait_for("all converged", lambda: converged(state_dir, specs), timeout=90)
        sampler.start()
        for replica in ("a", "b"):  # one at a time: the other holds the cloudlets
            before = {h for _, h, _ in leases(state_dir).values()}
            stop(procs[replica])
            sampler.retire(replica)
            procs[replica] = start(replica, state_dir, logs)  # the "new" version
            wait_for(
                f"new {replica} owns its share",
                lambda r=replica, b=before: owned_by(state_dir, b, r),
            )
        # the new daemons keep the sites converged: drift made now is healed
        ok(cli("fake", "rm", NAMES[0], "vm/game", state_dir=state_dir))
        wait_for("drift healed by a new daemon", lambda: converged(state_dir, specs[:1]))
        time.sleep(TTL)  # let the split settle under the new daemons
        longest = sampler.finish()
        final = leases(state_dir)
    finally:
        sampler.halt.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    print(
        f"\nrolling upgrade: longest unowned gap {longest * 1000:.0f} ms"
        f" (lease TTL {TTL * 1000:.0f} ms; {sampler.samples} samples, every 50 ms)"
    )
    assert sampler.samples > 50, "the sampler hardly ran"
    assert longest < TTL, f"a cloudlet went unowned for {longest:.2f} s: {sampler.longest}"
    assert sorted(final) == NAMES
    assert {r for r, _, _ in final.values()} == {"a", "b"}, "the new daemons share the work"
    assert len(sampler.holders) >= 4, "both old and both new daemons held leases"
