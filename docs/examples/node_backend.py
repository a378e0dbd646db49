"""A web backend's calls on a standalone node (the "From your backend" section of the
Standalone nodes page).

Self-contained: a node runs in this process (``tracker_zmq.Node``, what ``tracker-zmq
node`` runs) on free ports of 127.0.0.1, and a PubSub subscriber on its topics stands in
for the websockets that browsers hold on the cluster's nodes. The backend re-tracks a
worker's presences in bulk, broadcasts a message to a room and disconnects (and bans) a
user.
"""

import asyncio

from tracker_zmq import Client, Node
from tracker_zmq.channels import BANS_TOPIC

sockets = {f"ws-{n}": f"user-{n}" for n in range(2500)}  # a web worker's websockets


# --8<-- [start:backend]
async def backend(endpoint):
    async with Client(endpoint, client_id="django-worker-3") as client:
        # a worker that reconnects tracks its websockets' presences in bulk: batches of
        # the node's max_batch, all in flight at once; one result per presence
        results = await client.track_many(
            [("room:lobby", user, {"ws": ws}, ws) for ws, user in sockets.items()]
        )
        failed = [r for r in results if not isinstance(r, str)]  # AlreadyTracked, ...

        # every browser in room:lobby, on every node, gets "new_msg"
        await client.broadcast("room:lobby", "new_msg", {"body": "maintenance at 6"})

        # user 42's websockets close on every node; their reconnects are refused 10 min
        await client.disconnect("user_socket:42", ban_seconds=600)
    # --8<-- [end:backend]
    assert failed == []


async def demo():
    async with Node("a") as node, asyncio.timeout(30):
        lobby = node.pubsub.subscribe("room:lobby", link=False)
        bans = node.pubsub.subscribe(BANS_TOPIC, link=False)
        await backend(node.client_endpoint)
        assert await lobby.get() == {
            "event": "new_msg",
            "payload": {"body": "maintenance at 6"},
        }
        assert await bans.get() == {"socket_id": "user_socket:42", "ban_seconds": 600.0}
        # the worker said bye when its block ended: its presences left with it
        assert node.tracker.list("room:lobby") == []
    print(f"{len(sockets)} presences tracked in bulk, a broadcast and a ban sent")


asyncio.run(demo())
