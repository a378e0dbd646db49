"""Presence's hooks and a websocket follower (the Presence page).

``fetch`` decorates presences with user records, ``init`` / ``handle_metas`` start a
game once four players are in a lobby, and ``follow`` forwards a topic to a websocket
(here a stand-in that records what it is sent) and resyncs after an ``Overflow``. One
node in this process, on free ports of 127.0.0.1.
"""

import asyncio
import json

from pubsub_zmq import Overflow, PubSub
from tracker_zmq import Presence


class UserCache:
    """Stands in for a cache of user records: one lookup for many keys."""

    def __init__(self, users):
        self.users = users

    def get_many(self, keys):
        return {key: self.users[key] for key in keys if key in self.users}


user_cache = UserCache({"alice": {"name": "Alice"}, "bob": {"name": "Bob"}})


# --8<-- [start:fetch]
class UserPresence(Presence):
    def fetch(self, topic, presences):
        users = user_cache.get_many(presences.keys())  # {key: {...}}, one lookup
        return {key: {**p, "user": users.get(key)} for key, p in presences.items()}


# --8<-- [end:fetch]

games = []


def start_game(topic, players):
    games.append((topic, players))


# --8<-- [start:lobby]
class Lobby(Presence):
    def init(self, state):  # at start; state is {}
        return {"games_started": 0}

    def handle_metas(self, topic, diff, presences, state):
        # diff: {"joins": {...}, "leaves": {...}}, as just broadcast on topic
        # presences: {key: (meta, ...)} for the topic after this diff (read-only)
        if topic.startswith("lobby:") and len(presences) >= 4:
            start_game(topic, sorted(presences))
            return {**state, "games_started": state["games_started"] + 1}
        return state


# --8<-- [end:lobby]


# --8<-- [start:follow]
async def follow(websocket, pubsub, presence, topic):
    diffs = pubsub.subscribe(topic)  # first: nothing is missed
    await websocket.send(json.dumps({"type": "presence_state", "payload": presence.list(topic)}))
    async for message in diffs:
        if isinstance(message, Overflow):  # the queue overflowed: resync
            payload = presence.list(topic)
            await websocket.send(json.dumps({"type": "presence_state", "payload": payload}))
        elif message.get("event") == "presence_diff":
            await websocket.send(
                json.dumps({"type": "presence_diff", "payload": message["payload"]})
            )


# --8<-- [end:follow]


class FakeWebSocket:
    """Records what it is sent; ``send`` waits while ``open`` is clear (a slow client)."""

    def __init__(self):
        self.sent = []
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, text):
        await self.open.wait()
        self.sent.append(json.loads(text))


def client_view(messages):
    """What phoenix.js's syncState / syncDiff make of the messages: key -> phx_refs."""
    view = {}
    for message in messages:
        payload = message["payload"]
        if message["type"] == "presence_state":
            view = {key: {m["phx_ref"] for m in p["metas"]} for key, p in payload.items()}
            continue
        for key, p in payload["joins"].items():
            view.setdefault(key, set()).update(m["phx_ref"] for m in p["metas"])
        for key, p in payload["leaves"].items():
            view[key] = view.get(key, set()) - {m["phx_ref"] for m in p["metas"]}
            if not view[key]:
                del view[key]
    return view


def server_view(presence, topic):
    return {key: {m["phx_ref"] for m in p["metas"]} for key, p in presence.list(topic).items()}


async def until(condition):
    while not condition():  # noqa: ASYNC110 (polled state, no event to wait on)
        await asyncio.sleep(0.01)


async def check_fetch(pubsub):
    async with UserPresence(pubsub, name="users", broadcast_period=0.2) as presence:
        diffs = pubsub.subscribe("room:fetch")
        presence.track("conn-1", "room:fetch", "alice", {"device": "web"})
        presence.track("conn-2", "room:fetch", "carol", {"device": "web"})
        listed = presence.list("room:fetch")
        assert listed["alice"]["user"] == {"name": "Alice"}
        assert listed["carol"]["user"] is None  # not in the cache
        assert presence.get_by_key("room:fetch", "alice")["user"] == {"name": "Alice"}
        first = await asyncio.wait_for(diffs.get(), 5)
        assert first["payload"]["joins"]["alice"]["user"] == {"name": "Alice"}


async def check_lobby(pubsub):
    async with Lobby(pubsub, name="lobby", broadcast_period=0.2) as presence:
        assert presence.client_state == {"games_started": 0}
        for player in ("ann", "ben", "cat", "dan"):
            presence.track(f"conn-{player}", "lobby:1", player, {})
        await until(lambda: presence.client_state["games_started"] == 1)
        assert games == [("lobby:1", ["ann", "ben", "cat", "dan"])]


async def check_follow(pubsub):
    async with Presence(pubsub, name="follow", broadcast_period=0.2) as presence:
        websocket = FakeWebSocket()
        watch = pubsub.subscribe("room:follow", queue_size=100)  # counts the diffs
        follower = asyncio.create_task(follow(websocket, pubsub, presence, "room:follow"))
        try:
            await until(lambda: len(websocket.sent) == 1)  # the first presence_state
            websocket.open.clear()  # a slow client: the subscription's queue fills up
            presence.track("conn-1", "room:follow", "alice", {})
            await until(lambda: len(watch) == 1)
            for i in range(8):  # more diffs than the queue (queue_size=4) holds
                presence.track(f"conn-{i + 2}", "room:follow", f"user-{i}", {})
            presence.untrack("conn-1", "room:follow", "alice")
            await until(lambda: len(watch) == 10)
            websocket.open.set()
            await until(lambda: client_view(websocket.sent) == server_view(presence, "room:follow"))
            kinds = [message["type"] for message in websocket.sent]
            assert kinds.count("presence_state") == 2, kinds  # the second one after Overflow
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


async def demo():
    async with (
        PubSub("web-1", queue_size=4) as pubsub,  # small queues, so that one overflows
        asyncio.timeout(20),  # every wait below is bounded
    ):
        await check_fetch(pubsub)
        await check_lobby(pubsub)
        await check_follow(pubsub)
    print("fetched users, started one game, and the websocket follower resynced")


asyncio.run(demo())
