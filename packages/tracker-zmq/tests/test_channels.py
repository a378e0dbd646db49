"""tracker_zmq.channels behind a real uvicorn server, driven by real websocket clients.

Each test serves an :class:`~tracker_zmq.channels.Endpoint` with ``uvicorn.Server`` in a
task on 127.0.0.1 (a port picked free at run time) and speaks Phoenix's protocol to it
with the ``websockets`` client, vsn 2.0.0 (JSON arrays) unless it says 1.0.0. Waits are on
conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from aio import run, until
from mesh import meshed, pubsubs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.proc import free_port
from tracker_zmq import Presence
from tracker_zmq.channels import Channel, Endpoint, JoinError, Reject, Socket

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


# ------------------------------------------------------------------ the app under test


class UserSocket(Socket):
    async def connect(self, params: Any, info: Any) -> None:
        user = params.get("user") or info["auth_token"]
        if not user or user == "mallory":
            raise Reject("no such user")
        self.assigns["user_id"] = user
        self.assigns["auth_token"] = info["auth_token"]

    def id(self) -> str:
        return f"user_socket:{self.assigns['user_id']}"


TERMINATED: list[tuple[str, str]] = []


class Room(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if payload.get("refuse"):
            raise JoinError({"reason": "refused"})
        if payload.get("crash"):
            raise RuntimeError("join crashed on purpose")
        self.push("before_reply", {"n": 1})  # goes out after the ok reply
        if payload.get("track", True):
            self.track(self.socket.assigns["user_id"], {"online_at": 1})
        self.push("presence_state", self.presence.list(topic))
        if payload.get("silent"):
            return None
        return {"joined": topic, "token": self.socket.assigns["auth_token"]}

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        if event == "new_msg":
            self.broadcast("new_msg", payload)
            return None  # ok {}
        if event == "shout":
            self.broadcast_from("shout", payload)
            return {"shouted": True}
        if event == "nope":
            return ("error", {"reason": "nope"})
        if event == "crash":
            raise RuntimeError("handle_in crashed on purpose")
        if event == "follow":
            self.follow(payload["topics"])
            return None
        if event == "unfollow":
            self.unfollow(payload["topics"])
            return None
        if event == "track":
            owner = asyncio.current_task()  # handle_in runs in the channel's Task
            assert owner is not None
            self.presence.track(owner, payload["topic"], payload["key"], {})
            return None
        return ("error", {"reason": "unknown"})

    async def terminate(self, reason: str) -> None:
        TERMINATED.append((self.topic, reason))


class Friends(Channel):
    """Joins with ``{"follow": [topics]}``: a view of those topics only."""

    async def join(self, topic: str, payload: dict[str, Any]) -> None:
        self.follow(payload.get("follow", []))

    async def handle_in(self, event: str, payload: dict[str, Any]) -> None:
        if event == "follow":
            self.follow(payload["topics"])
        elif event == "unfollow":
            self.unfollow(payload["topics"])


ROUTES: dict[str, type[Channel]] = {"room:*": Room, "friends:*": Friends}


# ------------------------------------------------------------------------- harness


@contextlib.asynccontextmanager
async def serve(
    endpoint: Any, path: str = "/websocket", lifespan: str = "off"
) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1; yields the socket's URL."""
    port = free_port()
    config = uvicorn.Config(
        endpoint,
        host="127.0.0.1",
        port=port,
        ws="websockets-sansio",
        lifespan=lifespan,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), timeout=10, message="uvicorn")
        assert server.started, "uvicorn did not start"
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def node(**options: Any) -> AsyncIterator[tuple[Endpoint, str]]:
    """One PubSub + Presence + Endpoint, served; yields the endpoint and its URL."""
    async with contextlib.AsyncExitStack() as stack:
        (pubsub,) = await pubsubs(stack, 1)
        presence = await stack.enter_async_context(Presence(pubsub, **FAST))
        endpoint = Endpoint(presence, socket=UserSocket, channels=ROUTES, **options)
        url = await stack.enter_async_context(serve(endpoint))
        yield endpoint, url


class Phx:
    """A minimal Phoenix client over a real websocket (vsn 2.0.0 or 1.0.0)."""

    def __init__(self, ws: ClientConnection, vsn: str = "2.0.0") -> None:
        self.ws = ws
        self.vsn = vsn
        self.refs = 0
        self.unread: list[dict[str, Any]] = []
        self.join_refs: dict[str, str] = {}

    async def send(self, topic: str, event: str, payload: dict[str, Any] | None = None) -> str:
        self.refs += 1
        ref = str(self.refs)
        if event == "phx_join":
            self.join_refs[topic] = ref
        join_ref = self.join_refs.get(topic)
        payload = payload or {}
        if self.vsn.startswith("2"):
            frame = json.dumps([join_ref, ref, topic, event, payload])
        else:
            fields = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            frame = json.dumps({**fields, "join_ref": join_ref})
        await self.ws.send(frame)
        return ref

    def _parse(self, data: str | bytes) -> dict[str, Any]:
        value = json.loads(data)
        if self.vsn.startswith("2"):
            join_ref, ref, topic, event, payload = value
            return {
                "join_ref": join_ref,
                "ref": ref,
                "topic": topic,
                "event": event,
                "payload": payload,
            }
        assert set(value) == {"topic", "event", "payload", "ref"}  # V1 writes these only
        return {**value, "join_ref": None}

    async def expect(
        self, match: Callable[[dict[str, Any]], bool], what: str, within: float = 10.0
    ) -> dict[str, Any]:
        for i, frame in enumerate(self.unread):
            if match(frame):
                return self.unread.pop(i)
        try:
            async with asyncio.timeout(within):
                while True:
                    frame = self._parse(await self.ws.recv())
                    if match(frame):
                        return frame
                    self.unread.append(frame)
        except TimeoutError:
            raise AssertionError(f"no {what} in {within} s; unread {self.unread}") from None

    async def reply(self, ref: str) -> dict[str, Any]:
        frame = await self.expect(
            lambda f: f["event"] == "phx_reply" and f["ref"] == ref, f"reply to {ref}"
        )
        return dict(frame["payload"])

    async def push(self, topic: str, event: str, payload: dict[str, Any] | None = None) -> Any:
        return await self.reply(await self.send(topic, event, payload))

    async def event(self, topic: str, event: str) -> dict[str, Any]:
        return await self.expect(
            lambda f: f["topic"] == topic and f["event"] == event, f"{event} on {topic}"
        )

    def events(self) -> list[tuple[str, str]]:
        return [(f["topic"], f["event"]) for f in self.unread]


@contextlib.asynccontextmanager
async def client(
    url: str, user: str | None = "alice", vsn: str = "2.0.0", **kwargs: Any
) -> AsyncIterator[Phx]:
    query = f"?vsn={vsn}" + (f"&user={user}" if user else "")
    async with connect(url + query, **kwargs) as ws:
        yield Phx(ws, vsn)


async def close_code(phx: Phx) -> int | None:
    """Read until the server closes the socket; its close code."""
    try:
        async with asyncio.timeout(10):
            while True:
                await phx.ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def ok(response: Any = None) -> dict[str, Any]:
    return {"status": "ok", "response": {} if response is None else response}


# ------------------------------------------------------------------------ the tests


def test_join_reply_pushes_after_it_and_presence() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), client(url) as phx:
            ref = await phx.send("room:1", "phx_join", {})
            reply = await phx.reply(ref)
            assert reply == ok({"joined": "room:1", "token": None})
            # what join pushed comes after the reply, in order, with the join_ref
            after = [phx._parse(await phx.ws.recv()) for _ in range(2)]
            assert [f["event"] for f in after] == ["before_reply", "presence_state"]
            assert after[0]["join_ref"] == ref
            assert after[0]["ref"] is None
            state = after[1]["payload"]
            assert list(state) == ["alice"]
            assert state["alice"]["metas"][0]["online_at"] == 1
            # presence_diff of its own track, fastlaned as a broadcast (no refs)
            diff = await phx.event("room:1", "presence_diff")
            assert diff["join_ref"] is None
            assert list(diff["payload"]["joins"]) == ["alice"]
            # heartbeat
            assert await phx.push("phoenix", "heartbeat") == ok()
            # handle_in: None -> ok {}, a dict -> ok dict, a tuple -> that status
            assert await phx.push("room:1", "new_msg", {"body": "hi"}) == ok()
            msg = await phx.event("room:1", "new_msg")
            assert msg["payload"] == {"body": "hi"}
            assert await phx.push("room:1", "nope") == {
                "status": "error",
                "response": {"reason": "nope"},
            }
            assert await phx.push("room:1", "shout", {"x": 1}) == ok({"shouted": True})
            stats = endpoint.stats()
            assert stats["sockets"] == 1
            assert stats["channels"] == 1
            assert stats["joins"] == 1
            assert stats["frames_in"] == 5
            assert stats["frames_out"] >= 9

    run(body)


def test_v1_join_push_and_broadcast() -> None:
    async def body() -> None:
        async with node() as (_, url), client(url, vsn="1.0.0") as phx:
            ref = await phx.send("room:v1", "phx_join", {"silent": True})
            assert await phx.reply(ref) == ok()
            assert await phx.push("room:v1", "new_msg", {"a": 1}) == ok()
            assert (await phx.event("room:v1", "new_msg"))["payload"] == {"a": 1}
            assert await phx.push("phoenix", "heartbeat") == ok()

    run(body)


def test_unmatched_topics_leave_then_close_and_rejoin_closes_the_old_join() -> None:
    async def body() -> None:
        TERMINATED.clear()
        async with node() as (endpoint, url), client(url) as phx:
            unmatched = {"status": "error", "response": {"reason": "unmatched topic"}}
            assert await phx.push("nowhere", "phx_join") == unmatched  # no route
            assert await phx.push("room:9", "new_msg") == unmatched  # not joined
            assert await phx.push("room:9", "phx_leave") == ok()  # leaving a topic not joined
            first = await phx.send("room:1", "phx_join", {})
            assert (await phx.reply(first))["status"] == "ok"
            # a second join of a joined topic closes the first: phx_close to its join_ref
            second = await phx.send("room:1", "phx_join", {"track": False})
            close = await phx.event("room:1", "phx_close")
            assert (close["join_ref"], close["ref"]) == (first, first)
            assert (await phx.reply(second))["status"] == "ok"
            await until(lambda: ("room:1", "replaced") in TERMINATED, message="terminate")
            # a message for the old join is ignored (counted), as Phoenix ignores it
            await phx.ws.send(json.dumps([first, "90", "room:1", "nope", {}]))
            assert await phx.push("phoenix", "heartbeat") == ok()  # frames run in order
            assert endpoint.stats()["stale"] == 1
            assert all(f["ref"] != "90" for f in phx.unread)
            # leave: ok reply, then phx_close with the join's ref
            leave = await phx.send("room:1", "phx_leave")
            assert await phx.reply(leave) == ok()
            close = await phx.event("room:1", "phx_close")
            assert close["join_ref"] == second
            await until(lambda: ("room:1", "left") in TERMINATED, message="terminate")
            assert await phx.push("room:1", "new_msg") == unmatched
            assert endpoint.stats()["unmatched"] == 3

    run(body)


def test_join_error_and_a_crash_in_join() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), client(url) as phx:
            refused = await phx.push("room:1", "phx_join", {"refuse": True})
            assert refused == {"status": "error", "response": {"reason": "refused"}}
            crashed = await phx.push("room:2", "phx_join", {"crash": True})
            assert crashed == {"status": "error", "response": {"reason": "join crashed"}}
            # the socket lives on
            assert (await phx.push("room:3", "phx_join"))["status"] == "ok"
            assert endpoint.stats()["join_errors"] == 2
            assert endpoint.stats()["channels"] == 1

    run(body)


def test_a_crashing_handler_sends_phx_error_and_its_presences_leave() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), client(url) as phx, client(url, "bob") as bob:
            presence = endpoint.presence_required()
            ref = await phx.send("room:1", "phx_join", {})
            assert (await phx.reply(ref))["status"] == "ok"
            assert (await bob.push("room:1", "phx_join", {"track": False}))["status"] == "ok"
            await until(lambda: "alice" in presence.list("room:1"), message="alice tracked")
            with_log = logging.getLogger("tracker_zmq.channels")
            with_log.disabled = True
            try:
                await phx.send("room:1", "crash")
                error = await phx.event("room:1", "phx_error")
            finally:
                with_log.disabled = False
            assert (error["join_ref"], error["ref"]) == (ref, ref)
            await until(lambda: presence.list("room:1") == {}, message="alice left")
            leave = await bob.expect(
                lambda f: f["event"] == "presence_diff" and "alice" in f["payload"]["leaves"],
                "alice's leave",
            )
            assert leave["topic"] == "room:1"
            # the socket lives on: it rejoins
            assert (await phx.push("room:1", "phx_join"))["status"] == "ok"
            assert endpoint.stats()["crashes"] == 1

    run(body)


def test_reject_origin_vsn_and_auth_token() -> None:
    async def body() -> None:
        async with node() as (endpoint, url):
            for query in ("?vsn=2.0.0&user=mallory", "?vsn=2.0.0", "?vsn=3.0.0&user=a"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url + query):
                        pass
                assert refused.value.response.status_code == 403
            # a browser from another origin is refused; the same host, or none, passes
            host = url.split("/")[2]
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url + "?vsn=2.0.0&user=a", origin="http://evil.example"):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403
            async with client(url, origin=f"http://{host}") as phx:  # type: ignore[arg-type]
                assert await phx.push("phoenix", "heartbeat") == ok()
            # phoenix.js's authToken: the subprotocol beside "phoenix"; phoenix is selected
            token = base64.b64encode(b"carol").decode().rstrip("=")
            protocols = ["phoenix", f"base64url.bearer.phx.{token}"]
            async with client(url, user=None, subprotocols=protocols) as phx:  # type: ignore[arg-type]
                assert phx.ws.subprotocol == "phoenix"
                reply = await phx.push("room:1", "phx_join", {"track": False})
                assert reply == ok({"joined": "room:1", "token": "carol"})
            assert endpoint.stats()["rejects"] == 4
            # a path other than the socket's
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url.replace("/websocket", "/other") + "?user=a"):
                    pass
            assert refused.value.response.status_code == 404

    run(body)


def test_a_silent_socket_is_closed_after_the_idle_timeout() -> None:
    async def body() -> None:
        async with node(idle_timeout=1.0) as (endpoint, url), client(url) as phx:
            # heartbeats keep it open past the timeout
            for _ in range(15):
                assert await phx.push("phoenix", "heartbeat") == ok()
                await asyncio.sleep(0.1)
            assert await close_code(phx) == 1001
            assert endpoint.stats()["idle_closes"] == 1
            await until(lambda: endpoint.stats()["sockets"] == 0, message="socket gone")

    run(body)


def test_broadcast_across_two_nodes_and_presence() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            nodes = await pubsubs(stack, 2)
            presences = [await stack.enter_async_context(Presence(p, **FAST)) for p in nodes]
            await meshed([p.tracker for p in presences])
            urls = []
            for presence in presences:
                endpoint = Endpoint(presence, socket=UserSocket, channels=ROUTES)
                urls.append(await stack.enter_async_context(serve(endpoint)))
            a = await stack.enter_async_context(client(urls[0], "alice"))
            b = await stack.enter_async_context(client(urls[1], "bob"))
            assert (await a.push("room:x", "phx_join"))["status"] == "ok"
            assert (await b.push("room:x", "phx_join"))["status"] == "ok"
            await until(
                lambda: all(set(p.list("room:x")) == {"alice", "bob"} for p in presences),
                message="both present on both nodes",
            )
            await until(
                lambda: nodes[0].remote_subscribers("room:x") == 1, message="b's subscription"
            )
            assert await a.push("room:x", "new_msg", {"from": "a"}) == ok()
            assert (await b.event("room:x", "new_msg"))["payload"] == {"from": "a"}
            assert (await a.event("room:x", "new_msg"))["payload"] == {"from": "a"}
            # broadcast_from skips only the sender's channel
            assert await b.push("room:x", "shout", {"from": "b"}) == ok({"shouted": True})
            assert (await a.event("room:x", "shout"))["payload"] == {"from": "b"}
            # bob sees alice join through presence_diff on his node
            await b.expect(
                lambda f: f["event"] == "presence_diff" and "alice" in f["payload"]["joins"],
                "alice's join on b",
            )
            assert ("room:x", "shout") not in b.events()

    run(body)


def test_fastlane_encodes_once_for_many_sockets() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(client(url, f"u{i}", vsn))
                for i, vsn in enumerate(["2.0.0"] * 20 + ["1.0.0"] * 5)
            ]
            for phx in clients:
                assert (await phx.push("room:f", "phx_join", {"track": False}))["status"] == "ok"
            before = endpoint.stats()["encodes"]
            endpoint.pubsub.broadcast("room:f", {"event": "news", "payload": {"n": 1}})
            for phx in clients:
                assert (await phx.event("room:f", "news"))["payload"] == {"n": 1}
            # one encode per serializer (two protocol versions), not per socket
            assert endpoint.stats()["encodes"] - before == 2
            # anything else on a channel topic is dropped and counted
            endpoint.pubsub.broadcast("room:f", {"not": "a channel message"})
            endpoint.pubsub.broadcast("room:f", {"event": "after", "payload": {}})
            for phx in clients:
                await phx.event("room:f", "after")
            assert endpoint.stats()["dropped_messages"] == len(clients)

    run(body)


def test_follow_gives_each_channel_its_own_view() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), contextlib.AsyncExitStack() as stack:
            presence = endpoint.presence_required()
            # users tracked once each on user:<id> (here by one room channel's task)
            tracker = await stack.enter_async_context(client(url, "tracker"))
            assert (await tracker.push("room:t", "phx_join", {"track": False}))["status"] == "ok"
            for name in ("u1", "u2"):
                track = {"topic": f"user:{name}", "key": name}
                assert await tracker.push("room:t", "track", track) == ok()
            await until(lambda: bool(presence.list("user:u2")), message="u2 tracked")
            f1 = await stack.enter_async_context(client(url, "f1"))
            f2 = await stack.enter_async_context(client(url, "f2"))
            joined = await f1.push("friends:f1", "phx_join", {"follow": ["user:u1"]})
            assert joined["status"] == "ok"
            assert (await f2.push("friends:f2", "phx_join", {"follow": ["user:u2", "user:u3"]}))[
                "status"
            ] == "ok"
            s1 = await f1.event("friends:f1", "presence_state")
            s2 = await f2.event("friends:f2", "presence_state")
            assert list(s1["payload"]) == ["u1"]
            assert list(s2["payload"]) == ["u2"]
            # u3 appears: only f2 hears it, on its own topic
            assert await tracker.push("room:t", "track", {"topic": "user:u3", "key": "u3"}) == ok()
            d2 = await f2.event("friends:f2", "presence_diff")
            assert list(d2["payload"]["joins"]) == ["u3"]
            # follow more, unfollow: presence_state of the new union each time
            assert await f1.push("friends:f1", "follow", {"topics": ["user:u3"]}) == ok()
            s1 = await f1.event("friends:f1", "presence_state")
            assert sorted(s1["payload"]) == ["u1", "u3"]
            assert await f1.push("friends:f1", "unfollow", {"topics": ["user:u1"]}) == ok()
            s1 = await f1.event("friends:f1", "presence_state")
            assert sorted(s1["payload"]) == ["u3"]
            assert all(f["event"] != "presence_diff" for f in f1.unread)
            # nothing of another follower's view, nor of its own topic's presences
            assert {t for t, _ in f1.events()} <= {"friends:f1"}
            assert {t for t, _ in f2.events()} <= {"friends:f2"}
            # a presence on the follower's own topic is not mixed into its view: the
            # next diff it gets is of a followed topic (one shard: diffs in order)
            intruder = {"topic": "friends:f1", "key": "intruder"}
            assert await tracker.push("room:t", "track", intruder) == ok()
            await until(lambda: bool(presence.list("friends:f1")), message="intruder")
            late = {"topic": "user:u3", "key": "u3-phone"}
            assert await tracker.push("room:t", "track", late) == ok()
            d1 = await f1.event("friends:f1", "presence_diff")
            assert list(d1["payload"]["joins"]) == ["u3-phone"]

    run(body)


def test_limits_and_garbage_are_answered_or_counted() -> None:
    async def body() -> None:
        options = {"max_channels": 3, "max_joins_per_second": 5, "max_frame_bytes": 1000}
        async with node(**options) as (endpoint, url), client(url) as phx:
            for i in range(3):
                assert (await phx.push(f"room:{i}", "phx_join", {"track": False}))["status"] == "ok"
            too_many = await phx.push("room:3", "phx_join", {"track": False})
            assert too_many["response"] == {"reason": "too many channels joined"}
            for i in range(3):
                assert await phx.push(f"room:{i}", "phx_leave") == ok()
            # a burst of joins (each replacing the last) spends the five per second
            refs = [await phx.send("room:b", "phx_join", {"track": False}) for _ in range(12)]
            replies = [await phx.reply(ref) for ref in refs]
            refused = [r for r in replies if r["status"] == "error"]
            assert refused, "a burst of 12 joins within the rate of 5 per second"
            assert all(r["response"] == {"reason": "too many joins"} for r in refused)
            # the tokens come back (five per second): a join succeeds again
            rejoin: list[dict[str, Any]] = []

            async def joined_again() -> bool:
                rejoin.append(await phx.push("room:b", "phx_join", {"track": False}))
                return rejoin[-1]["status"] == "ok"

            await until(joined_again, timeout=10, interval=0.1, message="a join again")
            refused += rejoin[:-1]
            for garbage in ("not json", "[1,2]", '{"a":1}', '[null,"1","t","e","x"]'):
                await phx.ws.send(garbage)
            await phx.ws.send(b"\x00binary")
            # unknown events reach handle_in, which refuses them; the socket is fine
            assert (await phx.push("room:b", "whatever"))["response"] == {"reason": "unknown"}
            stats = endpoint.stats()
            assert stats["garbage"] == 5
            assert stats["limited"] == 1 + len(refused)
            # a frame over max_frame_bytes closes the socket with 1009
            await phx.ws.send(json.dumps([None, "99", "room:b", "x", {"p": "y" * 2000}]))
            assert await close_code(phx) == 1009
            assert endpoint.stats()["oversize"] == 1

    run(body)


@pytest.mark.slow
def test_a_slow_socket_is_closed_while_others_get_every_broadcast_in_order() -> None:
    async def body() -> None:
        options = {"max_buffered_frames": 16}
        async with node(**options) as (endpoint, url), contextlib.AsyncExitStack() as s:
            good = await s.enter_async_context(client(url, "good"))
            # a client that stops reading: tiny receive queue, so TCP pushes back (and
            # no compression, so the frames fill the buffers)
            slow_ws = await s.enter_async_context(
                connect(url + "?vsn=2.0.0&user=slow", max_queue=1, compression=None)
            )
            slow = Phx(slow_ws)
            assert (await good.push("room:s", "phx_join", {"track": False}))["status"] == "ok"
            assert (await slow.push("room:s", "phx_join", {"track": False}))["status"] == "ok"
            pubsub = endpoint.pubsub
            blob = "x" * 65536
            count = 400
            received: list[int] = []

            async def read_good() -> None:
                while len(received) < count:
                    frame = good._parse(await good.ws.recv())
                    if frame["event"] == "big":
                        received.append(frame["payload"]["n"])

            reader = asyncio.create_task(read_good())
            for n in range(count):
                pubsub.broadcast("room:s", {"event": "big", "payload": {"n": n, "blob": blob}})
                # the good client keeps up (well under its 16 frames); the slow one cannot
                if len(received) <= n - 8:
                    await until(lambda n=n: len(received) > n - 8, timeout=30, message="good")
            await asyncio.wait_for(reader, 60)
            assert received == list(range(count))
            await until(lambda: endpoint.stats()["overflow_closes"] == 1, message="slow closed")
            await until(lambda: endpoint.stats()["sockets"] == 1, message="slow gone")

    run(body)


def test_disconnect_by_socket_id() -> None:
    async def body() -> None:
        async with node() as (endpoint, url), client(url, "dave") as phx:
            assert (await phx.push("room:d", "phx_join"))["status"] == "ok"
            endpoint.pubsub.broadcast("user_socket:dave", {"event": "disconnect", "payload": {}})
            assert await close_code(phx) == 1001
            assert endpoint.stats()["disconnects"] == 1
            await until(lambda: endpoint.presence_required().list("room:d") == {}, message="left")

    run(body)


def test_shutdown_drains_sockets_in_batches() -> None:
    async def body() -> None:
        options = {"drain_batch_size": 2, "drain_interval": 0.05}
        async with node(**options) as (endpoint, url), contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client(url, f"u{i}")) for i in range(5)]
            for phx in clients:
                assert (await phx.push("room:z", "phx_join"))["status"] == "ok"
            await endpoint.shutdown()
            assert endpoint.stats()["drained"] == 5
            assert endpoint.stats()["sockets"] == 0
            for phx in clients:
                assert await close_code(phx) == 1012
            # new connections are refused while draining
            with pytest.raises(InvalidStatus):
                async with connect(url + "?vsn=2.0.0&user=late"):
                    pass

    run(body)


def test_hundred_misbehaving_sockets_do_not_disturb_a_good_one() -> None:
    async def body() -> None:
        options = {"max_frame_bytes": 2000, "max_joins_per_second": 2}
        async with node(**options) as (endpoint, url), contextlib.AsyncExitStack() as stack:
            good = await stack.enter_async_context(client(url, "good"))
            assert (await good.push("room:g", "phx_join", {"track": False}))["status"] == "ok"
            bad = [await stack.enter_async_context(client(url, f"b{i}")) for i in range(100)]
            count = 200
            received: list[int] = []

            async def read_good() -> None:
                while len(received) < count:
                    frame = good._parse(await good.ws.recv())
                    if frame["event"] == "tick":
                        received.append(frame["payload"]["n"])

            reader = asyncio.create_task(read_good())
            for n in range(count):
                endpoint.pubsub.broadcast("room:g", {"event": "tick", "payload": {"n": n}})
                misbehaving = bad[n % len(bad)]
                with contextlib.suppress(ConnectionClosed):
                    match n % 4:
                        case 0:
                            await misbehaving.ws.send("{{{")
                        case 1:
                            await misbehaving.ws.send('[null,"1","room:g","phx_join",[]]')
                        case 2:
                            for i in range(4):
                                topic = f"room:{n}:{i}"
                                await misbehaving.send(topic, "phx_join", {"track": False})
                        case 3:
                            await misbehaving.ws.send("x" * 5000)
                await asyncio.sleep(0)
            await asyncio.wait_for(reader, 60)
            assert received == list(range(count))
            stats = endpoint.stats()
            assert stats["garbage"] >= 100
            assert stats["oversize"] >= 25
            assert stats["limited"] >= 25

    run(body)


def test_mounted_in_starlette_and_served_alone_with_its_lifespan() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (pubsub,) = await pubsubs(stack, 1)
            presence = await stack.enter_async_context(Presence(pubsub, **FAST))
            endpoint = Endpoint(presence, socket=UserSocket, channels=ROUTES)
            # mounted: Starlette passes the full path with root_path set; it is stripped
            app = Starlette(routes=[Mount("/socket", app=endpoint)])
            async with serve(app, "/socket/websocket") as url, client(url) as phx:
                assert (await phx.push("room:m", "phx_join"))["status"] == "ok"
            # alone, as the server's app, it answers the lifespan: uvicorn with
            # lifespan="on" starts only once startup completed, and at shutdown the
            # endpoint drains (then refuses new sockets)
            alone = Endpoint(presence, socket=UserSocket, channels=ROUTES)
            async with serve(alone, lifespan="on") as url, client(url) as phx:
                assert await phx.push("phoenix", "heartbeat") == ok()
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "websocket.connect"}

            async def send(message: Any) -> None:
                sent.append(dict(message))

            scope = {"type": "websocket", "path": "/websocket", "query_string": b"user=a"}
            await alone(scope, receive, send)
            assert sent == [{"type": "websocket.close", "code": 1008}]

    run(body)


# ---------------------------------------------------------------- Socket.expires_at


class ExpiringSocket(UserSocket):
    """``?ttl=SECONDS``: the socket's credentials expire then; ``ttl=soon`` is garbage."""

    async def connect(self, params: Any, info: Any) -> None:
        await super().connect(params, info)
        ttl = params["ttl"]
        self.expires_at = ttl if ttl == "soon" else time.time() + float(ttl)  # type: ignore[assignment]


class RefreshRoom(Room):
    """``refresh {"ttl": s}`` moves the socket's expiry (a token refreshed over a channel);
    ``refresh {"ttl": null}`` clears it."""

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        if event == "refresh":
            ttl = payload["ttl"]
            self.socket.expires_at = None if ttl is None else time.time() + ttl
            return {"expires_at": self.socket.expires_at}
        return await super().handle_in(event, payload)


def test_a_socket_closes_when_its_expires_at_passes_unless_a_channel_moves_it() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (pubsub,) = await pubsubs(stack, 1)
            presence = await stack.enter_async_context(Presence(pubsub, **FAST))
            endpoint = Endpoint(presence, socket=ExpiringSocket, channels={"room:*": RefreshRoom})
            url = await stack.enter_async_context(serve(endpoint))

            def connected(user: str, ttl: str) -> Any:
                return connect(f"{url}?vsn=2.0.0&user={user}&ttl={ttl}")

            # an expiry already past, or not a time, refuses the connection (403)
            for user, ttl in (("late", "-1"), ("odd", "soon")):
                with pytest.raises(InvalidStatus) as refused:
                    async with connected(user, ttl):
                        pass
                assert refused.value.response.status_code == 403
            assert endpoint.stats()["rejects"] == 2
            async with (
                connected("alice", "2") as a,
                connected("bob", "2") as b,
                connected("carol", "2") as c,
            ):
                alice, bob, carol = Phx(a), Phx(b), Phx(c)
                for phx in (alice, bob, carol):
                    assert (await phx.push("room:exp", "phx_join"))["status"] == "ok"
                # bob's token is refreshed for longer; carol's expiry is cleared
                moved = await bob.push("room:exp", "refresh", {"ttl": 3.5})
                bob_deadline = moved["response"]["expires_at"]
                assert (await carol.push("room:exp", "refresh", {"ttl": None}))["status"] == "ok"
                assert await close_code(alice) == 1008
                assert await close_code(bob) == 1008
                assert time.time() >= bob_deadline  # not before its new deadline
                # carol is still served, and alice and bob are no longer present
                assert await carol.push("phoenix", "heartbeat") == ok()
                await until(
                    lambda: set(presence.list("room:exp")) == {"carol"}, message="expired gone"
                )
                assert endpoint.stats()["expired"] == 2
            await until(lambda: endpoint.stats()["sockets"] == 0, message="sockets gone")
            assert endpoint.stats()["expired"] == 2

    run(body)
