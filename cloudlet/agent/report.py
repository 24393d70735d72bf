"""What an LB agent reports: the document it runs, its daemons, and per
listener the traffic figures Shepherd exports as Prometheus metrics.

The agent writes its report as JSON (atomically) where its supervisor can
read it: on ``local`` a file next to the document, which the provider and
Shepherd read; on a real LB VM the same file, served by the agent. The
cloudlet label is Shepherd's to add: an agent knows its LB, not its cloudlet.
"""

from __future__ import annotations

import json

import attrs
import cattrs

_converter = cattrs.Converter()


@attrs.frozen
class BackendState:
    """A listener's back-end as the proxy sees it; ``up`` None when the proxy
    cannot say (nginx stream has no health checks)."""

    id: str
    up: bool | None


@attrs.frozen
class ListenerStats:
    listener: str
    protocol: str
    sessions_current: int
    sessions_total: int
    bytes_in: int
    bytes_out: int
    backends: tuple[BackendState, ...] = ()


@attrs.frozen
class DaemonState:
    name: str
    pid: int | None
    running: bool


@attrs.frozen
class AgentReport:
    """``applied`` is the digest of the document the daemons run (None before
    the first good one; :func:`cloudlet.lb.document.digest` of its text);
    ``error`` says why the newest document is not the one
    applied (it did not decode or did not validate), None when it is."""

    lb: str | None
    applied: str | None
    error: str | None
    at: float
    daemons: tuple[DaemonState, ...] = ()
    listeners: tuple[ListenerStats, ...] = ()
    #: The agent's own pid: its supervisor tells this agent's report from one
    #: a predecessor left behind (and knows whom to SIGHUP).
    pid: int | None = None
    #: The digest of the newest document the agent read: ``error`` is about
    #: that one (a writer waiting for its document tells "refused" from "not yet").
    latest: str | None = None


def encode(report: AgentReport) -> str:
    return json.dumps(_converter.unstructure(report), sort_keys=True)


def decode(text: str) -> AgentReport:
    """The report in ``text``; ValueError if it is not one."""
    try:
        return _converter.structure(json.loads(text), AgentReport)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not an agent report: {e}") from None
