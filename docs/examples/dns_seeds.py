"""The deployment guide's code: DNS seeds, a resolver of your own, web workers.

Run as is (the test suite does), on free ports of 127.0.0.1: a node finds another
through a real name (``localhost``); a node finds the members of a service registry,
and more of them as they register; three "workers" share one port with
``bind_fallback``, and the one that stops takes its tracker replica with it (an
automatically named node does a graceful permdown). Each step prints what it saw.
"""

import asyncio
import socket

from pubsub_zmq import PubSub
from tracker_zmq import Tracker

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until(condition, what: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if condition():
                break
            await asyncio.sleep(0.05)
    print("ok:", what)


# --8<-- [start:dns]
async def find_by_name(seed_port: int) -> list[str]:
    # every address "localhost" resolves to is a seed: here 127.0.0.1:<seed_port>; in a
    # cluster it is a headless service or a scaled compose service, "tracker:4000"
    async with PubSub(None, peer_dns=[f"localhost:{seed_port}"], **FAST) as pubsub:
        return pubsub.peers()  # start() returned once one seed answered


# --8<-- [end:dns]


# --8<-- [start:resolver]
REGISTRY: dict[str, list[tuple[str, int]]] = {}  # a service registry: Consul, etcd, an API


async def from_registry(host: str, port: int) -> list[tuple[str, int]]:
    """Every instance registered under ``host``, each on a port of its own."""
    await asyncio.sleep(0)  # a real one awaits its registry's HTTP API here
    return REGISTRY.get(host, [])


def watcher() -> PubSub:
    return PubSub("watcher", peer_dns=["tracker:4000"], resolver=from_registry, **FAST)


# --8<-- [end:resolver]


# --8<-- [start:workers]
async def worker(seed: str, stop: asyncio.Event, names: list[str]) -> None:
    # every worker runs this: the first binds the seed's port, the others port 0 and
    # greet it there; each is named <hostname>-<pid>-<random>
    async with (
        PubSub(None, bind=seed, peers=[seed], bind_fallback=True, **FAST) as pubsub,
        Tracker(pubsub, broadcast_period=0.1),  # permdown on stop: the name never returns
    ):
        names.append(pubsub.node_name)
        await stop.wait()


# --8<-- [end:workers]


async def main() -> None:
    async with PubSub("a", bind=f"tcp://127.0.0.1:{free_port()}", **FAST) as a:
        found = await find_by_name(int(a.endpoint.rsplit(":", 1)[1]))
        print("found through localhost:", found)
        assert found == ["a"]

        b = PubSub("b", **FAST)
        async with b, watcher() as w:
            REGISTRY["tracker"] = [("127.0.0.1", int(a.endpoint.rsplit(":", 1)[1]))]
            await until(lambda: w.peers() == ["a"], "the watcher finds a in the registry")
            REGISTRY["tracker"].append(("127.0.0.1", int(b.endpoint.rsplit(":", 1)[1])))
            await until(lambda: w.peers() == ["a", "b"], "then b, registered later")
            print("dns stats:", w.stats()["dns"])

    seed = f"tcp://127.0.0.1:{free_port()}"
    stops = [asyncio.Event() for _ in range(3)]
    names: list[str] = []
    tasks = [asyncio.create_task(worker(seed, stop, names)) for stop in stops]
    await until(lambda: len(names) == 3, "three workers on one port")
    observer_pubsub = PubSub("observer", peers=[seed], **FAST)
    observer = Tracker(observer_pubsub, broadcast_period=0.1)
    async with observer_pubsub, observer:
        await until(lambda: len(observer.stats()["replicas"]) == 3, "the observer sees them")
        stops[0].set()  # a worker recycled
        await tasks[0]
        await until(lambda: names[0] not in observer.stats()["replicas"], "no ghost of the first")
    for stop in stops[1:]:
        stop.set()
    await asyncio.gather(*tasks)
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
