"""Who may be a site, and what a token opens (issue 12), with real
processes: ``cloudlet relay`` with a site CA made here, ``cloudlet
relay-agent``s with and without site certificates, users' ``cloudlet
shell``. No root: the cloudlets are on the fake platform, where the site
side answers a session with one line saying it has no shell there; that
line still comes through the relay, so the session is real (it uses its
token and is audited), and the refusals are the relay's own.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli
from relaykit import (
    Agent,
    Relay,
    SiteCA,
    argv,
    audit_records,
    env,
    free_port,
    make_cert,
    two_vms,
    wait_for,
)

SERVED, UNGRANTED = "relay-b", "relay-c"
ON_FAKE = f"cloudlet: {SERVED} is on fake: shell and logs there need"


class Bench:
    def __init__(self, tmp: Path, relay: Relay, ca: SiteCA, site: Agent) -> None:
        self.tmp, self.state, self.relay, self.ca, self.site = tmp, relay.state, relay, ca, site

    def token(self, vm: str = "game", *flags: str, name: str = SERVED) -> str:
        proc = cli("token", "issue", name, vm, *flags, state_dir=self.state)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def user(self, token: str, name: str = SERVED, vm: str = "game") -> list[str]:
        flags = ["--relay", self.relay.address, "--token", token, "--tls-ca", str(self.relay.cert)]
        return argv(self.state, "shell", name, vm, *flags, "--", "true")

    def shell(self, token: str, name: str = SERVED, vm: str = "game") -> tuple[int, str]:
        proc = subprocess.run(
            self.user(token, name, vm), capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL, env=env(), check=False,
        )  # fmt: skip
        assert proc.stdout == "" and "Traceback" not in proc.stderr, proc
        return proc.returncode, proc.stderr

    def agent(self, site: str, cert: tuple[Path, Path] | None) -> Agent:
        return Agent(self.state, self.relay, site, self.tmp / f"{site}.log", cert)

    def refusals(self, under: str, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in audit_records(self.state, under)
            if r["event"] == "refused" and all(r.get(k) == v for k, v in match.items())
        ]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    tmp = tmp_path_factory.mktemp("relay-sites")
    state = tmp / "state"
    for name in (SERVED, UNGRANTED):
        (tmp / f"{name}.yaml").write_text(two_vms(name, "fake", "10.63.0.0/24"))
        assert cli("sync", tmp / f"{name}.yaml", "--yes", state_dir=state).returncode == 0
    ca = SiteCA(tmp)
    relay = Relay(state, free_port(), *make_cert(tmp), tmp / "relay.log", ca.path)
    site: Agent | None = None
    try:
        relay.start()
        # the site's store holds both cloudlets; its certificate grants one
        site = Agent(state, relay, "good-site", tmp / "good.log", ca.site("good-site", SERVED))
        wait_for("the site's registration", lambda: site.registrations() >= 1)
        yield Bench(tmp, relay, ca, site)
    finally:
        if site is not None:
            site.stop()
        relay.stop()


def _relay_cmd(state: Path, cert: Path, key: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    args = ("relay", "--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(cert))
    return subprocess.run(
        argv(state, *args, "--tls-key", str(key), *flags), capture_output=True, text=True,
        timeout=30, stdin=subprocess.DEVNULL, env=env(), check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        ((), "cloudlet: --site-ca CA is needed"),
        (
            ("--site-ca", "CA", "--insecure-unauthenticated-sites"),
            "cloudlet: relay: argument --insecure-unauthenticated-sites: not allowed with "
            "argument --site-ca",
        ),
    ],
)
def test_the_relay_does_not_start_without_site_authentication(
    tmp_path: Path, flags: tuple[str, ...], said: str
) -> None:
    cert, key = make_cert(tmp_path)
    proc = _relay_cmd(tmp_path / "state", cert, key, *flags)
    assert proc.returncode == 1, proc
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(said), proc.stderr
    assert not (tmp_path / "state").exists()  # nothing was opened, let alone served


def test_an_insecure_relay_says_so_and_lets_any_site_serve(bench: Bench, tmp_path: Path) -> None:
    relay = Relay(bench.state, free_port(), bench.relay.cert, bench.relay.key, tmp_path / "r", None)
    agent: Agent | None = None
    try:
        relay.start()
        agent = Agent(bench.state, relay, "anyone", tmp_path / "a.log", None)
        wait_for("the site's registration", lambda: agent.registrations() >= 1)
        assert "WARNING cloudlet.relay: sites are not authenticated" in relay.log.read_text()
    finally:
        if agent is not None:
            agent.stop()
        relay.stop()


@pytest.mark.parametrize("which", ["none", "another-ca"])
def test_a_site_without_a_certificate_of_the_site_ca_is_refused_and_audited(
    bench: Bench, which: str
) -> None:
    site = f"rogue-{which}"
    cert = None if which == "none" else SiteCA(bench.tmp, f"other CA {which}").site(site, "*")
    why = {
        "none": "a site must present a client certificate signed by the relay's --site-ca",
        "another-ca": "site certificate refused: ",
    }[which]
    before = len(bench.refusals("-", role="site"))
    agent = bench.agent(site, cert)
    try:
        wait_for("the refusal's record", lambda: len(bench.refusals("-", role="site")) > before)
        wait_for("the site's retry", lambda: "not reached" in agent.said())
    finally:
        agent.stop()
    rec = bench.refusals("-", role="site")[-1]
    assert str(rec["reason"]).startswith(why), rec
    assert str(rec["peer"]).startswith("127.0.0.1:") and isinstance(rec["time"], float)
    if which == "none":  # it said who it claims to be and what it wanted
        assert (rec["site"], rec["cloudlets"]) == (site, [SERVED, UNGRANTED]), rec
    assert agent.registrations() == 0
    assert f"refused {rec['peer']} (site): {why}" in bench.relay.log.read_text()


def test_a_site_certificate_grants_only_the_cloudlets_it_names(bench: Bench) -> None:
    """The good site serves both cloudlets of its store but its certificate
    names one: the other is refused (audited), and so is a user of it; a
    certified site naming another cloudlet cannot take over the first."""
    [rec] = bench.refusals(UNGRANTED, role="site", site="good-site")
    assert rec["reason"] == f"site good-site: its certificate does not name cloudlet {UNGRANTED}"
    assert rec["siteCert"] == "good-site"
    assert "refused to let this site serve relay-c" in bench.site.said()

    token = bench.token(name=UNGRANTED)
    assert bench.shell(token, UNGRANTED) == (
        1, f"cloudlet: relay refused: no site is connected for cloudlet {UNGRANTED}\n",
    )  # fmt: skip
    [rec] = bench.refusals(UNGRANTED, role="user", token=token.split(".")[0])
    assert rec["reason"] == f"no site is connected for cloudlet {UNGRANTED}"

    rogue = bench.agent("rogue", bench.ca.site("rogue", "elsewhere-*"))
    try:
        wait_for("the rogue's registration", lambda: rogue.registrations() >= 1)
        wait_for("its refusal", lambda: bench.refusals(SERVED, role="site", site="rogue"))
        token = bench.token()
        assert bench.shell(token)[1].startswith(ON_FAKE)  # served, by the good site
        [session] = [
            r for r in audit_records(bench.state, SERVED) if r["token"] == token.split(".")[0]
        ]
        assert (session["site"], session["siteCert"]) == ("good-site", "good-site"), session
    finally:
        rogue.stop()


def _record(state: Path, tid: str) -> dict[str, Any]:
    with sqlite3.connect(state / "state.db") as db:
        [(value,)] = db.execute("SELECT value FROM kv WHERE key = ?", (f"/cloudlet/tokens/{tid}",))
    return dict(json.loads(value))


def test_a_refusal_leaves_the_token_unused(bench: Bench) -> None:
    token = bench.token(name=UNGRANTED)
    assert bench.shell(token, UNGRANTED)[0] == 1  # no site for it: refused
    assert _record(bench.state, token.split(".")[0])["used"] == 0


@pytest.mark.parametrize("which", ["wrong", "expired", "other-vm", "reused"])
def test_a_refused_token_is_audited_without_its_secret(bench: Bench, which: str) -> None:
    if which == "wrong":
        token = bench.token().split(".")[0] + ".not-the-secret"
        why = "token refused: unknown token"
    elif which == "expired":
        token, why = bench.token("game", "--ttl", "0.3"), "expired"
        time.sleep(0.5)
    elif which == "other-vm":
        token, why = bench.token("chat"), f"is for {SERVED} vm/chat, not {SERVED} vm/game"
    else:
        token, why = bench.token(), "was used (1 session); issue another"
        assert bench.shell(token)[1].startswith(ON_FAKE)  # its one session
    code, said = bench.shell(token)
    assert code == 1 and len(said.splitlines()) == 1 and why in said, said
    tid, secret = token.split(".")
    [rec] = bench.refusals(SERVED, token=tid)
    asked = (rec["role"], rec["cloudlet"], rec["vm"], rec["kind"], rec["cmd"])
    assert asked == ("user", SERVED, "vm/game", "shell", ["true"]), rec
    assert why in rec["reason"] and str(rec["peer"]).startswith("127.0.0.1:")
    stored = _record(bench.state, tid) if which != "wrong" else {}
    text = json.dumps(rec)
    assert secret not in text and (not stored or stored["sha256"] not in text)


def test_a_token_opens_one_session_even_when_used_at_once(bench: Bench) -> None:
    token = bench.token()
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    users = [subprocess.Popen(bench.user(token), env=env(), text=True, **pipes) for _ in range(4)]
    said = sorted(u.communicate(timeout=30)[1] for u in users)
    served = [s for s in said if s.startswith(ON_FAKE)]
    refused = [s for s in said if "token refused:" in s and "was used (1 session)" in s]
    assert (len(served), len(refused)) == (1, 3), said
    assert _record(bench.state, token.split(".")[0])["used"] == 1


def test_a_token_issued_for_more_sessions_opens_that_many(bench: Bench) -> None:
    token = bench.token("game", "--sessions", "2")
    assert [bench.shell(token)[1].startswith(ON_FAKE) for _ in range(2)] == [True, True]
    assert "was used (2 sessions)" in bench.shell(token)[1]


def _tokens(state: Path) -> int:
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT count(*) FROM kv WHERE key LIKE '/cloudlet/tokens/%'")
        return int(rows.fetchone()[0])


@pytest.mark.parametrize(
    ("name", "vm", "said"),
    [
        ("nowhere", "game", "cloudlet: no cloudlet named 'nowhere' in "),
        (SERVED, "nope", f"cloudlet: cloudlet {SERVED} has no VM 'nope' (its VMs: chat, game)"),
        (SERVED, "network/internal", f"cloudlet: cloudlet {SERVED} has no VM 'network/internal'"),
        ("a/b", "game", "cloudlet: no cloudlet named 'a/b' in "),
        (SERVED, "game --sessions 0", "cloudlet: --sessions must be between 1 and 100, not 0"),
    ],
)
def test_token_issue_names_a_vm_that_is_not_there(
    bench: Bench, name: str, vm: str, said: str
) -> None:
    before = _tokens(bench.state)
    proc = cli("token", "issue", name, *vm.split(), state_dir=bench.state)
    assert proc.returncode == 1, proc
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(said), proc.stderr
    assert proc.stdout == "" and _tokens(bench.state) == before
