"""A backend's disconnect with a ban, end to end: phoenix.js on two web servers, the ban
sent through a third process's client endpoint.

Two ``tests/channels_app.py`` servers (each a Starlette app mounting an ``Endpoint``, a
cluster node) and a ``tracker-zmq node`` in the same cluster; phoenix.js clients
(``tests/js/channel_client.js``) that reconnect every 200 ms. The backend calls
``Client.disconnect(socket_id, ban_seconds)`` on the node's client endpoint: the user's
sockets on both servers close, phoenix.js's reconnects are refused (HTTP 403) on both
while the ban lasts, and once it ends the user connects, rejoins and is listed again;
another user is never touched.

Node.js and the npm packages are required (they fail, never skip). Every wait is bounded
and every process is stopped at the end, also on failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.js import node_binary
from tests.support.proc import FAST_NODE_OPTIONS, CliNode, spawner, wait_until
from tests.test_channels_js import WAIT, Client, Server, online
from tracker_zmq import Client as TrackerClient

pytestmark = pytest.mark.cluster

BAN_SECONDS = 3.0


@pytest.fixture
def clients() -> Iterator[Callable[[str], Client]]:
    """Start phoenix.js clients: ``clients("alice")``; all stopped at the end."""
    node_binary()
    with spawner(Client) as start:
        yield start


def test_a_ban_through_the_client_endpoint_holds_on_both_servers_until_it_ends(
    clients: Callable[[str], Client], tmp_path: Path
) -> None:
    node_binary()
    with spawner(Server) as start_server, spawner(CliNode) as start_node:
        a = start_server("a")
        b = start_server("b", peers=(a.endpoint,))
        ctl = start_node("ctl", tmp_path, *FAST_NODE_OPTIONS, peers=(a.endpoint,))

        async def peers() -> list[str]:
            async with TrackerClient(ctl.client_endpoint, timeout=5.0) as backend:
                return list((await backend.status())["peers"])

        wait_until(lambda: {"a", "b"} <= set(asyncio.run(peers())), timeout=WAIT, what="meshed")

        pia_a = online(clients("pia-a"), a.url, "pia")
        pia_b = online(clients("pia-b"), b.url, "pia")
        quin = online(clients("quin"), b.url, "quin")
        for client in (pia_a, pia_b, quin):
            assert client.join("room:ban")["status"] == "ok"
        quin.present("room:ban", {"pia", "quin"})

        since = {c.name: c.mark() for c in (pia_a, pia_b, quin)}

        async def ban() -> None:
            async with TrackerClient(ctl.client_endpoint, timeout=5.0) as backend:
                assert "disconnect" in (backend.ops or ())
                await backend.disconnect("user_socket:pia", ban_seconds=BAN_SECONDS)

        asyncio.run(ban())
        for client in (pia_a, pia_b):
            client.wait(lambda e: e["ev"] == "close", "close by the backend", since[client.name])
        quin.present("room:ban", {"quin"}, since["quin"])
        # phoenix.js retries every 200 ms: each server refuses it while the ban lasts
        for server in (a, b):
            wait_until(
                lambda server=server: server.call("stats")["refused_banned"] >= 2,
                timeout=WAIT,
                what=f"{server.name} refuses the banned socket id",
            )
            assert server.call("stats")["bans_heard"] == 1
        # then the ban ends: both of pia's sockets come back, rejoin and are listed
        for client in (pia_a, pia_b):
            client.wait(lambda e: e["ev"] == "open", "reopen after the ban", since[client.name])
            client.wait(
                lambda e: e["ev"] == "join" and e["status"] == "ok", "rejoin", since[client.name]
            )
        quin.present("room:ban", {"pia", "quin"}, since["quin"])
        for server in (a, b):
            wait_until(
                lambda server=server: (
                    len(server.presences("room:ban").get("pia", {}).get("metas", [])) == 2
                ),
                timeout=WAIT,
                what=f"both of pia's sockets listed on {server.name}",
            )
            assert server.call("stats")["banned"] == 0
        assert quin.count("close") == 0
