"""Subscriptions and a custom dispatcher (the pubsub-zmq page).

One node in this process, on a free port of 127.0.0.1; the checks between the parts the
page shows are not shown there.
"""

import asyncio
import json

from pubsub_zmq import PubSub


# --8<-- [start:subscribe]
async def subscriptions(pubsub, on_message):
    sub = pubsub.subscribe("room:42")  # an async iterator
    # --8<-- [end:subscribe]
    pubsub.broadcast("room:42", {"body": "hello"})
    # --8<-- [start:iterate]
    async for message in sub:
        print(message)
        # --8<-- [end:iterate]
        assert message == {"body": "hello"}
        break
    # --8<-- [start:more]

    pubsub.subscribe("room:42", callback=on_message)  # or a callback (sync or async)

    sub = pubsub.subscribe("room:42", {"user": 7})  # metadata, kept with the subscription
    pubsub.unsubscribe(sub)  # or sub.unsubscribe(), or `with sub:`
    pubsub.unsubscribe_match("room:42", {"user": 7})  # every subscription with that metadata
    # --8<-- [end:more]
    assert not sub.active


# --8<-- [start:fastlane]
def fastlane(subscriptions, sender, message):
    encoded = None
    for sub in subscriptions:
        if sub is sender:
            continue
        if sub.metadata == "websocket":  # encode once for every socket
            encoded = encoded or json.dumps(message)
            sub.deliver(encoded)
        else:
            sub.deliver(message)


pubsub = PubSub("web-1", dispatcher=fastlane)
# --8<-- [end:fastlane]


async def until(condition):
    while not condition():  # noqa: ASYNC110 (polled state, no event to wait on)
        await asyncio.sleep(0.01)


async def check_subscriptions():
    async with PubSub("web-2") as node:  # bind: tcp://127.0.0.1:0, any free port
        heard = []
        task = asyncio.create_task(subscriptions(node, heard.append))
        await task  # the callback's subscription was made in the task: it ended with it
        kept = node.subscribe("room:42", callback=heard.append, link=False)
        node.broadcast("room:42", "for the callback")
        await until(lambda: heard == ["for the callback"])
        kept.unsubscribe()


async def check_fastlane():
    async with pubsub:
        socket_1 = pubsub.subscribe("room:42", "websocket")
        socket_2 = pubsub.subscribe("room:42", "websocket")
        worker = pubsub.subscribe("room:42")
        pubsub.broadcast_from(socket_2, "room:42", {"body": "hi"})  # not back to socket_2
        assert await socket_1.get() == '{"body": "hi"}'  # encoded once, for the sockets
        assert await worker.get() == {"body": "hi"}
        assert socket_2.drain() == []


async def demo():
    async with asyncio.timeout(20):  # every wait below is bounded
        await check_subscriptions()
        await check_fastlane()
    print("subscriptions, callbacks, metadata and the fastlane dispatcher work as described")


asyncio.run(demo())
