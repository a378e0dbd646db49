"""Two pubsub-zmq nodes with CURVE, and an intruder they refuse (the security guide).

Everything runs in one process on loopback, with keys written to a temporary directory
by the ``pubsub-zmq keygen`` command.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

from pubsub_zmq import PubSub, generate_keypair, load_keypair
from pubsub_zmq.cli import main as pubsub_zmq_command


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 (a polled counter, no event to wait on)
        await asyncio.sleep(0.05)


async def main(keys: Path) -> None:
    # --8<-- [start:keys]
    # One key pair per node; the same as `pubsub-zmq keygen --out keys --name web-1`.
    for name in ("web-1", "web-2"):
        pubsub_zmq_command(["keygen", "--out", str(keys), "--name", name])
    web1 = load_keypair(keys / "web-1.key_secret")  # KeyPair(public=..., secret=...)
    web2 = load_keypair(keys / "web-2.key_secret")
    # Each node's allow-list: who may connect, and under which name.
    allow = {"web-1": web1.public, "web-2": web2.public}
    # --8<-- [end:keys]

    # --8<-- [start:nodes]
    async with (
        PubSub("web-1", curve_secret_key=web1.secret, curve_allow=allow) as node1,
        PubSub(
            "web-2",
            peers=[(node1.endpoint, web1.public)],  # a seed comes with its public key
            curve_secret_key=web2.secret,
            curve_allow=allow,
        ) as node2,
    ):
        # --8<-- [end:nodes]
        room = node2.subscribe("room:42")
        async with asyncio.timeout(10):  # web-2's subscription reaches web-1
            await until(lambda: node1.remote_subscribers("room:42") == 1)
        node1.broadcast("room:42", "encrypted on the wire")
        assert await asyncio.wait_for(room.get(), 5) == "encrypted on the wire"

        # --8<-- [start:intruder]
        intruder_keys = generate_keypair()  # not on anyone's allow-list
        intruder = PubSub(
            "web-3",
            peers=[(node1.endpoint, web1.public)],  # it knows the address and the key
            curve_secret_key=intruder_keys.secret,
            curve_allow=[web1.public],
            start_timeout=1.0,
        )
        async with intruder:  # start() gives up on the seed after start_timeout
            spy = intruder.subscribe("room:42")
            node1.broadcast("room:42", "not for web-3")
            assert await asyncio.wait_for(room.get(), 5) == "not for web-3"
            assert intruder.peers() == []
            assert spy.drain() == []
            assert "web-3" not in node1.peers()
        # --8<-- [end:intruder]
    print("web-2 heard web-1 over CURVE; web-3 heard nothing and joined nothing")


with tempfile.TemporaryDirectory() as directory:
    asyncio.run(main(Path(directory)))
