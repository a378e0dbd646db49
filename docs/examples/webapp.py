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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

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
        self.track(user, {"online_at": int(time.time())})
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
    name: str, bind: str, peers: list[str], static: Path, **presence_options: Any
) -> FastAPI:
    """The web app; its PubSub and Presence live as long as the app (its lifespan)."""
    pubsub = PubSub(name, bind=bind, peers=peers)
    presence = Presence(pubsub, **presence_options)
    endpoint = Endpoint(presence, socket=UserSocket, channels={"room:*": Room})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with pubsub, presence:  # the PubSub first in, last out
            print(f"{name} ready pubsub {pubsub.endpoint}", flush=True)
            yield
        print(f"{name} stopped", flush=True)  # the presence, then the pubsub, closed

    app = FastAPI(lifespan=lifespan)
    app.state.pubsub, app.state.presence = pubsub, presence
    app.mount("/socket", endpoint)  # phoenix.js connects to /socket/websocket
    app.mount("/assets", StaticFiles(directory=static))  # phoenix.mjs, from the npm package
    app.get("/", response_class=HTMLResponse)(page)
    app.get("/rooms/{room}")(who)
    return app


# --8<-- [end:app]


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
    parser.add_argument("--name", required=True, help="node name, unique in the cluster")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument("--bind", default="tcp://127.0.0.1:0", help="PubSub control endpoint")
    parser.add_argument("--peer", action="append", default=[], help="a seed (repeatable)")
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
        args.name, args.bind, args.peer, args.static, broadcast_period=args.broadcast_period
    )
    # bound and listening before the lifespan says "ready": a browser may connect at once
    sock = socket.create_server((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
        uvicorn.Server(config).run(sockets=[sock])  # SIGINT or SIGTERM: a clean stop


if __name__ == "__main__":
    main()
