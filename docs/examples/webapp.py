"""A chat room with presence: a FastAPI app, Phoenix channels, phoenix.js in the page.

Each process is a web server and a cluster node: a PubSub and a Presence in the app's
lifespan, a ``tracker_zmq.channels.Endpoint`` mounted at ``/socket``, and a page that
uses the phoenix npm package's own ``Socket``, ``Channel`` and ``Presence``
(``phoenix.mjs``, served from the package's ``priv/static`` build). Run two processes
that share presence (``npm install phoenix`` gives ``node_modules/phoenix/priv/static``):

    export WEBAPP_SECRET=$(python -c "import secrets; print(secrets.token_hex(32))")
    python docs/examples/webapp.py --name web-1 --port 8001 --bind tcp://127.0.0.1:5550
    python docs/examples/webapp.py --name web-2 --port 8002 --bind tcp://127.0.0.1:5551 \
        --peer tcp://127.0.0.1:5550

then open http://127.0.0.1:8001/?room=lobby&user=alice and
http://127.0.0.1:8002/?room=lobby&user=bob: each page lists who is in the room, whichever
server they are connected to, and chat messages reach both. Ctrl-C stops a server.

Or one server with three workers, each a node named ``<hostname>-<pid>-<random>``, the
first of which binds WEBAPP_BIND (the host's seed) while the others bind any port and
find it there:

    export WEBAPP_BIND=tcp://127.0.0.1:5550
    uvicorn --app-dir docs/examples --factory webapp:from_env --port 8000 --workers 3
    gunicorn --chdir docs/examples 'webapp:from_env()' -k uvicorn_worker.UvicornWorker \
        -b 127.0.0.1:8000 -w 3
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import html
import mimetypes
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pubsub_zmq import PubSub
from tracker_zmq import Presence
from tracker_zmq.channels import Channel, Endpoint, JoinError, Reject, Socket

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# browsers load a module script only with a JavaScript type, which older systems'
# mime tables lack for .mjs
mimetypes.add_type("text/javascript", ".mjs")
SECRET = os.environ.get("WEBAPP_SECRET", "").encode()  # the same in every process


# --8<-- [start:token]
def sign(user: str) -> str:
    """A token that proves this app said who the user is: ``<user>.<hmac>``."""
    mac = hmac.new(SECRET, user.encode(), hashlib.sha256).digest()
    return f"{user}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def verify(token: str | None) -> str:
    """The user a token names; :class:`Reject` (HTTP 403) when it is missing or forged."""
    user, _, _ = (token or "").partition(".")
    if not (NAME.fullmatch(user) and hmac.compare_digest(sign(user), token or "")):
        raise Reject()
    return user


# --8<-- [end:token]


# --8<-- [start:channels]
class UserSocket(Socket):
    """One browser's websocket: who it is, from the token the page was given."""

    async def connect(self, params: dict[str, Any], info: dict[str, Any]) -> None:
        # phoenix.js's authToken travels as a websocket subprotocol, never in the URL
        self.assigns["user"] = verify(info["auth_token"])

    def id(self) -> str:
        return f"user_socket:{self.assigns['user']}"


class Room(Channel):
    """``room:<name>``: who is in the room (Presence), and its chat messages."""

    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        if not NAME.fullmatch(topic.removeprefix("room:")):
            raise JoinError({"reason": "bad room name"})
        user = self.socket.assigns["user"]
        # the presence lasts as long as this channel: a closed tab, a dropped network or a
        # server shutdown ends the channel's task, and the tracker untracks what it owned
        self.track(user, {"online_at": int(time.time()), "node": self.presence.pubsub.node_name})
        self.push("presence_state", self.presence.list(topic))
        return {"user": user}

    async def handle_in(self, event: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        body = payload.get("body")
        if event != "new_msg" or not isinstance(body, str) or not 0 < len(body) <= 500:
            return ("error", {"reason": "send new_msg with a body of 1 to 500 characters"})
        # every subscriber of the room on every node, this browser included
        self.broadcast("new_msg", {"user": self.socket.assigns["user"], "body": body})
        return ("ok", {})


# --8<-- [end:channels]


# --8<-- [start:app]
def create_app(
    static: Path,
    *,
    name: str | None = None,
    bind: str = "tcp://127.0.0.1:0",
    peers: Sequence[str] = (),
    peer_dns: Sequence[str] = (),
    **presence_options: Any,
) -> FastAPI:
    """The web app; its PubSub, Presence and endpoint live in its lifespan.

    They are made there, not here, so that each web worker (made by forking or
    spawning the process that imported the app) builds a node of its own.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # name None: "<hostname>-<pid>-<random>", and a graceful permdown on shutdown;
        # bind_fallback: the first worker gets bind's port, the others port 0
        pubsub = PubSub(name, bind=bind, peers=peers, peer_dns=peer_dns, bind_fallback=True)
        presence = Presence(pubsub, **presence_options)
        async with pubsub, presence:  # the PubSub first in, last out
            app.state.presence = presence
            app.state.endpoint = Endpoint(presence, socket=UserSocket, channels={"room:*": Room})
            print(f"{pubsub.node_name} ready pubsub {pubsub.endpoint}", flush=True)
            yield
        print(f"{pubsub.node_name} stopped", flush=True)  # presence, then pubsub, closed

    app = FastAPI(lifespan=lifespan)

    async def sockets(scope: Scope, receive: Receive, send: Send) -> None:
        await app.state.endpoint(scope, receive, send)  # the endpoint of this worker

    app.mount("/socket", sockets)  # phoenix.js connects to /socket/websocket
    app.mount("/assets", StaticFiles(directory=static))  # phoenix.mjs, from the npm package
    app.get("/", response_class=HTMLResponse)(page)
    app.get("/rooms/{room}")(who)
    return app


# --8<-- [end:app]


# --8<-- [start:workers]
def from_env() -> FastAPI:
    """The app for a server with workers: ``uvicorn --factory webapp:from_env``.

    One setting, WEBAPP_BIND (default ``tcp://127.0.0.1:5550``), is both the port every
    worker asks for and the seed: the worker that gets the port is the host's seed,
    the others bind port 0 and greet it there. Other hosts' seeds go in WEBAPP_PEERS,
    or a name that stands for them in WEBAPP_PEER_DNS (``HOST:PORT``), comma-separated.
    """
    if len(SECRET) < 32:
        raise RuntimeError("set WEBAPP_SECRET to the same secret of 32+ characters everywhere")
    bind = os.environ.get("WEBAPP_BIND", "tcp://127.0.0.1:5550")
    return create_app(
        Path(os.environ.get("WEBAPP_STATIC", "node_modules/phoenix/priv/static")),
        bind=bind,
        peers=[bind, *_listed("WEBAPP_PEERS")],
        peer_dns=_listed("WEBAPP_PEER_DNS"),
        broadcast_period=float(os.environ.get("WEBAPP_BROADCAST_PERIOD", "1.5")),
    )


def _listed(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


# --8<-- [end:workers]


async def who(request: Request, room: str) -> dict[str, Any]:
    """``GET /rooms/<room>``: who is in the room, cluster-wide (Phoenix's presence shape)."""
    if not NAME.fullmatch(room):
        raise HTTPException(404, "no such room")
    presences: dict[str, Any] = request.app.state.presence.list(f"room:{room}")
    return presences


# --8<-- [start:page]
PAGE = """<!doctype html><meta charset="utf-8"><title>room</title>
<body data-token="{token}" data-room="{room}">
<p>In the room: <b id="who"></b></p>
<form id="say"><input id="text" autocomplete="off" maxlength="500"></form>
<ul id="log"></ul>
<script type="module">
import {{Socket, Presence}} from "/assets/phoenix.mjs"
const {{token, room}} = document.body.dataset
const [who, log, say, text] = ["who", "log", "say", "text"].map((id) => document.getElementById(id))
const socket = new Socket("/socket", {{authToken: token}})
socket.connect()
const channel = socket.channel(`room:${{room}}`, {{}})
const presence = new Presence(channel)
presence.onSync(() => {{
  who.textContent = presence.list((user) => user).sort().join(", ")
}})
channel.on("new_msg", ({{user, body}}) => {{
  const li = document.createElement("li")
  li.textContent = `${{user}}: ${{body}}`
  log.append(li)
}})
channel.join().receive("error", (reason) => who.textContent = JSON.stringify(reason))
say.addEventListener("submit", (event) => {{
  event.preventDefault()
  channel.push("new_msg", {{body: text.value}})
  text.value = ""
}})
</script>"""


async def page(user: str, room: str = "lobby") -> str:
    """The page, with a token for ``user`` (a real app takes the user from its session)."""
    if not (NAME.fullmatch(user) and NAME.fullmatch(room)):
        raise HTTPException(400, "user and room: 1 to 32 letters, digits, _ or -")
    return PAGE.format(token=html.escape(sign(user)), room=html.escape(room))


# --8<-- [end:page]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="node name, unique (default: <hostname>-<pid>-<random>)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--bind", default="tcp://127.0.0.1:0", help="PubSub control endpoint")
    parser.add_argument("--peer", action="append", default=[], help="a seed (repeatable)")
    parser.add_argument("--peer-dns", action="append", default=[], help="HOST:PORT (repeatable)")
    parser.add_argument("--broadcast-period", type=float, default=1.5, help="seconds")
    parser.add_argument(
        "--static",
        type=Path,
        default=Path("node_modules/phoenix/priv/static"),
        help="the phoenix npm package's priv/static folder (phoenix.mjs)",
    )
    args = parser.parse_args()
    if len(SECRET) < 32:
        parser.error("set WEBAPP_SECRET to the same secret of 32+ characters in every process")
    if not (args.static / "phoenix.mjs").is_file():
        parser.error(f"no phoenix.mjs in {args.static}: `npm install phoenix`, or give --static")
    app = create_app(
        args.static,
        name=args.name,
        bind=args.bind,
        peers=args.peer,
        peer_dns=args.peer_dns,
        broadcast_period=args.broadcast_period,
    )
    # bound and listening before the lifespan says "ready": a browser may connect at once
    sock = socket.create_server((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
        uvicorn.Server(config).run(sockets=[sock])  # SIGINT or SIGTERM: a clean stop


if __name__ == "__main__":
    main()
