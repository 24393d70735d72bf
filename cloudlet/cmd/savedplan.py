"""Reading and writing saved plan files (the encoding is ``planner.saved``'s)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cloudlet.errors import CloudletError
from cloudlet.planner.saved import SavedPlan, SavedPlanError, decode, encode

#: A saved plan is a spec and some actions; anything much bigger is not one.
MAX_BYTES = 64 * 1024 * 1024


def write_saved(path: str, plans: Sequence[SavedPlan]) -> None:
    """Write atomically (a half-written plan must never be applied)."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise CloudletError(f"cannot write saved plan {path}: folder {folder} does not exist")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(encode(plans))
        os.replace(tmp, target)
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise CloudletError(f"cannot write saved plan {path}: {err.strerror or err}") from None


def read_saved(path: str) -> list[SavedPlan]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise SavedPlanError(f"cannot read saved plan {path}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise SavedPlanError(f"{path}: not a saved plan (over {MAX_BYTES} bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SavedPlanError(f"{path}: not a saved plan (not UTF-8 text)") from None
    return decode(text, path)
