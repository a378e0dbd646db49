"""A pubsub-zmq node in its own process, driven over stdin/stdout (for cluster tests).

Usage: ``PYTHONPATH=. python tests/pubsub_node.py --name a [--bind EP] [--peer EP ...]
[--pool-size N] [--broadcast-pool-size M]``
(:class:`tests.support.proc.CommandNode` runs it so). Prints one JSON line
``{"ready": ..., "endpoint": ...}`` once started, then answers each JSON command line on
stdin with one JSON line on stdout. Commands: ``info``, ``subscribe`` (topic),
``broadcast`` / ``direct`` (topic, messages, node), ``received`` (topic), ``stats``,
``remote_subscribers`` (topic), ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import zmq

from pubsub_zmq import PubSub
from tests.support.node import arguments, pubsub, serve_commands


async def serve(args: argparse.Namespace) -> None:
    received: dict[str, list[Any]] = {}
    partitions: dict[str, Any] = {}
    if args.pool_size is not None:  # only when given: the release before has no partitions
        partitions = {"pool_size": args.pool_size, "broadcast_pool_size": args.broadcast_pool_size}
    async with pubsub(args, PubSub, **partitions) as ps:

        def subscribe(cmd: dict[str, Any]) -> dict[str, bool]:
            ps.subscribe(cmd["topic"], callback=received.setdefault(cmd["topic"], []).append)
            return {"ok": True}

        async def broadcast(cmd: dict[str, Any]) -> dict[str, bool]:
            for message in cmd["messages"]:
                ps.broadcast(cmd["topic"], message)
            await ps.flush()
            return {"ok": True}

        async def direct(cmd: dict[str, Any]) -> dict[str, bool]:
            for message in cmd["messages"]:
                ps.direct_broadcast(cmd["node"], cmd["topic"], message)
            await ps.flush()
            return {"ok": True}

        await serve_commands(
            {"ready": args.name, "endpoint": ps.endpoint, "incarnation": ps.incarnation},
            {
                "info": lambda c: {"peers": ps.peers(), "incarnation": ps.incarnation},
                "subscribe": subscribe,
                "broadcast": broadcast,
                "direct": direct,
                "received": lambda c: received.get(c["topic"], []),
                "stats": lambda c: ps.stats(),
                "remote_subscribers": lambda c: ps.remote_subscribers(c["topic"]),
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument("--broadcast-pool-size", type=int, default=None)
    asyncio.run(serve(arguments(parser=parser)))
    zmq.Context.instance().term()


if __name__ == "__main__":
    main()
