"""channels/testing.py: channels joined in-process, without a socket (Phoenix's ChannelTest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio import run, until
from mesh import pubsubs

from pubsub_zmq import PubSub
from tracker_zmq import Presence
from tracker_zmq.channels import Channel, Endpoint, JoinError, Reject, Socket
from tracker_zmq.channels.testing import ChannelTest

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


class UserSocket(Socket):
    def connect(self, params: Any, info: Any) -> None:  # a plain method works too
        if params.get("user") is None:
            raise Reject("who are you?")
        self.assigns["user"] = params["user"]


class Chat(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        if topic == "chat:secret":
            raise JoinError({"reason": "unauthorized"})
        self.track(self.socket.assigns["user"], {"typing": False})
        self.push("presence_state", self.presence.list(topic))
        return {"hello": self.socket.assigns["user"]}

    async def handle_in(self, event: str, payload: dict[str, Any]) -> Any:
        if event == "say":
            self.broadcast("said", {"user": self.socket.assigns["user"], **payload})
            return None
        if event == "typing":
            self.update(self.socket.assigns["user"], {"typing": True})
            return {"typing": True}
        if event == "boom":
            raise ValueError("boom")
        return ("error", {"reason": "unknown event"})


@contextlib.asynccontextmanager
async def case() -> AsyncIterator[tuple[ChannelTest, Presence]]:
    async with contextlib.AsyncExitStack() as stack:
        (pubsub,) = await pubsubs(stack, 1)
        presence = await stack.enter_async_context(Presence(pubsub, **FAST))
        endpoint = Endpoint(presence, socket=UserSocket, channels={"chat:*": Chat})
        test = await stack.enter_async_context(ChannelTest(endpoint))
        yield test, presence


def test_join_push_reply_and_broadcast() -> None:
    async def body() -> None:
        async with case() as (test, presence):
            alice = await test.connect({"user": "alice"})
            reply = await alice.join("chat:lobby")
            assert (reply.status, reply.response) == ("ok", {"hello": "alice"})
            state = await alice.assert_push("chat:lobby", "presence_state")
            assert list(state.payload) == ["alice"]
            diff = await alice.assert_push("chat:lobby", "presence_diff")
            assert list(diff.payload["joins"]) == ["alice"]
            reply = await alice.push("chat:lobby", "say", {"text": "hi"})
            assert (reply.status, reply.response) == ("ok", {})
            said = await test.assert_broadcast("chat:lobby", "said", {"text": "hi"})
            assert said == {"user": "alice", "text": "hi"}
            await alice.assert_push("chat:lobby", "said", {"user": "alice"})
            reply = await alice.push("chat:lobby", "typing")
            assert reply.response == {"typing": True}
            await until(
                lambda: presence.list("chat:lobby")["alice"]["metas"][0]["typing"],
                message="update",
            )
            reply = await alice.push("chat:lobby", "dance")
            assert (reply.status, reply.response) == ("error", {"reason": "unknown event"})
            await alice.refute_push("chat:lobby", "said")
            left = await alice.leave("chat:lobby")
            assert left.status == "ok"
            await alice.assert_push("chat:lobby", "phx_close")
            await until(lambda: presence.list("chat:lobby") == {}, message="left")
            assert test.endpoint.stats()["channels"] == 0

    run(body)


def test_reject_join_error_and_crash() -> None:
    async def body() -> None:
        async with case() as (test, presence):
            with pytest.raises(Reject):
                await test.connect({})
            bob = await test.connect({"user": "bob"})
            reply = await bob.join("chat:secret")
            assert (reply.status, reply.response) == ("error", {"reason": "unauthorized"})
            assert (await bob.join("chat:1")).status == "ok"
            await until(lambda: "bob" in presence.list("chat:1"), message="bob tracked")
            bob.send("chat:1", "boom")  # the crash is logged, never raised here
            error = await bob.assert_push("chat:1", "phx_error")
            assert error.payload == {"reason": "channel_crash"}
            await until(lambda: presence.list("chat:1") == {}, message="bob left")
            assert test.endpoint.stats()["crashes"] == 1
            await bob.close()
            assert test.endpoint.stats()["sockets"] == 0
            await asyncio.sleep(0)

    run(body)


def test_assert_push_and_broadcast_fail_with_what_they_saw() -> None:
    async def body() -> None:
        async with case() as (test, _):
            carol = await test.connect({"user": "carol"})
            await carol.join("chat:1")
            with pytest.raises(AssertionError, match="no push 'nothing'"):
                await carol.assert_push("chat:1", "nothing", within=0.05)
            with pytest.raises(AssertionError, match="no broadcast 'nothing'"):
                await test.assert_broadcast("chat:1", "nothing", within=0.05)

    run(body)


class Follower(Channel):
    async def join(self, topic: str, payload: dict[str, Any]) -> None:
        self.follow(payload["follow"])


def test_an_overflow_of_a_followed_topic_pushes_presence_state_again() -> None:
    async def body() -> None:
        async with (
            PubSub("solo", queue_size=4) as pubsub,
            Presence(pubsub, **FAST) as presence,
        ):
            endpoint = Endpoint(presence, socket=UserSocket, channels={"f:*": Follower})
            async with ChannelTest(endpoint) as test:
                erin = await test.connect({"user": "erin"})
                assert (await erin.join("f:erin", {"follow": ["user:1"]})).status == "ok"
                first = await erin.assert_push("f:erin", "presence_state")
                assert first.payload == {}
                # more diffs in one turn than the follow subscription holds
                for n in range(10):
                    diff = {"joins": {}, "leaves": {}, "n": n}
                    pubsub.local_broadcast("user:1", {"event": "presence_diff", "payload": diff})
                again = await erin.assert_push("f:erin", "presence_state")
                assert again.payload == {}
                assert endpoint.stats()["resyncs"] == 1
                # the newest diffs survived the overflow: they follow the state, in order
                await erin.assert_push("f:erin", "presence_diff", {"n": 9})
                events = [(m.event, m.payload.get("n")) for m in erin.received[-5:]]  # type: ignore[union-attr]
                assert events == [("presence_state", None)] + [
                    ("presence_diff", n) for n in range(6, 10)
                ]

    run(body)


class Slow(Channel):
    gate: asyncio.Event

    async def handle_in(self, event: str, payload: dict[str, Any]) -> None:
        await Slow.gate.wait()


def test_a_full_channel_inbox_answers_overloaded() -> None:
    async def body() -> None:
        Slow.gate = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            (pubsub,) = await pubsubs(stack, 1)
            presence = await stack.enter_async_context(Presence(pubsub, **FAST))
            endpoint = Endpoint(
                presence, socket=UserSocket, channels={"slow": Slow}, channel_inbox_size=10
            )
            test = await stack.enter_async_context(ChannelTest(endpoint))
            frank = await test.connect({"user": "frank"})
            assert (await frank.join("slow")).status == "ok"
            refs = [frank.send("slow", "work") for _ in range(30)]
            # sent in one go: ten wait in the inbox, the other twenty are refused at once
            refused = [await frank.reply_to(ref) for ref in refs[10:]]
            assert all(r.response == {"reason": "overloaded"} for r in refused)
            Slow.gate.set()
            done = [await frank.reply_to(ref) for ref in refs[:10]]
            assert all((r.status, r.response) == ("ok", {}) for r in done)
            assert endpoint.stats()["limited"] == 20

    run(body)
