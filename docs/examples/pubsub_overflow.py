"""A subscriber that resyncs after an Overflow (the pubsub-zmq page, "Backpressure").

One node in this process, on a free port of 127.0.0.1, with subscription queues of 3
messages; six messages arrive while the subscriber is busy, so the three oldest are
dropped and an Overflow marker comes first.
"""

import asyncio

# --8<-- [start:overflow]
from pubsub_zmq import Overflow


async def follow(pubsub):
    async for message in pubsub.subscribe("presence:room:42"):
        if isinstance(message, Overflow):
            print(f"missed {message.dropped} messages: resync")
            await resync()
            continue
        apply(message)


# --8<-- [end:overflow]

applied = []
resyncs = []


async def resync():
    resyncs.append(len(applied))  # stands in for asking for the whole state again


def apply(message):
    applied.append(message)


async def demo():
    from pubsub_zmq import PubSub

    async with (
        PubSub("web-1", queue_size=3) as pubsub,  # bind: tcp://127.0.0.1:0, a free port
        asyncio.timeout(10),  # every wait below is bounded
    ):
        follower = asyncio.create_task(follow(pubsub))
        try:
            await asyncio.sleep(0)  # the follower subscribes, and waits
            for n in range(6):  # all in one turn: the follower cannot keep up
                pubsub.local_broadcast("presence:room:42", n)
            while len(applied) < 3:  # noqa: ASYNC110 (polled state, no event to wait on)
                await asyncio.sleep(0.01)
            assert resyncs == [0]  # the marker came first, then the 3 newest messages
            assert applied == [3, 4, 5]
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


asyncio.run(demo())
