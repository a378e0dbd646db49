"""The asyncio Tracker over real PubSub nodes in one process, on 127.0.0.1.

Ports of Phoenix's pool_test and shard_test cases plus the tracker's own API: each test
runs 1-3 PubSub + Tracker nodes with short periods and waits on conditions with
deadlines, never on fixed sleeps. Every test checks that no task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aio import run, until
from mesh import meshed, pubsubs

from pubsub_zmq import PubSub
from tracker_zmq import (
    AlreadyTracked,
    ConfigError,
    NoPresence,
    Tracker,
    TrackerNotRunning,
)
from tracker_zmq.shard import Diff

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


@dataclass
class Node:
    pubsub: PubSub
    tracker: Tracker
    diffs: list[Diff] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.pubsub.node_name

    def joins(self, topic: str | int) -> list[tuple[Any, dict[str, Any]]]:
        return [j for d in self.diffs if topic in d for j in d[topic][0]]

    def leaves(self, topic: str | int) -> list[tuple[Any, dict[str, Any]]]:
        return [leave for d in self.diffs if topic in d for leave in d[topic][1]]

    def keys(self, topic: str | int) -> set[Any]:
        return {key for key, _ in self.tracker.list(topic)}


@contextlib.asynccontextmanager
async def cluster(n: int, **options: Any) -> AsyncIterator[list[Node]]:
    """``n`` meshed PubSub + Tracker nodes whose shards all see each other up."""
    opts = {**FAST, **options}
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for pubsub in await pubsubs(stack, n):
            diffs: list[Diff] = []
            tracker = Tracker(pubsub, handler=diffs.append, **opts)
            nodes.append(Node(pubsub, tracker, diffs))
        for node in nodes:
            await stack.enter_async_context(node.tracker)
        await meshed([x.tracker for x in nodes])
        yield nodes


def test_track_untrack_update_replicate() -> None:
    async def body() -> None:
        async with cluster(3) as (a, b, c):
            ref = a.tracker.track("u1", "room", "alice", {"name": "Alice"})
            assert a.tracker.list("room") == [("alice", {"name": "Alice", "phx_ref": ref})]
            # the local handler runs after track returns, remote ones after a heartbeat
            assert a.diffs == []
            await until(lambda: a.joins("room") == [("alice", {"name": "Alice", "phx_ref": ref})])
            for node in (b, c):
                await until(lambda n=node: n.keys("room") == {"alice"}, message="join")  # type: ignore[misc]
                # the list changes at the merge, the handler runs from its queue just after
                await until(lambda n=node: n.joins("room") != [], message="join diff")  # type: ignore[misc]
                assert node.joins("room") == [("alice", {"name": "Alice", "phx_ref": ref})]
                assert node.tracker.get_by_key("room", "alice") == [
                    ("u1", {"name": "Alice", "phx_ref": ref})
                ]

            ref2 = a.tracker.update("u1", "room", "alice", {"status": "away"})
            meta2 = {"status": "away", "phx_ref": ref2, "phx_ref_prev": ref}
            assert ref2 != ref
            assert a.tracker.get_by_key("room", "alice") == [("u1", meta2)]
            await until(lambda: b.tracker.list("room") == [("alice", meta2)], message="update")
            ref3 = a.tracker.update("u1", "room", "alice", lambda m: {**m, "n": 1})
            meta3 = a.tracker.list("room")[0][1]
            assert meta3 == {"status": "away", "n": 1, "phx_ref": ref3, "phx_ref_prev": ref2}
            await until(lambda: c.tracker.list("room") == [("alice", meta3)], message="update fn")
            await until(lambda: ("alice", meta2) in c.leaves("room"), message="update diff")

            a.tracker.untrack("u1", "room", "alice")
            assert a.tracker.list("room") == []
            await until(lambda: b.keys("room") == set() and c.keys("room") == set())

            b.tracker.track("u2", "room", "bob", {})
            b.tracker.track("u2", "lobby", "bob", {})
            b.tracker.track(7, "room", 8, {})
            await until(lambda: a.keys("room") == {"bob", 8} and a.keys("lobby") == {"bob"})
            b.tracker.untrack("u2")
            b.tracker.untrack("nobody")
            b.tracker.untrack("nobody", "room", "x")
            await until(lambda: a.keys("room") == {8} and a.keys("lobby") == set())
            await until(lambda: c.keys("room") == {8}, message="c converges")

    run(body)


def test_errors() -> None:
    async def body() -> None:
        async with cluster(1) as (a,):
            t = a.tracker
            t.track("o", "t", "k", {})
            with pytest.raises(AlreadyTracked):
                t.track("o", "t", "k", {"other": 1})
            with pytest.raises(NoPresence):
                t.update("o", "t", "nokey", {})
            with pytest.raises(NoPresence):
                t.update(asyncio.current_task(), "t", "k", {})  # type: ignore[arg-type]
            with pytest.raises(LookupError):
                t.update("nobody", "t", "k", lambda m: m)
            for bad in (True, 1.5, None, ("a",)):
                with pytest.raises(TypeError):
                    t.track(bad, "t", "k2", {})  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    t.track("o", bad, "k2", {})  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    t.track("o", "t", bad, {})  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    t.list(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                t.track("o", "t", "k3", {"x": object()})
            with pytest.raises(TypeError):
                t.update("o", "t", "k", {"x": {1, 2}})
            with pytest.raises(TypeError):
                t.untrack("o", "t")
            assert t.list("t")[0][0] == "k"
            with pytest.raises(TrackerNotRunning):
                await t.start()
        with pytest.raises(TrackerNotRunning):
            t.track("o", "t", "k9", {})
        with pytest.raises(TrackerNotRunning):
            t.list("t")
        with pytest.raises(TrackerNotRunning):
            await t.graceful_permdown()
        await t.stop()  # idempotent

        async with PubSub("solo") as pubsub:
            fresh = Tracker(pubsub, **FAST)
            for call in (
                lambda: fresh.track("o", "t", "k", {}),
                lambda: fresh.untrack("o"),
                lambda: fresh.update("o", "t", "k", {}),
                lambda: fresh.list("t"),
                lambda: fresh.get_by_key("t", "k"),
            ):
                with pytest.raises(TrackerNotRunning):
                    call()
        with pytest.raises(TrackerNotRunning):
            await Tracker(pubsub).start()  # the PubSub is stopped

    run(body)


def test_config_errors() -> None:
    pubsub = PubSub("cfg")
    # Phoenix's shard_test: down_period below what heartbeats allow, permdown <= down
    with pytest.raises(ConfigError, match="down_period"):
        Tracker(pubsub, down_period=1)
    with pytest.raises(ConfigError, match="permdown_period"):
        Tracker(pubsub, down_period=1200, permdown_period=120)
    with pytest.raises(ValueError):
        Tracker(pubsub, broadcast_period=0)
    for bad in (
        {"pool_size": 0},
        {"pool_size": 1.0},
        {"max_silent_periods": True},
        {"max_delta_sizes": (10, 5)},
        {"handler": 42},
        {"name": ""},
        {"permdown_on_shutdown": 1},
        {"transfer_part_bytes": 1 << 20},  # more than half of PubSub's 1 MiB frames
        {"transfer_timeout": 0},
    ):
        with pytest.raises(ConfigError):
            Tracker(pubsub, **bad)
    with pytest.raises(ConfigError):
        Tracker("not a pubsub")  # type: ignore[arg-type]
    t = Tracker(pubsub)
    assert t.options.down_period == 30.0
    assert t.options.permdown_period == 1200
    assert t.options.transfer_timeout == 150.0
    assert t.options.transfer_part_bytes == pubsub.max_frame_bytes // 2


def test_task_owner_and_tracking() -> None:
    async def body() -> None:
        async with cluster(2) as (a, b):
            release = asyncio.Event()
            refs: list[str] = []

            async def user() -> None:
                me = asyncio.current_task()
                assert me is not None
                refs.append(a.tracker.track(me, "room", "task-user", {}))
                a.tracker.track(me, "other", "task-user", {})
                await release.wait()

            task = asyncio.create_task(user())
            await until(lambda: b.keys("room") == {"task-user"}, message="task join")
            owner = a.tracker.owner_id(task)
            assert isinstance(owner, str)
            assert owner.startswith(f"{a.name}:{a.tracker.vsn}:")
            assert b.tracker.get_by_key("room", "task-user")[0][0] == owner
            release.set()
            await task
            assert a.tracker.list("room") == []
            assert a.tracker.list("other") == []
            assert a.tracker.owner_id(task) is None
            await until(lambda: b.keys("room") == set() and b.keys("other") == set())

            # untrack accepts the Task or its id
            me = asyncio.current_task()
            assert me is not None
            a.tracker.track(me, "room", "k1", {})
            a.tracker.track(me, "room", "k2", {})
            a.tracker.untrack(me, "room", "k1")
            assert a.keys("room") == {"k2"}
            a.tracker.untrack(me)
            assert a.keys("room") == set()

            async with a.tracker.tracking("ctx", "room", "scoped", {"x": 1}) as ref:
                assert a.tracker.list("room") == [("scoped", {"x": 1, "phx_ref": ref})]
                await until(lambda: b.keys("room") == {"scoped"}, message="scoped join")
            assert a.keys("room") == set()
            await until(lambda: b.keys("room") == set(), message="scoped leave")
            with pytest.raises(RuntimeError):
                async with a.tracker.tracking("ctx", "room", "scoped", {}):
                    raise RuntimeError("boom")
            assert a.keys("room") == set()

    run(body)


def test_graceful_permdown_is_seen_at_once() -> None:
    async def body() -> None:
        # a long down_period, so only the permdown message can explain a quick leave
        slow = {"down_period": 5.0, "permdown_period": 10.0}
        async with cluster(3, **slow) as (a, b, c):
            a.tracker.track("u", "room", "alice", {})
            await until(lambda: b.keys("room") == {"alice"} and c.keys("room") == {"alice"})
            start = time.monotonic()
            permdown = asyncio.create_task(a.tracker.graceful_permdown())
            await until(lambda: b.keys("room") == set() and c.keys("room") == set(), 1.0)
            assert time.monotonic() - start < 1.0
            await until(lambda: bool(b.leaves("room") and c.leaves("room")), message="leave diffs")
            await permdown
            assert not a.tracker.running
            for node in (b, c):
                assert a.name not in node.tracker.stats()["replicas"]
            with pytest.raises(TrackerNotRunning):
                a.tracker.list("room")

    run(body)


def test_permdown_on_shutdown_and_silent_stop() -> None:
    async def body() -> None:
        slow = {"down_period": 0.5, "permdown_period": 10.0}
        async with cluster(3, **slow) as (a, b, c):
            a.tracker.permdown_on_shutdown = True
            a.tracker.track("u", "room", "a", {})
            b.tracker.track("u", "room", "b", {})
            await until(lambda: c.keys("room") == {"a", "b"})
            start = time.monotonic()
            await b.tracker.stop()  # silent: peers wait for down_period
            await a.tracker.stop()  # graceful: peers drop it at once
            # permdown_period is 10 s: only the permdown message removes a's replica
            await until(lambda: a.name not in c.tracker.stats()["replicas"], 3.0, "permdown")
            await until(lambda: c.keys("room") == set(), 3.0)
            assert time.monotonic() - start > 0.4
            assert c.tracker.stats()["replicas"][b.name]["status"] == "down"

    run(body)


def test_down_and_up_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracker_zmq")

    async def body() -> None:
        async with cluster(2) as (a, b):
            b.tracker.log_level = logging.INFO
            a.tracker.track("u", "room", "alice", {})
            await until(lambda: b.keys("room") == {"alice"})
            # a's heartbeats stop reaching b: b marks it down, then up again
            sub = a.tracker._runners[0].sub
            assert sub is not None
            real = a.pubsub.broadcast_from
            a.pubsub.broadcast_from = lambda *args: None  # type: ignore[method-assign]
            took = await until(lambda: b.keys("room") == set(), 3.0, "down")
            assert took < 0.3 + 3 * 0.05 + 0.5
            assert b.tracker.stats()["replicas"][a.name]["status"] == "down"
            a.pubsub.broadcast_from = real  # type: ignore[method-assign]
            await until(lambda: b.keys("room") == {"alice"}, 3.0, "up again")
            await until(lambda: len(b.joins("room")) == 2, message="second join diff")
            assert [k for k, _ in b.joins("room")] == ["alice", "alice"]
            assert [k for k, _ in b.leaves("room")] == ["alice"]

    run(body)
    messages = [r.getMessage() for r in caplog.records]
    assert any("down" in m and "n0" in m for m in messages)
    assert any(m.endswith(" up") and "n0" in m for m in messages)


@pytest.mark.parametrize("pool_size", [1, 2, 8])
def test_pool(pool_size: int) -> None:
    async def body() -> None:
        async with cluster(2, pool_size=pool_size) as (a, b):
            topics = [f"topic{i}" for i in range(100)]
            refs = {topic: a.tracker.track("me", topic, "k", {"a": 1}) for topic in topics}
            for topic in topics:
                assert a.tracker.list(topic) == [("k", {"a": 1, "phx_ref": refs[topic]})]
            await until(lambda: all(b.tracker.list(t) == a.tracker.list(t) for t in topics))
            if pool_size > 1:
                used = [s["presences"] for s in a.tracker.stats()["shards"]]
                assert len(used) == pool_size
                assert all(used)
            for topic in topics:
                new = a.tracker.update("me", topic, "k", {"b": 2})
                assert a.tracker.list(topic) == [
                    ("k", {"b": 2, "phx_ref": new, "phx_ref_prev": refs[topic]})
                ]
                fn = a.tracker.update("me", topic, "k", lambda m: {**m, "c": 3})
                assert a.tracker.list(topic)[0][1] == {
                    "b": 2,
                    "c": 3,
                    "phx_ref": fn,
                    "phx_ref_prev": new,
                }
            for topic in topics[:50]:
                a.tracker.untrack("me", topic, "k")
            a.tracker.untrack("me")
            assert all(a.tracker.list(t) == [] for t in topics)
            await until(lambda: all(b.tracker.list(t) == [] for t in topics))
            assert a.tracker.stats()["totals"]["presences"] == 0

    run(body)


def test_handlers(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with PubSub("h", gossip_interval=0.1, peer_timeout=1.0) as pubsub:
            seen_async: list[Diff] = []
            seen_obj: list[Diff] = []
            calls = 0

            async def async_handler(diff: Diff) -> None:
                await asyncio.sleep(0)
                seen_async.append(diff)

            class Obj:
                def handle_diff(self, diff: Diff) -> None:
                    seen_obj.append(diff)

            def failing(diff: Diff) -> None:
                nonlocal calls
                calls += 1
                raise ValueError("handler bug")

            trackers = [
                Tracker(pubsub, name="t1", handler=async_handler, **FAST),
                Tracker(pubsub, name="t2", handler=Obj(), **FAST),
                Tracker(pubsub, name="t3", handler=failing, **FAST),
            ]
            for t in trackers:
                await t.start()
            for t in trackers:
                t.track("o", "room", "k1", {})
                t.update("o", "room", "k1", {"v": 2})
                t.untrack("o", "room", "k1")
            await until(lambda: len(seen_async) == 3 and len(seen_obj) == 3 and calls == 3)
            for seen in (seen_async, seen_obj):
                joins = [d["room"][0] for d in seen]
                leaves = [d["room"][1] for d in seen]
                assert [len(j) for j in joins] == [1, 1, 0]  # in order
                assert [len(x) for x in leaves] == [0, 1, 1]
            # the raising handler is logged and the tracker keeps working
            assert trackers[2].stats()["handler_errors"] == 3
            trackers[2].track("o", "room", "k2", {})
            assert trackers[2].list("room")[0][0] == "k2"
            await until(lambda: calls == 4)
            for t in trackers:
                await t.stop()

    with caplog.at_level(logging.ERROR, logger="tracker_zmq"):
        run(body)
    assert sum("handler raised" in r.getMessage() for r in caplog.records) == 4


def test_a_backlog_of_diffs_reaches_the_handler_a_step_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of tracks queues a diff each; the handler gets them in order, in bounded
    steps (HANDLER_STEP), so the rest of the loop runs while it works through them."""
    import tracker_zmq.tracker as tracker_module

    async def body(step: float) -> list[Any]:
        monkeypatch.setattr(tracker_module, "HANDLER_STEP", step)
        events: list[Any] = []
        async with PubSub("h", gossip_interval=0.1, peer_timeout=1.0) as pubsub:
            handler = lambda diff: events.extend(key for key, _ in diff["room"][0])  # noqa: E731
            async with Tracker(pubsub, handler=handler, **FAST) as tracker:
                for i in range(20):
                    tracker.track("o", "room", i, {})

                async def ticker() -> None:
                    while True:
                        events.append("tick")
                        await asyncio.sleep(0)

                task = asyncio.create_task(ticker())
                await until(lambda: 19 in events)
                task.cancel()
        assert [e for e in events if e != "tick"] == list(range(20))
        return events[events.index(0) : events.index(19)]

    assert run(lambda: body(0.0)).count("tick") >= 19  # a diff per step
    assert "tick" not in run(lambda: body(5.0))  # cheap diffs: one step for all


def test_stats_shape() -> None:
    async def body() -> None:
        async with cluster(2, pool_size=2) as (a, b):
            a.tracker.track("o", "t", "k", {})
            await until(lambda: b.keys("t") == {"k"})
            stats = a.tracker.stats()
            assert stats["name"] == "presence"
            assert stats["node"] == a.name
            assert stats["vsn"] == a.tracker.vsn
            assert stats["pool_size"] == 2
            assert stats["running"] is True
            assert stats["replicas"] == {b.name: {"vsn": b.tracker.vsn, "status": "up"}}
            assert len(stats["shards"]) == 2
            totals = stats["totals"]
            assert totals["presences"] == 1
            assert totals["messages_out"] > 0
            assert totals["messages_in"] > 0
            assert totals["heartbeats_sent"] > 0
            assert isinstance(totals["drops"], dict)
            assert sum(s["presences"] for s in stats["shards"]) == 1
            for name in ("handler_errors", "receive_errors", "send_errors", "overflows"):
                assert stats[name] == 0
            assert b.tracker.stats()["totals"]["presences"] == 1
            assert b.tracker.vsn != a.tracker.vsn

    run(body)


def test_vsn_grows_across_restarts() -> None:
    async def body() -> None:
        vsns = []
        for _ in range(3):
            async with PubSub("same") as pubsub, Tracker(pubsub, **FAST) as t:
                vsns.append(t.vsn)
        assert vsns == sorted(vsns)
        assert len(set(vsns)) == 3

    run(body)


def test_a_heartbeat_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every orjson encoding of a heartbeat, by the shard or by the PubSub, is counted:
    # the shard encodes it once and the PubSub sends those bytes (pubsub_zmq.Encoded).
    encoded: list[Any] = []
    dumps = orjson.dumps

    def counting(data: Any, *args: Any, **kwargs: Any) -> bytes:
        if type(data) is dict and data.get("t") == "hb":
            encoded.append(data)
        return dumps(data, *args, **kwargs)

    monkeypatch.setattr(orjson, "dumps", counting)

    async def body() -> None:
        async with cluster(2, pool_size=2) as (a, b):
            a.tracker.track("u1", "room", "alice", {"n": 1})
            await until(lambda: b.keys("room") == {"alice"}, message="join")
            # read together, with no await between: no tick runs in between
            sent = sum(n.tracker.stats()["totals"]["heartbeats_sent"] for n in (a, b))
            assert sent > 0
            assert len(encoded) == sent
            assert all(n.tracker.stats()["totals"]["deltas_too_large"] == 0 for n in (a, b))

    run(body)
