"""The small error hierarchy every layer shares.

It sits outside the layers so that the pure core can raise the same errors
the shell catches; the command line maps each to a message and an exit
status, never a traceback.
"""

from __future__ import annotations

import attrs


class CloudletError(Exception):
    """Base of every error the command line reports as a plain message."""


class TerminalError(CloudletError):
    """No retry can fix this (controller-runtime's ``TerminalError``): an
    invalid stored spec, a plan that cannot be ordered. It is recorded once
    and the daemon waits for a new desired revision instead of backing off."""


@attrs.frozen
class Location:
    """Where in an input file a problem sits (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(TerminalError):
    """The desired-state input is invalid; carries every problem found."""

    def __init__(self, problems: list[tuple[Location | None, str]]) -> None:
        self.problems = sorted(
            problems,
            key=lambda p: (p[0].file, p[0].line, p[0].col) if p[0] else ("", 0, 0),
        )
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"{loc}: {msg}" if loc else msg for loc, msg in self.problems)


class PlanError(TerminalError):
    """The actions cannot be ordered (for example, a dependency cycle)."""


class ProviderError(CloudletError):
    """An orchestrator call failed; ``transient`` ones are worth retrying."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ConflictError(CloudletError):
    """A compare-and-swap write lost: somebody else changed the key first."""


class FencedOut(ConflictError):
    """A fenced write found its fence moved: this replica no longer owns the
    cloudlet, and must not act on it (another replica does now)."""


class LockTimeout(CloudletError):
    """Another process holds the cloudlet's lock for longer than we wait.

    ``holder`` (``pid N`` or ``pid N on HOST``, else ``holder unknown``) and
    ``waited`` (seconds) let the caller that knows which cloudlet the lock
    is for say so (``records.cloudlet_lock``) instead of the store's key."""

    def __init__(self, message: str, *, holder: str = "holder unknown", waited: float = 0.0):
        super().__init__(message)
        self.holder = holder
        self.waited = waited


class NotFound(CloudletError):
    """A named cloudlet or object does not exist."""


class WatchCompacted(CloudletError):
    """A watch's resume revision is compacted away: re-read the state, then watch anew."""

    def __init__(self, wanted: int, compacted: int) -> None:
        super().__init__(f"the store compacted revisions up to {compacted}; wanted {wanted}")
        self.compacted = compacted


class StateDirError(CloudletError):
    """The state directory cannot be used (it names a file, or cannot be made)."""


class OutputPathError(CloudletError):
    """A file the command was asked to write cannot be written where it was asked."""


class StateFileError(CloudletError):
    """An SQLite file of the state directory is unreadable, read-only or corrupt."""


class StateFileLocked(StateFileError):
    """Another writer held an SQLite file of the state directory too long."""


class ConfigError(CloudletError):
    """A provider's configuration file or environment is wrong; names the file and field."""


class InputFileError(CloudletError):
    """An input path is not a regular file (a FIFO, a device, a directory)."""


class StoreUnavailable(CloudletError):
    """The shared store stopped answering; later calls fail at once instead of each
    waiting out its own timeout."""


class InvalidName(NotFound, ValueError):
    """A cloudlet name typed on the command line that no cloudlet can have
    (a ``ValueError`` still, for the callers that check names that way)."""
