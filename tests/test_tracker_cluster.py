"""tracker-zmq with every node in its own process on 127.0.0.1 (marked ``cluster``).

Nodes run ``tests/tracker_node.py`` (PubSub + Tracker, broadcast_period 0.1 s,
max_silent_periods 3, down_period 1 s, permdown_period 5 s) and are driven over
stdin/stdout: convergence, SIGKILL and restart, graceful permdown, and a SIGSTOPped
node (the stall rule). Every wait is on a condition with a deadline, and every process
is stopped at teardown (the ``spawn`` fixture of tests/conftest.py), also on failure.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.proc import CommandNode, wait_until

pytestmark = pytest.mark.cluster

NODE = Path(__file__).with_name("tracker_node.py")
PERIOD = 0.1
DOWN = 1.0
# process scheduling and the test's own polling over the pipes
SLACK = 0.5


class Node(CommandNode):
    """A tracker node process (``tracker_node.py``) and its command pipe."""

    def __init__(self, name: str, peers: tuple[str, ...] = (), *options: str) -> None:
        super().__init__(NODE, name, *options, *(a for p in peers for a in ("--peer", p)))
        self.vsn: int = self.ready["vsn"]

    def keys(self, topic: str | int) -> set[str]:
        return {key for key, _ in self.call("list", topic=topic)}


def replicas(node: Node) -> dict[str, Any]:
    result: dict[str, Any] = node.call("stats")["replicas"]
    return result


def test_converge_sigkill_down_and_restart(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", (a.endpoint,))
    c = spawn("c", (b.endpoint,))  # knows only b: finds a by gossip
    nodes = [a, b, c]
    for node in nodes:
        node.call("track", owner="u", topic="room", key=node.name, meta={"n": node.name})
    wait_until(lambda: all(n.keys("room") == {"a", "b", "c"} for n in nodes), what="convergence")
    assert all(replicas(n)[c.name] == {"vsn": c.vsn, "status": "up"} for n in (a, b))

    # SIGKILL: no goodbye; peers judge c down after down_period of silence
    c.kill()
    killed = time.monotonic()
    wait_until(lambda: all(n.keys("room") == {"a", "b"} for n in (a, b)), 5.0, "c down")
    took = time.monotonic() - killed
    assert took <= DOWN + PERIOD + SLACK, took
    for node in (a, b):
        assert replicas(node)["c"]["status"] == "down"
        leaves = [k for t, _, ls in node.call("diffs") if t == "room" for k, _ in ls]
        assert leaves == ["c"]

    # restart under the same name: a new replica (new vsn); the old one is permdowned
    c2 = spawn("c", (a.endpoint,))
    assert c2.vsn > c.vsn
    c2.call("track", owner="u", topic="room", key="c2", meta={})
    wait_until(
        lambda: all(n.keys("room") == {"a", "b", "c2"} for n in (a, b, c2)),
        what="the restarted node's join and its transfer",
    )
    for node in (a, b):
        assert replicas(node)["c"] == {"vsn": c2.vsn, "status": "up"}


def test_graceful_permdown_seen_at_once(spawn: Callable[..., Node]) -> None:
    slow = ("--down-period", "5", "--permdown-period", "20")
    a = spawn("a", (), *slow)
    b = spawn("b", (a.endpoint,), *slow)
    c = spawn("c", (a.endpoint,), *slow)
    for node in (a, b, c):
        node.call("track", owner=1, topic=7, key=node.name, meta={})
    wait_until(lambda: all(n.keys(7) == {"a", "b", "c"} for n in (a, b, c)), what="joins")
    start = time.monotonic()
    b.call("permdown")
    wait_until(lambda: a.keys(7) == {"a", "c"} and c.keys(7) == {"a", "c"}, 2.0, "leave")
    assert time.monotonic() - start < 2.0  # far below down_period (5 s)
    assert "b" not in replicas(a)
    assert "b" not in replicas(c)


def test_stalled_node_does_not_declare_peers_down(spawn: Callable[..., Node]) -> None:
    a = spawn("a")
    b = spawn("b", (a.endpoint,))
    for node in (a, b):
        node.call("track", owner="u", topic="room", key=node.name, meta={})
    wait_until(lambda: all(n.keys("room") == {"a", "b"} for n in (a, b)), what="joins")
    b.proc.send_signal(signal.SIGSTOP)
    try:
        # a sees b silent: down after down_period; by then b is stalled for longer
        # than down_period itself
        wait_until(lambda: a.keys("room") == {"a"}, 5.0, "b down on a")
    finally:
        b.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: a.keys("room") == {"a", "b"}, 5.0, "b up again on a")
    # b read what piled up before judging: it never saw a leave
    assert b.keys("room") == {"a", "b"}
    leaves = [k for t, _, ls in b.call("diffs") if t == "room" for k, _ in ls]
    assert leaves == []
    assert replicas(b)["a"]["status"] == "up"
