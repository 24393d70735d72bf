"""The DESIGN.md command line, end to end: exit statuses and JSON shapes.

Each test drives the real CLI in subprocesses against its own state
directory (store and simulated cloud), as an operator would.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml
from conftest import (
    ALL_EXAMPLES,
    FLOATING_IP,
    NO_ROUTER,
    ROUTER,
    cli,
    cli_json,
    creates,
    describe,
    duplicates,
    edited_copy,
    fake_ls,
    fake_ls_unknown,
    ok,
    plan_json,
    tagged_ids,
)

from cloudlet.providers.fake import FakeCloud
from cloudlet.store.records import lock_name
from cloudlet.store.sqlite import open_store

LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \S")
MAPPING_KEYS = {"loadBalancer", "target", "protocol", "port", "publicPort", "publicIp"}


# --- validate ----------------------------------------------------------------------


def test_validate_examples_and_a_bad_file(tmp_path: Path, state_dir: Path) -> None:
    proc = ok(cli("validate", *ALL_EXAMPLES, state_dir=state_dir))
    for example in ALL_EXAMPLES:
        assert str(example) in proc.stdout, describe(proc)

    bad = edited_copy(NO_ROUTER, tmp_path / "bad.yaml", "cidr: 10.20.0.0/24", "cidr: 10.20.0/99")
    proc = ok(cli("validate", NO_ROUTER, bad, state_dir=state_dir), 1)
    lines = proc.stderr.splitlines()
    assert lines, describe(proc)
    for line in lines:
        m = LOCATED.match(line)
        assert m and m["file"] == str(bad), line
    # The cidr sits on line 22 of the example; the message points at it.
    (line,) = lines
    assert LOCATED.match(line)["line"] == "22", line  # type: ignore[index]
    assert "cidr" in line.lower()
    assert str(NO_ROUTER) not in proc.stderr  # the valid file raises no problem


# --- plan, sync, status --------------------------------------------------------------


def test_plan_sync_status(state_dir: Path) -> None:
    plan = plan_json(NO_ROUTER, state_dir, code=2)
    assert plan["cloudlet"] == "berlin-1"
    assert plan["actions"]
    ids = [a["id"] for a in plan["actions"]]
    assert not duplicates(ids)
    for action in plan["actions"]:
        # DESIGN.md's keys, and (issue 11) a create's desired attributes.
        assert set(action) == {"op", "id", "reason", "after", "attrs"}, action
        assert isinstance(action["attrs"], dict), action
        assert action["op"] == "create"
        assert re.fullmatch(r"[a-z0-9-]+/[a-z0-9.-]+", action["id"]), action
        assert isinstance(action["reason"], str) and action["reason"]
        assert set(action["after"]) <= set(ids), action
    after = {a["id"]: set(a["after"]) for a in plan["actions"]}
    assert "subnet/internal" in after["port/game"]
    assert "port/game" in after["vm/game"]
    # plan stores nothing
    ok(cli("status", "berlin-1", "--json", state_dir=state_dir), 1)
    fake_ls_unknown(state_dir, "berlin-1")  # nothing at the site, nothing stored

    summary = cli_json("sync", NO_ROUTER, "--yes", "--json", state_dir=state_dir)
    assert summary["cloudlet"] == "berlin-1"
    wall = next(summary[k] for k in ("wallSeconds", "wall", "wallTime") if k in summary)
    assert isinstance(wall, (int, float)) and wall > 0
    done = {a["id"]: a for a in summary["actions"]}
    assert set(done) == set(ids)
    for action in summary["actions"]:
        assert action["op"] == "create"
        assert action["outcome"] == "ok", action
        assert 0 <= action["started"] <= action["finished"] <= wall + 0.01, action
    for action in plan["actions"]:  # the order the plan promised is the order it ran
        for dep in action["after"]:
            assert done[dep]["finished"] <= done[action["id"]]["started"], (dep, action)

    again = cli_json("sync", NO_ROUTER, "--yes", "--json", state_dir=state_dir)
    assert again["actions"] == []
    ok(cli("plan", NO_ROUTER, state_dir=state_dir), 0)
    assert plan_json(NO_ROUTER, state_dir, code=0)["actions"] == []

    rows = fake_ls(state_dir, "berlin-1")
    assert sorted(tagged_ids(rows)) == sorted(ids)

    status = cli_json("status", "berlin-1", "--json", state_dir=state_dir)
    assert status["cloudlet"] == "berlin-1"
    assert status["drift"] == []
    assert {r["id"] for r in status["resources"]} == set(ids)
    for r in status["resources"]:
        assert {"id", "kind", "state"} <= set(r), r
        assert r["id"].split("/", 1)[0] == r["kind"]
    assert isinstance(status["conditions"], list) and status["conditions"]
    assert status["lastSync"]

    mappings = status["portMappings"]
    assert len(mappings) == 4  # apps:8443, game:443, chat:443 on root; api:443 on edge-api
    for m in mappings:
        assert set(m) == MAPPING_KEYS, m
        assert isinstance(m["port"], int) and isinstance(m["publicPort"], int)
        assert m["publicIp"]
    by_target = {m["target"]: m for m in mappings}
    assert set(by_target) == {"apps", "game", "chat", "api"}
    assert {m["loadBalancer"] for m in mappings} == {"root", "edge-api"}
    # game and chat both want tcp/443 on the shared root LB: one is remapped.
    remapped = [m for m in mappings if m["publicPort"] != m["port"]]
    assert len(remapped) == 1 and remapped[0]["target"] in ("game", "chat"), mappings
    assert remapped[0]["loadBalancer"] == "root"
    # A dedicated LB forwards unchanged.
    assert by_target["api"]["publicPort"] == 443
    seen: set[tuple[str, str, int]] = set()
    for m in mappings:
        key = (m["loadBalancer"], m["protocol"], m["publicPort"])
        assert key not in seen, mappings
        seen.add(key)
    # One public IP per LB, different LBs different IPs.
    root_ips = {m["publicIp"] for m in mappings if m["loadBalancer"] == "root"}
    assert len(root_ips) == 1 and by_target["api"]["publicIp"] not in root_ips

    proc = ok(cli("status", "no-such-cloudlet", "--json", state_dir=state_dir), 1)
    assert "no-such-cloudlet" in proc.stderr
    assert proc.stdout.strip() == ""


def test_drift_tour_and_destroy(state_dir: Path) -> None:
    ok(cli("sync", NO_ROUTER, "--yes", state_dir=state_dir))
    rows = fake_ls(state_dir, "berlin-1")
    total = len(rows)
    game = next(r for r in rows if r["id"] == "vm/game")
    assert game["kind"] == "vm"
    assert game["attrs"]["image"] == "game-server-v2"

    ok(cli("fake", "rm", "berlin-1", game["uid"], state_dir=state_dir))
    assert "vm/game" not in tagged_ids(fake_ls(state_dir, "berlin-1"))
    status = cli_json("status", "berlin-1", "--json", state_dir=state_dir)
    assert status["drift"] == ["vm/game"]
    plan = plan_json(NO_ROUTER, state_dir, code=2)
    assert [(a["op"], a["id"]) for a in plan["actions"]] == [("create", "vm/game")]

    ok(cli("sync", NO_ROUTER, "--yes", state_dir=state_dir))
    status = cli_json("status", "berlin-1", "--json", state_dir=state_dir)
    assert status["drift"] == []
    rows = fake_ls(state_dir, "berlin-1")
    assert len(rows) == total and not duplicates(tagged_ids(rows))

    ok(cli("fake", "set", "berlin-1", "vm/chat", "flavor=m1.tiny", state_dir=state_dir))
    plan = plan_json(NO_ROUTER, state_dir, code=2)
    (action,) = plan["actions"]
    assert (action["op"], action["id"]) == ("update", "vm/chat")
    assert "flavor" in action["reason"]

    # destroy without --yes and no terminal: refused, nothing deleted
    proc = ok(cli("destroy", "berlin-1", state_dir=state_dir), 1)
    assert "--yes" in proc.stderr
    assert len(fake_ls(state_dir, "berlin-1")) == total

    ok(cli("destroy", "berlin-1", "--yes", state_dir=state_dir))
    fake_ls_unknown(state_dir, "berlin-1")  # nothing left at the site, nor stored


def test_plan_json_names_the_copy_each_delete_removes(tmp_path: Path, state_dir: Path) -> None:
    """Copies of one id (a create retried after its answer was lost, on a cloud
    whose names are not unique) each get a delete of their own, and the plan
    says which object each delete removes: the uid `fake ls` shows."""
    ok(cli("sync", NO_ROUTER, "--yes", state_dir=state_dir))
    for rid in ("vm/game", "vm/game", "vm/chat", "vm/chat"):
        ok(cli("fake", "cp", "berlin-1", rid, state_dir=state_dir))
    rows = fake_ls(state_dir, "berlin-1")
    uids = {rid: {r["uid"] for r in rows if r["id"] == rid} for rid in ("vm/game", "vm/chat")}
    assert [len(u) for u in uids.values()] == [3, 3]

    # Both are wanted: one copy of each stays, the two others go, each by its uid.
    plan = plan_json(NO_ROUTER, state_dir, code=2)
    assert sorted((a["op"], a["id"]) for a in plan["actions"]) == [
        ("delete", "vm/chat"),
        ("delete", "vm/chat"),
        ("delete", "vm/game"),
        ("delete", "vm/game"),
    ]
    deletes = [a for a in plan["actions"] if a["id"] == "vm/game"]
    removed = [a["uid"] for a in deletes]
    assert len(set(removed)) == 2 and set(removed) < uids["vm/game"]
    (kept,) = uids["vm/game"] - set(removed)
    assert [a["reason"] for a in deletes] == [f"duplicate of {kept}"] * 2
    shown = ok(cli("plan", NO_ROUTER, state_dir=state_dir), 2).stdout
    for uid in removed:
        assert f"vm/game@{uid}" in shown, shown

    # vm/chat is no longer wanted: every copy goes, each by its uid.
    without_chat = edited_copy(
        NO_ROUTER,
        tmp_path / "no-chat.yaml",
        "    - name: chat\n      network: internal\n      image: chat-server-v1\n"
        "      flavor: m1.small\n"
        "      expose: {loadBalancer: root, ports: [{protocol: tcp, port: 443}]}\n",
        "",
    )
    plan = plan_json(without_chat, state_dir, code=2)
    chat = [a for a in plan["actions"] if a["id"] == "vm/chat"]
    assert [a["op"] for a in chat] == ["delete"] * 3, plan
    assert {a["uid"] for a in chat} == uids["vm/chat"]
    port = next(a for a in plan["actions"] if a["id"] == "port/chat")
    assert port["op"] == "delete" and "vm/chat" in port["after"]

    summary = cli_json("sync", without_chat, "--yes", "--json", state_dir=state_dir)
    assert summary["outcome"] == "converged" and summary["rounds"] == 1, summary
    after = fake_ls(state_dir, "berlin-1")
    ids = tagged_ids(after)
    assert not duplicates(ids) and "vm/chat" not in ids and "port/chat" not in ids
    assert [r["uid"] for r in after if r["id"] == "vm/game"] == [kept]
    ok(cli("plan", without_chat, state_dir=state_dir), 0)
    cloud = FakeCloud.for_state_dir(state_dir)
    try:
        assert cloud.violations() == []  # no port deleted under a copy still on it
    finally:
        cloud.close()


# --- graph ---------------------------------------------------------------------------


def test_graph_dot_and_svg(tmp_path: Path, state_dir: Path) -> None:
    dot_file = tmp_path / "x.dot"
    ok(cli("graph", ROUTER, "-o", dot_file, state_dir=state_dir))
    dot = dot_file.read_text()
    assert dot.lstrip().startswith(("digraph", "strict digraph"))
    edges = [line for line in dot.splitlines() if "->" in line]
    assert edges
    assert "vm/cache" in dot and "port/cache" in dot
    assert any("port/cache" in e and "vm/cache" in e for e in edges), edges

    # SVG needs Graphviz; `make test` installs it (system-deps). No silent skip.
    assert shutil.which("dot"), "graphviz 'dot' missing: run `make system-deps`"
    svg_file = tmp_path / "x.svg"
    proc = ok(cli("graph", ROUTER, "-o", svg_file, state_dir=state_dir))
    svg = svg_file.read_text()
    assert "<svg" in svg, describe(proc)
    assert "vm/cache" in svg


# --- desired-state revisions ----------------------------------------------------------


def test_apply_get_history_rollback(tmp_path: Path, state_dir: Path) -> None:
    ok(cli("apply", ROUTER, state_dir=state_dir))
    # apply stores the desired state only: nothing in the cloud yet
    assert fake_ls(state_dir, "munich-2") == []
    got = ok(cli("get", "munich-2", state_dir=state_dir)).stdout
    assert "munich-2" in got and "redis-7" in got
    doc = yaml.safe_load(got)
    assert doc["metadata"]["name"] == "munich-2"

    edited = edited_copy(ROUTER, tmp_path / "router-v2.yaml", "image: redis-7", "image: redis-8")
    ok(cli("apply", edited, state_dir=state_dir))
    assert "redis-8" in ok(cli("get", "munich-2", state_dir=state_dir)).stdout

    history = ok(cli("history", "munich-2", state_dir=state_dir)).stdout
    revisions = [int(r) for r in re.findall(r"^revision (\d+)", history, re.MULTILINE)]
    assert len(revisions) >= 2, history
    assert revisions == sorted(revisions)
    diff = [line.strip() for line in history.splitlines()]
    assert any(line.startswith("-") and "redis-7" in line for line in diff), history
    assert any(line.startswith("+") and "redis-8" in line for line in diff), history

    ok(cli("rollback", "munich-2", "--to", str(revisions[0]), state_dir=state_dir))
    got = ok(cli("get", "munich-2", state_dir=state_dir)).stdout
    assert "redis-7" in got and "redis-8" not in got
    assert yaml.safe_load(got)["metadata"]["name"] == "munich-2"

    ok(cli("rollback", "munich-2", "--to", "999999", state_dir=state_dir), 1)
    ok(cli("get", "no-such-cloudlet", state_dir=state_dir), 1)


def test_every_desired_state_writer_waits_for_the_lock_as_configured(
    tmp_path: Path, state_dir: Path
) -> None:
    """apply, rollback and sync all store through one writer: under the
    cloudlet's lock, for CLOUDLET_LOCK_TIMEOUT (rollback once waited a fixed 60 s)."""
    ok(cli("apply", ROUTER, state_dir=state_dir))
    first = yaml.safe_load(ok(cli("get", "munich-2", state_dir=state_dir)).stdout)
    edited = edited_copy(ROUTER, tmp_path / "v2.yaml", "image: redis-7", "image: redis-8")
    ok(cli("apply", edited, state_dir=state_dir))
    history = ok(cli("history", "munich-2", "--brief", state_dir=state_dir)).stdout
    before = re.findall(r"^revision (\d+)", history, re.MULTILINE)
    env = {"CLOUDLET_LOCK_TIMEOUT": "0.5"}
    store = open_store(state_dir)
    try:
        with store.lock(lock_name("munich-2"), 5.0):
            for args in (
                ("rollback", "munich-2", "--to", before[0]),
                ("apply", ROUTER),
                ("sync", ROUTER, "--yes"),
            ):
                proc = ok(cli(*args, state_dir=state_dir, env=env, timeout=20), 1)
                assert "being synced by another process" in proc.stderr, describe(proc)
                assert "0.5 s" in proc.stderr, describe(proc)
    finally:
        store.close()
    history = ok(cli("history", "munich-2", "--brief", state_dir=state_dir)).stdout
    assert re.findall(r"^revision (\d+)", history, re.MULTILINE) == before  # nothing stored
    assert fake_ls(state_dir, "munich-2") == []
    ok(cli("rollback", "munich-2", "--to", before[0], state_dir=state_dir, env=env))
    assert yaml.safe_load(ok(cli("get", "munich-2", state_dir=state_dir)).stdout) == first


# --- export heat ---------------------------------------------------------------------


def test_export_heat(tmp_path: Path, state_dir: Path) -> None:
    out = tmp_path / "stack.yaml"
    ok(cli("export", "heat", FLOATING_IP, "-o", out, state_dir=state_dir))
    stack = yaml.safe_load(out.read_text())
    assert "heat_template_version" in stack
    resources = stack["resources"]
    servers = [r for r in resources.values() if r["type"] == "OS::Nova::Server"]
    vms = creates(plan_json(FLOATING_IP, state_dir, code=2), "vm")
    assert vms
    assert len(servers) == len(vms)
    # each server carries its engine id (name, tag or metadata) so it can be found again
    for vm in vms:
        assert sum(vm in str(s["properties"]) for s in servers) == 1, vm
    # export is an artifact only: nothing stored, nothing created
    fake_ls_unknown(state_dir, "paris-3")


# --- spec edits, parallelism ---------------------------------------------------------


def test_spec_edits_replace_and_parallelism(tmp_path: Path, state_dir: Path) -> None:
    proc = ok(cli("sync", NO_ROUTER, "--yes", "--parallelism", "0", state_dir=state_dir), 1)
    assert "parallelism" in proc.stderr
    fake_ls_unknown(state_dir, "berlin-1")

    ok(cli("sync", NO_ROUTER, "--yes", "--parallelism", "1", state_dir=state_dir))
    before = {r["id"]: r["uid"] for r in fake_ls(state_dir, "berlin-1")}

    image = edited_copy(
        NO_ROUTER, tmp_path / "image.yaml", "image: game-server-v2", "image: game-server-v3"
    )
    plan = plan_json(image, state_dir, code=2)
    ops = {a["id"]: a for a in plan["actions"]}
    assert ops["vm/game"]["op"] == "replace"
    assert "image" in ops["vm/game"]["reason"]
    assert "vm/chat" not in ops and "subnet/internal" not in ops

    cidr = edited_copy(NO_ROUTER, tmp_path / "cidr.yaml", "10.20.0.0/24", "10.21.0.0/24")
    plan = plan_json(cidr, state_dir, code=2)
    ops = {a["id"]: a for a in plan["actions"]}
    assert ops["subnet/internal"]["op"] == "replace"
    assert "cidr" in ops["subnet/internal"]["reason"]
    # every VM with a leg on the subnet is rebuilt with it
    for vm in ("vm/game", "vm/chat", "vm/api", "vm/root.0", "vm/apps.worker.1"):
        assert ops[vm]["op"] == "replace", (vm, ops.get(vm))
    assert "network/internal" not in ops

    ok(cli("sync", cidr, "--yes", state_dir=state_dir))
    ok(cli("plan", cidr, state_dir=state_dir), 0)
    after = fake_ls(state_dir, "berlin-1")
    assert not duplicates(tagged_ids(after))
    uids = {r["id"]: r["uid"] for r in after}
    assert set(uids) == set(before)
    assert uids["vm/game"] != before["vm/game"]  # replaced: a new object
    assert uids["network/internal"] == before["network/internal"]  # untouched
    subnet = next(r for r in after if r["id"] == "subnet/internal")
    assert subnet["attrs"]["cidr"] == "10.21.0.0/24"
    port = next(r for r in after if r["id"] == "port/game")
    assert port["attrs"]["address"].startswith("10.21.0.")


def test_a_flavor_change_that_shrinks_the_disk_is_planned_as_a_replacement(
    tmp_path: Path, state_dir: Path
) -> None:
    """Growing a VM is a resize in place; shrinking its root disk cannot be
    (the fake has Nova's rule), so the plan says replace, and why, up front."""
    small = ROUTER
    large = edited_copy(ROUTER, tmp_path / "large.yaml", "flavor: m1.small", "flavor: m1.large")
    ok(cli("sync", small, "--yes", state_dir=state_dir))
    first = {r["id"]: r["uid"] for r in fake_ls(state_dir, "munich-2")}

    grow = {a["id"]: a for a in plan_json(large, state_dir, code=2)["actions"]}
    assert grow["vm/cache"]["op"] == "update", grow
    ok(cli("sync", large, "--yes", state_dir=state_dir))
    grown = {r["id"]: r["uid"] for r in fake_ls(state_dir, "munich-2")}
    assert grown == first  # resized in place

    shrink = {a["id"]: a for a in plan_json(small, state_dir, code=2)["actions"]}
    assert shrink["vm/cache"]["op"] == "replace", shrink
    assert shrink["vm/cache"]["reason"] == (
        "flavor: m1.large → m1.small "
        "(forces replacement: a resize cannot shrink the root disk from 80 to 20 GB)"
    )
    assert "port/cache" not in shrink  # the server goes; its port stays
    ok(cli("sync", small, "--yes", state_dir=state_dir))
    ok(cli("plan", small, state_dir=state_dir), 0)
    after = fake_ls(state_dir, "munich-2")
    assert not duplicates(tagged_ids(after))
    uids = {r["id"]: r["uid"] for r in after}
    assert uids["vm/cache"] != grown["vm/cache"]
    assert uids["port/cache"] == grown["port/cache"]
    cloud = FakeCloud.for_state_dir(state_dir)
    try:
        assert cloud.violations() == []  # never asked to shrink in place
    finally:
        cloud.close()
