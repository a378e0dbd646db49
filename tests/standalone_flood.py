"""A hostile client for tests/test_standalone.py: websocket connects with bad tokens.

Usage: ``python tests/standalone_flood.py --port P [--host H] [--rate 1000] [--seconds 3]``.

It prints ``{"ready": "flood"}``, then opens ``rate`` TCP connections a second for
``seconds`` seconds (at most ``--in-flight`` at once), each sending a websocket upgrade
request for ``/socket/websocket`` with a forged token, reading the status line and
closing; then it prints one JSON line: ``attempts``, ``refused`` (HTTP 403),
``accepted`` (101: a bad token let in, which must never happen), ``other`` (another
status) and ``errors`` (a connection that failed or timed out).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time

FORGED = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.bm90LWEtc2lnbmF0dXJl"


async def attempt(host: str, port: int, counts: dict[str, int]) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /socket/websocket?vsn=2.0.0&token={FORGED} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    writer = None
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            line = await reader.readline()
        status = line.split()[1] if len(line.split()) > 1 else b""
        kind = {b"403": "refused", b"101": "accepted"}.get(status, "other")
        counts[kind] += 1
    except (OSError, TimeoutError):
        counts["errors"] += 1
    finally:
        if writer is not None:
            writer.close()


async def flood(args: argparse.Namespace) -> dict[str, int]:
    counts = {"attempts": 0, "refused": 0, "accepted": 0, "other": 0, "errors": 0}
    slots = asyncio.Semaphore(args.in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            await attempt(args.host, args.port, counts)
        finally:
            slots.release()

    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < args.seconds:
        due = int(elapsed * args.rate) - counts["attempts"]
        for _ in range(due):
            await slots.acquire()
            counts["attempts"] += 1
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.005)
    if tasks:
        await asyncio.gather(*tasks)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="connects per second")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=256, help="connections at once")
    args = parser.parse_args()
    print(json.dumps({"ready": "flood"}), flush=True)
    print(json.dumps(asyncio.run(flood(args))), flush=True)


if __name__ == "__main__":
    main()
