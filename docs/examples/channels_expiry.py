"""Sockets that end with their token, on a Node with a Presence (the Channels page).

Self-contained: a ``Node(..., presence=True)`` runs in this process (its cluster and
client endpoints on free ports of 127.0.0.1) and uvicorn serves an ``Endpoint`` over the
node's Presence. Two websocket clients (the ``websockets`` library speaking Phoenix's V2
frames, as phoenix.js does) connect with tokens valid 2 seconds and join
``room:lobby``; bob refreshes his token over the channel, alice does not. Alice's socket
is closed (1008) when her token expires and her presence leaves; bob's lives on until
his new token expires. A ``tracker_zmq.Client`` on the node's client endpoint (what a
backend in another process would use) lists the room from the same tracker.
"""

# ruff: noqa: I001 (each section shows its own imports)
import asyncio
import contextlib
import json
import secrets
import socket

import uvicorn
import websockets

# --8<-- [start:expiry]
import time

import jwt  # PyJWT (the tracker-zmq[web] extra has it)

from tracker_zmq.channels import Channel, Reject, Socket


class TokenSocket(Socket):
    async def connect(self, params, info):
        try:
            claims = jwt.decode(params.get("token", ""), SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:  # forged, expired (exp checked), malformed
            raise Reject(str(exc)) from None
        self.assigns["user_id"] = claims["sub"]
        self.expires_at = claims["exp"]  # the endpoint closes the socket (1008) then

    def id(self):
        return f"user_socket:{self.assigns['user_id']}"


class Room(Channel):
    async def join(self, topic, payload):
        self.track(self.socket.assigns["user_id"], {"online_at": int(time.time())})
        self.push("presence_state", self.presence.list(topic))

    async def handle_in(self, event, payload):
        if event == "refresh_token":  # a fresh token before the old one expires
            try:
                claims = jwt.decode(payload.get("token", ""), SECRET, algorithms=["HS256"])
            except jwt.PyJWTError:
                return ("error", {"reason": "invalid token"})
            if claims["sub"] != self.socket.assigns["user_id"]:
                return ("error", {"reason": "another user's token"})
            self.socket.expires_at = claims["exp"]  # the socket lives on until then
            return None
        return ("error", {"reason": f"unknown event {event}"})


# --8<-- [end:expiry]

SECRET = secrets.token_hex(32)


def token_for(user_id: str, seconds: float) -> str:
    return jwt.encode({"sub": user_id, "exp": time.time() + seconds}, SECRET, algorithm="HS256")


# --8<-- [start:node]
from tracker_zmq import Client, Node  # noqa: E402
from tracker_zmq.channels import Endpoint  # noqa: E402


async def main() -> None:
    # one tracker: the node's client sessions, its Presence and tracker-zmq list share it
    async with Node("web-1", presence=True) as node:
        endpoint = Endpoint(node.presence, socket=TokenSocket, channels={"room:*": Room})
        async with serving(endpoint) as url, Client(node.client_endpoint) as backend:
            await browsers(url, endpoint, backend)


# --8<-- [end:node]


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint):
    """uvicorn in this event loop, on a free port of 127.0.0.1; yields the socket URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(endpoint, ws="websockets-sansio", lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped"
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/websocket"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def push(ws, ref: str, topic: str, event: str, payload: dict) -> dict:
    """Send a message and return its reply's payload (other frames are skipped)."""
    await ws.send(json.dumps(["1", ref, topic, event, payload]))
    while True:
        _, got, _, kind, reply = json.loads(await ws.recv())
        if kind == "phx_reply" and got == ref:
            return reply


async def until_closed(ws) -> int:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:  # presence_state, presence_diffs ...
            pass
    return ws.close_code


async def browsers(url: str, endpoint: Endpoint, backend: Client) -> None:
    alice_left = asyncio.Event()

    def on_diff(diff) -> None:
        if any(key == "alice" for key, _ in diff.leaves):
            alice_left.set()

    await backend.subscribe("room:lobby", on_diff)
    alice_url = f"{url}?vsn=2.0.0&token={token_for('alice', 2)}"
    bob_url = f"{url}?vsn=2.0.0&token={token_for('bob', 2)}"
    async with (
        asyncio.timeout(20),
        websockets.connect(alice_url) as alice,
        websockets.connect(bob_url) as bob,
    ):
        for ws in (alice, bob):
            assert (await push(ws, "1", "room:lobby", "phx_join", {}))["status"] == "ok"
        fresh = {"token": token_for("bob", 3.5)}
        assert (await push(bob, "2", "room:lobby", "refresh_token", fresh))["status"] == "ok"
        listed = {key for key, _ in await backend.list("room:lobby")}
        assert listed == {"alice", "bob"}, listed
        assert await until_closed(alice) == 1008  # her token expired
        await alice_left.wait()  # her presence left with her socket
        assert {key for key, _ in await backend.list("room:lobby")} == {"bob"}
        print("alice's token expired: her socket closed (1008) and she left the room")
        assert await until_closed(bob) == 1008  # later: his refreshed token expired
        print("bob refreshed his token: his socket lived on until it expired")
    assert endpoint.stats()["expired"] == 2


asyncio.run(main())
