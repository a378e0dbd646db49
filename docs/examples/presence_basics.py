"""A Presence on one node: list in Phoenix's shape, and the presence_diff broadcast
(the Presence page's first example; the checks after the printed values are not shown).
"""

# --8<-- [start:main]
import asyncio

from pubsub_zmq import PubSub
from tracker_zmq import Presence


async def main():
    async with (
        PubSub("web-1", bind="tcp://127.0.0.1:0") as pubsub,  # port 0: any free port
        Presence(pubsub, broadcast_period=1.0) as presence,
    ):
        diffs = pubsub.subscribe("room:42")  # this node's presence_diffs
        presence.track(asyncio.current_task(), "room:42", "alice", {"status": "online"})
        print(presence.list("room:42"))
        # {"alice": {"metas": [{"status": "online", "phx_ref": "GOo_rpKLIksAAAAAAAAAAQ"}]}}
        diff = await asyncio.wait_for(diffs.get(), 5)
        print(diff)
        # {"event": "presence_diff",
        #  "payload": {"joins": {"alice": {"metas": [{...}]}}, "leaves": {}}}
        # --8<-- [end:main]
        [meta] = presence.list("room:42")["alice"]["metas"]
        assert meta["status"] == "online"
        assert isinstance(meta["phx_ref"], str)
        assert diff == {
            "event": "presence_diff",
            "payload": {"joins": {"alice": {"metas": [meta]}}, "leaves": {}},
        }


# --8<-- [start:run]
asyncio.run(main())
# --8<-- [end:run]
