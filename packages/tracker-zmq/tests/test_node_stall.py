"""The stall rule of a Node's lease timer, with the whole process stuck on purpose.

An in-process :class:`~tracker_zmq.Node` and a raw DEALER speaking the client protocol
share one event loop, so blocking the loop (``time.sleep``) stalls them together, as a
paused machine, a GC pause or SIGSTOP of both would: the client sends nothing while it
is stuck, and heartbeats again on its own cadence after. ``tests/test_node.py`` freezes a
real node process with SIGSTOP; here the second stall lands exactly where the timer is
reading what piled up after the first, which a signal sent from outside cannot aim at.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import orjson
import zmq
import zmq.asyncio
from aio import run, until

from tracker_zmq import ClientLimits, Node
from tracker_zmq.protocol import (
    ClientRequest,
    HeartbeatRequest,
    HelloRequest,
    TrackRequest,
    encode_request,
)


def test_a_second_stall_while_the_node_reads_what_piled_up_is_forgiven_too() -> None:
    async def body() -> None:
        # leases checked every 0.125 s (a quarter of min_lease)
        async with Node("stall", limits=ClientLimits(min_lease=0.5)) as node:
            ctx = zmq.asyncio.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(node.client_endpoint)
            ids = itertools.count(1)

            async def ask(request: ClientRequest) -> dict[str, Any]:
                await sock.send(encode_request(request))
                async with asyncio.timeout(10):
                    reply: dict[str, Any] = orjson.loads(await sock.recv())
                assert reply.get("ok") is True, reply
                result: dict[str, Any] = reply.get("result", {})
                return result

            try:
                hello = await ask(HelloRequest(next(ids), "paused", lease=1.0))
                token = hello["token"]
                await ask(TrackRequest(next(ids), token, "room:stall", "patient", {}))
                skipped = node.stats()["lease_checks_skipped"]
                # stuck for a moment: the lease timer wakes late and reads what piled up
                time.sleep(0.3)  # noqa: ASYNC251 (the fault injected: the loop is stuck)
                await until(lambda: node.stats()["lease_checks_skipped"] > skipped, interval=0)
                # stuck again, while it reads: 1.5 leases
                time.sleep(1.5)  # noqa: ASYNC251 (the fault injected: the loop is stuck)
                await asyncio.sleep(0.3)  # the client heartbeats again on its cadence
                await ask(HeartbeatRequest(next(ids), token))  # ok: the session lives
                stats = node.stats()
                assert stats["sessions_expired"] == 0
                assert stats["lease_checks_skipped"] >= skipped + 2
                assert [key for key, _ in node.tracker.list("room:stall")] == ["patient"]
            finally:
                sock.close(linger=0)
                ctx.term()

    run(body)
