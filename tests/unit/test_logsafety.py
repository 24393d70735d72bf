"""Credentials are masked in every log line, whichever library wrote it."""

from __future__ import annotations

import io
import logging

import pytest

from cloudlet.logsafety import RedactFilter, redact, route_sdk_logs


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("contacting http://admin:s3cr3t@127.0.0.1:5000/v3. Attempting", "s3cr3t"),
        ("https://tok3n@vc.example/sdk", "tok3n"),
        ("auth password: hunter2, user demo", "hunter2"),
        ("{'password': 'hunter2', 'username': 'demo'}", "hunter2"),
        ("X-Auth-Token: gAAAAABlongtoken", "gAAAAABlongtoken"),
        ("application_credential_secret=abc123&x=1", "abc123"),
    ],
)
def test_redact_masks_secrets(text: str, secret: str) -> None:
    safe = redact(text)
    assert secret not in safe
    assert "***" in safe


def test_redact_keeps_plain_text() -> None:
    text = "cloudlet berlin-1: desired state stored at http://127.0.0.1:2379/v3 (revision 4)"
    assert redact(text) == text


def test_sdk_loggers_go_through_cloudlets_handler_and_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
        for n in ("keystoneauth", "urllib3")
    }
    try:
        route_sdk_logs(handler)
        logging.getLogger("keystoneauth.identity.generic.base").warning(
            "Failed to discover available identity versions when contacting %s.",
            "http://admin:s3cr3t@127.0.0.1:1/v3",
        )
        logging.getLogger("urllib3.connectionpool").debug("hidden below WARNING")
    finally:
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
    text = stream.getvalue()
    assert text.startswith("WARNING keystoneauth.identity.generic.base: ")
    assert "http://***@127.0.0.1:1/v3" in text
    assert "s3cr3t" not in text and "hidden" not in text
    assert any(isinstance(f, RedactFilter) for f in handler.filters)


def test_a_traceback_is_redacted_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("cloudlet.test_logsafety")
    logger.addHandler(handler)
    try:
        raise RuntimeError("cannot reach https://u:p4ss@host/")
    except RuntimeError:
        logger.error("failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert "p4ss" not in stream.getvalue() and "RuntimeError" in stream.getvalue()
