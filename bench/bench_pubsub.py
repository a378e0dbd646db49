"""pubsub-zmq throughput against raw pyzmq PUB/SUB, and local fan-out (not a test).

Run with ``make bench`` or ``.venv/bin/python bench/bench_pubsub.py``. Each throughput case
runs the publisher and the subscriber in two separate processes on loopback:

* raw pyzmq: a synchronous XPUB with XPUB_NODROP (lossless: the sender waits for the
  subscriber) sends single frames of the payload size for ``--seconds``; a synchronous SUB
  counts them. This is the ceiling (see the reference notes, section A).
* pubsub-zmq: ``PubSub.broadcast`` of a string whose JSON encoding is the payload size,
  for ``--seconds``, to a node whose subscriber reads with ``async for`` through the public
  API. High-water marks are unlimited so that the run is lossless too.

Throughput is messages delivered to the subscriber divided by the time from its first to
its last message. Both cases run with CURVE off and on. Then local fan-out: the time for
one broadcast to reach 10,000 local subscriptions (queued, and consumed by callbacks).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the root, for tests.support
from pubsub_zmq import PubSub, generate_keypair
from tests.support.proc import free_port

END = b"END"


# -- raw pyzmq -------------------------------------------------------------------------


def raw_sub(port: int, keys: dict[str, str] | None, out: Any) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 0
    if keys:
        sub.curve_secretkey = keys["sub_secret"].encode()
        sub.curve_publickey = keys["sub_public"].encode()
        sub.curve_serverkey = keys["pub_public"].encode()
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    count = 0
    first = 0.0
    while True:
        data = sub.recv()
        if data == END:
            break
        if count == 0:
            first = time.perf_counter()
        count += 1
    last = time.perf_counter()
    out.put(("raw", count, last - first))
    sub.close()
    ctx.term()


def raw_pub(port: int, size: int, seconds: float, keys: dict[str, str] | None, done: Any) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.sndtimeo = 5000
    if keys:
        pub.curve_server = True
        pub.curve_secretkey = keys["pub_secret"].encode()
        pub.curve_publickey = keys["pub_public"].encode()
    pub.bind(f"tcp://127.0.0.1:{port}")
    pub.recv()  # the subscription: no slow-joiner loss in the figures
    payload = b"x" * size
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            pub.send(payload)
    while not done.is_set():
        pub.send(END)
        time.sleep(0.001)
    pub.close()
    ctx.term()


# -- pubsub-zmq ------------------------------------------------------------------------


def ours_sub(port: int, pub_port: int, keys: dict[str, str] | None, out: Any) -> None:
    async def main() -> None:
        options: dict[str, Any] = {}
        peer: Any = f"tcp://127.0.0.1:{pub_port}"
        if keys:
            options = {
                "curve_secret_key": keys["sub_secret"],
                "curve_allow": [keys["pub_public"]],
            }
            peer = (peer, keys["pub_public"])
        async with PubSub(
            "sub",
            f"tcp://127.0.0.1:{port}",
            [peer],
            recv_hwm=0,
            send_hwm=0,
            queue_size=10_000_000,
            **options,
        ) as ps:
            sub = ps.subscribe("bench")
            count = 0
            first = 0.0
            async for message in sub:
                if message == "END":
                    break
                if count == 0:
                    first = time.perf_counter()
                count += 1
            last = time.perf_counter()
            lost = ps.stats()["dropped"]["lost"]
            out.put(("ours", count, last - first, lost))

    asyncio.run(main())


def ours_pub(port: int, size: int, seconds: float, keys: dict[str, str] | None, done: Any) -> None:
    async def main() -> None:
        options: dict[str, Any] = {}
        if keys:
            options = {
                "curve_secret_key": keys["pub_secret"],
                "curve_allow": [keys["sub_public"]],
            }
        async with PubSub(
            "pub", f"tcp://127.0.0.1:{port}", send_hwm=0, recv_hwm=0, **options
        ) as ps:
            while ps.remote_subscribers("bench") < 1:  # noqa: ASYNC110 (a polled counter)
                await asyncio.sleep(0.001)
            message = "x" * (size - 2)  # JSON: the string and its two quotes
            broadcast = ps.broadcast
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for _ in range(4096):
                    broadcast("bench", message)
                await ps.flush()
            while not done.is_set():
                broadcast("bench", "END")
                await ps.flush()
                await asyncio.sleep(0.001)

    asyncio.run(main())


def run_case(kind: str, size: int, curve: bool, seconds: float) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    done = ctx.Event()
    keys: dict[str, str] | None = None
    if curve:
        pub_keys, sub_keys = generate_keypair(), generate_keypair()
        keys = {
            "pub_public": pub_keys.public,
            "pub_secret": pub_keys.secret,
            "sub_public": sub_keys.public,
            "sub_secret": sub_keys.secret,
        }
    port, sub_port = free_port(), free_port()
    if kind == "raw":
        pub = ctx.Process(target=raw_pub, args=(port, size, seconds, keys, done))
        sub = ctx.Process(target=raw_sub, args=(port, keys, out))
    else:
        pub = ctx.Process(target=ours_pub, args=(port, size, seconds, keys, done))
        sub = ctx.Process(target=ours_sub, args=(sub_port, port, keys, out))
    pub.start()
    sub.start()
    try:
        result = out.get(timeout=seconds * 10 + 30)
        done.set()
        pub.join(10)
        sub.join(10)
    finally:
        for proc in (pub, sub):
            if proc.is_alive():
                proc.kill()
                proc.join()
    count, elapsed = result[1], result[2]
    lost = result[3] if len(result) > 3 else 0
    return count / elapsed, lost


def fan_out(subscribers: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        async with PubSub("fan") as ps:
            subs = [ps.subscribe("fan") for _ in range(subscribers)]
            t0 = time.perf_counter()
            ps.local_broadcast("fan", {"event": "x"})
            queued = time.perf_counter() - t0
            for sub in subs:
                sub.unsubscribe()
            remaining = subscribers
            finished = asyncio.get_running_loop().create_future()

            def callback(message: Any) -> None:
                nonlocal remaining
                remaining -= 1
                if remaining == 0:
                    finished.set_result(time.perf_counter())

            for _ in range(subscribers):
                ps.subscribe("fan", callback=callback)
            t0 = time.perf_counter()
            ps.broadcast("fan", {"event": "x"})
            consumed = await asyncio.wait_for(finished, 30) - t0
            return queued, consumed

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="sending time per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024])
    args = parser.parse_args()
    print(f"pubsub-zmq vs raw pyzmq, loopback, 2 processes, {args.repeat} runs, median")
    print(f"{'size':>6} {'CURVE':>5} {'raw msg/s':>12} {'ours msg/s':>12} {'ratio':>6} {'lost':>6}")
    for size in args.sizes:
        for curve in (False, True):
            raws, ours, losts = [], [], []
            for _ in range(args.repeat):  # interleaved, so machine noise hits both alike
                raws.append(run_case("raw", size, curve, args.seconds)[0])
                rate, lost = run_case("ours", size, curve, args.seconds)
                ours.append(rate)
                losts.append(lost)
            raw, our = statistics.median(raws), statistics.median(ours)
            print(
                f"{size:>6} {'on' if curve else 'off':>5} {raw:>12,.0f} {our:>12,.0f} "
                f"{our / raw:>6.2f} {max(losts):>6}",
                flush=True,
            )
    queued, consumed = fan_out(10_000)
    print()
    print("local fan-out of one broadcast to 10,000 subscriptions on one node:")
    print(f"  queued to 10,000 async-iterator subscriptions: {queued * 1e3:8.2f} ms")
    print(f"  consumed by 10,000 callback subscriptions:     {consumed * 1e3:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
