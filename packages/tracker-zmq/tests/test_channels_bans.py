"""Bans and reserved topics of tracker_zmq.channels: the BanTable (pure), then two
Endpoints behind real uvicorn servers on two meshed PubSubs, with real websocket clients.

A backend's ``disconnect(pubsub, socket_id, ban_seconds)`` closes that id's sockets on
both nodes and both refuse its connects (HTTP 403) until the ban ends; no client joins
the bans topic or a socket id's topic through any channel pattern.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from aio import run, until
from mesh import meshed, pubsubs
from test_channels import FAST, Room, UserSocket, client, close_code, serve
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tracker_zmq import ConfigError, Presence
from tracker_zmq.channels import BANS_TOPIC, Channel, Endpoint, Socket, broadcast, disconnect
from tracker_zmq.channels.bans import BanTable

# ------------------------------------------------------------------ the table (pure)


def test_a_ban_lasts_from_when_it_is_heard_and_is_never_cut_short() -> None:
    table = BanTable()
    assert table.receive({"socket_id": "u:1", "ban_seconds": 10}, now=100.0)
    assert table.banned("u:1", 109.9)
    assert not table.banned("u:2", 100.0)
    table.add("u:1", 2.0, now=101.0)  # shorter: the longer one stands
    assert table.remaining("u:1", 105.0) == pytest.approx(5.0)
    table.add("u:1", 20.0, now=105.0)  # longer: extended
    assert table.banned("u:1", 124.0)
    assert not table.banned("u:1", 125.0)
    assert len(table) == 0
    assert table.counters == {"heard": 3, "invalid": 0, "evicted": 0, "expired": 1}


def test_malformed_bans_are_counted_and_dropped() -> None:
    table = BanTable()
    for message in (
        None,
        "u:1",
        {"socket_id": "u:1"},
        {"socket_id": "", "ban_seconds": 5},
        {"socket_id": 7, "ban_seconds": 5},
        {"socket_id": "u:1", "ban_seconds": 0},
        {"socket_id": "u:1", "ban_seconds": float("inf")},
        {"socket_id": "u:1", "ban_seconds": "5"},
        {"event": "x", "payload": {}},
    ):
        assert not table.receive(message, 0.0)
    assert table.counters["invalid"] == 9
    assert len(table) == 0


def test_the_table_is_bounded_and_evicts_the_ban_that_ends_first() -> None:
    table = BanTable(max_entries=3)
    table.add("long", 100.0, now=0.0)
    table.add("short", 1.0, now=0.0)
    table.add("mid", 50.0, now=0.0)
    table.add("new", 60.0, now=0.0)
    assert len(table) == 3
    assert not table.banned("short", 0.5)
    assert all(table.banned(i, 0.5) for i in ("long", "mid", "new"))
    assert table.counters["evicted"] == 1
    for n in range(1000):  # renewals of one id leave the heap bounded
        table.add("long", 100.0 + n, now=0.0)
    assert len(table._heap) <= 2 * table.max_entries + 16
    assert table.remaining("long", 0.0) == pytest.approx(1099.0)
    with pytest.raises(ValueError, match="max_entries"):
        BanTable(0)


# ------------------------------------------------------------------ two endpoints


class Anything(Channel):
    """Joins any topic (a catch-all route): only the reserved topics stay out."""

    async def join(self, topic: str, payload: dict[str, Any]) -> None:
        return None

    async def handle_in(self, event: str, payload: dict[str, Any]) -> None:
        self.broadcast(event, payload)


class NamedSocket(Socket):
    """Socket ids of another form than ``user_socket:``: ``sock-<user>``."""

    async def connect(self, params: Any, info: Any) -> None:
        self.assigns["user"] = params["user"]

    def id(self) -> str:
        return f"sock-{self.assigns['user']}"


async def refused(url: str, user: str) -> int:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{url}?vsn=2.0.0&user={user}"):
            pass
    return caught.value.response.status_code


def test_a_ban_closes_and_refuses_a_socket_id_on_both_nodes_until_it_ends() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            nodes = await pubsubs(stack, 2)
            presences = [await stack.enter_async_context(Presence(p, **FAST)) for p in nodes]
            await meshed([p.tracker for p in presences])
            endpoints = [
                Endpoint(p, socket=UserSocket, channels={"room:*": Room}) for p in presences
            ]
            urls = [await stack.enter_async_context(serve(e)) for e in endpoints]
            await until(
                lambda: nodes[0].remote_subscribers(BANS_TOPIC) == 1,
                message="each endpoint subscribed to the bans",
            )
            daves = [await stack.enter_async_context(client(u, "dave")) for u in urls]
            erin = await stack.enter_async_context(client(urls[1], "erin"))
            for phx in (*daves, erin):
                assert (await phx.push("room:b", "phx_join", {"track": False}))["status"] == "ok"
            # the other node's dave subscribed to his id topic: its filter reached node 0
            await until(
                lambda: nodes[0].remote_subscribers("user_socket:dave") == 1,
                message="node 1's subscription to dave's socket id",
            )
            disconnect(nodes[0], "user_socket:dave", ban_seconds=1.5)
            for phx in daves:
                assert await close_code(phx) == 1001
            for url, endpoint in zip(urls, endpoints, strict=True):
                assert await refused(url, "dave") == 403
                stats = endpoint.stats()
                assert stats["refused_banned"] == 1
                assert stats["banned"] == 1
                assert stats["bans_heard"] == 1
            # another user is untouched and may still connect
            assert (await erin.push("phoenix", "heartbeat"))["status"] == "ok"
            async with client(urls[0], "frank") as frank:
                assert (await frank.push("phoenix", "heartbeat"))["status"] == "ok"

            async def back(url: str) -> bool:
                try:
                    async with client(url, "dave") as phx:
                        return (await phx.push("phoenix", "heartbeat"))["status"] == "ok"
                except InvalidStatus:
                    return False

            for url in urls:
                await until(lambda url=url: back(url), timeout=15, message="the ban ends")
            assert all(e.stats()["banned"] == 0 for e in endpoints)
            await endpoints[0].shutdown()  # unsubscribes from the bans
            await until(lambda: nodes[1].remote_subscribers(BANS_TOPIC) == 0, message="gone")

    run(body)


def test_no_channel_pattern_reaches_a_reserved_topic() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (pubsub,) = await pubsubs(stack, 1)
            endpoint = Endpoint(
                pubsub=pubsub,
                socket=NamedSocket,
                channels={"*": Anything},
                reserved_topics=("user_socket:*", "admin:*", "ops"),
            )
            url = await stack.enter_async_context(serve(endpoint))
            alice = await stack.enter_async_context(client(url, "alice"))
            await stack.enter_async_context(client(url, "bob"))
            await until(lambda: endpoint.stats()["sockets"] == 2, message="two sockets")
            for topic in (BANS_TOPIC, "user_socket:bob", "sock-bob", "admin:x", "ops"):
                reply = await alice.push(topic, "phx_join")
                assert reply == {"status": "error", "response": {"reason": "unauthorized"}}
                # so no push reaches it either
                reply = await alice.push(topic, "disconnect", {})
                assert reply == {"status": "error", "response": {"reason": "unmatched topic"}}
            assert endpoint.stats()["reserved"] == 5
            assert endpoint.stats()["disconnects"] == 0
            # other topics join through the catch-all, and sock-carol is no live id here
            for topic in ("room:1", "opsroom", "sock-carol"):
                assert (await alice.push(topic, "phx_join"))["status"] == "ok"

    run(body)


def test_bad_reserved_topics_and_max_bans_are_config_errors() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (pubsub,) = await pubsubs(stack, 1)
            for options in (
                {"reserved_topics": "user_socket:*"},
                {"reserved_topics": ("a*b",)},
                {"reserved_topics": ("",)},
                {"max_bans": 0},
            ):
                with pytest.raises(ConfigError):
                    Endpoint(pubsub=pubsub, **options)
            assert Endpoint(pubsub=pubsub).options.reserved_topics == ("user_socket:*",)

    run(body)


def test_a_backends_broadcast_never_reaches_reserved_topics_or_protocol_events() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (node,) = await pubsubs(stack, 1)
            got: list[Any] = []
            for topic in ("room:1", "user_socket:7", BANS_TOPIC, "phoenix"):
                node.subscribe(topic, callback=got.append)
            for topic in ("user_socket:7", BANS_TOPIC, "phoenix"):
                with pytest.raises(ValueError, match=r"reserved.*disconnect"):
                    broadcast(node, topic, "new_msg", {})
            with pytest.raises(ValueError, match="phx_"):
                broadcast(node, "room:1", "phx_close", {})
            broadcast(node, "room:1", "new_msg", {"n": 1})
            await until(lambda: got == [{"event": "new_msg", "payload": {"n": 1}}])

    run(body)
