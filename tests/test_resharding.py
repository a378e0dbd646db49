"""Re-sharding a running cluster of real ``tracker-zmq node`` processes (docs: tracker.md,
"Re-sharding"; guides/operating.md, "Re-sharding").

The two-step change of ``--pool-size`` from 2 to 3 on three nodes holding 3,000
presences (1,000 tracked through each node's client endpoint): each node is restarted
with ``--pool-size 3 --broadcast-pool-size 2``, then each with ``--pool-size 3`` alone,
while a checker lists every topic on every running node every 50 ms. A node's own
presences leave while it restarts (its client tracks them again on the new
incarnation, as after any deploy); every other presence stays listed on every node
that has caught up, and no node ever lists a presence twice. A one-step change (a node
started with ``--pool-size 3`` beside nodes of 2) shows in the stats and the logs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aio import run, until

from tests.support.proc import FAST_NODE_OPTIONS, CliNode, free_port, spawner
from tracker_zmq import Client

pytestmark = pytest.mark.cluster

OPTIONS = (*FAST_NODE_OPTIONS, "--log-level", "INFO")  # restarts as the upgrade guide says
NAMES = ("a", "b", "c")
TOPICS = [f"room:{i}" for i in range(8)]
PER_NODE = 1000
CHECK = 0.05
WARNING = "they do not see each other's presences"


def client(node: CliNode, name: str, **options: Any) -> Client:
    options.setdefault("heartbeat_interval", 0.3)
    options.setdefault("timeout", 3.0)
    return Client(node.client_endpoint, client_id=name, **options)


class Checker:
    """Lists every topic on every running node every 50 ms and checks what it sees."""

    def __init__(self, watchers: dict[str, Client]) -> None:
        self.watchers = watchers
        self.running = set(NAMES)
        self.caught_up: set[str] = set()  # nodes whose view was complete once (since start)
        self.moving: set[str] = set()  # nodes whose own presences are being tracked again
        self.rounds = 0
        self.complete: dict[str, bool] = {}

    def expected(self, owner: str) -> set[str]:
        return {f"{owner}-{i}" for i in range(PER_NODE)}

    async def round(self) -> None:
        for name in sorted(self.running):
            try:
                listed = [
                    key for topic in TOPICS for key, _ in await self.watchers[name].list(topic)
                ]
            except Exception:
                if name in self.running:  # stopped meanwhile
                    raise
                continue
            keys = set(listed)
            assert len(keys) == len(listed), f"{name} lists a presence twice"
            stable = set().union(*(self.expected(o) for o in NAMES if o not in self.moving))
            complete = stable <= keys
            if name in self.caught_up:
                assert complete, f"{name} no longer lists {sorted(stable - keys)[:5]}..."
            elif complete:
                self.caught_up.add(name)
            everything = set().union(*(self.expected(o) for o in NAMES))
            self.complete[name] = everything <= keys
        self.rounds += 1

    async def loop(self) -> None:
        while True:
            await self.round()
            await asyncio.sleep(CHECK)

    def settled(self) -> bool:
        return self.caught_up >= self.running and all(
            self.complete.get(n, False) for n in self.running
        )


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


def test_two_step_resharding_keeps_every_presence_listed_once(logs: Path) -> None:
    ports = {name: (free_port(), free_port()) for name in NAMES}
    endpoints = {name: f"tcp://127.0.0.1:{ports[name][0]}" for name in NAMES}

    started: list[str] = []  # seeds: the nodes up already (start-up waits for its seeds)

    def node(name: str, *options: str) -> CliNode:
        peers = [endpoints[n] for n in started if n != name]
        started.append(name)
        return CliNode(
            name,
            logs,
            *OPTIONS,
            *options,
            peers=peers,
            port=ports[name][0],
            client_port=ports[name][1],
        )

    with spawner(node) as start:
        nodes = {name: start(name, "--pool-size", "2") for name in NAMES}

        async def main() -> None:
            holders = {n: client(nodes[n], f"holder-{n}", timeout=1.0) for n in NAMES}
            watchers = {n: client(nodes[n], f"watcher-{n}") for n in NAMES}
            checker = Checker(watchers)
            task: asyncio.Task[None] | None = None
            try:
                for cl in [*holders.values(), *watchers.values()]:
                    await cl.connect()
                for name in NAMES:
                    for first in range(0, PER_NODE, 100):  # 100 requests in flight
                        await asyncio.gather(
                            *(
                                holders[name].track(
                                    TOPICS[i % len(TOPICS)], f"{name}-{i}", {"i": i}
                                )
                                for i in range(first, first + 100)
                            )
                        )
                await until(lambda: _settle(checker), timeout=30, message="3,000 everywhere")
                task = asyncio.create_task(checker.loop())

                async def restart(name: str, *options: str) -> None:
                    resyncs = holders[name].resyncs
                    checker.running.discard(name)
                    checker.caught_up.discard(name)
                    checker.moving.add(name)
                    old = nodes[name]
                    assert await asyncio.to_thread(old.terminate) == 0, old.log()
                    nodes[name] = await asyncio.to_thread(start, name, *options)
                    checker.running.add(name)
                    await until(
                        lambda: holders[name].resyncs > resyncs, timeout=20, message="resync"
                    )
                    await until(checker.settled, timeout=30, message=f"{name} settled")
                    checker.moving.discard(name)
                    rounds = checker.rounds
                    await until(lambda: checker.rounds >= rounds + 2, timeout=20)

                for name in NAMES:  # step 1: both shardings
                    await restart(name, "--pool-size", "3", "--broadcast-pool-size", "2")
                for name in NAMES:  # step 2: the new sharding alone
                    await restart(name, "--pool-size", "3")
                assert checker.rounds > 20
                for name in NAMES:
                    status = await watchers[name].status()
                    sharding = status["tracker_stats"]["sharding"]
                    assert sharding["sets"] == [3]
                    assert sharding["mismatched"] == {}
                    assert status["presences"] == len(NAMES) * PER_NODE
            finally:
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                for cl in [*holders.values(), *watchers.values()]:
                    await cl.close(bye=False)
            if task is not None and task.done() and not task.cancelled():
                task.result()

        run(main)
        for name in NAMES:
            log = nodes[name].log()
            assert WARNING not in log
            assert "Traceback" not in log


async def _settle(checker: Checker) -> bool:
    await checker.round()
    return checker.settled()


def test_a_one_step_change_shows_in_stats_and_logs(logs: Path) -> None:
    with spawner(lambda name, *o, **kw: CliNode(name, logs, *OPTIONS, *o, **kw)) as start:
        a = start("a", "--pool-size", "2")
        b = start("b", "--pool-size", "2", peers=(a.endpoint,))
        c = start("c", "--pool-size", "3", peers=(a.endpoint,))  # the skipped step

        async def main() -> None:
            clients = {n.name: client(n, f"w-{n.name}") for n in (a, b, c)}
            try:
                for cl in clients.values():
                    await cl.connect()
                await clients["a"].track("room", "alice", {})
                await clients["c"].track("room", "carol", {})

                async def mismatched(name: str) -> dict[str, int]:
                    status = await clients[name].status()
                    return status["tracker_stats"]["sharding"]["mismatched"]

                async def shows() -> bool:
                    return (await mismatched("c")) == {"a": 2, "b": 2} and (
                        await mismatched("a")
                    ) == {"c": 3}

                await until(shows, timeout=15, message="the mismatch in stats")
                status = await clients["c"].status()
                assert status["tracker_stats"]["totals"]["drops"]["other_sharding"] > 0
                # and what it costs: a and c do not see each other's presences
                assert [k for k, _ in await clients["b"].list("room")] == ["alice"]
                assert [k for k, _ in await clients["c"].list("room")] == ["carol"]
            finally:
                for cl in clients.values():
                    await cl.close(bye=False)

        run(main)
        deadline = time.monotonic() + 10
        while WARNING not in a.log() or WARNING not in c.log():
            assert time.monotonic() < deadline, a.log() + c.log()
            time.sleep(0.05)
        assert "node c (vsn" in a.log()
        assert "runs pool_size 3 and this node runs 2" in a.log()
