"""A Python client of a CURVE node (the Standalone nodes page, "CURVE keys").

Self-contained: the keys are written to a temporary directory by the ``pubsub-zmq
keygen`` command, laid out as on the page (``nodes/`` and ``clients/``), and the node
runs in this process on free ports of 127.0.0.1. A client whose key the node does not
allow gets no reply at all.
"""

import asyncio
import tempfile
from pathlib import Path

# --8<-- [start:client]
import zmq.auth

from pubsub_zmq import load_keypair
from tracker_zmq import Client


def curve_client(keys, endpoint="tcp://tracker-1.internal:5560"):  # keys: /etc/tracker/keys
    me = load_keypair(keys / "clients" / "web.key_secret")
    node_public, _ = zmq.auth.load_certificate(keys / "nodes" / "tracker-1.key")
    return Client(endpoint, curve_secret_key=me.secret, curve_server_key=node_public.decode())


# --8<-- [end:client]


async def demo(keys: Path) -> None:
    from pubsub_zmq import generate_keypair
    from pubsub_zmq.cli import main as pubsub_zmq_command
    from tracker_zmq import Node, RequestTimeout

    # `pubsub-zmq keygen --out KEYS/nodes --name tracker-1`, and the same for the client
    pubsub_zmq_command(["keygen", "--out", str(keys / "nodes"), "--name", "tracker-1"])
    pubsub_zmq_command(["keygen", "--out", str(keys / "clients"), "--name", "web"])
    node_keys = load_keypair(keys / "nodes" / "tracker-1.key_secret")
    web_keys = load_keypair(keys / "clients" / "web.key_secret")
    async with (
        Node(
            "tracker-1",
            curve_secret_key=node_keys.secret,  # --curve-secret-key
            curve_allow=[],  # --curve-allow: no other node in this example
            curve_client_allow=[web_keys.public],  # --curve-client-allow
        ) as node,
        asyncio.timeout(20),  # every wait below is bounded
    ):
        async with curve_client(keys, node.client_endpoint) as client:
            await client.track("room:lobby", "alice", {"status": "online"})
            assert [key for key, _ in await client.list("room:lobby")] == ["alice"]

        stranger = Client(
            node.client_endpoint,
            timeout=0.5,
            curve_secret_key=generate_keypair().secret,  # on no allow-list
            curve_server_key=node_keys.public,
        )
        try:
            await stranger.connect()  # refused in the handshake: no reply
        except RequestTimeout:
            pass
        else:
            raise AssertionError("a client with an unknown key got an answer")
        finally:
            await stranger.close()
    print("the allowed client tracked alice over CURVE; the stranger got no reply")


with tempfile.TemporaryDirectory() as directory:
    asyncio.run(demo(Path(directory)))
