"""tracker_zmq.channels under many websockets, against a plain ``websockets`` server (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_channels.py [--quick]
[--sizes 1000,5000,10000] [--storm 1000] [--storm-windows 0,0.2] [--profile]``. One
server process (this script with ``--role server``) and ``--clients`` client processes
(``--role client``), all on 127.0.0.1, each driven with JSON lines over stdin/stdout
(:class:`tests.support.proc.CommandNode`). Every process raises its soft open-file limit
to its hard one. Times are ``time.monotonic()`` (CLOCK_MONOTONIC on Linux, system-wide:
stamps taken in different processes compare directly). The clients are the
``websockets`` library's asyncio client speaking Phoenix's V2 protocol, without
permessage-deflate (with it, every socket compresses each frame itself: no shared
encode; see docs/benchmarks.md), many connections per process, each sending a heartbeat
every 25 s.

* **Fan-out**: N sockets joined to one topic (no presences). The server stamps the time
  just before one broadcast; every client stamps each socket's receipt. Five broadcasts,
  0.3 s apart, once all sockets got the previous one; p50 and p99 over all N x 5
  receipts, ``all``: the median over the broadcasts of the time until the last socket had
  it, and ``max``. ``encodes``: ``Endpoint.stats()["encodes"]`` per broadcast.
* **Floor**: the same client processes against a plain ``websockets.asyncio.server``
  that answers joins and heartbeats with an ok reply and sends one pre-encoded frame with
  ``websockets.broadcast()``: what a websocket fan-out costs in Python, without channels.
* **Memory**: the server's RSS (``VmRSS`` after ``gc.collect()``) once the N sockets
  joined, minus its RSS before the first connection, divided by N. For the endpoint under
  uvicorn with each of its websocket implementations (``websockets-sansio``, the legacy
  ``websockets``, ``wsproto`` when installed), and for the plain server.
* **Joins per second**: N sockets connected and joined (the websocket handshake, Socket
  connect, phx_join and its reply), 200 at a time per client process; N over the time from
  the first connect to the last reply.
* **Storm**: N sockets joined to one room (no presences) join it again all at once,
  each tracking its user (a rejoin: Phoenix's reconnect after a deploy). Every socket must
  then see all N users, each with the new join's meta, applying what it gets as
  phoenix.js's Presence does. Frames per socket: the ``presence_diff`` frames a socket got;
  the server's CPU time (user + system, /proc/PID/stat) and the wall time from the rejoins
  to the last socket's convergence; coalescing off (Phoenix's behaviour) and on
  (``coalesce_diffs``).
* ``--profile``: tracemalloc in the server over the connection and join of 2,000 sockets:
  the top allocation sites per socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support

TOPIC = "room:bench"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CONCURRENCY = 200  # connections being opened at once, per client process
HEARTBEAT = 25.0
BROADCASTS = 5


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss() -> int:
    """This process's resident set size in bytes, after a full collection."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# ----------------------------------------------------------------------- server role


async def run_server(args: argparse.Namespace) -> None:
    from tests.support.node import serve_commands

    raise_nofile()
    base = rss()
    state: dict[str, Any] = {"base": base}
    payload = {"seq": 0, "body": "x" * 100}
    commands: dict[str, Any] = {
        "rss": lambda cmd: {"rss": rss(), "base": state["base"]},
        "pid": lambda cmd: {"pid": os.getpid()},
    }
    if args.profile:
        import tracemalloc

        tracemalloc.start(4)

        def mark(cmd: dict[str, Any]) -> dict[str, Any]:
            gc.collect()
            state["snapshot"] = tracemalloc.take_snapshot()
            return {"ok": True}

        def top(cmd: dict[str, Any]) -> list[Any]:
            gc.collect()
            now = tracemalloc.take_snapshot()
            key = cmd.get("key", "traceback")
            stats = now.compare_to(state["snapshot"], key)
            out = [{"total": sum(s.size_diff for s in stats)}]
            for stat in stats[: cmd.get("n", 12)]:
                frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback]
                if key == "lineno":
                    frames = [f"{Path(stat.traceback[0].filename).parent.name}/{frames[0]}"]
                if key == "filename":
                    frames = [f"{Path(stat.traceback[0].filename).parent.name}/{frames[0]}"]
                out.append({"bytes": stat.size_diff, "count": stat.count_diff, "at": frames})
            return out

        commands |= {"mark": mark, "top": top}

    if args.kind == "plain":
        from websockets.asyncio.server import ServerConnection, broadcast, serve

        conns: set[ServerConnection] = set()

        async def handler(ws: ServerConnection) -> None:
            conns.add(ws)
            try:
                async for data in ws:
                    join_ref, ref, topic, _, _ = json.loads(data)
                    ok = {"status": "ok", "response": {}}
                    await ws.send(json.dumps([join_ref, ref, topic, "phx_reply", ok]))
            finally:
                conns.discard(ws)

        def plain_broadcast(cmd: dict[str, Any]) -> dict[str, Any]:
            frame = json.dumps([None, None, TOPIC, "bench", {**payload, "seq": cmd["seq"]}])
            t0 = time.monotonic()
            broadcast(conns, frame)
            return {"t0": t0}

        commands |= {
            "broadcast": plain_broadcast,
            "stats": lambda cmd: {"sockets": len(conns), "encodes": 0},
        }
        async with serve(handler, "127.0.0.1", 0, compression=None, backlog=4096) as server:
            port = server.sockets[0].getsockname()[1]
            ready = {"ready": args.name, "endpoint": f"ws://127.0.0.1:{port}/websocket"}
            await serve_commands(ready, commands)
        return

    import uvicorn

    from pubsub_zmq import PubSub
    from tracker_zmq import Presence
    from tracker_zmq.channels import Channel, Endpoint, Socket

    class BenchSocket(Socket):
        async def connect(self, params: dict[str, str], info: dict[str, Any]) -> None:
            self.assigns["user"] = params.get("user", "anonymous")

    class Room(Channel):
        async def join(self, topic: str, join_payload: dict[str, Any]) -> None:
            if join_payload.get("track"):
                self.track(self.socket.assigns["user"], {"gen": join_payload["gen"]})
                self.push("presence_state", self.presence.list(topic))

    async with (
        PubSub(args.name, bind="tcp://127.0.0.1:0") as pubsub,
        Presence(pubsub) as presence,
    ):
        options: dict[str, Any] = {"max_buffered_frames": 1 << 20}
        if args.coalesce:
            options["coalesce_diffs"] = args.coalesce
        endpoint = Endpoint(presence, socket=BenchSocket, channels={"room:*": Room}, **options)

        def endpoint_broadcast(cmd: dict[str, Any]) -> dict[str, Any]:
            message = {"event": "bench", "payload": {**payload, "seq": cmd["seq"]}}
            t0 = time.monotonic()
            pubsub.broadcast(TOPIC, message)
            return {"t0": t0}

        commands |= {"broadcast": endpoint_broadcast, "stats": lambda cmd: endpoint.stats()}
        config = uvicorn.Config(
            endpoint,
            host="127.0.0.1",
            port=0,
            ws=args.ws,
            ws_per_message_deflate=False,
            lifespan="off",
            log_level="warning",
            backlog=4096,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        ready = {"ready": args.name, "endpoint": f"ws://127.0.0.1:{port}/websocket"}
        try:
            await serve_commands(ready, commands)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 60)


# ----------------------------------------------------------------------- client role


class Conn:
    """One client socket: its receipt stamps and its view of the room's presence."""

    __slots__ = ("buffered", "diffs", "done", "join_ref", "pending", "seen", "state", "ws")

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: dict[int, float] = {}
        self.state: dict[str, list[dict[str, Any]]] = {}
        self.pending = False
        self.buffered: list[dict[str, Any]] = []
        self.join_ref = "1"
        self.diffs = 0
        self.done: float | None = None


class Client:
    """The client role: many sockets in one process."""

    def __init__(self) -> None:
        self.conns: list[Conn] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.target: tuple[int, int] | None = None  # (users expected, gen)

    def check(self, conn: Conn) -> None:
        if self.target is None or conn.done is not None:
            return
        n, gen = self.target
        state = conn.state
        if len(state) == n and all(len(m) == 1 and m[0]["gen"] == gen for m in state.values()):
            conn.done = time.monotonic()

    def apply(self, conn: Conn, diff: dict[str, Any]) -> None:
        # phoenix.js's Presence.syncDiff, on metas lists
        state = conn.state
        for key, entry in diff["joins"].items():
            refs = {m["phx_ref"] for m in entry["metas"]}
            kept = [m for m in state.get(key, ()) if m["phx_ref"] not in refs]
            state[key] = kept + entry["metas"]
        for key, entry in diff["leaves"].items():
            if key in state:
                refs = {m["phx_ref"] for m in entry["metas"]}
                metas = [m for m in state[key] if m["phx_ref"] not in refs]
                if metas:
                    state[key] = metas
                else:
                    del state[key]

    async def read(self, conn: Conn) -> None:
        with contextlib.suppress(Exception):
            async for data in conn.ws:
                if '"bench"' in data:
                    now = time.monotonic()
                    conn.seen[json.loads(data)[4]["seq"]] = now
                elif '"presence_diff"' in data:
                    conn.diffs += 1
                    diff = json.loads(data)[4]
                    if conn.pending:
                        conn.buffered.append(diff)
                    else:
                        self.apply(conn, diff)
                        self.check(conn)
                elif '"presence_state"' in data:
                    frame = json.loads(data)
                    if frame[0] == conn.join_ref:
                        conn.state = {k: v["metas"] for k, v in frame[4].items()}
                        conn.pending = False
                        for diff in conn.buffered:
                            self.apply(conn, diff)
                        conn.buffered.clear()
                        self.check(conn)

    async def heartbeat(self) -> None:
        ref = 0
        while True:
            await asyncio.sleep(HEARTBEAT)
            for conn in list(self.conns):
                ref += 1
                with contextlib.suppress(Exception):
                    await conn.ws.send(json.dumps([None, f"h{ref}", "phoenix", "heartbeat", {}]))

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        url, first, n = cmd["url"], cmd["first"], cmd["n"]
        gate = asyncio.Semaphore(CONCURRENCY)
        failures: list[str] = []

        async def one(i: int) -> None:
            async with gate:
                try:
                    ws = await connect(
                        f"{url}?vsn=2.0.0&user=u{i}",
                        compression=None,
                        open_timeout=60,
                        max_size=None,
                    )
                    await ws.send(json.dumps(["1", "1", TOPIC, "phx_join", {}]))
                    await ws.recv()  # the join's reply
                except Exception as exc:
                    failures.append(repr(exc))
                    return
            conn = Conn(ws)
            self.conns.append(conn)
            self.tasks.append(asyncio.create_task(self.read(conn)))

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(first, first + n)))
        return {"t0": t0, "t1": time.monotonic(), "failures": failures[:3], "failed": len(failures)}

    def seen(self, cmd: dict[str, Any]) -> dict[str, Any]:
        seq = cmd["seq"]
        stamps = [c.seen[seq] for c in self.conns if seq in c.seen]
        return {"n": len(self.conns), "stamps": stamps if len(stamps) == len(self.conns) else []}

    async def rejoin(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.target = (cmd["users"], cmd["gen"])
        t0 = time.monotonic()
        for k, conn in enumerate(self.conns):
            conn.join_ref = f"g{cmd['gen']}"
            conn.pending, conn.diffs, conn.done = True, 0, None
            conn.buffered.clear()
            join = [
                conn.join_ref,
                conn.join_ref,
                TOPIC,
                "phx_join",
                {"track": True, "gen": cmd["gen"]},
            ]
            await conn.ws.send(json.dumps(join))
            if k % 50 == 49:
                await asyncio.sleep(0)  # let the reads go on
        return {"t0": t0}

    def storm(self, cmd: dict[str, Any]) -> dict[str, Any]:
        done = [c.done for c in self.conns if c.done is not None]
        closed = [c.ws.close_code for c in self.conns if c.done is None and c.ws.close_code]
        return {
            "n": len(self.conns),
            "done": len(done),
            "closed": closed,
            "last": max(done) if done else None,
            "diffs": [c.diffs for c in self.conns],
        }

    async def close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        async def one(conn: Conn) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await conn.ws.close()

        for i in range(0, len(self.conns), 500):
            await asyncio.gather(*(one(c) for c in self.conns[i : i + 500]))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.conns.clear()
        self.tasks.clear()
        self.target = None
        return {"ok": True}


async def run_client(args: argparse.Namespace) -> None:
    from tests.support.node import serve_commands

    raise_nofile()
    client = Client()
    beat = asyncio.create_task(client.heartbeat())
    commands = {
        "connect": client.connect,
        "seen": client.seen,
        "rejoin": client.rejoin,
        "storm": client.storm,
        "close": client.close,
    }
    try:
        await serve_commands({"ready": args.name, "endpoint": ""}, commands)
    finally:
        beat.cancel()
        await client.close({})


# ----------------------------------------------------------------------- the driver


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    """Starts the processes and runs the measurements."""

    def __init__(self, args: argparse.Namespace) -> None:
        from tests.support.proc import CommandNode

        self.args = args
        self.node = CommandNode
        self.clients = [self.spawn(f"client{i}", "--role", "client") for i in range(args.clients)]

    def spawn(self, name: str, *argv: str) -> Any:
        stderr = None if self.args.verbose else open(os.devnull, "w")  # noqa: SIM115
        return self.node(Path(__file__), name, *argv, strict=False, stderr=stderr, ready_timeout=60)

    def stop(self) -> None:
        for client in self.clients:
            client.stop()

    @contextlib.contextmanager
    def server(
        self, kind: str, ws: str = "websockets-sansio", coalesce: float = 0.0, profile: bool = False
    ) -> Any:
        argv = ["--role", "server", "--kind", kind, "--ws", ws, "--coalesce", str(coalesce)]
        server = self.spawn(f"server-{kind}", *argv, *(["--profile"] if profile else []))
        try:
            yield server
        finally:
            server.stop()

    def connect(self, url: str, n: int) -> dict[str, Any]:
        k = len(self.clients)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        first = 0
        for client, share in zip(self.clients, shares, strict=True):
            client.send("connect", url=url, first=first, n=share)
            first += share
        answers = [c.read(600) for c in self.clients]
        failed = sum(a["failed"] for a in answers)
        if failed:
            why = [f for a in answers for f in a["failures"]]
            raise RuntimeError(f"{failed} of {n} connections failed: {why}")
        elapsed = max(a["t1"] for a in answers) - min(a["t0"] for a in answers)
        return {"joins_per_s": n / elapsed}

    def close(self) -> None:
        for client in self.clients:
            client.send("close")
        for client in self.clients:
            client.read(300)

    def fanout(self, server: Any, n: int) -> dict[str, float]:
        receipts: list[float] = []
        alls: list[float] = []
        for seq in range(1, BROADCASTS + 1):
            t0 = server.call("broadcast", seq=seq)["t0"]
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
            alls.append(max(latencies))
            time.sleep(0.3)
        return {
            "p50": pct(receipts, 0.5) * 1e3,
            "p99": pct(receipts, 0.99) * 1e3,
            "all": statistics.median(alls) * 1e3,
            "max": max(alls) * 1e3,
        }

    def run_size(self, kind: str, n: int, ws: str = "websockets-sansio") -> dict[str, Any]:
        with self.server(kind, ws) as server:
            before = server.call("rss")["rss"]
            joins = self.connect(server.endpoint, n)
            time.sleep(0.5)
            after = server.call("rss")["rss"]
            encodes = server.call("stats")["encodes"]
            fan = self.fanout(server, n)
            encodes = (server.call("stats")["encodes"] - encodes) / BROADCASTS
            self.close()
        return {
            **fan,
            **joins,
            "encodes": encodes,
            "kib_per_socket": (after - before) / n / 1024,
        }

    def storm(self, n: int, coalesce: float) -> dict[str, Any]:
        with self.server("endpoint", coalesce=coalesce) as server:
            self.connect(server.endpoint, n)
            pid = server.call("pid")["pid"]
            cpu0 = cpu_of(pid)
            t0 = None
            for client in self.clients:
                client.send("rejoin", users=n, gen=1)
            for client in self.clients:
                t = client.read(60)["t0"]
                t0 = t if t0 is None else min(t0, t)
            assert t0 is not None
            deadline = time.monotonic() + 600
            while True:
                answers = [c.call("storm", timeout=60) for c in self.clients]
                if sum(a["done"] for a in answers) == n:
                    break
                closed = [code for a in answers for code in a["closed"]]
                if closed:
                    codes = {code: closed.count(code) for code in set(closed)}
                    stats = server.call("stats")
                    raise RuntimeError(
                        f"{len(closed)} sockets were closed before they converged (close "
                        f"codes {codes}; idle_closes {stats['idle_closes']}, overflow_closes "
                        f"{stats['overflow_closes']}, server CPU {cpu_of(pid) - cpu0:.0f} s)"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError("the storm did not converge in 600 s")
                time.sleep(0.2)
            cpu = cpu_of(pid) - cpu0
            last = max(a["last"] for a in answers)
            diffs = [d for a in answers for d in a["diffs"]]
            stats = server.call("stats")
            self.close()
        return {
            "frames_mean": statistics.mean(diffs),
            "frames_max": max(diffs),
            "cpu_s": cpu,
            "wall_s": last - t0,
            "coalesced": stats["coalesced_diffs"],
            "overflow_closes": stats["overflow_closes"],
        }

    def profile(self, n: int) -> list[Any]:
        with self.server("endpoint", profile=True) as server:
            server.call("mark", timeout=60)
            self.connect(server.endpoint, n)
            time.sleep(0.5)
            top: list[Any] = server.call("top", timeout=120, n=15)
            files: list[Any] = server.call("top", timeout=120, n=12, key="filename")
            self.close()
        return top + files


def print_profile(bench: Bench) -> None:
    """The tracemalloc run: top allocation sites, then the total and the top files."""
    out = print
    out()
    out("## tracemalloc: the server's allocations per socket, 2,000 sockets joined")
    out()
    for stat in bench.profile(2000):
        if "total" in stat:
            out(f"- total: {stat['total'] / 2000:.0f} B/socket")
            continue
        per = f"{stat['bytes'] / 2000:.0f} B/socket, {stat['count'] / 2000:.1f} blocks"
        out(f"- {per}: {' > '.join(reversed(stat['at']))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["driver", "server", "client"], default="driver")
    parser.add_argument("--name", default="driver")
    parser.add_argument("--kind", choices=["endpoint", "plain"], default="endpoint")
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--coalesce", type=float, default=0.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-only", action="store_true")
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--memory-size", type=int, default=5000)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--storm-windows", default="0,0.2", help="coalesce_diffs values")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--ws-impls", default="websockets-sansio,websockets,wsproto")
    parser.add_argument("--quick", action="store_true", help="1k sockets, a 300-socket storm")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--charts", action="store_true", help="render the fan-out chart")
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(run_server(args))
        return
    if args.role == "client":
        asyncio.run(run_client(args))
        return
    if args.quick:
        args.sizes, args.memory_size, args.storm = "1000", 1000, 300
    raise_nofile()
    bench = Bench(args)
    out = print
    try:
        if args.profile_only:
            print_profile(bench)
            return
        sizes = [int(s) for s in args.sizes.split(",") if s]
        out(f"## Channels: fan-out to N sockets of one topic ({args.clients} client processes)")
        out()
        out("| N | server | p50 ms | p99 ms | all ms | max ms | encodes | KiB/socket | joins/s |")
        out("|---|---|---|---|---|---|---|---|---|")
        fanout_rows = []  # for the chart (bench/charts.py)
        for n in sizes:
            for kind, label in (
                ("plain", "websockets.broadcast (floor)"),
                ("endpoint", "Endpoint"),
            ):
                r = bench.run_size(kind, n)
                fanout_rows.append({"n": n, "kind": kind, **r})
                out(
                    f"| {n:,} | {label} | {r['p50']:.1f} | {r['p99']:.1f} | {r['all']:.1f} "
                    f"| {r['max']:.1f} | {r['encodes']:g} | {r['kib_per_socket']:.1f} "
                    f"| {r['joins_per_s']:,.0f} |"
                )
            sys.stdout.flush()
        if args.charts or os.environ.get("BENCH_CHARTS"):
            import charts  # bench/charts.py: docs/assets/channels-fanout.png

            charts.render_fanout(fanout_rows, time.strftime("%Y-%m-%d"))
        out()
        out(
            f"## Memory per idle socket, {args.memory_size:,} sockets, by uvicorn ws implementation"
        )
        out()
        out("| ws | KiB/socket | p99 ms | joins/s |")
        out("|---|---|---|---|")
        impls = args.ws_impls.split(",")
        try:
            import wsproto  # noqa: F401
        except ImportError:  # uvicorn's wsproto implementation needs the package
            impls = [ws for ws in impls if ws != "wsproto"]
        for ws in impls if args.memory_size else []:
            r = bench.run_size("endpoint", args.memory_size, ws)
            out(f"| {ws} | {r['kib_per_socket']:.1f} | {r['p99']:.1f} | {r['joins_per_s']:,.0f} |")
            sys.stdout.flush()
        out()
        out(f"## Storm: {args.storm:,} sockets of one room rejoin at once, each tracking its user")
        out()
        out(
            "| coalesce_diffs | diff frames/socket (mean, max) | server CPU s | converged after s |"
        )
        out("|---|---|---|---|")
        windows = [float(w) for w in args.storm_windows.split(",")] if args.storm else []
        for window in windows:
            r = bench.storm(args.storm, window)
            label = "0 (Phoenix)" if not window else f"{window:g} s"
            out(
                f"| {label} | {r['frames_mean']:.0f}, {r['frames_max']} | {r['cpu_s']:.1f} "
                f"| {r['wall_s']:.1f} |"
            )
            sys.stdout.flush()
        if args.profile:
            print_profile(bench)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
