"""Redis against pubsub-zmq and the Tracker, as Python users would run it (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_redis.py [--quick]``. It needs
a ``redis-server`` on the PATH (Debian: ``apt-get install redis-server``) and redis-py
(``redis`` in requirements-dev.txt); where either is missing it prints why and exits 0.
The bench starts its own redis-server on a free loopback port, in a temporary directory,
without persistence and without the pub/sub output-buffer limit (Redis's default, 32 MB
hard or 8 MB for 60 s, disconnects a subscriber that lags: the runs here must lose
nothing), and stops it at the end.

* **Broadcast**: one publisher process, 1 or 10 subscriber processes, payloads of 64 B
  and 1 KiB, for ``--seconds``. Redis: redis-py's asyncio client (what broadcaster,
  channels_redis and python-socketio's Redis manager run on), ``await publish`` per
  message, or 100 publishes per pipeline; subscribers read with ``pubsub.listen()``.
  pubsub-zmq: ``PubSub.broadcast`` (batched per loop turn), or ``await flush()`` after
  each message, to nodes that read with ``async for``. The figure is messages per
  second that reached the slowest subscriber (its count over the time from its first
  message to its last), and the sum over subscribers.
* **Presence**: a Redis presence as a Python developer would write it: a set per topic
  (``SADD presence:{topic} id``), a key per connection with a TTL
  (``SET presence:conn:{id} json EX ttl``, rewritten with the set entry by a heartbeat
  every ttl/3), and a pub/sub channel per topic for joins and leaves; ``list`` is
  ``SMEMBERS`` then ``MGET``, skipping expired keys. Against the Tracker (PubSub +
  Tracker node processes, broadcast_period 0.05 s, down_period 1.0 s; the Redis TTL is
  the same 1.0 s): list latency (in-process), join-to-visible time between two
  processes, and what each does when its server or a node is SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from tests.support.proc import CommandNode, free_port, wait_until

HERE = Path(__file__).resolve()
TRACKER_NODE = HERE.with_name("tracker_bench_node.py")
PERIOD = 0.05  # the tracker bench node's broadcast_period
DOWN = 1.0  # its down_period (the default for that period)
TTL = DOWN  # the Redis presence's key TTL: the same budget to notice a dead node
CHANNEL = "bench"


# ------------------------------------------------------------------ redis-server


class RedisServer:
    """A redis-server of our own on a free loopback port, in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self.dir,
                "--save", "",
                "--appendonly", "no",
                "--client-output-buffer-limit", "pubsub 0 0 0",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_until(lambda: _ping(client), 10.0, "redis-server to answer PING")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


# -------------------------------------------------------------------- broadcast


def redis_sub(port: int, ready: Any, out: Any) -> None:
    import redis.asyncio as aredis

    async def main() -> None:
        client = aredis.Redis(port=port)
        pubsub = client.pubsub()
        await pubsub.subscribe(CHANNEL)
        ready.put(1)
        count, first = 0, 0.0
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            if message["data"] == b"END":
                break
            if count == 0:
                first = time.perf_counter()
            count += 1
        out.put((count, time.perf_counter() - first))
        await pubsub.aclose()
        await client.aclose()

    asyncio.run(main())


def redis_pub(port: int, size: int, seconds: float, pipeline: int, subs: int, done: Any) -> None:
    import redis.asyncio as aredis

    async def main() -> None:
        client = aredis.Redis(port=port)
        while (await client.pubsub_numsub(CHANNEL))[0][1] < subs:  # noqa: ASYNC110 (polled)
            await asyncio.sleep(0.01)
        payload = b"x" * size
        deadline = time.perf_counter() + seconds
        if pipeline == 1:
            publish = client.publish
            while time.perf_counter() < deadline:
                for _ in range(100):
                    await publish(CHANNEL, payload)
        else:
            while time.perf_counter() < deadline:
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(pipeline):
                        pipe.publish(CHANNEL, payload)
                    await pipe.execute()
        while not done.is_set():
            await client.publish(CHANNEL, b"END")
            await asyncio.sleep(0.01)
        await client.aclose()

    asyncio.run(main())


def zmq_sub(port: int, pub_port: int, ready: Any, out: Any) -> None:
    from pubsub_zmq import PubSub

    # started beside their seed, they may greet it before it listens: not worth a warning
    logging.getLogger("pubsub_zmq").setLevel(logging.ERROR)

    async def main() -> None:
        async with PubSub(
            f"sub-{port}",
            f"tcp://127.0.0.1:{port}",
            [f"tcp://127.0.0.1:{pub_port}"],
            recv_hwm=0,
            send_hwm=0,
            queue_size=10_000_000,
        ) as ps:
            sub = ps.subscribe(CHANNEL)
            ready.put(1)
            count, first = 0, 0.0
            async for message in sub:
                if message == "END":
                    break
                if count == 0:
                    first = time.perf_counter()
                count += 1
            out.put((count, time.perf_counter() - first))

    asyncio.run(main())


def zmq_pub(port: int, size: int, seconds: float, awaited: bool, subs: int, done: Any) -> None:
    from pubsub_zmq import PubSub

    async def main() -> None:
        async with PubSub("pub", f"tcp://127.0.0.1:{port}", send_hwm=0, recv_hwm=0) as ps:
            while ps.remote_subscribers(CHANNEL) < subs:  # noqa: ASYNC110 (a polled counter)
                await asyncio.sleep(0.01)
            message = "x" * (size - 2)  # JSON: the string and its two quotes
            broadcast, flush = ps.broadcast, ps.flush
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                if awaited:
                    for _ in range(100):
                        broadcast(CHANNEL, message)
                        await flush()
                else:
                    for _ in range(4096):
                        broadcast(CHANNEL, message)
                    await flush()
            while not done.is_set():
                broadcast(CHANNEL, "END")
                await flush()
                await asyncio.sleep(0.01)

    asyncio.run(main())


def broadcast_case(kind: str, size: int, subs: int, seconds: float, port: int) -> dict[str, float]:
    """One case: messages/s reaching the slowest subscriber, and summed over them."""
    ctx = mp.get_context("spawn")
    out, ready, done = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    if kind.startswith("redis"):
        pipeline = 100 if kind == "redis-pipelined" else 1
        for _ in range(subs):
            procs.append(ctx.Process(target=redis_sub, args=(port, ready, out)))
        pub = ctx.Process(target=redis_pub, args=(port, size, seconds, pipeline, subs, done))
    else:
        pub_port = free_port()
        for _ in range(subs):
            procs.append(ctx.Process(target=zmq_sub, args=(free_port(), pub_port, ready, out)))
        awaited = kind == "zmq-awaited"
        pub = ctx.Process(target=zmq_pub, args=(pub_port, size, seconds, awaited, subs, done))
    pub.start()  # first: it is the subscribers' seed; it waits for them to subscribe
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        results = [out.get(timeout=seconds * 20 + 60) for _ in procs]
    finally:
        done.set()
        for proc in [pub, *procs]:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    rates = [count / elapsed for count, elapsed in results if elapsed > 0]
    return {"slowest": min(rates), "sum": sum(rates)}


# --------------------------------------------------------------------- presence


class RedisPresence:
    """Presence on Redis as a Python developer would write it (see the module doc)."""

    def __init__(self, client: Any, node: str, ttl: float) -> None:
        self.client = client
        self.node = node
        self.ttl_ms = int(ttl * 1000)
        self.own: dict[str, tuple[str, bytes]] = {}  # conn id: (topic, record)
        self.errors = 0

    async def join(self, topic: str, key: str, meta: dict[str, Any]) -> str:
        conn = f"{self.node}:{uuid.uuid4().hex[:12]}"
        record = json.dumps({"key": key, "meta": meta, "conn": conn}).encode()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(f"presence:{topic}", conn)
            pipe.set(f"presence:conn:{conn}", record, px=self.ttl_ms)
            pipe.publish(f"presence:{topic}:changes", b'{"join":' + record + b"}")
            await pipe.execute()
        self.own[conn] = (topic, record)
        return conn

    async def leave(self, conn: str) -> None:
        topic, record = self.own.pop(conn)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.srem(f"presence:{topic}", conn)
            pipe.delete(f"presence:conn:{conn}")
            pipe.publish(f"presence:{topic}:changes", b'{"leave":' + record + b"}")
            await pipe.execute()

    async def list(self, topic: str) -> list[dict[str, Any]]:
        conns = await self.client.smembers(f"presence:{topic}")
        if not conns:
            return []
        conns = sorted(conns)
        records = await self.client.mget([b"presence:conn:" + c for c in conns])
        alive = [json.loads(r) for r in records if r is not None]
        stale = [c for c, r in zip(conns, records, strict=True) if r is None]
        if stale:  # the expired: their node died (or the key was lost)
            await self.client.srem(f"presence:{topic}", *stale)
        return alive

    async def heartbeat(self) -> None:
        """Rewrite every own key with a fresh TTL (and its set entry: Redis may have
        restarted empty), every ttl/3."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if not self.own:
                continue
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for conn, (topic, record) in self.own.items():
                        pipe.sadd(f"presence:{topic}", conn)
                        pipe.set(f"presence:conn:{conn}", record, px=self.ttl_ms)
                    await pipe.execute()
            except Exception:
                self.errors += 1


async def presence_node(args: argparse.Namespace) -> None:
    """A Redis-presence app process, driven with JSON-line commands (CommandNode)."""
    import redis.asyncio as aredis

    from tests.support.node import serve_commands

    client = aredis.Redis(port=args.port, socket_timeout=1.0, socket_connect_timeout=0.5)
    presence = RedisPresence(client, args.name, TTL)
    events: dict[str, dict[str, dict[str, float]]] = {"join": {}, "leave": {}}
    listener = client.pubsub()
    await listener.psubscribe("presence:*:changes")

    async def listen() -> None:
        while True:
            try:
                async for message in listener.listen():
                    if message["type"] != "pmessage":
                        continue
                    now = time.monotonic()
                    topic = message["channel"].decode().split(":")[1]
                    body = json.loads(message["data"])
                    for kind in ("join", "leave"):
                        if kind in body:
                            events[kind].setdefault(topic, {}).setdefault(body[kind]["key"], now)
            except Exception:
                await asyncio.sleep(0.1)  # the server is gone: try again
                with contextlib.suppress(Exception):
                    await listener.psubscribe("presence:*:changes")

    async def series(cmd: dict[str, Any]) -> dict[str, float]:
        times = {}
        for key in cmd["keys"]:
            await asyncio.sleep(cmd["gap"] * (hash(key) % 100) / 100)
            times[key] = time.monotonic()
            await presence.join(cmd["topic"], key, {})
        return times

    async def fill(cmd: dict[str, Any]) -> dict[str, float]:
        t = time.monotonic()
        for i in range(cmd["n"]):
            await presence.join(cmd["topic"], f"k{i}", {"i": i})
        return {"seconds": time.monotonic() - t}

    async def count(cmd: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"count": len(await presence.list(cmd["topic"]))}
        except Exception as exc:
            return {"failed": type(exc).__name__}

    async def try_join(cmd: dict[str, Any]) -> dict[str, Any]:
        try:
            await presence.join(cmd["topic"], cmd["key"], {})
            return {"ok": True}
        except Exception as exc:
            return {"failed": type(exc).__name__}

    tasks = [asyncio.create_task(listen()), asyncio.create_task(presence.heartbeat())]
    try:
        await serve_commands(
            {"ready": args.name, "endpoint": ""},
            {
                "series": series,
                "fill": fill,
                "count": count,
                "try_join": try_join,
                "joins": lambda c: events["join"].get(c["topic"], {}),
                "leaves": lambda c: events["leave"].get(c["topic"], {}),
            },
        )
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await listener.aclose()
        with contextlib.suppress(Exception):
            await client.aclose()


class Node(CommandNode):
    def __init__(self, script: Path, name: str, *args: str) -> None:
        super().__init__(
            script, name, *args, ready_timeout=30.0, stderr=subprocess.DEVNULL, strict=False
        )

    def call(self, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
        return super().call(cmd, timeout, **args)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def list_latency(port: int, sizes: list[int]) -> list[dict[str, Any]]:
    """µs per list of a topic of n presences: Redis (SMEMBERS + MGET) and Tracker.list."""
    import redis.asyncio as aredis

    from pubsub_zmq import PubSub
    from tracker_zmq import Tracker

    async def main() -> list[dict[str, Any]]:
        rows = []
        client = aredis.Redis(port=port)
        presence = RedisPresence(client, "lister", 3600.0)
        async with (
            PubSub("lister", f"tcp://127.0.0.1:{free_port()}") as ps,
            Tracker(ps, "bench", broadcast_period=PERIOD) as tracker,
        ):
            for n in sizes:
                topic = f"list{n}"
                async with client.pipeline(transaction=False) as pipe:
                    for i in range(n):
                        conn = f"lister:{topic}:{i}"
                        record = json.dumps({"key": f"k{i}", "meta": {"i": i}, "conn": conn})
                        pipe.sadd(f"presence:{topic}", conn)
                        pipe.set(f"presence:conn:{conn}", record)
                    await pipe.execute()
                for i in range(n):
                    tracker.track(f"owner{i}", topic, f"k{i}", {"i": i})
                reps = max(5, min(200, 200_000 // n))
                redis_times, tracker_times = [], []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    got = await presence.list(topic)
                    redis_times.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    listed = tracker.list(topic)
                    tracker_times.append(time.perf_counter() - t0)
                assert len(got) == len(listed) == n, (len(got), len(listed))
                rows.append(
                    {
                        "n": n,
                        "redis_ms": statistics.median(redis_times) * 1e3,
                        "tracker_ms": statistics.median(tracker_times) * 1e3,
                    }
                )
        await client.aclose()
        return rows

    return asyncio.run(main())


def join_to_visible(server: RedisServer, keys: int) -> dict[str, list[float]]:
    """ms from a join on one process to its event on another: Redis and Tracker."""
    result = {}
    a = Node(HERE, "ra", "--role", "presence", "--port", str(server.port))
    b = Node(HERE, "rb", "--role", "presence", "--port", str(server.port))
    try:
        result["redis"] = visible(a, b, keys)
    finally:
        a.stop()
        b.stop()
    ta = Node(TRACKER_NODE, "ta")
    tb = Node(TRACKER_NODE, "tb", "--peer", ta.ready["endpoint"])
    try:
        ta.call("track", topic="hello", key="ta")
        tb.call("track", topic="hello", key="tb")
        wait_until(lambda: len(ta.call("joins", topic="hello")) == 2, 20.0, "trackers up")
        result["tracker"] = visible(ta, tb, keys)
    finally:
        ta.stop()
        tb.stop()
    return result


def visible(a: Node, b: Node, keys: int) -> list[float]:
    names = [f"v{i}" for i in range(keys)]
    tracked = a.call("series", timeout=120.0, topic="vis", keys=names, gap=0.02)
    wait_until(lambda: len(b.call("joins", topic="vis")) == keys, 20.0, "every join seen")
    seen = b.call("joins", topic="vis")
    return [(seen[k] - tracked[k]) * 1e3 for k in names]


def kills(server: RedisServer, presences: int) -> dict[str, Any]:
    """What happens when Redis, a Redis-presence app, or a Tracker node is SIGKILLed."""
    out: dict[str, Any] = {}
    # 1. Redis killed: every node's reads and writes fail until it is back.
    a = Node(HERE, "ka", "--role", "presence", "--port", str(server.port))
    b = Node(HERE, "kb", "--role", "presence", "--port", str(server.port))
    try:
        a.call("fill", topic="k", n=presences)
        assert b.call("count", topic="k")["count"] == presences
        server.kill()
        killed = time.monotonic()
        failed = ok = 0
        slowest = 0.0
        while time.monotonic() - killed < 2.0:
            for call in (
                lambda: b.call("count", topic="k"),
                lambda: a.call("try_join", topic="k", key="x"),
            ):
                t0 = time.monotonic()
                reply = call()
                slowest = max(slowest, time.monotonic() - t0)
                if "failed" in reply:
                    failed += 1
                else:
                    ok += 1
        out["redis_killed"] = {
            "ok": ok,
            "failed": failed,
            "reason": reply.get("failed"),
            "slowest_call_s": slowest,
        }
        server.start()  # empty: no persistence, as usual for a presence store
        back = time.monotonic()
        first = b.call("count", topic="k")
        wait_until(
            lambda: b.call("count", topic="k").get("count") == presences,
            20.0,
            "the heartbeats to write the presences back",
        )
        out["redis_restarted"] = {
            "count_at_restart": first.get("count"),
            "restored_after_s": time.monotonic() - back,
        }
        # 2. An app process killed: its keys expire after the TTL; nobody publishes leaves.
        before = len(b.call("leaves", topic="k"))
        a.kill()
        killed = time.monotonic()
        wait_until(lambda: b.call("count", topic="k").get("count") == 0, 30.0, "keys to expire")
        out["redis_node_killed"] = {
            "gone_from_list_s": time.monotonic() - killed,
            "leave_events": len(b.call("leaves", topic="k")) - before,
        }
    finally:
        a.stop()
        b.stop()
    # 3. A Tracker node killed: the others keep working; its presences leave after down.
    ta = Node(TRACKER_NODE, "kta")
    tb = Node(TRACKER_NODE, "ktb", "--peer", ta.ready["endpoint"])
    try:
        ta.call("fill", topic="k", n=presences)
        wait_until(lambda: tb.call("count", topic="k")["count"] == presences, 30.0, "fill seen")
        ta.kill()
        killed = time.monotonic()
        ok = 0
        while tb.call("count", topic="k")["count"] > 0:
            ok += 1
            tb.call("track", topic="alive", key=f"x{ok}")
            if time.monotonic() - killed > 30:
                raise RuntimeError("the killed node's presences did not leave")
        gone = time.monotonic() - killed
        leaves = tb.call("leaves", topic="k")
        out["tracker_node_killed"] = {
            "gone_s": gone,
            "leave_events": len(leaves),
            "ops_ok_meanwhile": 2 * ok,
        }
    finally:
        ta.stop()
        tb.stop()
    return out


# ------------------------------------------------------------------------- main


def reason_to_skip() -> str | None:
    if shutil.which("redis-server") is None:
        return (
            "redis-server is not installed (Debian: apt-get install redis-server); "
            "the Redis comparison is skipped"
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install -r requirements-dev.txt); skipped"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="driver", choices=["driver", "presence"])
    parser.add_argument("--name", default="driver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 s per case, fewer sizes")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--parts", default="broadcast,presence", help="which parts to run")
    args = parser.parse_args()
    if args.role == "presence":
        asyncio.run(presence_node(args))
        return 0
    reason = reason_to_skip()
    if reason:
        print(f"bench_redis: {reason}")
        return 0
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    import redis

    print(
        f"bench_redis: {' '.join(version[:3])}, redis-py {redis.__version__}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
        "(a shared machine: compare within this run only)"
    )
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d")}
    server = RedisServer()
    try:
        server.start()
        if "broadcast" in args.parts:
            figures["broadcast"] = broadcasts(server, seconds)
        if "presence" in args.parts:
            figures.update(presences(server, args.quick))
    finally:
        server.close()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def broadcasts(server: RedisServer, seconds: float) -> list[dict[str, Any]]:
    print(f"\n## Broadcast: messages/s to the slowest subscriber (sum), {seconds:g} s\n")
    print("| size | subscribers | Redis await publish | Redis pipelined x100 |"
          " pubsub-zmq await flush | pubsub-zmq broadcast |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    rows = []
    for size in (64, 1024):
        for subs in (1, 10):
            cells = {}
            for kind in ("redis-awaited", "redis-pipelined", "zmq-awaited", "zmq"):
                cells[kind] = broadcast_case(kind, size, subs, seconds, server.port)
            rows.append({"size": size, "subs": subs, **cells})
            print(
                f"| {size} B | {subs} | "
                + " | ".join(f"{c['slowest']:,.0f} ({c['sum']:,.0f})" for c in cells.values())
                + " |",
                flush=True,
            )
    return rows


def presences(server: RedisServer, quick: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    sizes = [100, 1000] if quick else [100, 1000, 10_000]
    print("\n## Presence: list of a topic of n presences, median ms (in-process)\n")
    print("| n | Redis SMEMBERS + MGET | Tracker.list | ratio |")
    print("|---|---|---|---|")
    figures["list"] = list_latency(server.port, sizes)
    for row in figures["list"]:
        print(
            f"| {row['n']:,} | {row['redis_ms']:.3f} | {row['tracker_ms']:.3f} | "
            f"{row['redis_ms'] / row['tracker_ms']:.1f}x |"
        )
    keys = 100 if quick else 300
    vis = join_to_visible(server, keys)
    figures["visible"] = {k: (quantile(v, 0.5), quantile(v, 0.99)) for k, v in vis.items()}
    print(f"\n## Presence: join on one process to the event on another ({keys} joins)\n")
    print("| | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(
        f"| Redis (pipeline SADD + SET + PUBLISH) | {quantile(vis['redis'], 0.5):.2f} | "
        f"{quantile(vis['redis'], 0.99):.2f} |"
    )
    print(
        f"| Tracker, broadcast_period {PERIOD} s | {quantile(vis['tracker'], 0.5):.2f} | "
        f"{quantile(vis['tracker'], 0.99):.2f} |"
    )
    n = 1000 if quick else 10_000
    killed = kills(server, n)
    figures["kills"] = killed
    rk, rr, rn = killed["redis_killed"], killed["redis_restarted"], killed["redis_node_killed"]
    tk = killed["tracker_node_killed"]
    print(f"\n## Presence: SIGKILL ({n:,} presences on one app process or node)\n")
    print("| what is killed | what the others see |")
    print("|---|---|")
    print(
        f"| redis-server | every list and join fails for as long as it is down ({rk['failed']}"
        f" of {rk['failed'] + rk['ok']} calls made in the 2 s after the kill: {rk['reason']}, "
        f"after up to {rk['slowest_call_s']:.2f} s of redis-py's retries); restarted empty, "
        f"list shows {rr['count_at_restart']} until the heartbeats write the presences back"
        f" ({rr['restored_after_s']:.2f} s); joins and leaves published meanwhile are lost |"
    )
    print(
        f"| a Redis-presence app process | its presences leave the list when their keys "
        f"expire ({rn['gone_from_list_s']:.2f} s, TTL {TTL} s); "
        f"{rn['leave_events']} leave events: nobody publishes them |"
    )
    print(
        f"| a Tracker node | the other node keeps answering ({tk['ops_ok_meanwhile']} "
        f"list and track calls meanwhile); the killed node's presences leave after "
        f"{tk['gone_s']:.2f} s (down_period {DOWN} s), with {tk['leave_events']:,} leave "
        "events to the handlers |"
    )
    return figures


if __name__ == "__main__":
    sys.exit(main())
