"""The README's quick start: two nodes (here in one process) share who is in a room."""

import asyncio

from pubsub_zmq import PubSub
from tracker_zmq import Tracker


def print_diffs(diff):  # {topic: (joins, leaves)}
    print(diff)


async def main():
    async with (
        PubSub("web-1", bind="tcp://127.0.0.1:0") as web1,  # CURVE keys before leaving
        PubSub("web-2", peers=[web1.endpoint]) as web2,  # loopback (see the docs)
        Tracker(web1, handler=print_diffs, broadcast_period=0.2) as tracker,
        Tracker(web2, broadcast_period=0.2) as other,
    ):

        async def connection(user_id):  # e.g. a websocket handler
            tracker.track(asyncio.current_task(), "room:42", user_id, {"status": "online"})
            async for msg in web1.subscribe("room:42"):
                if msg == "bye":
                    return  # untracked when the task ends

        users = [asyncio.create_task(connection(u)) for u in ("alice", "bob")]
        async with asyncio.timeout(10):
            while len(other.list("room:42")) < 2:  # noqa: ASYNC110 (the next heartbeat)
                await asyncio.sleep(0.05)
        print("web-2 sees", sorted(key for key, _ in other.list("room:42")))  # cluster-wide
        web1.broadcast("room:42", "bye")
        await asyncio.gather(*users)
        async with asyncio.timeout(10):
            while other.list("room:42"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        print("web-2 sees", other.list("room:42"), "after the connections ended")


asyncio.run(main())
