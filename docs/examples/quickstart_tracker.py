"""The home page's asyncio look: two nodes (here in one process) share presence."""

import asyncio

from pubsub_zmq import PubSub
from tracker_zmq import Tracker


async def main():
    async with (
        PubSub("web-1", bind="tcp://127.0.0.1:0") as pubsub1,  # port 0: any free port
        PubSub("web-2", peers=[pubsub1.endpoint]) as pubsub2,  # a seed: web-1's endpoint
        Tracker(pubsub1, handler=print, broadcast_period=0.2) as tracker1,  # print diffs
        Tracker(pubsub2, broadcast_period=0.2) as tracker2,
    ):
        tracker1.track(asyncio.current_task(), "room:42", "alice", {"status": "online"})
        async with asyncio.timeout(10):
            while not tracker2.list("room:42"):  # noqa: ASYNC110 (the next heartbeat)
                await asyncio.sleep(0.05)
        print("web-2 sees", tracker2.list("room:42"))  # every user in the room


asyncio.run(main())
