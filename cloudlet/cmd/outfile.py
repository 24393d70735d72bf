"""Writing a file the operator named with ``-o``: a missing or unwritable folder
is their slip, said in one line naming the path, never a traceback."""

from __future__ import annotations

import os

from cloudlet.errors import OutputPathError


def check_output(path: str) -> None:
    """Refuse, before any work is done, a path whose folder is not there."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise OutputPathError(f"cannot write {path}: no directory {folder}")
    if os.path.isdir(path):
        raise OutputPathError(f"cannot write {path}: it is a directory")


def write_output(path: str, text: str) -> None:
    check_output(path)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:
        raise OutputPathError(f"cannot write {path}: {err.strerror}") from None
