"""A Node.js backend speaks the client protocol from its documentation alone.

``tests/js/backend.mjs`` (the ``zeromq`` npm package, pinned in tests/js) was written from
``docs/reference/protocol.md`` only. Against a running ``tracker-zmq node`` it says hello
(reading the ops the node serves), subscribes and receives the diffs of its own track and
of a Python client's, tracks 50 presences pipelined (all sent before the first reply is
read) and 3 in one ``track_many`` (one of them already tracked: a per-item error),
broadcasts to a topic a PubSub subscriber of the cluster receives, and says bye (its
presences leave at once).

Node.js and the npm packages are required: without them this fails, never skips. Every
wait is bounded; the node, the PubSub and the script are stopped at the end, also on
failure.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aio import run, until

from pubsub_zmq import PubSub
from tests.support.js import JS, node_binary
from tests.support.proc import FAST_NODE_OPTIONS, CliNode, spawner
from tracker_zmq import Client

pytestmark = pytest.mark.cluster

TOPIC = "room:js"
WAIT = 20.0


class Backend:
    """``node backend.mjs``: one JSON command line in, JSON event lines out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.unread: list[dict[str, Any]] = []

    async def next(self, match: Any, what: str) -> dict[str, Any]:
        for i, event in enumerate(self.unread):
            if match(event):
                return self.unread.pop(i)
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"backend.mjs exited waiting for {what}: {err!r}")
                event = json.loads(line)
                assert event["ev"] != "bad", event
                if match(event):
                    return event
                self.unread.append(event)

    async def command(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        kind = {"hello": "hello", "request": "reply", "many": "replies"}[cmd]
        return await self.next(
            lambda e: e["ev"] == kind and e.get("op") == fields.get("op"), f"{cmd} answer"
        )

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.command("request", op=op, **fields)
        assert reply["ok"], reply
        return dict(reply["result"])

    async def diff_joining(self, key: str) -> dict[str, Any]:
        return await self.next(
            lambda e: e["ev"] == "diff" and key in [k for k, _ in e["joins"]], f"{key} joining"
        )


def keys(presences: list[tuple[Any, Any]]) -> set[Any]:
    return {key for key, _ in presences}


def test_a_nodejs_backend_speaks_the_documented_protocol(tmp_path: Path) -> None:
    node_js = node_binary(("zeromq",))
    with spawner(CliNode) as start:
        node = start("hub", tmp_path, *FAST_NODE_OPTIONS)

        async def body() -> None:
            probe = PubSub("probe", peers=[node.endpoint], gossip_interval=0.1, peer_timeout=1.0)
            room = probe.subscribe(TOPIC, link=False)
            proc = await asyncio.create_subprocess_exec(
                node_js,
                str(JS / "backend.mjs"),
                node.client_endpoint,
                "node-backend",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            backend = Backend(proc)
            try:
                async with probe, Client(node.client_endpoint, client_id="py") as py:
                    await py.track(TOPIC, "py-user", {"lang": "py"})
                    hello = (await backend.command("hello"))["result"]
                    assert hello["node"] == "hub"
                    assert {"track_many", "broadcast", "disconnect"} <= set(hello["ops"])
                    assert hello["session"].startswith("node-backend@hub:")

                    # its own track, then a Python client's, as diffs
                    assert await backend.request("subscribe", topic=TOPIC) == {}
                    tracked = await backend.request(
                        "track", topic=TOPIC, key="js-user", meta={"lang": "js"}
                    )
                    diff = await backend.diff_joining("js-user")
                    assert dict(diff["joins"])["js-user"]["phx_ref"] == tracked["ref"]
                    await py.track(TOPIC, "py-late", {})
                    await backend.diff_joining("py-late")

                    # pipelined: 50 tracks in flight at once, each reply to its request
                    many = await backend.command(
                        "many",
                        op="track",
                        requests=[
                            {"topic": TOPIC, "key": f"js-{i}", "meta": {}} for i in range(50)
                        ],
                    )
                    refs = [r["result"]["ref"] for r in many["replies"] if r["ok"]]
                    assert len(set(refs)) == 50

                    # bulk: one request, one result per presence
                    bulk = await backend.request(
                        "track_many",
                        presences=[
                            {"topic": TOPIC, "key": "b-1", "meta": {}},
                            {"topic": TOPIC, "key": "js-user", "meta": {}},
                            {"topic": TOPIC, "key": "b-2", "meta": {}, "owner": "tab-2"},
                        ],
                    )
                    assert [ref is not None for ref in bulk["refs"]] == [True, False, True]
                    assert [(e["index"], e["code"]) for e in bulk["errors"]] == [
                        (1, "already_tracked")
                    ]
                    want = {"py-user", "py-late", "js-user", "b-1", "b-2"} | {
                        f"js-{i}" for i in range(50)
                    }
                    assert keys(await py.list(TOPIC)) == want
                    listed = await backend.request("list", topic=TOPIC, session=False)
                    assert {key for key, _ in listed["presences"]} == want

                    # broadcast reaches a subscriber of the cluster (sent again until the
                    # probe's subscription has reached the node)
                    async def delivered() -> bool:
                        await backend.request(
                            "broadcast",
                            topic=TOPIC,
                            event="from_js",
                            payload={"hi": 1},
                            session=False,
                        )
                        try:
                            message = await asyncio.wait_for(room.get(), 0.5)
                        except TimeoutError:
                            return False
                        return bool(message == {"event": "from_js", "payload": {"hi": 1}})

                    await until(delivered, timeout=WAIT, message="the broadcast", interval=0)
                    refused = await backend.command(
                        "request", op="broadcast", topic="phx_bans", event="x", payload={}
                    )
                    assert refused["error"]["code"] == "bad_request"

                    # bye: the backend's presences leave at once
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"cmd": "exit"}\n')
                    await proc.stdin.drain()
                    async with asyncio.timeout(WAIT):
                        assert await proc.wait() == 0
                    await until(
                        lambda: _only(py, {"py-user", "py-late"}), timeout=WAIT, message="bye"
                    )
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                room.unsubscribe()

        run(body)


async def _only(py: Client, want: set[str]) -> bool:
    return keys(await py.list(TOPIC)) == want
