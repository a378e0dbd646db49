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
import json
import sys
from typing import Any

import zmq

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
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        def reply(value: Any) -> None:
            sys.stdout.write(json.dumps(value) + "\n")
            sys.stdout.flush()

        reply({"ready": args.name, "endpoint": ps.endpoint, "incarnation": ps.incarnation})
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = json.loads(line)
            op = cmd["cmd"]
            if op == "info":
                reply({"peers": ps.peers(), "incarnation": ps.incarnation})
            elif op == "subscribe":
                topic = cmd["topic"]
                box = received.setdefault(topic, [])
                ps.subscribe(topic, callback=box.append)
                reply({"ok": True})
            elif op == "broadcast":
                for message in cmd["messages"]:
                    ps.broadcast(cmd["topic"], message)
                await ps.flush()
                reply({"ok": True})
            elif op == "direct":
                for message in cmd["messages"]:
                    ps.direct_broadcast(cmd["node"], cmd["topic"], message)
                await ps.flush()
                reply({"ok": True})
            elif op == "received":
                reply(received.get(cmd["topic"], []))
            elif op == "stats":
                reply(ps.stats())
            elif op == "remote_subscribers":
                reply(ps.remote_subscribers(cmd["topic"]))
            elif op == "stop":
                reply({"ok": True})
                return
            else:
                reply({"error": f"unknown command {op!r}"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    asyncio.run(serve(parser.parse_args()))
    zmq.Context.instance().term()


if __name__ == "__main__":
    main()
