"""Rolling upgrades: nodes and clients of the previous release mixed with this tree's.

The previous release (``tests/previous_release.py``) is installed from this repository's
history into its own virtualenv (:mod:`tests.support.previous`, cached between runs; a
clone without that history fails here, it is never skipped). Its nodes run as real
processes: its standalone node (``python -m tracker_zmq node`` of its interpreter), its
own ``tests/tracker_node.py`` (the in-process Tracker API) and ``tests/pubsub_node.py``,
and its :class:`~tracker_zmq.Client` (``tests/client_node.py`` under its interpreter).

* An old and a new node form one cluster: presences tracked through each (client
  endpoint and in-process API) are listed on every node, broadcasts and direct messages
  cross both ways, and an old Client works against a new node.
* A rolling replacement of three old nodes by new ones, one at a time (SIGTERM without
  permdown_on_shutdown; the new node has the same name and ports), while long-lived
  clients hold presences: a checker lists every up node every 50 ms, and no presence
  held by a live client is missing from any up node at any poll, beyond the restarted
  node's own windows (its client's presences, from the stop until they are re-tracked
  and listed everywhere; and the restarted node's catch-up, from its ready line until it
  lists every other client's presences). The windows and the checker's counts are
  printed (``pytest -s``).

Marked ``cluster``; every wait is on a condition with a deadline, every process is stopped
at teardown, also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aio import run
from aio import until as _until

from tests.previous_release import PREVIOUS_RELEASE
from tests.support.previous import PreviousReleaseError, Release, install
from tests.support.proc import (
    FAST_NODE_OPTIONS,
    ROOT,
    CliNode,
    CommandNode,
    Process,
    spawner,
    wait_until,
)
from tracker_zmq import Client, UnsupportedOp
from tracker_zmq.protocol import OPS, V1_OPS

pytestmark = pytest.mark.cluster

until = functools.partial(_until, timeout=15.0, interval=0.02)
BROADCAST_PERIOD = 0.1  # FAST_NODE_OPTIONS'
NEW = sys.executable


@pytest.fixture(scope="module")
def previous() -> Release:
    """The previous release, installed (or found in the cache)."""
    return install()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """``start(Kind, *args, **kwargs)`` starts any kind of process; all stopped at teardown."""
    with spawner(lambda kind, *args, **kwargs: kind(*args, **kwargs)) as make:
        yield make


def cli_node(
    start: Callable[..., Process], logs: Path, name: str, python: str, **kwargs: Any
) -> CliNode:
    node = start(CliNode, name, logs, *FAST_NODE_OPTIONS, python=python, **kwargs)
    assert isinstance(node, CliNode)
    return node


def keys(presences: list[Any]) -> set[Any]:
    return {key for key, _ in presences}


# ------------------------------------------------------------------ the release itself


def test_the_previous_release_is_installed_once_from_the_history(previous: Release) -> None:
    assert previous.commit.startswith(PREVIOUS_RELEASE)
    assert (previous.root / "installed").read_text().strip() == previous.commit
    assert install() == previous  # cached: the second call finds it
    version = subprocess.run(
        [previous.python, "-c", "import tracker_zmq; print(tracker_zmq.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        # without this tree's sources on PYTHONPATH (a developer may have it exported)
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert Path(version.stdout.strip()).is_relative_to(previous.venv)
    assert Path(previous.cli).is_file()


def test_a_clone_without_the_history_fails_saying_to_fetch_it(tmp_path: Path) -> None:
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "--no-local", f"file://{ROOT}", str(shallow)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(PreviousReleaseError, match=r"shallow.*git fetch --unshallow"):
        install(PREVIOUS_RELEASE, cache=tmp_path / "cache", repo=shallow)
    with pytest.raises(PreviousReleaseError, match="not in this clone"):
        install("0" * 40, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ------------------------------------------------------------------ one old, one new


def test_an_old_and_a_new_node_share_presences_and_an_old_client_works(
    previous: Release, start: Callable[..., Process], tmp_path: Path
) -> None:
    old_cli = cli_node(start, tmp_path, "old-cli", previous.python)
    new_cli = cli_node(start, tmp_path, "new-cli", NEW, peers=(old_cli.endpoint,))
    old_api = start(
        CommandNode,
        previous.script("tracker_node.py"),
        "old-api",
        "--peer",
        old_cli.endpoint,
        python=previous.python,
    )
    new_api = start(
        CommandNode, ROOT / "tests" / "tracker_node.py", "new-api", "--peer", new_cli.endpoint
    )
    # the old Client, in the old release's interpreter, on the new node
    old_client = start(
        CommandNode,
        ROOT / "tests" / "client_node.py",
        "old-client",
        "--endpoint",
        new_cli.client_endpoint,
        python=previous.python,
    )
    assert isinstance(old_api, CommandNode)
    assert isinstance(new_api, CommandNode)
    assert isinstance(old_client, CommandNode)
    assert old_client.ready["node"] == "new-cli"
    assert old_client.ready["ops"] is None  # the old Client reads no ops
    topic = "room:mixed"
    old_client.call("subscribe", topic=topic)

    async def main() -> None:
        async with (
            Client(old_cli.client_endpoint, client_id="on-old", timeout=3.0) as on_old,
            Client(new_cli.client_endpoint, client_id="on-new", timeout=3.0) as on_new,
        ):
            # a new Client reads the ops each node serves: none listed by the old one
            assert on_old.ops == V1_OPS
            assert on_new.ops == OPS
            # this release's ops are refused before anything is sent to the old node
            for call in (
                on_old.track_many([(topic, "bulk", {})]),
                on_old.untrack_many([(topic, "bulk")]),
                on_old.broadcast(topic, "new_msg", {}),
                on_old.disconnect("user_socket:x", ban_seconds=5),
            ):
                with pytest.raises(UnsupportedOp):
                    await call
            await on_old.track(topic, "via-old-cli", {"on": "old-cli"})
            await on_new.track(topic, "via-new-cli", {"on": "new-cli"})
            await asyncio.to_thread(
                old_api.call, "track", owner="o", topic=topic, key="via-old-api", meta={}
            )
            await asyncio.to_thread(
                new_api.call, "track", owner="n", topic=topic, key="via-new-api", meta={}
            )
            await asyncio.to_thread(
                old_client.call, "track", topic=topic, key="old-client", meta={"v": 1}
            )
            want = {"via-old-cli", "via-new-cli", "via-old-api", "via-new-api", "old-client"}

            async def everywhere() -> bool:
                seen = [
                    keys(await on_old.list(topic)),
                    keys(await on_new.list(topic)),
                    keys(await asyncio.to_thread(old_api.call, "list", topic=topic)),
                    keys(await asyncio.to_thread(new_api.call, "list", topic=topic)),
                    keys(await asyncio.to_thread(old_client.call, "list", topic=topic)),
                ]
                return all(s == want for s in seen)

            await until(everywhere, message="every presence listed on every node")

            # the old Client's update and the diffs it was pushed by the new node
            await asyncio.to_thread(
                old_client.call, "update", topic=topic, key="old-client", meta={"v": 2}
            )

            async def updated() -> bool:
                metas = [m for k, m in await on_old.list(topic) if k == "old-client"]
                return [m.get("v") for m in metas] == [2]

            await until(updated, message="the old Client's update listed on the old node")

            def joined() -> set[Any]:
                diffs = old_client.call("diffs", topic=topic)
                return {key for joins, _ in diffs for key, _ in joins}

            await until(
                lambda: asyncio.to_thread(lambda: joined() >= want),
                message="the old Client's diffs",
            )
            # the old Client's leave reaches the old nodes
            await asyncio.to_thread(old_client.call, "untrack", topic=topic, key="old-client")

            async def gone() -> bool:
                old_list = await asyncio.to_thread(old_api.call, "list", topic=topic)
                return "old-client" not in keys(old_list) | keys(await on_old.list(topic))

            await until(gone, message="the old Client's untrack on the old nodes")

            # no node dropped a message of the other release
            drops = [
                (await on_old.status())["tracker_stats"]["totals"]["drops"],
                (await on_new.status())["tracker_stats"]["totals"]["drops"],
                (await asyncio.to_thread(old_api.call, "stats"))["totals"]["drops"],
                (await asyncio.to_thread(new_api.call, "stats"))["totals"]["drops"],
            ]
            for reasons in drops:
                assert reasons.get("invalid", 0) == reasons.get("no_common_version", 0) == 0, drops

    run(main)
    # this release's command line reads an old node's status and list
    done = subprocess.run(
        [NEW, "-m", "tracker_zmq", "status", "--node", old_cli.client_endpoint],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ops: not listed (a node of the first release)" in done.stdout
    assert re.search(r"^\s+new-cli\s+up\s+vsn", done.stdout, re.M), done.stdout
    for node in (old_cli, new_cli):
        assert node.running(), node.log()
        assert "refused" not in node.log(), node.log()


def test_broadcasts_cross_between_an_old_and_a_new_pubsub(
    previous: Release, start: Callable[..., Process]
) -> None:
    old = start(CommandNode, previous.script("pubsub_node.py"), "old-ps", python=previous.python)
    assert isinstance(old, CommandNode)
    new = start(CommandNode, ROOT / "tests" / "pubsub_node.py", "new-ps", "--peer", old.endpoint)
    assert isinstance(new, CommandNode)
    for node in (old, new):
        node.call("subscribe", topic="news")
    for node, other in ((old, "new-ps"), (new, "old-ps")):
        wait_until(
            lambda node=node: node.call("remote_subscribers", topic="news") >= 1,
            what=f"{node.name} to see {other}'s subscription",
        )
    old.call("broadcast", topic="news", messages=[{"from": "old", "n": n} for n in range(3)])
    new.call("broadcast", topic="news", messages=[{"from": "new", "n": n} for n in range(3)])
    old.call("direct", node="new-ps", topic="news", messages=[{"from": "old", "direct": True}])
    new.call("direct", node="old-ps", topic="news", messages=[{"from": "new", "direct": True}])
    for node, other in ((old, "new"), (new, "old")):
        wait_until(
            lambda node=node, other=other: (
                [m for m in node.call("received", topic="news") if m["from"] == other]
                == [{"from": other, "n": n} for n in range(3)] + [{"from": other, "direct": True}]
            ),
            what=f"{node.name} to receive the other node's messages",
        )
    for node in (old, new):
        dropped = node.call("stats")["dropped"]
        assert dropped.get("invalid", 0) == dropped.get("unknown_version", 0) == 0, dropped


# ------------------------------------------------------------------ rolling replacement

NODES = ("a", "b", "c")
TOPIC = "room:rolling"
PER_CLIENT = 3
POLL = 0.05  # seconds between the checker's polls
CLIENT_TIMEOUT = 1.0
CLIENT_LEASE = 5.0
HEARTBEAT = 0.2
# a restarted node's windows, from its ready line: its client notices the restart within
# a heartbeat and a timed-out request, re-tracks, and the next heartbeats and a transfer
# carry the presences; bounded by the client's lease plus those and a few periods
BOUND = CLIENT_LEASE + 2 * (CLIENT_TIMEOUT + HEARTBEAT) + 10 * BROADCAST_PERIOD


@dataclass
class Restart:
    """One node's replacement, as the checker saw it (times from time.monotonic())."""

    name: str
    stopped: float
    ready: float | None = None
    caught_up: float | None = None  # the new node lists every other client's presences
    back: float | None = None  # every up node lists this node's client's new presences
    first_missing: float | None = None  # of this node's client's presences, anywhere
    last_missing: float | None = None
    old_refs: set[Any] = field(default_factory=set)  # their refs before the restart
    polls: int = 0  # the checker's polls from the stop until both windows closed

    def figures(self) -> dict[str, float | int]:
        assert self.ready is not None
        assert self.caught_up is not None
        assert self.back is not None
        out = {
            "restart_s": self.ready - self.stopped,
            "catch_up_s": self.caught_up - self.ready,
            "client_window_s": self.back - self.stopped,
            "client_back_after_ready_s": self.back - self.ready,
        }
        if self.first_missing is not None and self.last_missing is not None:
            out["client_missing_span_s"] = self.last_missing - self.first_missing
        return {**{k: round(v, 3) for k, v in out.items()}, "polls": self.polls}


@dataclass
class Checker:
    """Lists every up node every ``POLL`` seconds; counts what is missing, and where."""

    listers: dict[str, Client]
    expected: dict[str, set[str]]  # the keys each node's client holds
    up: set[str] = field(default_factory=lambda: set(NODES))
    restarts: list[Restart] = field(default_factory=list)
    polls: int = 0
    lists: int = 0
    failed_lists: int = 0
    observations: int = 0  # (node, client) pairs judged
    missing_inside: int = 0  # observations of missing presences inside a window
    missing_outside: int = 0
    outside: list[str] = field(default_factory=list)
    last: dict[str, dict[Any, set[Any]]] = field(default_factory=dict)  # the last answers
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def current(self) -> Restart | None:
        return self.restarts[-1] if self.restarts else None

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            async with self.lock:
                await self.poll()
            await asyncio.sleep(max(0.0, POLL - (time.monotonic() - started)))

    async def _list(self, name: str) -> dict[Any, set[Any]] | None:
        try:
            presences = await self.listers[name].list(TOPIC)
        except Exception:  # a node that does not answer in time: counted, judged next poll
            self.failed_lists += 1
            return None
        refs: dict[Any, set[Any]] = {}
        for key, meta in presences:
            refs.setdefault(key, set()).add(meta.get("phx_ref"))
        return refs

    async def poll(self) -> None:
        up = sorted(self.up)
        answers = await asyncio.gather(*(self._list(name) for name in up))
        now = time.monotonic()
        self.polls += 1
        listed = {name: refs for name, refs in zip(up, answers, strict=True) if refs is not None}
        self.lists += len(listed)
        self.last.update(listed)
        restart = self.current
        if restart is not None and (restart.back is None or restart.caught_up is None):
            restart.polls += 1
        for node, refs in listed.items():
            for owner, want in self.expected.items():
                self.observations += 1
                missing = want - refs.keys()
                if not missing:
                    continue
                if restart is not None and owner == restart.name and restart.back is None:
                    self.missing_inside += 1
                    if restart.first_missing is None:
                        restart.first_missing = now
                    restart.last_missing = now
                elif restart is not None and node == restart.name and restart.caught_up is None:
                    self.missing_inside += 1
                else:
                    self.missing_outside += 1
                    if len(self.outside) < 20:
                        self.outside.append(
                            f"poll {self.polls}: {node} misses {sorted(missing)} of {owner}'s"
                        )
        if restart is None or restart.ready is None or restart.name not in listed:
            return
        mine = listed[restart.name]
        others = set().union(*(w for o, w in self.expected.items() if o != restart.name))
        if restart.caught_up is None and others <= mine.keys():
            restart.caught_up = now
        own = self.expected[restart.name]
        if restart.back is None and len(listed) == len(self.up) and own <= mine.keys():
            # the presences re-tracked through the new node (new refs), on every up node
            new_refs = {key: mine[key] - restart.old_refs for key in own}
            if all(new_refs.values()) and all(
                new_refs[key] <= refs.get(key, set()) for refs in listed.values() for key in own
            ):
                restart.back = now

    async def stopping(self, name: str) -> None:
        """``name`` is about to stop: stop polling it (after the poll under way)."""
        async with self.lock:
            self.up.discard(name)
            old_refs = {
                ref
                for refs in self.last.values()
                for key in self.expected[name]
                for ref in refs.get(key, ())
            }
            self.restarts.append(Restart(name, time.monotonic(), old_refs=old_refs))

    async def started(self, name: str, ready: float) -> None:
        async with self.lock:
            restart = self.current
            assert restart is not None
            assert restart.name == name
            restart.ready = ready
            self.up.add(name)

    def report(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "lists": self.lists,
            "failed_lists": self.failed_lists,
            "observations": self.observations,
            "missing_inside_windows": self.missing_inside,
            "missing_outside_windows": self.missing_outside,
            "restarts": {r.name: r.figures() for r in self.restarts},
        }


def test_rolling_replacement_of_old_nodes_keeps_every_live_presence_listed(
    previous: Release, start: Callable[..., Process], tmp_path: Path
) -> None:
    first = cli_node(start, tmp_path, "a", previous.python)
    nodes = {"a": first}
    for name in NODES[1:]:
        peers = tuple(node.endpoint for node in nodes.values())
        nodes[name] = cli_node(start, tmp_path, name, previous.python, peers=peers)

    async def replace(checker: Checker, name: str) -> None:
        old = nodes[name]
        await checker.stopping(name)
        code = await asyncio.to_thread(old.terminate)  # SIGTERM, no permdown_on_shutdown
        assert code == 0, old.log()

        def new_node() -> tuple[CliNode, float]:
            node = cli_node(
                start,
                tmp_path,
                name,
                NEW,
                peers=tuple(n.endpoint for n in nodes.values() if n is not old),
                bind=old.endpoint,
                client_bind=old.client_endpoint,
            )
            return node, time.monotonic()

        nodes[name], ready = await asyncio.to_thread(new_node)
        await checker.started(name, ready)
        restart = checker.current
        assert restart is not None
        await until(
            lambda: restart.back is not None and restart.caught_up is not None,
            timeout=30.0,
            message=f"{name}'s client's presences everywhere and {name} caught up",
        )

        async def all_up() -> bool:
            for node in NODES:
                replicas = (await checker.listers[node].status())["replicas"]
                if {r for r, v in replicas.items() if v["status"] == "up"} != set(NODES) - {node}:
                    return False
            return True

        await until(all_up, timeout=30.0, message="every node to see every other up")

    async def main() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for name, node in nodes.items():
                clients[name] = await stack.enter_async_context(
                    Client(
                        node.client_endpoint,
                        client_id=f"app-{name}",
                        heartbeat_interval=HEARTBEAT,
                        lease=CLIENT_LEASE,
                        timeout=CLIENT_TIMEOUT,
                    )
                )
            listers = {}
            for name, node in nodes.items():
                lister = Client(node.client_endpoint, timeout=CLIENT_TIMEOUT)
                stack.push_async_callback(lister.close)
                await lister.open()
                listers[name] = lister
            expected = {name: {f"{name}-user-{i}" for i in range(PER_CLIENT)} for name in NODES}
            for name, cl in clients.items():
                assert cl.ops == V1_OPS  # an old node lists no ops
                for key in sorted(expected[name]):
                    await cl.track(TOPIC, key, {"via": name})
            everything = set().union(*expected.values())

            async def converged() -> bool:
                seen = [keys(await lister.list(TOPIC)) for lister in listers.values()]
                return all(s == everything for s in seen)

            await until(converged, message="the old cluster to list every presence")
            checker = Checker(listers, expected)
            task = asyncio.create_task(checker.run())
            try:
                for name in NODES:
                    await replace(checker, name)
                # a few more polls of the upgraded cluster
                polls = checker.polls
                await until(lambda: checker.polls >= polls + 10, message="more polls")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for name, cl in clients.items():
                assert cl.resyncs == 1, (name, cl.resyncs)
                assert cl.ops == OPS  # every client now talks to a node of this release
                status = await listers[name].status()
                assert status["ops"] == sorted(OPS)
            return {"checker": checker, "report": checker.report()}

    result = run(main)
    checker: Checker = result["checker"]
    report = result["report"]
    print(f"\nrolling upgrade of {', '.join(NODES)} (poll every {POLL} s): {report}")
    assert checker.missing_outside == 0, checker.outside
    for figures in report["restarts"].values():
        assert figures["polls"] >= 1, report  # the checker watched every restart
        assert figures["catch_up_s"] <= BOUND, report
        assert figures["client_back_after_ready_s"] <= BOUND, report
    for node in nodes.values():
        assert node.running(), node.log()
