"""Credentials never reach a log line, and the cloud SDKs log as cloudlet does.

keystoneauth, openstacksdk and urllib3 log through their own loggers; with no
handler of theirs, Python's last-resort handler printed their warnings as
plain lines (even under ``--log-format json``) and verbatim: an ``auth_url``
with ``user:password@`` in it printed the password. So their loggers are given
cloudlet's handler, and every handler gets a filter that masks the userinfo
of every URL and the value of obviously secret fields. Outside the layers
(like ``errors``): both command-line entry points use it, and no SDK is imported.
"""

from __future__ import annotations

import logging
import re

#: The loggers of the libraries under the providers.
SDK_LOGGERS = ("keystoneauth", "keystoneauth1", "openstack", "stevedore", "urllib3", "ObjDiffer")

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]*@")
_SECRET_FIELD = re.compile(
    r"(?i)(\b|_)(password|passwd|secret|token|api[_-]?key|credential)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]+)"
)


def redact(text: str) -> str:
    """``text`` with each URL's userinfo and each secret field's value masked."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    return _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message (and its traceback) before any
    formatter sees it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def route_sdk_logs(handler: logging.Handler) -> None:
    """The SDKs' records go through ``handler`` (cloudlet's format), at WARNING
    and above, never to Python's last-resort handler; ``handler`` redacts."""
    if not any(isinstance(f, RedactFilter) for f in handler.filters):
        handler.addFilter(RedactFilter())
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
