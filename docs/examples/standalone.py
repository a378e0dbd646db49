"""Browsers on a standalone node: a signed token, a websocket, the HTTP API (node page).

Self-contained: one node runs in this process (``WebNode`` and ``WebServer``, what
``tracker-zmq node --websocket-bind 127.0.0.1:0 --token-secret-file FILE --api-key-file
FILE`` runs) on free ports of 127.0.0.1. A backend signs a token for alice; a websocket
client (the ``websockets`` library speaking Phoenix's V2 frames, as phoenix.js does)
connects with it, joins ``room:lobby`` and is present; the backend then lists the room,
broadcasts to it and disconnects alice through the HTTP API.
"""

# ruff: noqa: I001, E402 (the sign section shows its own imports, after the set-up)
import asyncio
import contextlib
import json
import os
import secrets
import tempfile
import urllib.request
from pathlib import Path

import websockets

# The node's secret file, as the quick start makes it (`openssl rand -hex 32 >
# token-secret && chmod 600 token-secret`), in a directory of this example's own.
WORKDIR = tempfile.TemporaryDirectory(prefix="standalone-example-")
STARTED_IN = os.getcwd()
os.chdir(WORKDIR.name)
Path("token-secret").write_text(secrets.token_hex(32) + "\n")
Path("token-secret").chmod(0o600)

# --8<-- [start:sign]
import time

import jwt  # PyJWT (pip install PyJWT; the tracker-zmq[web] extra has it)

with open("token-secret", encoding="utf-8") as file:  # the node's --token-secret-file
    SECRET = file.readline().strip()  # any of its lines verifies; sign with the first


def token_for(user_id: str, name: str) -> str:
    """What the backend hands the browser once the user logged in."""
    claims = {
        "sub": user_id,  # the presence key; the socket id is user_socket:<sub>
        "exp": int(time.time()) + 3600,  # required; the socket closes when it passes
        "meta": {"name": name},  # the presence meta (wins over the join's meta)
        "channels": ["room:*", f"user:{user_id}"],  # topics it may join
        "track": ["room:*"],  # where joining makes it present
        "publish": ["room:*"],  # where its pushes reach the others
        "follow": ["user:*"],  # topics it may follow ({"follow": [...]} on a join)
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


# --8<-- [end:sign]

API_KEY = secrets.token_hex(32)
API = ""  # http://127.0.0.1:PORT, set below


# --8<-- [start:api]
def api(method: str, path: str, body: dict | None = None) -> dict:
    """One request to the node's HTTP API, with the bearer key of --api-key-file."""
    request = urllib.request.Request(
        API + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def backend():
    print(api("GET", "/api/presence/room:lobby"))  # {"alice": {"metas": [...]}}
    api("POST", "/api/broadcast", {"topic": "room:lobby", "event": "notice", "payload": {}})
    api("POST", "/api/disconnect", {"socket_id": "user_socket:alice", "ban_seconds": 0})


# --8<-- [end:api]


async def demo():
    global API
    from tracker_zmq.standalone import TokenConfig, WebNode, WebOptions, WebServer

    from tracker_zmq.standalone import read_secret_file

    tokens = TokenConfig(secrets=read_secret_file("token-secret"))  # as the node reads it
    options = WebOptions("127.0.0.1", 0, tokens, api_keys=(API_KEY,))
    async with WebNode("a") as node, WebServer(node, options) as web, asyncio.timeout(20):
        API = web.url.replace("ws://", "http://").removesuffix("/socket")
        url = f"{web.url}/websocket?vsn=2.0.0&token={token_for('alice', 'Alice')}"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(["1", "1", "room:lobby", "phx_join", {}]))
            reply = json.loads(await ws.recv())
            assert reply[4] == {"status": "ok", "response": {}}, reply
            state = json.loads(await ws.recv())  # presence_state, after every ok join
            assert state[3] == "presence_state"
            assert state[4]["alice"]["metas"][0]["name"] == "Alice"
            await asyncio.to_thread(backend)
            events = []
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in ws:  # the notice, then the backend's disconnect
                    events.append(json.loads(frame)[3])
            assert "notice" in events, events
            assert ws.close_code == 1001  # closed by the backend
    print("alice joined with a signed token; the backend listed, broadcast, disconnected")


try:
    asyncio.run(demo())
finally:
    os.chdir(STARTED_IN)
    WORKDIR.cleanup()
