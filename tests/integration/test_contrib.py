"""What ``contrib/`` ships for operators holds up: the systemd unit passes
``systemd-analyze verify`` (and its offline security review), and every
metric the Grafana dashboard queries is one a live daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import NO_ROUTER, ROOT, cli, ok, spawn

UNIT = ROOT / "contrib" / "cloudlet-reconcile.service"
DASHBOARD = ROOT / "contrib" / "grafana-dashboard.json"
#: The unit's ExecStart binary, where ``pip install`` puts it; not on a test machine.
INSTALLED = "/usr/local/bin/cloudlet"


def _analyzer() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze missing: run `make system-deps` (Debian package systemd)"
    return found


def _testable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this Python's cloudlet: ``verify``
    checks that the binary exists, and the installed path does not here."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} reconcile " in text
    copy = tmp_path / UNIT.name  # verify names the unit after its file
    copy.write_text(text.replace(INSTALLED, f"{sys.executable} -m cloudlet"))
    return copy


def _about_our_unit(stderr: str) -> list[str]:
    """The analyzer's complaints about this unit (it also loads the host's own units)."""
    return [line for line in stderr.splitlines() if UNIT.name in line or UNIT.stem in line]


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(
        [_analyzer(), "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert _about_our_unit(proc.stderr) == [], proc.stderr
    text = UNIT.read_text()
    for line in (
        "Restart=on-failure",
        "EnvironmentFile=-/etc/cloudlet/reconcile.env",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "StateDirectory=cloudlet",
        "ProtectSystem=strict",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_the_systemd_unit_is_hardened(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates exposure 0 (locked down) to 10; the
    threshold is in tenths. Below 3 is what a network client can reach."""
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(
        [_analyzer(), "security", "--offline=true", "--threshold=30", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())
    except OSError:
        return None


def exported(text: str) -> set[str]:
    """Every name in an exposition: samples, and families declared (``# TYPE``)
    even when they have no sample yet (an LB agent that never reported)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval among them
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        name, call = m.group(1), m.group(2)
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def _queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every query, by where it is: each panel's targets and each variable."""
    found = {}
    for panel in dashboard["panels"]:
        assert panel.get("targets"), f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert inner, var["definition"]
            found[f"variable {var['name']}"] = inner.group(1)
    return found


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, op) (rate(a_bucket{x="y", outcome!="by"}'
        "[$__rate_interval]))) / on (op) b_total - time()"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_every_dashboard_query_names_a_metric_the_daemon_exports(
    state_dir: Path, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    ok(cli("apply", NO_ROUTER, state_dir=state_dir))  # one cloudlet, on the fake platform
    port = _free_port()
    proc = spawn("reconcile", "--metrics-port", str(port), state_dir=state_dir)
    try:
        deadline = time.monotonic() + 30
        text = ""
        # Until the first reconcile is counted, its histograms have no samples.
        while time.monotonic() < deadline:
            text = _scrape(port) or ""
            if "cloudlet_last_successful_sync_timestamp_seconds{" in text:
                break
            time.sleep(0.1)
        names = exported(text)
        assert "cloudlet_build_info" in names, text[:2000]
        missing = {
            where: sorted(metric_names(expr) - names)
            for where, expr in queries.items()
            if metric_names(expr) - names
        }
        assert missing == {}, missing
        assert all(metric_names(expr) for expr in queries.values()), queries
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
