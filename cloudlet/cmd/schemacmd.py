"""``cloudlet schema``: the YAML's JSON Schema, or its field reference."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def cmd_schema(args: argparse.Namespace) -> int:
    from cloudlet.model import schema

    sys.stdout.write(schema.markdown() if args.markdown else schema.json_text())
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("schema", cmd_schema, "print the JSON Schema (draft 2020-12) of the cloudlet YAML")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the field reference (docs/reference.md) instead",
    )
