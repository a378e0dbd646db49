"""What stats() returns on a PubSub and a Tracker (the operating guide's example).

Two nodes in one process on loopback; the keys asserted here are the ones the guide
tables, so the guide cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from pubsub_zmq import PubSub
from tracker_zmq import Tracker

FAST = {"broadcast_period": 0.1, "max_silent_periods": 2, "down_period": 1.0}


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 (polled state, no event to wait on)
        await asyncio.sleep(0.02)


async def main() -> None:
    async with (
        PubSub("a") as pa,
        PubSub("b", peers=[pa.endpoint]) as pb,
        Tracker(pa, **FAST) as ta,
        Tracker(pb, **FAST) as tb,
    ):
        ta.track("conn-1", "room:1", "alice", {})
        async with asyncio.timeout(10):
            await until(lambda: len(tb.list("room:1")) == 1)

        # --8<-- [start:pubsub]
        stats = pa.stats()
        assert set(stats) == {
            "node", "incarnation", "endpoint", "pub_endpoint", "running",
            "subscriptions", "topics", "sent", "received", "dropped", "peers",
            "versions", "broadcast_version", "refused_versions", "dns", "partitions",
        }  # fmt: skip
        assert stats["dns"] == {"lookups": 0, "failures": 0, "seeds": 0}  # no peer_dns
        assert set(stats["sent"]) == {
            "broadcasts", "broadcast_frames", "directs", "direct_frames", "control_frames",
        }  # fmt: skip
        assert set(stats["received"]) == {"messages", "frames", "control_frames"}
        assert set(stats["dropped"]) == {
            "lost", "overflow", "send", "invalid", "oversize", "unknown_version",
            "rejected", "refused", "unknown_node", "refused_version", "unreadable",
            "unread_partition",
        }  # fmt: skip
        assert set(stats["peers"]["b"]) == {
            "incarnation", "control", "pub", "alive", "last_heard", "received", "lost",
            "versions", "version",
        }  # fmt: skip
        # --8<-- [end:pubsub]

        # --8<-- [start:tracker]
        stats = tb.stats()
        assert set(stats) == {
            "name", "node", "vsn", "pool_size", "sharding", "running",
            "handler_errors", "receive_errors", "send_errors", "overflows", "diffs_reported",
            "unreadable", "versions", "replicas", "totals", "shards",
        }  # fmt: skip
        assert stats["replicas"] == {"a": {"vsn": ta.vsn, "status": "up"}}
        shard = stats["shards"][0]
        assert set(shard) >= {
            "ref", "replicas", "presences", "visible", "pending_delta", "generations",
            "transfers_outstanding", "messages_in", "messages_out", "heartbeats_sent",
            "delta_values_sent", "transfers_requested", "transfers_answered",
            "transfers_answered_full", "transfers_merged", "deltas_too_large", "dropped",
            "drops",
        }  # fmt: skip
        assert stats["totals"]["presences"] == 1  # alice, held on b as a's presence
        # --8<-- [end:tracker]
        print(json.dumps({k: v for k, v in stats.items() if k != "shards"}, indent=2))


asyncio.run(main())
