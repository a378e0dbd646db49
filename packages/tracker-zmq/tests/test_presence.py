"""Presence over real PubSub nodes in one process, on 127.0.0.1.

Ports of Phoenix's presence_test cases plus this port's own rules: 1-3 PubSub + Presence
nodes with short periods; a PubSub subscriber on each node collects the presence_diff
broadcasts. Tests wait on conditions with deadlines, never on fixed sleeps: the list
changes at once, the diff is published afterwards from the tracker's handler queue.
Every test checks that no task is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aio import run, until
from mesh import meshed, pubsubs

from pubsub_zmq import InvalidTopic, PubSub
from tracker_zmq import (
    AlreadyTracked,
    ConfigError,
    KeyCollision,
    NoPresence,
    Presence,
    PresenceDiff,
    Presences,
    TopicPresences,
    TrackerNotRunning,
)

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}
TOPIC = "room:lobby"


def by_ref(presences: Any) -> Any:
    """Presences with each key's metas sorted by phx_ref: meta order is unspecified."""
    return {
        key: {**p, "metas": sorted(p["metas"], key=lambda m: m["phx_ref"])}
        for key, p in presences.items()
    }


def sync_diff(state: Presences, diff: PresenceDiff) -> Presences:
    """phoenix.js ``Presence.syncDiff`` in Python: joins first, then leaves, by phx_ref."""
    state = {key: {**p, "metas": list(p["metas"])} for key, p in state.items()}
    for key, joined in diff["joins"].items():
        current = state.get(key)
        state[key] = {**joined, "metas": list(joined["metas"])}
        if current is not None:
            refs = {m["phx_ref"] for m in joined["metas"]}
            kept = [m for m in current["metas"] if m["phx_ref"] not in refs]
            state[key]["metas"] = kept + state[key]["metas"]
    for key, left in diff["leaves"].items():
        current = state.get(key)
        if current is None:
            continue
        refs = {m["phx_ref"] for m in left["metas"]}
        current["metas"] = [m for m in current["metas"] if m["phx_ref"] not in refs]
        if not current["metas"]:
            del state[key]
    return state


def _meta_n(presences: Presences, key: str) -> object:
    """The ``n`` of ``key``'s first meta, or None while the key is absent."""
    found = presences.get(key)
    return found["metas"][0].get("n") if found else None


@dataclass
class Node:
    pubsub: PubSub
    presence: Presence
    messages: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.pubsub.node_name

    @property
    def payloads(self) -> list[PresenceDiff]:
        assert all(m["event"] == "presence_diff" for m in self.messages)
        return [m["payload"] for m in self.messages]

    def client(self) -> Presences:
        """What a phoenix.js client fed every diff so far would hold."""
        state: Presences = {}
        for payload in self.payloads:
            state = sync_diff(state, payload)
        return state

    def in_sync(self, topic: str = TOPIC) -> bool:
        return bool(by_ref(self.client()) == by_ref(self.presence.list(topic)))


@contextlib.asynccontextmanager
async def cluster(
    n: int,
    presence_class: type[Presence] = Presence,
    topic: str = TOPIC,
    **options: Any,
) -> AsyncIterator[list[Node]]:
    """``n`` meshed PubSub + Presence nodes, each with a subscriber to ``topic``."""
    opts = {**FAST, **options}
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        for pubsub in await pubsubs(stack, n):
            node = Node(pubsub, presence_class(pubsub, **opts))
            pubsub.subscribe(topic, callback=node.messages.append, link=False)
            nodes.append(node)
        for node in nodes:
            await stack.enter_async_context(node.presence)
        await meshed([x.presence.tracker for x in nodes])
        yield nodes


def test_list_and_get_by_key_shape() -> None:
    async def body() -> None:
        async with cluster(2) as (a, b):
            assert a.presence.list(TOPIC) == {}
            assert a.presence.get_by_key(TOPIC, "alice") == []
            r1 = a.presence.track("c1", TOPIC, "alice", {"device": "web"})
            r2 = b.presence.track("c2", TOPIC, "alice", {"device": "phone"})
            r3 = b.presence.track("c3", TOPIC, 42, {"device": "bot"})
            expected = {
                "alice": {
                    "metas": [
                        {"device": "web", "phx_ref": r1},
                        {"device": "phone", "phx_ref": r2},
                    ]
                },
                "42": {"metas": [{"device": "bot", "phx_ref": r3}]},
            }
            for node in (a, b):
                await until(
                    lambda n=node: by_ref(n.presence.list(TOPIC)) == by_ref(expected),  # type: ignore[misc]
                    message=f"list on {node.name}",
                )
                alice = node.presence.get_by_key(TOPIC, "alice")
                assert isinstance(alice, dict)
                assert by_ref({"alice": alice}) == {"alice": by_ref(expected)["alice"]}
                # the key is looked up as given: the int 42, not the string "42"
                assert node.presence.get_by_key(TOPIC, 42) == expected["42"]
                assert node.presence.get_by_key(TOPIC, "42") == []
                assert node.presence.get_by_key(TOPIC, "nobody") == []
                assert node.presence.get_by_key("room:other", "alice") == []

            # results are copies: changing them does not reach the tracker
            listed = a.presence.list(TOPIC)
            listed["alice"]["metas"][0]["device"] = "changed"
            listed.clear()
            assert by_ref(a.presence.list(TOPIC)) == by_ref(expected)

            for node in (a, b):
                await until(node.in_sync, message=f"diffs on {node.name}")

    run(body)


def test_phx_ref_and_phx_ref_prev_and_update_diff() -> None:
    async def body() -> None:
        async with cluster(2) as (a, b):
            ref1 = a.presence.track("c1", TOPIC, "alice", {"status": "online"})
            await until(lambda: len(b.messages) == 1 and len(a.messages) == 1, message="join")
            ref2 = a.presence.update("c1", TOPIC, "alice", {"status": "away"})
            ref3 = a.presence.update("c1", TOPIC, "alice", lambda m: {**m, "typing": True})
            assert len({ref1, ref2, ref3}) == 3
            meta3 = {"status": "away", "typing": True, "phx_ref": ref3, "phx_ref_prev": ref2}
            assert a.presence.list(TOPIC) == {"alice": {"metas": [meta3]}}
            assert a.presence.get_by_key(TOPIC, "alice") == {"metas": [meta3]}

            # the local node publishes one diff per change: the key joins (new meta,
            # with phx_ref_prev) and leaves (old meta) in the same diff
            await until(lambda: len(a.messages) == 3, message="update diffs")
            meta1 = {"status": "online", "phx_ref": ref1}
            meta2 = {"status": "away", "phx_ref": ref2, "phx_ref_prev": ref1}
            assert a.payloads == [
                {"joins": {"alice": {"metas": [meta1]}}, "leaves": {}},
                {"joins": {"alice": {"metas": [meta2]}}, "leaves": {"alice": {"metas": [meta1]}}},
                {"joins": {"alice": {"metas": [meta3]}}, "leaves": {"alice": {"metas": [meta2]}}},
            ]
            # a remote node may see both updates in one heartbeat: it ends in step
            await until(lambda: b.client() == {"alice": {"metas": [meta3]}}, message="remote")
            assert b.in_sync()

            with pytest.raises(NoPresence):
                a.presence.update("c1", TOPIC, "bob", {})
            with pytest.raises(NoPresence):
                b.presence.update("c1", TOPIC, "alice", {})  # only the owning node updates
            with pytest.raises(AlreadyTracked):
                a.presence.track("c1", TOPIC, "alice", {})

            a.presence.untrack("c1", TOPIC, "alice")
            a.presence.untrack("c1", TOPIC, "alice")  # nothing tracked: a no-op
            for node in (a, b):
                await until(lambda n=node: n.client() == {}, message=f"leave on {node.name}")  # type: ignore[misc]
            assert a.payloads[-1] == {"joins": {}, "leaves": {"alice": {"metas": [meta3]}}}

    run(body)


def test_diffs_reach_every_node_in_order() -> None:
    async def body() -> None:
        async with cluster(3) as nodes:
            a, b, c = nodes

            async def step(action: Callable[[], object], count: int) -> None:
                action()
                for node in nodes:
                    await until(
                        lambda n=node: len(n.messages) == count and n.in_sync(),  # type: ignore[misc]
                        message=f"diff {count} on {node.name}",
                    )

            # one change at a time: every node publishes the same diffs in the same order
            await step(lambda: a.presence.track("c1", TOPIC, "alice", {"n": 1}), 1)
            await step(lambda: b.presence.track("c2", TOPIC, "alice", {"n": 2}), 2)
            await step(lambda: c.presence.track("c3", TOPIC, "bob", {"n": 3}), 3)
            await step(lambda: a.presence.update("c1", TOPIC, "alice", {"n": 4}), 4)
            await step(lambda: b.presence.untrack("c2"), 5)
            await step(lambda: c.presence.untrack("c3", TOPIC, "bob"), 6)
            assert a.payloads == b.payloads == c.payloads
            assert [sorted(p["joins"]) for p in a.payloads] == [
                ["alice"], ["alice"], ["bob"], ["alice"], [], []
            ]  # fmt: skip
            assert [sorted(p["leaves"]) for p in a.payloads] == [
                [], [], [], ["alice"], ["alice"], ["bob"]
            ]  # fmt: skip

            # a burst: the local node publishes every step in order; remote nodes may get
            # several steps in one heartbeat, and end in step
            before = len(a.messages)
            refs = [a.presence.update("c1", TOPIC, "alice", {"n": i}) for i in range(30)]
            await until(lambda: len(a.messages) == before + 30, message="burst")
            joined = [p["joins"]["alice"]["metas"][0] for p in a.payloads[before:]]
            assert [m["phx_ref"] for m in joined] == refs
            assert [m["phx_ref_prev"] for m in joined[1:]] == refs[:-1]
            for node in nodes:
                # alice may be absent for a moment on a loaded machine (a replica seen down
                # for down_period, 0.3 s here, then up): wait, do not raise
                await until(
                    lambda n=node: _meta_n(n.client(), "alice") == 29,  # type: ignore[misc]
                    message=f"burst on {node.name}",
                )
                assert node.in_sync()

    run(body)


def test_node_down_publishes_leaves() -> None:
    async def body() -> None:
        async with cluster(2) as (a, b):
            b.presence.track("c1", TOPIC, "bob", {"on": "b"})
            a.presence.track("c2", TOPIC, "alice", {"on": "a"})
            await until(lambda: sorted(a.client()) == ["alice", "bob"], message="both")
            await b.presence.stop()  # silent: a sees b down after down_period
            await until(lambda: sorted(a.client()) == ["alice"], message="bob leaves")
            assert a.payloads[-1]["leaves"] == {"bob": {"metas": [b_meta(a)]}}
            assert a.presence.list(TOPIC) == a.client()

    def b_meta(a: Node) -> dict[str, Any]:
        joined = next(p for p in a.payloads if "bob" in p["joins"])["joins"]["bob"]
        meta: dict[str, Any] = joined["metas"][0]
        return meta

    run(body)


class UserPresence(Presence):
    """fetch adds a user record beside the metas, and counts its calls."""

    def __init__(self, pubsub: PubSub, **options: Any) -> None:
        super().__init__(pubsub, **options)
        self.fetches: list[tuple[str, list[str]]] = []

    def fetch(self, topic: str, presences: Presences) -> Presences:
        self.fetches.append((topic, sorted(presences)))
        return {key: {**p, "user": {"name": key.title()}} for key, p in presences.items()}


def test_fetch_applies_to_list_get_by_key_and_diffs() -> None:
    async def body() -> None:
        async with cluster(2, UserPresence) as (a, b):
            pa = a.presence
            assert isinstance(pa, UserPresence)
            ref = pa.track("c1", TOPIC, "alice", {"status": "online"})
            meta = {"status": "online", "phx_ref": ref}
            await until(lambda: len(a.messages) == 1, message="join diff")
            pa.fetches.clear()
            assert pa.list(TOPIC) == {"alice": {"metas": [meta], "user": {"name": "Alice"}}}
            assert pa.fetches == [(TOPIC, ["alice"])]  # once per list
            assert pa.get_by_key(TOPIC, "alice") == {"metas": [meta], "user": {"name": "Alice"}}
            assert pa.fetches[-1] == (TOPIC, ["alice"])
            assert pa.list("room:empty") == {}  # nothing to fetch

            pa.fetches.clear()
            ref2 = pa.update("c1", TOPIC, "alice", {"status": "away"})
            await until(lambda: len(a.messages) == 2, message="update diff")
            # once for the joins and once for the leaves of the diff
            assert pa.fetches == [(TOPIC, ["alice"]), (TOPIC, ["alice"])]
            assert a.payloads[1] == {
                "joins": {
                    "alice": {
                        "metas": [{"status": "away", "phx_ref": ref2, "phx_ref_prev": ref}],
                        "user": {"name": "Alice"},
                    }
                },
                "leaves": {"alice": {"metas": [meta], "user": {"name": "Alice"}}},
            }
            # every node fetches for its own broadcasts
            await until(b.in_sync, message="remote diffs")
            assert all(
                p["user"] == {"name": "Alice"} for d in b.payloads for p in d["joins"].values()
            )

    run(body)


class FlakyPresence(Presence):
    """fetch fails for the key "boom"; handle_metas fails for the key "crash"."""

    def init(self, state: dict[str, Any]) -> Any:
        return 0

    def fetch(self, topic: str, presences: Presences) -> Presences:
        for p in presences.values():
            p["extra"] = True  # changed before failing: the broadcast must not show it
        if "boom" in presences:
            raise RuntimeError("fetch bug")
        return presences

    def handle_metas(
        self, topic: str, diff: PresenceDiff, presences: TopicPresences, state: Any
    ) -> Any:
        if "crash" in diff["joins"]:
            raise RuntimeError("handle_metas bug")
        return state + 1


def test_hook_errors_are_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with cluster(1, FlakyPresence) as (a,):
            pa = a.presence
            pa.track("c1", TOPIC, "boom", {"v": 1})
            await until(lambda: len(a.messages) == 1, message="diff despite fetch error")
            # published without the fetched fields, so clients stay in step
            assert a.payloads[0]["joins"]["boom"].keys() == {"metas"}
            assert "extra" not in a.payloads[0]["joins"]["boom"]["metas"][0]
            assert pa.counters["fetch_errors"] == 1
            with pytest.raises(RuntimeError, match="fetch bug"):
                pa.list(TOPIC)  # list calls fetch in the caller's frame
            with pytest.raises(RuntimeError, match="fetch bug"):
                pa.get_by_key(TOPIC, "boom")

            pa.track("c2", TOPIC, "crash", {"v": 2})
            pa.track("c3", TOPIC, "fine", {"v": 3})
            await until(lambda: len(a.messages) == 3, message="diffs despite hook error")
            await until(lambda: pa.client_state == 2, message="state after the failure")
            assert pa.counters["handle_metas_errors"] == 1
            assert pa.tracker.stats()["handler_errors"] == 0  # nothing reached the tracker
            pa.untrack("c1")
            await until(lambda: pa.client_state == 3, message="presence keeps working")

    with caplog.at_level(logging.ERROR, logger="tracker_zmq"):
        run(body)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("fetch raised" in m for m in messages) == 2  # the join and the leave of boom
    assert sum("handle_metas raised" in m for m in messages) == 1


class ClientPresence(Presence):
    """Phoenix's handle_metas test: records every call with a copy of the view."""

    def init(self, state: dict[str, Any]) -> Any:
        assert state == {}
        return {"calls": []}

    def handle_metas(
        self, topic: str, diff: PresenceDiff, presences: TopicPresences, state: Any
    ) -> Any:
        view = {key: [m["n"] for m in metas] for key, metas in presences.items()}
        return {"calls": [*state["calls"], (topic, diff, view)]}


class AsyncClientPresence(ClientPresence):
    async def handle_metas(
        self, topic: str, diff: PresenceDiff, presences: TopicPresences, state: Any
    ) -> Any:
        await asyncio.sleep(0)
        return super().handle_metas(topic, diff, presences, state)


@pytest.mark.parametrize("presence_class", [ClientPresence, AsyncClientPresence])
def test_client_state_hook(presence_class: type[Presence]) -> None:
    async def body() -> None:
        async with cluster(2, presence_class) as (a, b):
            for node in (a, b):
                assert node.presence.client_state == {"calls": []}

            def views(node: Node) -> list[Any]:
                return [view for _, _, view in node.presence.client_state["calls"]]

            steps: list[tuple[Callable[[], object], dict[str, list[int]]]] = [
                (lambda: a.presence.track("c1", TOPIC, "alice", {"n": 1}), {"alice": [1]}),
                (lambda: b.presence.track("c2", TOPIC, "alice", {"n": 2}), {"alice": [1, 2]}),
                (lambda: a.presence.track("c3", TOPIC, "bob", {"n": 3}), {"alice": [1, 2], "bob": [3]}),  # noqa: E501
                (lambda: a.presence.untrack("c1"), {"alice": [2], "bob": [3]}),
                (lambda: b.presence.untrack("c2"), {"bob": [3]}),
                (lambda: a.presence.untrack("c3"), {}),
            ]  # fmt: skip
            for i, (action, view) in enumerate(steps, 1):
                action()
                for node in (a, b):
                    await until(
                        lambda n=node, i=i: len(views(n)) == i,  # type: ignore[misc]
                        message=f"handle_metas {i} on {node.name}",
                    )
                    assert views(node)[-1] == view
            # each call got the topic and the diff just broadcast on that node
            for node in (a, b):
                calls = node.presence.client_state["calls"]
                assert [topic for topic, _, _ in calls] == [TOPIC] * len(steps)
                # the subscriber hears the broadcast on a later loop turn than the hook
                await until(
                    lambda n=node: len(n.payloads) == len(steps),  # type: ignore[misc]
                    message=f"broadcasts heard on {node.name}",
                )
                assert [diff for _, diff, _ in calls] == node.payloads

            b.presence.track("c4", "room:other", "carol", {"n": 4})
            await until(lambda: len(views(a)) == len(steps) + 1, message="second topic")
            assert a.presence.client_state["calls"][-1][0] == "room:other"
            assert views(a)[-1] == {"carol": [4]}

    run(body)


def test_key_collision() -> None:
    async def body() -> None:
        async with cluster(2) as (a, b):
            a.presence.track("c1", TOPIC, 1, {})
            with pytest.raises(KeyCollision, match=r"1 and '1'"):
                a.presence.track("c2", TOPIC, "1", {})
            a.presence.track("c2", TOPIC, "01", {})  # prints differently: no collision
            a.presence.track("c2", TOPIC, "x1", {})
            # a remote presence counts too, once this node sees it
            await until(lambda: "1" in b.presence.list(TOPIC), message="replicated")
            with pytest.raises(KeyCollision):
                b.presence.track("c3", TOPIC, "1", {})
            # the other direction, and through the tracker (which does not check)
            b.presence.track("c3", TOPIC, "7", {})
            await until(lambda: "7" in a.presence.list(TOPIC), message="replicated 7")
            with pytest.raises(KeyCollision):
                a.presence.track("c3", TOPIC, 7, {})
            a.presence.tracker.track("c4", TOPIC, "1", {})
            with pytest.raises(KeyCollision, match="one type of key per topic") as caught:
                a.presence.list(TOPIC)
            assert isinstance(caught.value, ValueError)
            assert a.presence.get_by_key(TOPIC, 1) != a.presence.get_by_key(TOPIC, "1")

    run(body)


def test_errors_config_and_task_owners() -> None:
    async def body() -> None:
        async with PubSub("solo") as pubsub:
            with pytest.raises(ConfigError, match="handler"):
                Presence(pubsub, handler=print)
            with pytest.raises(ConfigError):
                Presence(pubsub, broadcast_period=-1)
            presence = Presence(pubsub, name="p", **FAST)
            with pytest.raises(TrackerNotRunning):
                presence.track("c1", TOPIC, "alice", {})
            with pytest.raises(TrackerNotRunning):
                presence.list(TOPIC)
            messages: list[Any] = []
            pubsub.subscribe(TOPIC, callback=messages.append, link=False)
            async with presence:
                assert presence.running
                assert presence.name == "p"
                with pytest.raises(TypeError):
                    presence.track("c1", 42, "alice", {})  # type: ignore[arg-type]
                with pytest.raises(InvalidTopic):
                    presence.track("c1", "", "alice", {})
                with pytest.raises(TypeError):
                    presence.track("c1", TOPIC, 1.5, {})  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    presence.track("c1", TOPIC, "alice", {"bad": object()})
                with pytest.raises(TypeError):
                    presence.untrack("c1", TOPIC)

                async with presence.tracking("c1", TOPIC, "alice", {}) as ref:
                    assert presence.list(TOPIC)["alice"]["metas"][0]["phx_ref"] == ref
                assert presence.list(TOPIC) == {}

                # a Task owner's presences leave when it finishes
                async def connection() -> None:
                    presence.track(asyncio.current_task(), TOPIC, "bob", {})  # type: ignore[arg-type]
                    await asyncio.sleep(0)

                await asyncio.create_task(connection())
                await until(lambda: presence.list(TOPIC) == {}, message="task owner leaves")
                await until(lambda: len(messages) == 4, message="task diffs")
                assert [sorted(m["payload"]["leaves"]) for m in messages] == [
                    [], ["alice"], [], ["bob"]
                ]  # fmt: skip
            assert not presence.tracker.running
            await presence.stop()  # idempotent
            with pytest.raises(TrackerNotRunning):
                presence.list(TOPIC)

    run(body)


def test_stop_publishes_queued_diffs() -> None:
    async def body() -> None:
        async with PubSub("solo") as pubsub:
            messages: list[Any] = []
            pubsub.subscribe(TOPIC, callback=messages.append, link=False)
            async with Presence(pubsub, **FAST) as presence:
                for i in range(20):
                    presence.track(f"c{i}", TOPIC, f"user{i}", {})
            # diffs queued before stop were published (their callbacks run next)
            await until(lambda: len(messages) == 20, message="queued diffs")

    run(body)
