"""A pubsub-zmq node in its own process, driven over stdin/stdout (for cluster tests).

Usage: ``python tests/pubsub_node.py --name a [--bind EP] [--peer EP ...]``. Prints one
JSON line ``{"ready": ..., "endpoint": ...}`` once started, then answers each JSON command
line on stdin with one JSON line on stdout. Commands: ``info``, ``subscribe`` (topic),
``broadcast`` / ``direct`` (topic, messages, node), ``received`` (topic), ``stats``,
``remote_subscribers`` (topic), ``garbage`` (endpoint: send junk frames there), ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import zmq
from nodeproc import serve_commands

from pubsub_zmq import PubSub


async def serve(args: argparse.Namespace) -> None:
    received: dict[str, list[Any]] = {}
    async with PubSub(
        args.name,
        bind=args.bind,
        peers=args.peer,
        gossip_interval=0.1,
        peer_timeout=1.0,
        start_timeout=5.0,
    ) as ps:

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
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    asyncio.run(serve(parser.parse_args()))
    zmq.Context.instance().term()


if __name__ == "__main__":
    main()
