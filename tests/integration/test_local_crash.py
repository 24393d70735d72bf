"""``kill -9`` of ``sync`` on ``local`` at several moments, then ``sync``:
nothing duplicated (one record, one namespace per VM), everything answers,
and ``destroy`` leaves the host as it was (the fixture checks)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import spawn
from localsite import (  # noqa: F401 - local_site is the fixture `site`
    Site,
    answers,
    local_site,
    spec,
    status,
    sync,
)

from cloudlet.store.records import StateRepo
from cloudlet.store.sqlite import open_store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

KILLS = 6


def test_sync_killed_at_random_moments_then_converges_with_nothing_twice(
    site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "k.yaml"
    path.write_text(spec("edge-k"))
    rng = random.Random(int(os.environ.get("CLOUDLET_CRASH_SEED", "9")))
    s = Site(site / "local", "edge-k")
    t0 = time.monotonic()
    sync(site, path)
    whole = time.monotonic() - t0  # start-up and all: kills land in its second half
    in_flight = 0
    for _ in range(KILLS):
        _break_the_vms(s)  # so that every sync has work to be cut off in
        proc = spawn("sync", path, "--yes", state_dir=site)
        time.sleep(rng.uniform(0.5, 1.0) * whole)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        repo = StateRepo(open_store(site))
        in_flight += bool(repo.journal_pending("edge-k"))
        repo.store.close()
    assert in_flight >= 2, f"only {in_flight} of {KILLS} kills landed during a step"
    sync(site, path)
    records = s.records.all()
    assert [i for i, n in Counter(r.id for r in records).items() if n > 1] == []
    vms = {r.uid for r in records if r.kind == "vm"}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = {line.split()[0] for line in listed.splitlines() if line.startswith(s.fabric + "-")}
    assert mine == {s.ns(uid) for uid in vms}, (mine, vms)
    for mapping in status(site, "edge-k")["portMappings"]:  # type: ignore[union-attr]
        assert answers(mapping) == f"vm/{mapping['target']}", mapping


def _break_the_vms(s: Site) -> None:
    for vm in (r for r in s.records.all() if r.kind == "vm"):
        ns = s.ns(vm.uid)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            subprocess.run(["kill", "-9", pid], check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
