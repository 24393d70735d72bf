"""Where an LB agent reads its document from.

A source answers one question, "what is the document now?", with its text or
None when there is none (yet): the agent decides what a change means. Every
cloud puts the document somewhere its guest can read without credentials;
each has its reader here or in a module of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class SourceError(Exception):
    """The source could not be read this time (a transient failure: the agent
    keeps what it runs and tries again), as opposed to "there is none"."""


class Source(Protocol):
    def read(self) -> str | None:
        """The document's text, or None when the source has none."""
        ...


class FileSource:
    """A file the provider writes (``local``): replaced atomically by its
    writer, so a read sees the old text or the new, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SourceError(f"{self.path}: {e.strerror}") from None
