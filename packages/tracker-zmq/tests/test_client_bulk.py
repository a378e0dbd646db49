"""The client endpoint's bulk, pipelined and backend ops, through a real Client and Node.

One process, 127.0.0.1: a :class:`~tracker_zmq.Node` and :class:`~tracker_zmq.Client`
over real ZeroMQ sockets. ``track_many``/``untrack_many`` (per-item results, batches
split to the node's ``max_batch``), many requests in flight on one socket with their
replies matched by id, a resync that re-tracks in bulk, and ``broadcast``/``disconnect``
arriving on the PubSub where the websockets' channels read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import orjson
import pytest
from aio import run, until

from tracker_zmq import AlreadyTracked, Client, LimitExceeded, Node, RequestError
from tracker_zmq.channels import BANS_TOPIC
from tracker_zmq.cli import main
from tracker_zmq.protocol import OPS
from tracker_zmq.sessions import DEFAULT_MAX_PRESENCES, ClientLimits

FAST: dict[str, Any] = {"broadcast_period": 0.05, "max_silent_periods": 2, "down_period": 0.3}


def keys(presences: list[tuple[Any, Any]]) -> set[Any]:
    return {key for key, _ in presences}


def test_track_many_in_batches_with_a_result_per_presence() -> None:
    async def body() -> None:
        node = Node("bulk", tracker_options=FAST, limits=ClientLimits(max_batch=7))
        async with node, Client(node.client_endpoint, client_id="web", timeout=5.0) as cl:
            assert cl.ops == OPS
            await cl.track("room", "k3", {})
            specs = [("room", f"k{i}", {"i": i}) for i in range(20)]
            specs.append(("room", "k5", {}, "ws-9"))  # a sub-owner: a presence of its own
            results = await cl.track_many(specs)
            assert len(results) == 21
            assert isinstance(results[3], AlreadyTracked)
            refs = [r for r in results if isinstance(r, str)]
            assert len(refs) == 20
            # the node's max_batch (7) was learned from its refusal and the batch split
            assert cl.max_batch == 7
            listed = await cl.list("room")
            assert keys(listed) == {f"k{i}" for i in range(20)}
            assert set(refs) <= {meta["phx_ref"] for _, meta in listed}
            assert len(cl.presences()) == 21
            gone = await cl.untrack_many([("room", f"k{i}") for i in range(10)] + [("x", 1)])
            assert gone == 10
            assert await cl.untrack_many([("room", "k5", "ws-9")]) == 1
            assert keys(await cl.list("room")) == {f"k{i}" for i in range(10, 20)}
            assert len(cl.presences()) == 10
            with pytest.raises(TypeError, match="topic, key, meta"):
                await cl.track_many([("room", "k")])  # type: ignore[list-item]

    run(body)


def test_a_batch_over_the_session_limit_is_refused_whole() -> None:
    async def body() -> None:
        assert ClientLimits().max_presences == DEFAULT_MAX_PRESENCES == 100_000
        node = Node("small", tracker_options=FAST, limits=ClientLimits(max_presences=5))
        async with node, Client(node.client_endpoint, timeout=5.0) as cl:
            await cl.track_many([("t", i, {}) for i in range(3)])
            with pytest.raises(LimitExceeded) as refused:
                await cl.track_many([("t", i, {}) for i in range(3, 6)])
            assert refused.value.error["limit"] == 5
            assert keys(await cl.list("t")) == {0, 1, 2}

    run(body)


def test_concurrent_requests_pipeline_over_one_socket() -> None:
    async def body() -> None:
        node = Node("pipe", tracker_options=FAST)
        async with node, Client(node.client_endpoint, timeout=20.0, max_in_flight=200) as cl:
            count = 2000
            refs = await asyncio.gather(*(cl.track("p", i, {"i": i}) for i in range(count)))
            assert len(set(refs)) == count
            # each reply went to its own request: the ref is that presence's
            by_key = {key: meta["phx_ref"] for key, meta in await cl.list("p")}
            assert [by_key[i] for i in range(count)] == refs
            stats = node.stats()
            assert stats["reply_dropped"] == 0
            assert stats["presences"] == count

    run(body)


def test_a_resync_retracks_in_bulk() -> None:
    async def body() -> None:
        node = Node("resync", tracker_options=FAST)
        async with node, Client(node.client_endpoint, timeout=5.0) as cl:
            await cl.track_many([("r", i, {}) for i in range(2500)])
            requests = node.stats()["requests"]
            node.sessions.clear()  # as after a restart: the session is unknown
            node.tracker.untrack(cl.session)  # type: ignore[arg-type]
            await until(lambda: node.tracker.list("r") == [], message="untracked")
            await cl.track("r", "new", {})  # unknown_session: hello, re-track, retry
            assert cl.resyncs == 1
            assert len(node.tracker.list("r")) == 2501
            # hello, 3 bulk batches, the failed and the retried track (and heartbeats)
            assert node.stats()["requests"] - requests < 20

    run(body)


def test_broadcast_and_disconnect_reach_the_pubsub_of_every_node() -> None:
    async def body() -> None:
        node = Node("ctl", tracker_options=FAST)
        async with node, Client(node.client_endpoint, timeout=5.0) as cl:
            room = node.pubsub.subscribe("room:1", link=False)
            bans = node.pubsub.subscribe(BANS_TOPIC, link=False)
            user = node.pubsub.subscribe("user_socket:7", link=False)
            await cl.broadcast("room:1", "new_msg", {"body": "hi"})
            assert await asyncio.wait_for(room.get(), 5) == {
                "event": "new_msg",
                "payload": {"body": "hi"},
            }
            await cl.disconnect("user_socket:7", ban_seconds=30)
            assert await asyncio.wait_for(bans.get(), 5) == {
                "socket_id": "user_socket:7",
                "ban_seconds": 30.0,
            }
            assert await asyncio.wait_for(user.get(), 5) == {"event": "disconnect", "payload": {}}
            await cl.disconnect("user_socket:7")  # no ban: the disconnect alone
            assert await asyncio.wait_for(user.get(), 5) == {"event": "disconnect", "payload": {}}
            assert bans.drain() == []
            for bad in (
                cl.broadcast(BANS_TOPIC, "x", {}),
                cl.broadcast("room:1", "", {}),
                cl.disconnect("user_socket:7", ban_seconds=-1),
            ):
                with pytest.raises(RequestError) as refused:
                    await bad
                assert refused.value.code == "bad_request"
            # a session-less client may broadcast (a backend's one-off command)
            bare = Client(node.client_endpoint, timeout=5.0)
            try:
                await bare.open()
                await bare.broadcast("room:1", "ping", {})
                assert (await asyncio.wait_for(room.get(), 5))["event"] == "ping"
            finally:
                await bare.close()
            for sub in (room, bans, user):
                sub.unsubscribe()

    run(body)


def test_the_broadcast_and_disconnect_commands() -> None:
    async def body() -> None:
        node = Node("cmd", tracker_options=FAST)
        async with node:
            room = node.pubsub.subscribe("room:cli", link=False)
            bans = node.pubsub.subscribe(BANS_TOPIC, link=False)
            ep = node.client_endpoint

            def command(*args: str) -> tuple[int, str, str]:
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    try:
                        code = main([*args, "--node", ep])
                    except SystemExit as exit_:
                        code = int(exit_.code or 0)
                return code, out.getvalue(), err.getvalue()

            done = await asyncio.to_thread(command, "broadcast", "room:cli", "hi", '{"n": 1}')
            assert done == (0, "broadcast hi to room:cli\n", "")
            assert await asyncio.wait_for(room.get(), 5) == {"event": "hi", "payload": {"n": 1}}
            done = await asyncio.to_thread(
                command, "disconnect", "user_socket:9", "--ban-seconds", "60", "--json"
            )
            assert done[0] == 0
            assert orjson.loads(done[1]) == {
                "ok": True,
                "socket_id": "user_socket:9",
                "ban_seconds": 60.0,
            }
            assert await asyncio.wait_for(bans.get(), 5) == {
                "socket_id": "user_socket:9",
                "ban_seconds": 60.0,
            }
            code, _, err = await asyncio.to_thread(command, "broadcast", "t", "e", "not json")
            assert code == 2
            assert "not JSON" in err
            code, _, err = await asyncio.to_thread(command, "broadcast", "phx_bans", "e", "{}")
            assert code == 1
            assert "reserved" in err
            room.unsubscribe()
            bans.unsubscribe()

    run(body)


def test_a_resync_splits_its_bulk_retrack_to_the_nodes_max_batch() -> None:
    async def body() -> None:
        node = Node("small-batch", tracker_options=FAST, limits=ClientLimits(max_batch=100))
        async with node, Client(node.client_endpoint, timeout=5.0) as cl:
            for i in range(250):  # one at a time: the client has not met the limit yet
                await cl.track("r", i, {})
            assert cl.max_batch == 1000
            node.sessions.clear()
            node.tracker.untrack(cl.session)  # type: ignore[arg-type]
            await cl.track("r", "new", {})  # unknown_session: hello, re-track, retry
            assert cl.max_batch == 100
            assert len(node.tracker.list("r")) == 251

    run(body)
