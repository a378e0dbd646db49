"""The web app guide's example: two real processes share presence over their websockets.

Each process is ``docs/examples/webapp.py``: a Starlette app served by uvicorn, with a
PubSub and a Tracker in its lifespan. alice connects to the first, bob to the second;
each must see the other in the room, chat messages must cross, and alice's presence must
leave bob's view when her websocket closes. Every wait is bounded; both processes are
stopped (SIGINT, then SIGKILL) whatever happens, and must exit cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "docs" / "examples" / "webapp.py"
START_TIMEOUT = 30.0
SEE_TIMEOUT = 20.0

pytestmark = pytest.mark.cluster


class App:
    """One webapp.py process; its stdout lines are read by a thread into a queue."""

    def __init__(self, name: str, peers: list[str]) -> None:
        args = [sys.executable, str(APP), "--name", name, "--port", "0"]
        args += ["--broadcast-period", "0.1"]
        for peer in peers:
            args += ["--peer", peer]
        self.name = name
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: Queue[str] = Queue()
        self.stderr: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put)),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append)),
        ]
        for thread in self.threads:
            thread.daemon = True
            thread.start()
        self.http = ""
        self.pubsub = ""

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def wait_ready(self) -> None:
        """Read stdout until both the HTTP address and the PubSub endpoint are printed."""
        until = time.monotonic() + START_TIMEOUT
        while not (self.http and self.pubsub):
            left = until - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"{self.name} did not start: {self.stderr[-20:]}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except Empty:
                continue
            name, kind, address = line.split(" ", 2)
            assert name == self.name
            if kind == "http":
                self.http = address
            elif kind == "pubsub":
                self.pubsub = address

    def stop(self) -> int:
        """SIGINT (uvicorn's clean stop), then SIGKILL if it lingers; the exit code.

        Waits for the output threads too, so every line printed is in the queue.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(timeout=15)
        for thread in self.threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def ws_url(app: App, room: str, user: str) -> str:
    return app.http.replace("http://", "ws://") + f"/rooms/{room}/ws?user={user}"


async def receive_until(ws: ClientConnection, present: dict[str, Any], check: Any) -> list[Any]:
    """Read events, folding presence into ``present``, until ``check(present, events)``."""
    events: list[Any] = []
    async with asyncio.timeout(SEE_TIMEOUT):
        while not check(present, events):
            event = json.loads(await ws.recv())
            events.append(event)
            if event["event"] == "presence_state":
                present.clear()
                present.update(event["presences"])
            elif event["event"] == "presence_diff":
                for key, presence in event["joins"].items():
                    present.setdefault(key, {"metas": []})["metas"] += presence["metas"]
                for key, presence in event["leaves"].items():
                    gone = {m["phx_ref"] for m in presence["metas"]}
                    held = present.get(key, {"metas": []})["metas"]
                    metas = [m for m in held if m["phx_ref"] not in gone]
                    if metas:
                        present[key]["metas"] = metas
                    else:
                        present.pop(key, None)
    return events


def test_two_processes_share_presence_over_websockets():
    with ExitStack() as stack:
        apps: list[App] = []

        def start(name: str, peers: list[str]) -> App:
            app = App(name, peers)
            apps.append(app)
            stack.callback(app.stop)
            app.wait_ready()
            return app

        web1 = start("web-1", [])
        web2 = start("web-2", [web1.pubsub])

        async def scenario() -> None:
            async with connect(ws_url(web2, "lobby", "bob")) as bob:
                seen_by_bob: dict[str, Any] = {}
                await receive_until(bob, seen_by_bob, lambda p, _: "bob" in p)
                async with connect(ws_url(web1, "lobby", "alice")) as alice:
                    seen_by_alice: dict[str, Any] = {}
                    # each sees the other, whichever server holds the presence
                    await receive_until(
                        alice, seen_by_alice, lambda p, _: {"alice", "bob"} <= set(p)
                    )
                    await receive_until(bob, seen_by_bob, lambda p, _: "alice" in p)
                    # the room's HTTP view on the other server agrees
                    room = await asyncio.to_thread(get_json, web2.http + "/rooms/lobby")
                    assert set(room) == {"alice", "bob"}
                    # a chat message crosses from one process to the other
                    await alice.send(json.dumps({"body": "hello bob"}))
                    events = await receive_until(
                        bob, seen_by_bob, lambda _, ev: any(e["event"] == "message" for e in ev)
                    )
                    message = next(e for e in events if e["event"] == "message")
                    assert message == {"event": "message", "from": "alice", "body": "hello bob"}
                # alice closed her websocket: her presence leaves bob's view
                await receive_until(bob, seen_by_bob, lambda p, _: "alice" not in p)
                assert set(seen_by_bob) == {"bob"}

        asyncio.run(scenario())

        codes = {app.name: app.stop() for app in apps}
        assert codes == {"web-1": 0, "web-2": 0}, [app.stderr[-20:] for app in apps]
        for app in apps:  # the lifespan closed the tracker and the pubsub
            assert f"{app.name} stopped" in drain(app.lines)


def drain(lines: Queue[str]) -> list[str]:
    out = []
    while True:
        try:
            out.append(lines.get_nowait())
        except Empty:
            return out
