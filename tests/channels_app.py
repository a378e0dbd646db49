"""A Phoenix-channels app in its own process, for the phoenix.js tests (tests/test_channels_js.py).

Usage: ``PYTHONPATH=. python tests/channels_app.py --name a [--port P] [--bind EP]
[--peer EP ...] [--idle-timeout S] [tracker periods]``.

One process is one cluster node and one web server: a PubSub (pubsub-zmq) and a Presence
in the lifespan of a Starlette app that mounts a :class:`tracker_zmq.channels.Endpoint`
at ``/socket``, served by uvicorn on 127.0.0.1 (``--port 0``: a free one). Its ready line
is ``{"ready": name, "endpoint": <pubsub endpoint>, "http": "http://127.0.0.1:PORT"}``,
printed once uvicorn serves; then it answers JSON command lines on stdin
(:mod:`tests.support.node`): ``list`` (a topic's presences), ``stats`` (the endpoint's),
``disconnect`` (a ``socket_id``: every socket of that id, on every node), ``storm`` (a
burst of presence changes on a topic), ``stop``.

The app, as a user would write it:

* ``UserSocket``: the token is the connect param ``token`` or phoenix.js's ``authToken``;
  a token ``t:<user>`` is valid (anything else: :class:`Reject`, HTTP 403). Its id is
  ``user_socket:<user>``; ``assigns["via"]`` says where the token came from.
* ``Room`` on ``room:*``: tracks the user (meta: this node's name, the token's way),
  pushes ``presence_state`` and replies ``{"joined", "user", "node", "via"}``;
  ``room:forbidden`` raises :class:`JoinError`. Events: ``new_msg`` (broadcast to the
  room on every node, no reply value: ``ok {}``), ``others`` (``broadcast_from``: not
  to the sender), ``ping`` (replies ``{"pong": payload, "node"}``), ``status``
  (``Channel.update`` of the user's meta), ``crash`` (raises); others get an error reply.
* ``UserChannel`` on ``user:*``: a user joins only their own topic and is tracked there,
  once (the social graph's rule).
* ``Friends`` on ``friends:*``: follows the ``user:<id>`` topics of the join payload's
  ``follow`` list (its presence view is their union, on the channel's own topic).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from pubsub_zmq import PubSub
from tests.support.node import arguments, pubsub, serve_commands
from tracker_zmq import Presence
from tracker_zmq.channels import Channel, Endpoint, JoinError, Reject, Socket
from tracker_zmq.channels.server import DrainingServer

NODE = {"name": ""}  # this process's node name, set by main (replies and metas carry it)
TOKEN = re.compile(r"t:([a-z0-9_-]{1,32})")


def verify(token: Any) -> str:
    """The user of a test token ``t:<user>``; :class:`Reject` for anything else."""
    match = TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise Reject()
    return match.group(1)


class UserSocket(Socket):
    async def connect(self, params: dict[str, Any], info: dict[str, Any]) -> None:
        if "token" in params:
            self.assigns["user_id"], self.assigns["via"] = verify(params["token"]), "param"
        else:
            self.assigns["user_id"] = verify(info.get("auth_token"))
            self.assigns["via"] = "auth_token"

    def id(self) -> str:
        return f"user_socket:{self.assigns['user_id']}"


class Room(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        if topic == "room:forbidden":
            raise JoinError({"reason": "forbidden"})
        user, via = self.socket.assigns["user_id"], self.socket.assigns["via"]
        self.track(user, {"node": NODE["name"], "via": via, "online_at": int(time.time())})
        self.push("presence_state", self.presence.list(topic))
        return {"joined": topic, "user": user, "node": NODE["name"], "via": via}

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        user = self.socket.assigns["user_id"]
        if event == "new_msg":
            self.broadcast(
                "new_msg", {"user": user, "body": payload.get("body"), "node": NODE["name"]}
            )
            return None
        if event == "others":
            self.broadcast_from("others", {"user": user, "body": payload.get("body")})
            return None
        if event == "ping":
            return {"pong": payload, "node": NODE["name"]}
        if event == "status":  # Presence.update: the meta changes, phx_ref_prev appears
            ref = self.update(user, lambda meta: {**meta, "status": payload.get("status")})
            return {"phx_ref": ref}
        if event == "crash":
            raise RuntimeError("the test asked this channel to crash")
        return ("error", {"reason": f"unknown event {event}"})


class UserChannel(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        user = self.socket.assigns["user_id"]
        if topic != f"user:{user}":
            raise JoinError({"reason": "not your topic"})
        self.track(user, {"node": NODE["name"]})
        return {"joined": topic}


class Friends(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        follow = payload.get("follow")
        if not isinstance(follow, list) or not all(
            isinstance(t, str) and t.startswith("user:") for t in follow
        ):
            raise JoinError({"reason": "follow takes a list of user:<id> topics"})
        self.follow(follow)
        return {"following": sorted(follow)}


def create_app(ps: PubSub, presence: Presence, **options: Any) -> Starlette:
    """The Starlette app: the endpoint at /socket, the node in the lifespan."""
    endpoint = Endpoint(
        presence,
        socket=UserSocket,
        channels={"room:*": Room, "user:*": UserChannel, "friends:*": Friends},
        **options,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with ps, presence:  # the PubSub first in, last out
            yield

    app = Starlette(routes=[Mount("/socket", app=endpoint)], lifespan=lifespan)
    app.state.endpoint = endpoint
    return app


def disconnect(ps: PubSub, socket_id: str) -> dict[str, bool]:
    """What a backend does to log a user out everywhere, from any node (Phoenix's
    ``Endpoint.broadcast(socket_id, "disconnect", %{})``)."""
    ps.broadcast(socket_id, {"event": "disconnect", "payload": {}})
    return {"ok": True}


def storm(presence: Presence, topic: str, prefix: str, n: int) -> dict[str, int]:
    """A burst of presence changes on ``topic``, all at once (no await in between):
    ``n`` keys join, every second one updates, every third one leaves."""
    keys = [f"{prefix}{i}" for i in range(n)]
    for i, key in enumerate(keys):
        presence.track("storm", topic, key, {"n": i})
    for key in keys[::2]:
        presence.update("storm", topic, key, lambda meta: {**meta, "updated": True})
    for key in keys[::3]:
        presence.untrack("storm", topic, key)
    return {"changes": n + len(keys[::2]) + len(keys[::3])}


async def serve(args: argparse.Namespace) -> None:
    NODE["name"] = args.name
    ps = pubsub(args, PubSub)
    periods = {
        name: getattr(args, name)
        for name in ("broadcast_period", "max_silent_periods", "down_period", "permdown_period")
        if getattr(args, name) is not None
    }
    presence = Presence(ps, **periods)
    app = create_app(
        ps,
        presence,
        idle_timeout=args.idle_timeout,
        max_frame_bytes=args.max_frame_bytes,
        max_channels=args.max_channels,
        coalesce_diffs=args.coalesce_diffs,
        drain_batch_size=args.drain_batch_size,
        drain_interval=args.drain_interval,
    )
    sock = socket.create_server(("127.0.0.1", args.port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    server = DrainingServer(config, [app.state.endpoint])
    # SIGTERM and SIGINT drain the sockets in batches, then stop uvicorn: the loop below
    # ends with it
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # it failed to start: say why
            raise SystemExit(f"{args.name}: uvicorn stopped before it served")
        await asyncio.sleep(0.01)
    commands = asyncio.create_task(
        serve_commands(
            {
                "ready": args.name,
                "endpoint": ps.endpoint,
                "http": f"http://127.0.0.1:{sock.getsockname()[1]}",
            },
            {
                "list": lambda c: presence.list(c["topic"]),
                "stats": lambda c: app.state.endpoint.stats(),
                "disconnect": lambda c: disconnect(ps, c["socket_id"]),
                "storm": lambda c: storm(presence, c["topic"], c["prefix"], c["n"]),
            },
        )
    )
    await asyncio.wait([serving, commands], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True  # "stop" or end of input: uvicorn closes, then the lifespan
    await serving
    commands.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await commands
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: a free one)"
    )
    parser.add_argument("--idle-timeout", type=float, default=2.0, help="seconds")
    parser.add_argument("--max-frame-bytes", type=int, default=1 << 20, help="client frames")
    parser.add_argument("--max-channels", type=int, default=100, help="per socket")
    parser.add_argument("--coalesce-diffs", type=float, default=0.0, help="seconds (0: off)")
    parser.add_argument("--drain-batch-size", type=int, default=10_000, help="on SIGTERM")
    parser.add_argument("--drain-interval", type=float, default=2.0, help="seconds")
    args = arguments(tracker=True, parser=parser, broadcast_period=0.05, down_period=1.0)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
