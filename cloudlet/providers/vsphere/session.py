"""What every mapping module needs: the login, the site, the tags, task waits.

Bundled so the per-kind modules stay small and share one cache of the
site's inventory and custom-field keys per provider.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cloudlet.model.resources import AttrValue
from cloudlet.providers.vsphere import fields
from cloudlet.providers.vsphere.config import VsphereConfig
from cloudlet.providers.vsphere.connection import Connection
from cloudlet.providers.vsphere.fields import Fields
from cloudlet.providers.vsphere.inventory import read
from cloudlet.providers.vsphere.site import Resolved, Site
from cloudlet.providers.vsphere.tasks import wait_for


def encode_record(attrs: Mapping[str, AttrValue], deps: Sequence[str]) -> str:
    return json.dumps({"attrs": dict(attrs), "deps": sorted(set(deps))}, sort_keys=True)


def decode_record(text: str | None) -> tuple[dict[str, Any], list[str]] | None:
    """(attrs, deps), or None for a missing or unreadable record."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return dict(data["attrs"]), [str(d) for d in data["deps"]]
    except (ValueError, KeyError, TypeError):
        return None


class Session:
    def __init__(self, config: VsphereConfig) -> None:
        self.config = config
        self.connection = Connection(config.endpoint)
        self._site = Site(config.site)
        self._site_generation = 0
        self.fields = Fields()

    @property
    def content(self) -> Any:
        return self.connection.content

    @property
    def stub(self) -> Any:
        return self.connection.stub

    def resolved(self) -> Resolved:
        content = self.content
        self.fields.ensure(content)
        return self.site.resolved(content)

    @property
    def site(self) -> Site:
        """The site's cached inventory, looked up again after a new connection
        (its references are bound to the connection they came from)."""
        _ = self.content
        if self.connection.generation != self._site_generation:
            self._site = Site(self.config.site)
            self._site_generation = self.connection.generation
        return self._site

    def wait(self, task: Any, what: str) -> Any:
        content = self.content
        return wait_for(
            lambda: read(content, task, ["info"]).get("info"), what, self.config.site.task_timeout
        )

    def tag(self, obj: Any, owner: str, rid: str, record: str | None) -> None:
        """Record first, then owner, then id: an id present means the rest is too."""
        content = self.content
        if record is not None:
            self.fields.set(content, obj, fields.RECORD, record)
        self.fields.set(content, obj, fields.OWNER, owner)
        self.fields.set(content, obj, fields.ID, rid)

    def set_record(self, obj: Any, record: str) -> None:
        self.fields.set(self.content, obj, fields.RECORD, record)

    def close(self) -> None:
        self.connection.close()
