import sys
from pathlib import Path

here = Path(__file__).parent
for sub in ("unit", "property", "contract", "integration", "integration/openstack"):
    sys.path.insert(0, str(here / sub))


import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from cloudlet.logsafety import SDK_LOGGERS  # noqa: E402


@pytest.fixture(autouse=True)
def _own_logging() -> Iterator[None]:
    """``main()`` in process sets up the ``cloudlet`` logger's handler (which
    writes to whatever ``sys.stderr`` is then) and routes the SDKs' loggers to
    it: take all that down again, so later tests in this process do not get
    an earlier test's handlers and log lines."""
    names = ("cloudlet", *SDK_LOGGERS)
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.level, logger.propagate)
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
