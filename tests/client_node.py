"""A :class:`tracker_zmq.Client` in its own process, driven over stdin/stdout.

Usage: ``python tests/client_node.py --name c --endpoint tcp://127.0.0.1:PORT``. Runs
under this release's interpreter or an older release's (the mixed-version tests run it
with the previous release's, :mod:`tests.support.previous`), so it uses only what every
release has: the standard library and the Client's first API, and no ``tests`` module.

Connects (hello), then prints one JSON line ``{"ready": name, "endpoint": ..., "session":
..., "node": ..., "ops": [...] or null}`` (``ops``: what the Client read from hello; null
for a Client that reads none), then answers each JSON command line on stdin with one
JSON line on stdout. Commands: ``track`` / ``update`` / ``untrack`` (topic, key, meta),
``list`` (topic), ``subscribe`` (topic: collect its diffs), ``diffs`` (topic: the diffs
collected, as ``[joins, leaves]``), ``info``, ``stop`` (close the client: bye).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tracker_zmq import Client, ClientDiff


def reply(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    client = Client(
        args.endpoint,
        client_id=args.name,
        heartbeat_interval=args.heartbeat_interval,
        lease=args.lease,
        timeout=args.timeout,
    )
    diffs: dict[Any, list[list[Any]]] = {}

    def info() -> dict[str, Any]:
        ops = getattr(client, "ops", None)
        return {
            "session": client.session,
            "node": client.node,
            "resyncs": client.resyncs,
            "ops": None if ops is None else sorted(ops),
        }

    async def handle(cmd: dict[str, Any]) -> Any:
        op = cmd["cmd"]
        if op == "track":
            return {"ref": await client.track(cmd["topic"], cmd["key"], cmd["meta"])}
        if op == "update":
            return {"ref": await client.update(cmd["topic"], cmd["key"], cmd["meta"])}
        if op == "untrack":
            return {"untracked": await client.untrack(cmd["topic"], cmd["key"])}
        if op == "list":
            return [[key, meta] for key, meta in await client.list(cmd["topic"])]
        if op == "subscribe":
            seen = diffs.setdefault(cmd["topic"], [])

            def collect(diff: ClientDiff) -> None:
                seen.append([diff.joins, diff.leaves])

            await client.subscribe(cmd["topic"], callback=collect)
            return {"ok": True}
        if op == "diffs":
            return diffs.get(cmd["topic"], [])
        if op == "info":
            return info()
        raise ValueError(f"unknown command {op!r}")

    await client.connect()
    try:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            reply({"ready": args.name, "endpoint": args.endpoint, **info()})
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = json.loads(line)
                if cmd["cmd"] == "stop":
                    await client.close()
                    reply({"ok": True})
                    return
                try:
                    reply(await handle(cmd))
                except Exception as exc:  # report to the test, keep serving
                    reply({"error": repr(exc)})
        finally:
            pipe.close()
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--heartbeat-interval", type=float, default=0.5)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
