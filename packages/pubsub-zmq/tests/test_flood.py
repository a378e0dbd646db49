"""One peer flooding a node cannot starve the others.

A node reads each member's PUB on its own SUB socket and the control channel on its
ROUTER, each at most ``read_budget`` frames per event-loop turn before yielding
(:mod:`pubsub_zmq.transport`), so a flooding member takes its share of the loop, not all
of it. Here a hand-driven member floods node ``a`` from a thread (valid batches mixed
with garbage on its PUB, garbage on a's control endpoint) while a well-behaved peer
``b`` broadcasts and sends direct messages: every one of b's messages arrives, and the
flood is read and counted meanwhile. The test asserts delivery, not timings.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson
import zmq
from fake_member import FakeMember

from pubsub_zmq import PubSub
from pubsub_zmq.wire import (
    Kind,
    encode_batch,
    join_messages,
    sender_field,
    topic_prefix,
)

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0}
MESSAGES = 100
Run = Callable[..., Any]
Wait = Callable[..., Any]


class Flooder(FakeMember):
    """A fake member ``flood`` whose PUB and DEALER a thread fills as fast as it can."""

    def __init__(self, target: str) -> None:
        super().__init__("flood", hwm=100_000)
        self.connect(target)
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._flood, daemon=True)

    def subscribed(self) -> bool:
        while self.pub.poll(0):
            if self.pub.recv() == b"\x01" + topic_prefix("flood"):
                return True
        return False

    def _flood(self) -> None:
        body = join_messages([orjson.dumps({"junk": "x" * 64})] * 8)
        prefix, name = topic_prefix("flood"), sender_field("flood")
        seq = 0
        while not self.stop.is_set():
            for _ in range(100):
                try:
                    self.pub.send(encode_batch(prefix, Kind.BROADCAST, 1, seq, name, body))
                    self.pub.send(prefix + b"\x01garbage", zmq.NOBLOCK)
                    self.dealer.send(b"\x00not a frame", zmq.NOBLOCK)
                except zmq.Again:
                    continue
                seq += 8
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(10)
        super().close()


def test_a_flooding_member_does_not_starve_another(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with (
            PubSub("a", **FAST) as a,
            PubSub("b", peers=[a.endpoint], **FAST) as b,
        ):
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"], message="mesh")
            flooded: list[int] = []
            a.subscribe("flood", callback=lambda m: flooded.append(1))
            calm = a.subscribe("calm", queue_size=10 * MESSAGES)
            direct = a.subscribe("calm-direct", queue_size=10 * MESSAGES)
            flooder = Flooder(a.endpoint)
            try:
                flooder.hello()
                await wait(lambda: "flood" in a.stats()["peers"], message="flood member known")
                await wait(flooder.subscribed, message="a's subscription at the flooder")
                await wait(lambda: b.remote_subscribers("calm") == 1, message="calm sub at b")
                flooder.thread.start()
                await wait(lambda: len(flooded) > 1000, timeout=20, message="the flood")
                for i in range(MESSAGES):
                    b.broadcast("calm", i)
                    b.direct_broadcast("a", "calm-direct", i)
                    if i % 10 == 9:
                        await asyncio.sleep(0.01)
                got: list[Any] = []
                got_direct: list[Any] = []

                def all_arrived() -> bool:
                    got.extend(calm.drain())
                    got_direct.extend(direct.drain())
                    return len(got) >= MESSAGES and len(got_direct) >= MESSAGES

                await wait(all_arrived, timeout=30, message="b's messages during the flood")
                assert got == list(range(MESSAGES))
                assert got_direct == list(range(MESSAGES))
                during = len(flooded)
                await wait(lambda: len(flooded) > during, message="the flood still read")
                dropped = a.stats()["dropped"]
                assert dropped["invalid"] > 0  # the garbage, on both channels, counted
            finally:
                flooder.close()
            assert a.stats()["peers"]["b"]["lost"] == 0

    run(body)
