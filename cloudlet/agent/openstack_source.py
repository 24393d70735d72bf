"""The LB document on OpenStack: the LB server's metadata, read as its guest reads it.

Nova serves a server's metadata in ``openstack/latest/meta_data.json`` as
the object ``meta`` (absent while the server has none), beside ``uuid``,
``name``, ``hostname``, ``launch_index``, ``availability_zone``,
``project_id``, ``devices``... (Zed's ``nova/api/metadata/base.py``); the
provider keeps the document there in chunks (``cloudlet.lb.placement``).
Two places serve that file:

- the metadata service (the default URL): the current metadata, cached by
  Nova up to ``metadata_cache_expiration`` (15 s by default);
- a config drive (a path: the file, or the drive's mount point): written
  once when the server boots, so it holds no document written after (the
  LB's always is); useful for a file mirrored from the service, and tests.

No credentials and no SDK: ``urllib`` with a short timeout and no proxy
(a proxy from the environment cannot reach the link-local address).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from cloudlet.agent.sources import SourceError
from cloudlet.lb.placement import TornDocument, join_chunks

METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"
#: Where meta_data.json sits under a config drive's mount point.
DRIVE_PATH = Path("openstack/latest/meta_data.json")


class OpenstackSource:
    """Reads the document from ``where``: an ``http(s)://`` URL of
    ``meta_data.json`` (default: the metadata service), or a path to that
    file or to a config drive's mount point."""

    def __init__(self, where: str = METADATA_URL, timeout: float = 2.0) -> None:
        self.where = where
        self.timeout = timeout

    def read(self) -> str | None:
        try:
            body = json.loads(self._fetch())
        except ValueError as e:
            raise SourceError(f"{self.where}: not JSON: {e}") from None
        meta = body.get("meta", {}) if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise SourceError(f"{self.where}: no metadata object")
        try:
            return join_chunks(meta)
        except TornDocument as e:  # written meanwhile; the next read sees it whole
            raise SourceError(f"{self.where}: {e}") from None

    def _fetch(self) -> bytes:
        if self.where.startswith(("http://", "https://")):
            return self._get(self.where)
        path = Path(self.where)
        if path.is_dir():
            path = path / DRIVE_PATH
        try:
            return path.read_bytes()
        except OSError as e:
            raise SourceError(f"{path}: {e.strerror}") from None

    def _get(self, url: str) -> bytes:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=self.timeout) as answer:
                data: bytes = answer.read()
                return data
        except urllib.error.HTTPError as e:
            raise SourceError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise SourceError(f"{url}: {reason}") from None
