"""Where Shepherd finds the reports of a cloudlet's LB agents on ``local``.

Each LB member VM's agent writes ``report.json`` (atomically) into the
member's runtime directory, beside its document (``Site.lb_dir``). Reading
one is a plain file read: a file missing or unreadable is "no report" (the
agent is not running, or not yet), never an error of the scrape.
"""

from __future__ import annotations

from pathlib import Path

from cloudlet.model.kinds import refs
from cloudlet.providers.local.site import Site

REPORT_FILE = "report.json"


def report_path(site: Site, lb_uid: str, member_uid: str) -> Path:
    return site.lb_dir(lb_uid, member_uid) / REPORT_FILE


def lb_reports(site: Site) -> list[tuple[str, str, str | None]]:
    """``(lb id, member id, text or None)`` per member VM that has a record."""
    out: list[tuple[str, str, str | None]] = []
    records = site.records.all()  # once: a scrape reads every record one time
    by_id = {r.id: r for r in records}
    for lb in (r for r in records if r.kind == "lb"):
        for member_id in refs(lb.attrs, "members"):
            member = by_id.get(member_id)
            if member is None:
                continue
            try:
                text: str | None = report_path(site, lb.uid, member.uid).read_text()
            except (OSError, UnicodeDecodeError):
                text = None
            out.append((lb.id, member.id, text))
    return out
