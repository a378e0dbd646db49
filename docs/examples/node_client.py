"""The Python client of standalone nodes (the Standalone nodes page).

Self-contained: two nodes, ``a`` and ``b``, run in this process (``tracker_zmq.Node``, what
``tracker-zmq node`` runs) on free ports of 127.0.0.1, with short periods. The quick
start's client tracks alice through node a and follows the lobby's diffs until bob,
tracked through node b, joins; then the client API tour runs against node b.
"""

# --8<-- [start:quickstart]
import asyncio

from tracker_zmq import Client


async def main(endpoint="tcp://127.0.0.1:5560"):  # node a's --client-bind
    async with Client(endpoint, client_id="web-1") as client:
        await client.track("room:lobby", "alice", {"status": "online"})
        diffs = await client.subscribe("room:lobby")
        async for diff in diffs:  # ClientDiff(topic, joins, leaves)
            print(diff.joins, diff.leaves)
            if any(key == "bob" for key, _ in diff.joins):
                break  # (this example stops once bob, tracked through node b, joins)


# --8<-- [end:quickstart]

topic, key, meta, fn = "room:tour", "carol", {"status": "online"}, print


# --8<-- [start:api]
async def tour(endpoint):
    async with Client(
        endpoint, client_id="web-1", heartbeat_interval=2.0, lease=None, timeout=5.0
    ) as client:
        ref = await client.track(topic, key, meta, owner=None)  # AlreadyTracked, LimitExceeded
        ref = await client.update(topic, key, meta, owner=None)  # NoPresence
        n = await client.untrack(topic, key, owner=None)  # or untrack(): everything
        await client.list(topic)  # [(key, meta)]
        await client.get_by_key(topic, key)  # [(owner, meta)]
        await client.status()  # the node's status
        sub = await client.subscribe(topic)  # async for diff in sub
        await client.subscribe(topic, callback=fn)  # or a callback (sync or async)
        await sub.close()
    # leaving the block says bye: the session's presences leave at once
    # --8<-- [end:api]
    assert ref
    assert n == 1
    assert client.closed


# Short periods, so that a change reaches the other node within a fraction of a second.
FAST = {"broadcast_period": 0.1, "max_silent_periods": 3, "down_period": 1.0}
GOSSIP = {"gossip_interval": 0.1, "peer_timeout": 1.0}


async def has(client, keys):
    return sorted(k for k, _ in await client.list("room:lobby")) == keys


async def until(condition):
    """Poll an async condition (the caller's timeout bounds the wait)."""
    while not await condition():  # noqa: ASYNC110 (a remote node's answer, no local event)
        await asyncio.sleep(0.05)


async def demo():
    from tracker_zmq import Node  # what `tracker-zmq node` runs

    async with (
        Node("a", tracker_options=FAST, pubsub_options=GOSSIP) as a,
        Node("b", peers=[a.endpoint], tracker_options=FAST, pubsub_options=GOSSIP) as b,
        Client(b.client_endpoint, client_id="web-2") as web2,
        asyncio.timeout(20),  # every wait below is bounded
    ):
        async with asyncio.TaskGroup() as tasks:  # cancels main() if anything fails
            follower = tasks.create_task(main(a.client_endpoint))
            await until(lambda: has(web2, ["alice"]))  # tracked through a, read through b
            async with Client(a.client_endpoint) as probe:  # web-1 subscribed on a

                async def subscribed():
                    return (await probe.status())["clients"]["subscriptions"] == 1

                await until(subscribed)
            await web2.track("room:lobby", "bob", {"status": "online"})
            await follower  # main() returns once bob's join reached web-1 through node a
        await until(lambda: has(web2, ["bob"]))  # web-1 said bye: alice left everywhere
        await tour(b.client_endpoint)
        assert await web2.list(topic) == []
    print("alice tracked through a and seen from b; bob's join reached a's client")


asyncio.run(demo())
