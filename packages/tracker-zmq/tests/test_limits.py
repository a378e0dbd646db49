"""Resource limits of one node: the tracker's ``max_presences`` (per node) and how a
standalone node answers a client that hits it (``limit_exceeded``). In one process, on
127.0.0.1; every test checks that no task is left behind."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aio import run

from pubsub_zmq import PubSub
from tracker_zmq import (
    Client,
    ConfigError,
    LimitExceeded,
    Node,
    TooManyPresences,
    Tracker,
    TrackerError,
)
from tracker_zmq.options import Options

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_presences_must_be_a_positive_int_or_none(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_presences"):
        Options(max_presences=bad)  # type: ignore[arg-type]
    assert Options().max_presences is None
    assert Options(max_presences=1).max_presences == 1


@pytest.mark.parametrize("pool_size", [1, 3])
def test_max_presences_counts_this_nodes_presences_over_all_shards(pool_size: int) -> None:
    async def body() -> None:
        async with (
            PubSub("limits") as pubsub,
            Tracker(pubsub, max_presences=4, pool_size=pool_size, **FAST) as tracker,
        ):
            for i in range(4):
                tracker.track("o", f"topic-{i}", "k", {})
            assert tracker.local_presences() == 4
            with pytest.raises(TooManyPresences, match="max_presences") as caught:
                tracker.track("o", "topic-x", "k", {})
            assert caught.value.limit == 4
            assert isinstance(caught.value, TrackerError)
            # updates replace, they do not add
            tracker.update("o", "topic-0", "k", {"v": 2})
            assert tracker.local_presences() == 4
            # room again once one leaves, by untrack or by owner
            tracker.untrack("o", "topic-0", "k")
            tracker.track("p", "topic-x", "k", {})
            tracker.untrack("o")
            assert tracker.local_presences() == 1
            for i in range(3):
                tracker.track("q", "room", i, {})
            with pytest.raises(TooManyPresences):
                tracker.track("q", "room", 99, {})
            assert len(tracker.list("room")) == 3

    run(body)


def test_presences_of_other_nodes_do_not_count() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            pa = await stack.enter_async_context(PubSub("a", gossip_interval=0.1))
            pb = await stack.enter_async_context(
                PubSub("b", peers=[pa.endpoint], gossip_interval=0.1)
            )
            ta = await stack.enter_async_context(Tracker(pa, max_presences=2, **FAST))
            tb = await stack.enter_async_context(Tracker(pb, **FAST))
            for i in range(5):
                tb.track("o", "room", f"b{i}", {})
            deadline = asyncio.get_running_loop().time() + 5
            while len(ta.list("room")) < 5:
                assert asyncio.get_running_loop().time() < deadline, "replication"
                await asyncio.sleep(0.01)
            assert ta.local_presences() == 0
            ta.track("o", "room", "a0", {})
            ta.track("o", "room", "a1", {})
            with pytest.raises(TooManyPresences):
                ta.track("o", "room", "a2", {})

    run(body)


def test_a_node_answers_limit_exceeded_when_its_tracker_is_full() -> None:
    async def body() -> None:
        node = Node("full", tracker_options={**FAST, "max_presences": 3})
        async with (
            node,
            Client(node.client_endpoint, client_id="c1", timeout=3.0) as c1,
            Client(node.client_endpoint, client_id="c2", timeout=3.0) as c2,
        ):
            await c1.track("room", "a", {})
            await c1.track("room", "b", {})
            await c2.track("room", "c", {})
            with pytest.raises(LimitExceeded) as caught:
                await c2.track("room", "d", {})
            assert caught.value.code == "limit_exceeded"
            assert caught.value.error["limit"] == 3
            assert "max_presences" in str(caught.value)
            await c1.untrack("room", "a")
            await c2.track("room", "d", {})
            assert {k for k, _ in await c2.list("room")} == {"b", "c", "d"}

    run(body)
