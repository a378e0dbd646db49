"""The web app guide's example: two real processes share presence over Phoenix channels.

Each process is ``docs/examples/webapp.py``: a FastAPI app served by uvicorn, with a
PubSub and a Presence in its lifespan and a ``tracker_zmq.channels.Endpoint`` at
``/socket``. The clients here are the ``websockets`` Python client speaking Phoenix's
protocol (V2 frames, ``authToken`` as a subprotocol), with the token each page carries;
the browser test (tests/test_browser.py) loads the same page in Chromium. alice connects
to the first process, bob to the second; each must see the other in the room, chat
messages must cross, a forged token must be refused, and alice's presence must leave
bob's view when her websocket closes. Every wait is bounded; both processes are stopped
(SIGINT, then SIGKILL) whatever happens, and must exit cleanly.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.support.proc import ROOT, NodeError, Process, free_port, spawner

APP = ROOT / "docs" / "examples" / "webapp.py"
STATIC = ROOT / "tests" / "js" / "node_modules" / "phoenix" / "priv" / "static"
SECRET = "a test secret, the same for every process of the cluster"
START_TIMEOUT = 30.0
SEE_TIMEOUT = 20.0

pytestmark = pytest.mark.cluster


class App(Process):
    """One webapp.py process on a free port; ready once it printed its ready line.

    Args:
        name: Its node name.
        log_dir: Where its stderr goes (a file).
        peers: Seed endpoints.
    """

    def __init__(self, name: str, log_dir: Path, peers: tuple[str, ...] = ()) -> None:
        if not (STATIC / "phoenix.mjs").is_file():
            pytest.fail(
                "the phoenix npm package is not installed in tests/js: run "
                "`npm ci --prefix tests/js --no-audit --no-fund` (make pytest does)"
            )
        self.port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        command = [sys.executable, str(APP), "--name", name, "--port", str(self.port)]
        command += ["--broadcast-period", "0.1", "--static", str(STATIC)]
        command += [arg for peer in peers for arg in ("--peer", peer)]
        env = {"WEBAPP_SECRET": SECRET, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error"}
        super().__init__(name, command, stderr=self._log, env=env)
        try:
            line = self.readline(START_TIMEOUT).split()
        except BaseException:
            self.stop()
            raise
        assert line[:3] == [name, "ready", "pubsub"], line
        self.pubsub = line[3]

    def tail(self) -> str:
        self._log.flush()
        return f"\n{self.log_path.read_text()}"

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C (uvicorn's clean stop); its exit code and what it printed since ready."""
        self.signal(signal.SIGINT)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeError(f"{self.name} ignored SIGINT{self.tail()}") from None
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read()

    def close(self) -> None:
        super().close()
        self._log.close()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start webapp.py processes; every one is stopped at the end, also on failure."""
    with spawner(lambda *args: App(*args[:1], tmp_path, *args[1:])) as start:
        yield start


def get(url: str) -> tuple[str, str]:
    """GET ``url``: its body and content type."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(), response.headers["content-type"]


def token_of(app: App, user: str, room: str) -> str:
    """The token the app's page carries for ``user`` (its ``data-token``)."""
    page, _ = get(f"{app.http}/?user={user}&room={room}")
    match = re.search(r'data-token="([^"]+)"', page)
    assert match is not None, page
    return html.unescape(match.group(1))


class Phoenix:
    """A websocket client that speaks Phoenix's V2 protocol (as phoenix.js does)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ref = 0
        self.present: dict[str, Any] = {}

    @classmethod
    def connect(cls, app: App, token: str) -> Any:
        # phoenix.js: ["phoenix", "base64url.bearer.phx." + btoa(token) without "="]
        encoded = base64.b64encode(token.encode()).decode().rstrip("=")
        return connect(
            app.http.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0",
            subprotocols=[Subprotocol("phoenix"), Subprotocol(f"base64url.bearer.phx.{encoded}")],
        )

    async def send(self, join_ref: str | None, topic: str, event: str, payload: Any) -> str:
        self.ref += 1
        await self.ws.send(json.dumps([join_ref, str(self.ref), topic, event, payload]))
        return str(self.ref)

    async def receive_until(self, check: Callable[[list[Any]], bool]) -> list[list[Any]]:
        """Read frames, folding presence into ``present``, until ``check(frame)``."""
        frames: list[list[Any]] = []
        async with asyncio.timeout(SEE_TIMEOUT):
            while True:
                frame = json.loads(await self.ws.recv())
                frames.append(frame)
                _, _, _, event, payload = frame
                if event == "presence_state":
                    self.present = payload
                elif event == "presence_diff":
                    fold(self.present, payload)
                if check(frame):
                    return frames

    async def see(self, users: set[str]) -> None:
        """Read until the room's presence lists exactly ``users``."""
        if set(self.present) != users:
            await self.receive_until(lambda _: set(self.present) == users)

    async def join(self, topic: str) -> dict[str, Any]:
        """Join ``topic``: the reply's payload (``{"status", "response"}``)."""
        ref = await self.send("1", topic, "phx_join", {})
        frames = await self.receive_until(lambda f: f[3] == "phx_reply" and f[1] == ref)
        reply: dict[str, Any] = frames[-1][4]
        return reply


def fold(present: dict[str, Any], diff: dict[str, Any]) -> None:
    """phoenix.js's syncDiff, by phx_ref: joins add metas, leaves remove them."""
    for key, presence in diff["joins"].items():
        present.setdefault(key, {"metas": []})["metas"] += presence["metas"]
    for key, presence in diff["leaves"].items():
        gone = {m["phx_ref"] for m in presence["metas"]}
        metas = [m for m in present.get(key, {"metas": []})["metas"] if m["phx_ref"] not in gone]
        if metas:
            present[key]["metas"] = metas
        else:
            present.pop(key, None)


def test_two_processes_share_presence_over_phoenix_channels(apps):
    web1 = apps("web-1")
    web2 = apps("web-2", (web1.pubsub,))

    # the page carries phoenix.js from the npm package's priv/static build
    script, kind = get(f"{web1.http}/assets/phoenix.mjs")
    assert "javascript" in kind
    assert script == (STATIC / "phoenix.mjs").read_text()
    page, _ = get(f"{web1.http}/?user=alice&room=lobby")
    assert 'from "/assets/phoenix.mjs"' in page

    async def scenario() -> None:
        # a forged token is refused before the websocket opens (HTTP 403)
        with pytest.raises(InvalidStatus) as refused:
            async with Phoenix.connect(web1, "alice.forged"):
                pass
        assert refused.value.response.status_code == 403

        async with Phoenix.connect(web2, token_of(web2, "bob", "lobby")) as ws_bob:
            assert ws_bob.subprotocol == "phoenix"
            bob = Phoenix(ws_bob)
            assert await bob.join("room:lobby") == {"status": "ok", "response": {"user": "bob"}}
            await bob.see({"bob"})
            async with Phoenix.connect(web1, token_of(web1, "alice", "lobby")) as ws_alice:
                alice = Phoenix(ws_alice)
                reply = await alice.join("room:lobby")
                assert reply == {"status": "ok", "response": {"user": "alice"}}
                # each sees the other, whichever server holds the presence
                await alice.see({"alice", "bob"})
                await bob.see({"alice", "bob"})
                # the room's HTTP view on the other server agrees
                room, _ = await asyncio.to_thread(get, web2.http + "/rooms/lobby")
                assert set(json.loads(room)) == {"alice", "bob"}
                # a heartbeat is answered
                ref = await alice.send(None, "phoenix", "heartbeat", {})
                frames = await alice.receive_until(lambda f: f[1] == ref)
                assert frames[-1][2:] == ["phoenix", "phx_reply", {"status": "ok", "response": {}}]
                # a chat message crosses from one process to the other; the sender gets ok {}
                ref = await alice.send("1", "room:lobby", "new_msg", {"body": "hello bob"})
                frames = await alice.receive_until(lambda f: f[1] == ref)
                assert frames[-1][4] == {"status": "ok", "response": {}}
                frames = await bob.receive_until(lambda f: f[3] == "new_msg")
                assert frames[-1][2:] == [
                    "room:lobby",
                    "new_msg",
                    {"user": "alice", "body": "hello bob"},
                ]
                # a bad message is answered, not broadcast
                ref = await alice.send("1", "room:lobby", "new_msg", {"body": ""})
                frames = await alice.receive_until(lambda f: f[1] == ref)
                assert frames[-1][4] == {
                    "status": "error",
                    "response": {"reason": "send new_msg with a body of 1 to 500 characters"},
                }
            # alice closed her websocket: her presence leaves bob's view
            await bob.see({"bob"})

    asyncio.run(scenario())

    for app in (web1, web2):  # Ctrl-C: the lifespan closed the presence and the pubsub
        code, out = app.interrupt()
        assert code == 0, app.tail()
        assert f"{app.name} stopped" in out.splitlines(), out
