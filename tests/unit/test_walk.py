from __future__ import annotations

import random
import threading

import networkx as nx
import pytest

from cloudlet.engine.retry import Attempts, RetryPolicy, call_with_retry
from cloudlet.engine.walk import walk
from cloudlet.errors import ProviderError


def chain_graph():
    g = nx.DiGraph()
    g.add_edges_from([("a", "b"), ("b", "c"), ("x", "y")])
    return g


def test_runs_every_node_after_its_predecessors():
    seen: list[str] = []
    lock = threading.Lock()

    def run(key):
        with lock:
            seen.append(key)

    results = walk(chain_graph(), run, parallelism=3, priority={})
    assert {r.outcome for r in results.values()} == {"ok"}
    assert seen.index("a") < seen.index("b") < seen.index("c")
    assert seen.index("x") < seen.index("y")


def test_failure_blocks_only_descendants():
    def run(key):
        if key == "b":
            raise ProviderError("boom", transient=False)

    results = walk(chain_graph(), run, parallelism=2, priority={})
    assert results["b"].outcome == "failed" and results["b"].error == "boom"
    assert results["c"].outcome == "blocked"
    assert results["y"].outcome == "ok"


def test_parallelism_is_bounded():
    g = nx.DiGraph()
    g.add_nodes_from(range(40))
    active, peak = [0], [0]
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=5)

    def run(key):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        if key < 3:
            gate.wait()  # the first three must all be running at once
        with lock:
            active[0] -= 1

    walk(g, run, parallelism=3, priority={n: -n for n in range(40)})
    assert peak[0] == 3


def test_longest_remaining_path_starts_first_with_one_worker():
    g = nx.DiGraph()
    g.add_edges_from([("long1", "long2"), ("long2", "long3")])
    g.add_nodes_from(["short"])
    seen: list[str] = []
    walk(g, seen.append, parallelism=1, priority={"long1": 3, "long2": 2, "long3": 1, "short": 1})
    assert seen[0] == "long1"


def test_stop_event_starts_nothing_new():
    stop = threading.Event()
    stop.set()
    results = walk(chain_graph(), lambda k: None, parallelism=2, priority={}, stop=stop)
    assert {r.outcome for r in results.values()} == {"cancelled"}


def test_retry_transient_until_success_with_injected_sleep():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ProviderError("busy", transient=True)
        return "ok"

    tally = Attempts()
    got = call_with_retry(
        flaky,
        RetryPolicy(attempts=5, base=0.1, cap=1.0),
        sleep=sleeps.append,
        rng=random.Random(1),
        attempts=tally,
    )
    assert got == "ok" and tally.count == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


def test_retry_gives_up_on_permanent_and_after_budget():
    sleeps: list[float] = []
    tally = Attempts()
    try:
        call_with_retry(
            lambda: (_ for _ in ()).throw(ProviderError("quota", transient=False)),
            RetryPolicy(),
            sleep=sleeps.append,
            attempts=tally,
        )
    except ProviderError as err:
        assert not err.transient
    assert tally.count == 1 and sleeps == []
    tally = Attempts()
    with pytest.raises(ProviderError):
        call_with_retry(
            lambda: (_ for _ in ()).throw(ProviderError("409", transient=True)),
            RetryPolicy(attempts=4),
            sleep=sleeps.append,
            attempts=tally,
        )
    assert tally.count == 4 and len(sleeps) == 3


def test_backoff_is_capped():
    rng = random.Random(0)
    policy = RetryPolicy(base=1.0, cap=2.0)
    assert all(policy.delay(20, rng) <= 2.0 for _ in range(100))
