"""cloudlet: a declarative state-sync engine for edge cloudlets.

The layers run one way: ``model`` (spec and resources, pure) <- ``planner``
(diff and order, pure) <- ``store`` / ``providers`` (the I/O seams) <-
``engine`` / ``shepherd`` (the only places that sequence effects) <- ``cmd``.
"""

__version__ = "0.1.0"
