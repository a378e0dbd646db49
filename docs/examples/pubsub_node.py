"""The pubsub-zmq page's 3-node cluster: each process runs one node.

Run it as on the page: ``python pubsub_node.py a 5550``, then
``python pubsub_node.py b 5551 tcp://127.0.0.1:5550`` and so on. Run without arguments
(as the test suite does), it plays the page's three commands itself, on free ports of
127.0.0.1, joins the mesh as a fourth node ``d`` in this process, checks that all three
print d's broadcast and that b prints d's direct message to its inbox, and stops them.
"""

# --8<-- [start:node]
import asyncio
import sys

from pubsub_zmq import PubSub


async def main(name: str, port: int, seeds: list[str]) -> None:
    async with PubSub(name, bind=f"tcp://127.0.0.1:{port}", peers=seeds) as pubsub:
        room = pubsub.subscribe("room:42")
        inbox = pubsub.subscribe(f"inbox:{name}")
        pubsub.broadcast("room:42", {"from": name, "body": "hello"})

        async def show(sub):
            async for message in sub:
                print(name, sub.topic, message, pubsub.peers())

        await asyncio.gather(show(room), show(inbox))


# --8<-- [end:node]


class NodeProcess:
    """``python pubsub_node.py NAME PORT SEEDS...``, its stdout lines collected."""

    def __init__(self, name, port, seeds):
        self.name, self.port, self.seeds = name, port, seeds
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.lines = []

    async def start(self):
        import os

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            self.name,
            str(self.port),
            *self.seeds,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # print() lines arrive at once
        )
        self.reader = asyncio.create_task(self.read())
        await self.printed(f"{self.name} room:42 {{'from': '{self.name}'")  # its own hello

    async def read(self):
        async for line in self.proc.stdout:
            self.lines.append(line.decode())

    async def printed(self, text):
        while not any(line.startswith(text) for line in self.lines):
            if self.proc.returncode is not None:
                raise AssertionError(f"node {self.name} exited: {await self.proc.stderr.read()}")
            await asyncio.sleep(0.02)

    async def stop(self):
        """SIGINT (asyncio.run then stops the PubSub cleanly), SIGKILL if that hangs."""
        import signal

        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
                await self.reader
                await self.proc.stderr.read()  # a KeyboardInterrupt traceback
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            self.reader.cancel()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def demo():
    nodes = []
    try:
        async with asyncio.timeout(30):  # every wait below is bounded
            a = NodeProcess("a", free_port(), [])
            nodes.append(a)
            await a.start()
            for name in ("b", "c"):  # each knows only the first
                nodes.append(NodeProcess(name, free_port(), [a.endpoint]))
                await nodes[-1].start()
            async with PubSub("d", peers=[a.endpoint], gossip_interval=0.2) as d:

                def meshed():  # gossip: d found b and c, and a, b and c subscribed at d
                    return d.peers() == ["a", "b", "c"] and d.remote_subscribers("room:42") == 3

                while not meshed():  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0.05)
                d.broadcast("room:42", {"from": "d", "body": "hi all"})
                d.direct_broadcast("b", "inbox:b", {"from": "d", "body": "hi b"})
                for node in nodes:
                    await node.printed(f"{node.name} room:42 {{'from': 'd', 'body': 'hi all'}}")
                await nodes[1].printed("b inbox:b {'from': 'd', 'body': 'hi b'}")
    finally:
        for node in nodes:
            if hasattr(node, "proc"):
                await node.stop()
    print("a, b and c heard d's broadcast; b heard d's direct message")


if len(sys.argv) == 1:  # run as the test suite does: start the cluster, check, stop
    sys.exit(asyncio.run(demo()))
# --8<-- [start:run]
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
# --8<-- [end:run]
