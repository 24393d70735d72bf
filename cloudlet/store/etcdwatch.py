"""Watching the etcd store: every change under a prefix, in order, across failures.

A watch stream breaks when its member restarts or dies (the client raises,
or the stream just ends). The watcher remembers the revision after the last
event it handed out and opens the next stream from there, on the next
endpoint if need be, so a consumer sees each revision once, in order, with
no gap. Only a compaction can open a gap: etcd no longer has the history,
and ``WatchCompacted`` tells the consumer to re-read the state instead
(the daemon is level-triggered: it re-lists the desired specs anyway).

Failures are logged, but not each retry: a warning when they start, again at
most every ``WARN_EVERY_S`` while they go on, and a note once the watch is
back after a warning.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from pyetcd import exceptions as etcd_errors
from pyetcd.events import DeleteEvent
from pyetcd.utils import prefix_range_end

from cloudlet.errors import WatchCompacted
from cloudlet.store.base import Change
from cloudlet.store.etcd import EtcdStore
from cloudlet.store.etcdconn import RETRY_PAUSE_S, Client, EtcdConnection, _details

log = logging.getLogger(__name__)

#: How often a blocked watcher looks at its stop flag, in seconds.
STOP_CHECK_S = 0.2
#: The longest a run of failures goes unmentioned after its first warning, in seconds.
WARN_EVERY_S = 60.0


def watch_changes(
    store: EtcdStore, prefix: str, start_revision: int, stop: threading.Event
) -> Iterator[Change]:
    """Changes to store keys under ``prefix`` from ``start_revision`` on, until ``stop``."""
    kv = store._kv
    full = (kv + prefix).encode()
    end = prefix_range_end(full)
    following = start_revision
    pause = RETRY_PAUSE_S[0]
    connection = store.connection
    failures = _Failures(f"watch on {prefix!r} at {connection.where}")
    while not stop.is_set():
        try:
            index, client = connection.own_client()
        except RuntimeError:
            return  # the store was closed: no more changes to see
        except Exception as err:  # logging in to an unreachable etcd, say
            failures.failed(err, following)
            pause = _back_off(connection, connection.current, stop, pause)
            continue
        try:
            for change in _stream(client, full, end, following, stop, kv, failures.opened):
                yield change
                following = change.mod_revision + 1
                pause = RETRY_PAUSE_S[0]
        except etcd_errors.RevisionCompactedError as err:
            raise WatchCompacted(following, int(err.compacted_revision)) from None
        except _StreamBroken as err:
            failures.failed(err, following)
            pause = _back_off(connection, index, stop, pause)
        finally:
            connection.release(client)


class _Failures:
    """A watch's run of failures, logged without a flood: a warning at the
    first, then at most every ``WARN_EVERY_S`` (a flapping member opens and
    breaks streams in turn, and each break would otherwise be a new run),
    and a note when a stream opens again after a warning."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0  # failures since a stream last opened
        self.warned_at: float | None = None
        self.unresolved = False  # a warning not yet followed by "resumed"

    def failed(self, err: Exception, following: int) -> None:
        self.count += 1
        now = time.monotonic()
        if self.warned_at is not None and now - self.warned_at < WARN_EVERY_S:
            log.debug("%s: failed again (%s)", self.what, _details(err))
            return
        self.warned_at, self.unresolved = now, True
        log.warning(
            "%s failed (%s); retrying from revision %d with back-off (%d failure%s in a row)",
            self.what,
            _details(err),
            following,
            self.count,
            "" if self.count == 1 else "s",
        )

    def opened(self) -> None:
        if self.unresolved:
            log.info("%s resumed after %d failed attempts", self.what, self.count)
        self.count, self.unresolved = 0, False


def _stream(
    client: Client,
    full: bytes,
    end: bytes,
    following: int,
    stop: threading.Event,
    kv: str,
    opened: Callable[[], None],
) -> Iterator[Change]:
    """One watch stream's changes (``opened`` is called once etcd accepted
    the watch); ``_StreamBroken`` when it fails."""
    responses: queue.Queue[object] = queue.Queue()
    try:
        watch_id = client.add_watch_callback(
            full, responses.put, range_end=end, start_revision=following
        )
    except etcd_errors.RevisionCompactedError:
        raise
    except Exception as err:
        raise _StreamBroken(_details(err)) from None
    opened()
    try:
        yield from _drain(responses, stop, kv)
    finally:
        with contextlib.suppress(Exception):  # the stream may be gone already
            client.cancel_watch(watch_id)


def _back_off(connection: EtcdConnection, index: int, stop: threading.Event, pause: float) -> float:
    """Move to the next member (if any), wait, double the wait."""
    connection.skip(index)
    stop.wait(pause)
    return min(pause * 2, RETRY_PAUSE_S[1])


class _StreamBroken(Exception):
    pass


def _drain(responses: queue.Queue[object], stop: threading.Event, kv: str) -> Iterator[Change]:
    while not stop.is_set():
        try:
            item = responses.get(timeout=STOP_CHECK_S)
        except queue.Empty:
            continue
        if item is None or isinstance(item, Exception):
            if isinstance(item, etcd_errors.RevisionCompactedError):
                raise item
            raise _StreamBroken("the stream ended" if item is None else _details(item))
        for event in getattr(item, "events", ()):
            key = event.key.decode()[len(kv) :]
            value = None if isinstance(event, DeleteEvent) else bytes(event.value)
            yield Change(key, value, int(event.mod_revision))
