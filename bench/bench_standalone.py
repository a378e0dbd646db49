"""The standalone node under browsers: token connects, and a backend's broadcast (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_standalone.py [--sockets 5000]
[--clients 2] [--quick]``. Two ``tracker-zmq node`` processes (a and b, clustered, each
serving websockets with ``--token-secret-file`` and ``--api-key-file``) and
``--clients`` client processes (this script with ``--role client``: the ``websockets``
library's asyncio client speaking Phoenix's V2 protocol, many sockets each, tokens signed
with PyJWT before the clock starts), all on 127.0.0.1. Times are ``time.monotonic()``
(system-wide on Linux: stamps of different processes compare).

* **Connects per second**: N sockets connect (the websocket handshake with the token's
  HS256 verification) and join a room (reply and ``presence_state``; the token allows no
  tracking, so no presence traffic), 200 at a time per client process: N over the time
  from the first connect to the last join reply. The same against ``tests/channels_app.py``
  (the same Endpoint, a plain-string token, a join that follows nothing): the ratio is what
  the JWT and the built-in channel cost. Two rounds each, alternating; the best of each.
* **Backend broadcast, end to end**: with the N sockets on node b, the driver POSTs
  ``/api/broadcast`` to node a (the time is taken just before the request) and every
  socket stamps its receipt; five broadcasts, each once every socket had the previous
  one. p50 and p99 over all N x 5 receipts, and the median over broadcasts of the time to
  the last socket. The same through node b's own API: the ratio is the cluster hop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support

TOPIC = "room:bench"
CONCURRENCY = 200  # connections being opened at once, per client process
HEARTBEAT = 25.0
BROADCASTS = 5
ROUNDS = 2  # connect rounds per server, alternating: the best of each is reported


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------- client role


class Client:
    """The client role: many sockets in one process, each stamping ``bench`` frames."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.socks: list[tuple[Any, dict[int, float]]] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def read(self, ws: Any, seen: dict[int, float]) -> None:
        with contextlib.suppress(Exception):
            async for data in ws:
                if '"bench"' in data:
                    now = time.monotonic()
                    seen[json.loads(data)[4]["seq"]] = now

    async def heartbeat(self) -> None:
        ref = 0
        while True:
            await asyncio.sleep(HEARTBEAT)
            for ws, _ in list(self.socks):
                ref += 1
                with contextlib.suppress(Exception):
                    await ws.send(json.dumps([None, f"h{ref}", "phoenix", "heartbeat", {}]))

    def tokens(self, kind: str, first: int, n: int) -> list[tuple[str, dict[str, Any]]]:
        import jwt

        out: list[tuple[str, dict[str, Any]]] = []
        for i in range(first, first + n):
            if kind == "jwt":
                claims = {"sub": f"u{i}", "exp": int(time.time()) + 3600, "channels": ["room:*"]}
                out.append((jwt.encode(claims, self.secret, algorithm="HS256"), {}))
            else:  # tests/channels_app.py: a string token, a join that follows nothing
                out.append((f"t:u{i}", {"follow": []}))
        return out

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        url, kind, topic = cmd["url"], cmd["kind"], cmd["topic"]
        tokens = self.tokens(kind, cmd["first"], cmd["n"])
        gate = asyncio.Semaphore(CONCURRENCY)
        failures: list[str] = []

        async def one(token: str, payload: dict[str, Any]) -> None:
            async with gate:
                try:
                    ws = await connect(
                        f"{url}/websocket?vsn=2.0.0&token={token}",
                        compression=None,
                        open_timeout=60,
                        max_size=None,
                    )
                    await ws.send(json.dumps(["1", "1", topic, "phx_join", payload]))
                    reply = json.loads(await ws.recv())
                    if reply[3] != "phx_reply" or reply[4]["status"] != "ok":
                        raise RuntimeError(f"join refused: {reply}")
                except Exception as exc:
                    failures.append(repr(exc))
                    return
            seen: dict[int, float] = {}
            self.socks.append((ws, seen))
            self.tasks.append(asyncio.create_task(self.read(ws, seen)))

        t0 = time.monotonic()
        await asyncio.gather(*(one(t, p) for t, p in tokens))
        return {"t0": t0, "t1": time.monotonic(), "failures": failures[:3], "failed": len(failures)}

    def seen(self, cmd: dict[str, Any]) -> dict[str, Any]:
        seq = cmd["seq"]
        stamps = [seen[seq] for _, seen in self.socks if seq in seen]
        return {"n": len(self.socks), "stamps": stamps if len(stamps) == len(self.socks) else []}

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        async def one(ws: Any) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await ws.close()

        for i in range(0, len(self.socks), 500):
            await asyncio.gather(*(one(ws) for ws, _ in self.socks[i : i + 500]))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.socks.clear()
        self.tasks.clear()
        return {"ok": True}


async def run_client(args: argparse.Namespace) -> None:
    from tests.support.node import serve_commands

    raise_nofile()
    client = Client(args.secret)
    beat = asyncio.create_task(client.heartbeat())
    commands = {"connect": client.connect, "seen": client.seen, "close": client.close}
    try:
        await serve_commands({"ready": args.name, "endpoint": ""}, commands)
    finally:
        beat.cancel()
        await client.close({})


# ----------------------------------------------------------------------- the driver


class Bench:
    """Starts the nodes and client processes and runs the measurements."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        from tests.support.proc import FAST_NODE_OPTIONS, CliNode, CommandNode

        self.args = args
        secret, key = folder / "secret", folder / "api-key"
        secret.write_text(secrets.token_hex(32) + "\n")
        key.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
        key.chmod(0o600)
        self.api_key = key.read_text().strip()
        stderr = None if args.verbose else open(os.devnull, "w")  # noqa: SIM115
        self.procs: list[Any] = []
        web = (
            "--websocket-bind", "127.0.0.1:0",
            "--token-secret-file", str(secret),
            "--api-key-file", str(key),
            "--log-level", "WARNING",
            "--event-log-level", "DEBUG",
        )  # fmt: skip
        try:
            self.a = self.keep(CliNode("a", folder, *FAST_NODE_OPTIONS, *web, strict=False))
            self.b = self.keep(
                CliNode(
                    "b", folder, *FAST_NODE_OPTIONS, *web, peers=(self.a.endpoint,), strict=False
                )
            )
            app = Path(__file__).resolve().parents[1] / "tests" / "channels_app.py"
            self.app = self.keep(
                CommandNode(app, "plain", "--idle-timeout", "60", strict=False, stderr=stderr)
            )
            self.clients = [
                self.keep(
                    CommandNode(
                        Path(__file__),
                        f"client{i}",
                        *("--role", "client", "--secret-file", str(secret)),
                        strict=False,
                        stderr=stderr,
                        ready_timeout=60,
                    )
                )
                for i in range(args.clients)
            ]
        except BaseException:
            self.stop()
            raise

    def keep(self, proc: Any) -> Any:
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()

    def connect(self, url: str, n: int, kind: str, topic: str) -> float:
        k = len(self.clients)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        first = 0
        for client, share in zip(self.clients, shares, strict=True):
            client.send("connect", url=url, first=first, n=share, kind=kind, topic=topic)
            first += share
        answers = [c.read(600) for c in self.clients]
        failed = sum(a["failed"] for a in answers)
        if failed:
            why = [f for a in answers for f in a["failures"]]
            raise RuntimeError(f"{failed} of {n} connections failed: {why}")
        return n / (max(a["t1"] for a in answers) - min(a["t0"] for a in answers))

    def close(self) -> None:
        for client in self.clients:
            client.send("close")
        for client in self.clients:
            client.read(300)

    def post_broadcast(self, node: Any, seq: int) -> float:
        http = node.ready["websocket"].replace("ws://", "http://").removesuffix("/socket")
        body = json.dumps({"topic": TOPIC, "event": "bench", "payload": {"seq": seq}}).encode()
        request = urllib.request.Request(f"{http}/api/broadcast", data=body, method="POST")
        request.add_header("authorization", f"Bearer {self.api_key}")
        request.add_header("content-type", "application/json")
        t0 = time.monotonic()
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
        return t0

    def end_to_end(self, node: Any, n: int, first_seq: int) -> dict[str, float]:
        receipts: list[float] = []
        lasts: list[float] = []
        for seq in range(first_seq, first_seq + BROADCASTS):
            t0 = self.post_broadcast(node, seq)
            stamps: list[float] = []
            deadline = time.monotonic() + 120
            for client in self.clients:
                while True:
                    answer = client.call("seen", seq=seq)
                    if answer["stamps"] or not answer["n"]:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"broadcast {seq} did not reach every socket")
                    time.sleep(0.02)
                stamps += answer["stamps"]
            assert len(stamps) == n, (len(stamps), n)
            latencies = [s - t0 for s in stamps]
            receipts += latencies
            lasts.append(max(latencies))
            time.sleep(0.3)
        return {
            "p50": pct(receipts, 0.5) * 1e3,
            "p99": pct(receipts, 0.99) * 1e3,
            "last": statistics.median(lasts) * 1e3,
            "max": max(lasts) * 1e3,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["driver", "client"], default="driver")
    parser.add_argument("--name", default="driver")
    parser.add_argument("--secret-file")
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="500 sockets")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.role == "client":
        args.secret = Path(args.secret_file).read_text().split()[0]
        asyncio.run(run_client(args))
        return
    n = 500 if args.quick else args.sockets
    raise_nofile()
    out = print
    with tempfile.TemporaryDirectory(prefix="bench-standalone-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            url = bench.app.ready["http"].replace("http://", "ws://") + "/socket"
            plain = jwt_rate = 0.0
            for last in [False] * (ROUNDS - 1) + [True]:  # alternately; the best of each
                plain = max(plain, bench.connect(url, n, "plain", "friends:bench"))
                bench.close()
                jwt_rate = max(jwt_rate, bench.connect(bench.b.ready["websocket"], n, "jwt", TOPIC))
                if not last:
                    bench.close()
            time.sleep(0.5)
            cross = bench.end_to_end(bench.a, n, 1)
            local = bench.end_to_end(bench.b, n, 100)
            bench.close()
        finally:
            bench.stop()
    out(f"## Standalone node: {n:,} sockets on node b ({args.clients} client processes)")
    out()
    out("| connect + join | per second | ratio |")
    out("|---|---|---|")
    out(f"| Endpoint, plain-string token (tests/channels_app.py) | {plain:,.0f} | 1.00 |")
    ratio = jwt_rate / plain
    out(f"| standalone node, HS256 JWT, built-in channel | {jwt_rate:,.0f} | {ratio:.2f} |")
    out()
    out("| POST /api/broadcast at | p50 ms | p99 ms | last socket ms (median) | max ms |")
    out("|---|---|---|---|---|")
    for label, r in (("node b (the sockets' node)", local), ("node a (one cluster hop)", cross)):
        out(f"| {label} | {r['p50']:.1f} | {r['p99']:.1f} | {r['last']:.1f} | {r['max']:.1f} |")
    out()
    out(f"cluster hop: last socket {cross['last'] / local['last']:.2f}x the local broadcast's")


if __name__ == "__main__":
    main()
