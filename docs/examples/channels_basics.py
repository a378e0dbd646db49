"""Phoenix channels in Python: a socket, a room, a follower, and their tests (the Channels page).

One node in this process (a PubSub on a free port of 127.0.0.1 and a Presence) serves an
``Endpoint``; ``ChannelTest`` connects in-process clients to it, as phoenix.js would
over a websocket, and checks the replies, the pushes and the broadcasts.
"""

from __future__ import annotations

import asyncio
import time

from pubsub_zmq import PubSub
from tracker_zmq import Presence

# --8<-- [start:channels]
from tracker_zmq.channels import Channel, Endpoint, JoinError, Reject, Socket

TOKENS = {"s3cret-alice": "alice", "s3cret-bob": "bob", "s3cret-carol": "carol"}  # your check


def verify(token: str | None) -> str:
    if token not in TOKENS:
        raise Reject()  # the client gets HTTP 403
    return TOKENS[token]


class UserSocket(Socket):
    async def connect(self, params, info):
        # the token comes as a connect param, or as phoenix.js's authToken
        self.assigns["user_id"] = verify(params.get("token") or info["auth_token"])

    def id(self):
        return f"user_socket:{self.assigns['user_id']}"


class Room(Channel):
    async def join(self, topic, payload):
        if topic == "room:staff" and self.socket.assigns["user_id"] != "alice":
            raise JoinError({"reason": "unauthorized"})  # an error reply
        self.track(self.socket.assigns["user_id"], {"online_at": int(time.time())})
        self.push("presence_state", self.presence.list(topic))  # sent after the reply
        return {"joined": topic}  # the ok reply's response

    async def handle_in(self, event, payload):
        if event == "new_msg":
            self.broadcast("new_msg", {"user": self.socket.assigns["user_id"], **payload})
            return None  # ok {}
        if event == "ping":
            return {"pong": payload}  # ok {"pong": ...}
        return ("error", {"reason": f"unknown event {event}"})


# --8<-- [end:channels]


# --8<-- [start:follow]
class Friends(Channel):
    """``friends:<me>``: who of my friends is online, each tracked once on ``user:<id>``."""

    async def join(self, topic, payload):
        me = self.socket.assigns["user_id"]
        if topic != f"friends:{me}":
            raise JoinError({"reason": "unauthorized"})
        # presence_state of the union now, then each followed topic's presence_diff,
        # on this channel's own topic; another follower's view is its own
        self.follow([f"user:{friend}" for friend in FRIENDS.get(me, ())])


class Me(Channel):
    """``user:<me>``: joining it makes the user present, once, for all their friends."""

    async def join(self, topic, payload):
        if topic != f"user:{self.socket.assigns['user_id']}":
            raise JoinError({"reason": "unauthorized"})
        self.track(self.socket.assigns["user_id"], {"status": payload.get("status", "online")})


FRIENDS = {"alice": ["bob", "carol"], "bob": ["alice"]}
# --8<-- [end:follow]


# --8<-- [start:endpoint]
def make_endpoint(presence: Presence) -> Endpoint:
    # app.mount("/socket", endpoint) in Starlette or FastAPI; then, in the browser,
    # new Socket("/socket", {params: {token}}) or new Socket("/socket", {authToken: token})
    return Endpoint(
        presence,
        socket=UserSocket,
        channels={"room:*": Room, "friends:*": Friends, "user:*": Me},
        idle_timeout=60.0,  # a socket silent this long is closed
    )


# --8<-- [end:endpoint]


async def main() -> None:
    async with PubSub("docs", bind="tcp://127.0.0.1:0") as pubsub, Presence(pubsub) as presence:
        endpoint = make_endpoint(presence)
        await room_tests(endpoint)
        await follow_tests(endpoint)
        print("stats:", {k: v for k, v in endpoint.stats().items() if v})


# --8<-- [start:test]
from tracker_zmq.channels.testing import ChannelTest  # noqa: E402


async def room_tests(endpoint: Endpoint) -> None:
    async with ChannelTest(endpoint) as case:
        try:
            await case.connect({"token": "forged"})
        except Reject:
            print("a forged token is refused")
        alice = await case.connect({}, {"auth_token": "s3cret-alice"})
        bob = await case.connect({"token": "s3cret-bob"})

        reply = await alice.join("room:lobby")
        assert (reply.status, reply.response) == ("ok", {"joined": "room:lobby"})
        state = await alice.assert_push("room:lobby", "presence_state")
        assert list(state.payload) == ["alice"]

        assert (await bob.join("room:staff")).response == {"reason": "unauthorized"}
        assert (await bob.join("room:lobby")).status == "ok"
        await alice.assert_push("room:lobby", "presence_diff")  # bob joined

        reply = await bob.push("room:lobby", "ping", {"n": 1})
        assert reply.response == {"pong": {"n": 1}}
        await bob.push("room:lobby", "new_msg", {"body": "hi"})
        await case.assert_broadcast("room:lobby", "new_msg", {"user": "bob", "body": "hi"})
        await alice.assert_push("room:lobby", "new_msg", {"body": "hi"})
        print("alice heard bob say hi in room:lobby")


# --8<-- [end:test]


async def follow_tests(endpoint: Endpoint) -> None:
    async with ChannelTest(endpoint) as case:
        alice = await case.connect({"token": "s3cret-alice"})
        bob = await case.connect({"token": "s3cret-bob"})
        assert (await alice.join("friends:alice")).status == "ok"
        assert (await alice.assert_push("friends:alice", "presence_state")).payload == {}
        assert (await bob.join("friends:bob")).status == "ok"
        await bob.assert_push("friends:bob", "presence_state")

        assert (await bob.join("user:bob", {"status": "away"})).status == "ok"
        diff = await alice.assert_push("friends:alice", "presence_diff")
        assert diff.payload["joins"]["bob"]["metas"][0]["status"] == "away"
        assert (await alice.join("user:alice")).status == "ok"
        diff = await bob.assert_push("friends:bob", "presence_diff")
        assert list(diff.payload["joins"]) == ["alice"]
        # carol is alice's friend, not bob's: alice's view gets her, bob's does not
        carol = await case.connect({"token": "s3cret-carol"})
        assert (await carol.join("user:carol")).status == "ok"
        diff = await alice.assert_push("friends:alice", "presence_diff")
        assert list(diff.payload["joins"]) == ["carol"]
        await bob.refute_push("friends:bob", "presence_diff")
        print("alice sees bob away and carol online; bob sees alice online")


if __name__ == "__main__":
    asyncio.run(main())
