"""A CURVE node configured as on the pubsub-zmq page ("Security with CURVE").

Self-contained: ``pubsub-zmq keygen`` writes the keys of web-1, web-2 and web-3 to a
temporary directory (``keys``, removed at exit); web-2 runs in this process on a free
port of 127.0.0.1, and web-1, built as the page shows, joins it and hears its broadcast.
"""

import asyncio
import atexit
import shutil
import socket
import tempfile
from pathlib import Path

# --8<-- [start:import]
from pubsub_zmq import PubSub, load_keypair

# --8<-- [end:import]
from pubsub_zmq.cli import main as pubsub_zmq_command

keys = Path(tempfile.mkdtemp())  # the page's `keys` directory
atexit.register(shutil.rmtree, keys, ignore_errors=True)
for name in ("web-1", "web-2", "web-3"):  # `pubsub-zmq keygen --out keys --name web-N`
    pubsub_zmq_command(["keygen", "--out", str(keys), "--name", name])
WEB2_PUBLIC = load_keypair(keys / "web-2.key_secret").public
WEB3_PUBLIC = load_keypair(keys / "web-3.key_secret").public
with socket.socket() as probe:  # a free port for web-2 (in production: 10.0.0.2:5550)
    probe.bind(("127.0.0.1", 0))
    WEB2_ENDPOINT = f"tcp://127.0.0.1:{probe.getsockname()[1]}"

# --8<-- [start:curve]
me = load_keypair(keys / "web-1.key_secret")
pubsub = PubSub(
    "web-1",
    bind="tcp://127.0.0.1:0",  # in production this host's address, e.g. tcp://10.0.0.1:5550
    peers=[(WEB2_ENDPOINT, WEB2_PUBLIC)],  # seeds with their public keys
    curve_secret_key=me.secret,
    curve_allow={"web-2": WEB2_PUBLIC, "web-3": WEB3_PUBLIC},
)
# --8<-- [end:curve]


async def demo():
    web2 = PubSub(
        "web-2",
        bind=WEB2_ENDPOINT,
        curve_secret_key=load_keypair(keys / "web-2.key_secret").secret,
        curve_allow={"web-1": me.public, "web-3": WEB3_PUBLIC},
    )
    async with web2, pubsub, asyncio.timeout(10):  # every wait below is bounded
        assert pubsub.peers() == ["web-2"]  # start() returned once the seed answered
        room = pubsub.subscribe("room:42")
        while web2.remote_subscribers("room:42") < 1:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.05)
        web2.broadcast("room:42", "encrypted on the wire")
        assert await room.get() == "encrypted on the wire"
    print("web-1 joined web-2 over CURVE and heard its broadcast")


asyncio.run(demo())
