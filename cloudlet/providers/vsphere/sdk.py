"""pyVmomi at the boundary: its names typed ``Any``.

pyVmomi builds its types at run time, so mypy sees untyped callables; the
rest of the package imports them from here and stays type-checked.
"""

from __future__ import annotations

from typing import Any

import pyVmomi
from pyVim import connect as _connect

vim: Any = pyVmomi.vim
vmodl: Any = pyVmomi.vmodl
SmartConnect: Any = _connect.SmartConnect
Disconnect: Any = _connect.Disconnect
