"""A chat room with presence: Starlette websockets on a PubSub and a Tracker.

Run two processes that share presence (each one a web server and a cluster node):

    python docs/examples/webapp.py --name web-1 --port 8001 --bind tcp://127.0.0.1:5550
    python docs/examples/webapp.py --name web-2 --port 8002 --bind tcp://127.0.0.1:5551 \
        --peer tcp://127.0.0.1:5550

then open http://127.0.0.1:8001/?room=lobby&user=alice and
http://127.0.0.1:8002/?room=lobby&user=bob: each page lists who is in the room, whichever
server they are connected to, and chat messages reach both. Ctrl-C stops a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from pubsub_zmq import Overflow, PubSub, Subscription
from tracker_zmq import Tracker


# --8<-- [start:presence]
def group(entries: list[tuple[Any, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``[(key, meta)]`` as Phoenix's presence payload: ``{key: {"metas": [meta]}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, meta in entries:
        out.setdefault(str(key), {"metas": []})["metas"].append(meta)
    return out


def presence_diffs(pubsub: PubSub) -> Callable[[dict[str, Any]], None]:
    """A tracker handler that tells this node's websockets what changed in their room."""

    def handle_diff(diff: dict[str, Any]) -> None:  # {topic: (joins, leaves)}, in order, per shard
        for topic, (joins, leaves) in diff.items():
            # Every node computes its own diffs from its own replica, so each one
            # publishes them to its own subscribers only, as Phoenix.Presence does.
            pubsub.local_broadcast(
                topic,
                {"event": "presence_diff", "joins": group(joins), "leaves": group(leaves)},
            )

    return handle_diff


# --8<-- [end:presence]


# --8<-- [start:app]
def create_app(name: str, bind: str, peers: list[str], **tracker_options: Any) -> Starlette:
    """The web app; its PubSub and Tracker live as long as the app (its lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with PubSub(name, bind=bind, peers=peers) as pubsub:  # first in, last out
            handler = presence_diffs(pubsub)
            async with Tracker(pubsub, handler=handler, **tracker_options) as tracker:
                app.state.pubsub, app.state.tracker = pubsub, tracker
                print(f"{name} pubsub {pubsub.endpoint}", flush=True)
                yield
        print(f"{name} stopped", flush=True)  # tracker, then pubsub, closed

    return Starlette(
        routes=[
            Route("/", page),
            Route("/rooms/{room}", who),
            WebSocketRoute("/rooms/{room}/ws", room),
        ],
        lifespan=lifespan,
    )


# --8<-- [end:app]


# --8<-- [start:websocket]
async def room(websocket: WebSocket) -> None:
    """One browser in one room: its presence lasts as long as its websocket."""
    pubsub: PubSub = websocket.app.state.pubsub
    tracker: Tracker = websocket.app.state.tracker
    topic = f"room:{websocket.path_params['room']}"
    user = websocket.query_params.get("user") or "anonymous"
    await websocket.accept()
    # Subscribe before tracking and listing, so that no diff falls in between.
    with pubsub.subscribe(topic) as sub:
        meta = {"online_at": int(time.time())}
        # The owner is this connection's task: its presence leaves when the task ends,
        # however it ends (a closed tab, a network error, a server shutdown).
        async with tracker.tracking(asyncio.current_task(), topic, user, meta):
            state = {"event": "presence_state", "presences": group(tracker.list(topic))}
            await websocket.send_json(state)
            forward = asyncio.create_task(forward_to(websocket, sub, tracker, topic))
            try:
                async for data in websocket.iter_json():  # until the browser leaves
                    message = {"event": "message", "from": user, "body": str(data.get("body"))}
                    pubsub.broadcast(topic, message)  # every node's subscribers
            finally:
                forward.cancel()
                await asyncio.gather(forward, return_exceptions=True)


# --8<-- [start:overflow]
async def forward_to(websocket: WebSocket, sub: Subscription, tracker: Tracker, topic: str) -> None:
    """Send what the room's subscription receives to the browser."""
    async for message in sub:
        if isinstance(message, Overflow):  # this browser fell behind: messages were
            message = {"event": "presence_state", "presences": group(tracker.list(topic))}
        await websocket.send_json(message)


# --8<-- [end:overflow]
# --8<-- [end:websocket]


async def who(request: Request) -> JSONResponse:
    """``GET /rooms/<room>``: who is in the room, cluster-wide."""
    tracker: Tracker = request.app.state.tracker
    return JSONResponse(group(tracker.list(f"room:{request.path_params['room']}")))


PAGE = """<!doctype html><meta charset="utf-8"><title>room</title>
<p>In the room: <b id="who"></b></p><form id="f"><input id="m" autocomplete="off"></form>
<ul id="log"></ul><script>
const q = new URLSearchParams(location.search), room = q.get("room") || "lobby";
const ws = new WebSocket(`ws://${location.host}/rooms/${room}/ws?user=${q.get("user")}`);
let present = {};
const show = () => who.textContent = Object.keys(present).join(", ");
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.event === "presence_state") present = m.presences;
  if (m.event === "presence_diff") {
    for (const [k, p] of Object.entries(m.joins)) present[k] = p;
    for (const k of Object.keys(m.leaves)) delete present[k];
  }
  if (m.event === "message") log.innerHTML += `<li>${m.from}: ${m.body}</li>`;
  show();
};
f.onsubmit = (e) => { e.preventDefault(); ws.send(JSON.stringify({body: m.value})); m.value = ""; };
</script>"""


async def page(request: Request) -> HTMLResponse:
    """A minimal browser client (it keeps one meta per key: enough for a demo)."""
    return HTMLResponse(PAGE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="node name, unique in the cluster")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (0: any free one)")
    parser.add_argument("--bind", default="tcp://127.0.0.1:0", help="PubSub control endpoint")
    parser.add_argument("--peer", action="append", default=[], help="a seed (repeatable)")
    parser.add_argument("--broadcast-period", type=float, default=1.5, help="seconds")
    args = parser.parse_args()
    app = create_app(args.name, args.bind, args.peer, broadcast_period=args.broadcast_period)
    sock = socket.create_server((args.host, args.port))  # port 0 works: we print it
    print(f"{args.name} http http://{args.host}:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once stopped
        uvicorn.Server(config).run(sockets=[sock])  # SIGINT or SIGTERM: a clean stop


if __name__ == "__main__":
    main()
