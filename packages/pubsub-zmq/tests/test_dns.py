"""DNS seeds, automatic names and bind_fallback (dns.py, membership.py, pubsub.py).

The member table's DNS seeds under a virtual clock; then nodes on loopback that find
each other through a real name (``localhost``) and through an injected resolver whose
answers change (a node added, a node removed), and web-worker nodes that share one
fixed port with ``bind_fallback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from pubsub_zmq import ConfigError, PubSub, PubSubError, auto_node_name
from pubsub_zmq.dns import DnsSeed, endpoint_for, parse_dns_seed, resolve
from pubsub_zmq.membership import Membership
from pubsub_zmq.wire import NodeRecord

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0, "start_timeout": 5.0}

Run = Callable[..., Any]
Wait = Callable[..., Any]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def started(*nodes: PubSub) -> AsyncIterator[None]:
    """Start the nodes in turn; stop every one that started, whatever happens."""
    try:
        for node in nodes:
            await node.start()
        yield
    finally:
        for node in nodes:
            await node.stop()


# -- parsing -------------------------------------------------------------------------


def test_parse_dns_seed() -> None:
    assert parse_dns_seed("tracker:4000") == DnsSeed("tracker", 4000)
    assert parse_dns_seed("[::1]:4000") == DnsSeed("::1", 4000)
    assert str(DnsSeed("::1", 4000)) == "[::1]:4000"
    assert str(parse_dns_seed("tracker.ns.svc.cluster.local:4000")) == (
        "tracker.ns.svc.cluster.local:4000"
    )
    for bad in ("tracker", "tracker:", ":4000", "tracker:0", "tracker:70000", "tcp://h:1"):
        with pytest.raises(ConfigError):
            parse_dns_seed(bad)
    with pytest.raises(ConfigError):
        parse_dns_seed(4000)  # type: ignore[arg-type]


def test_endpoints_of_addresses() -> None:
    assert endpoint_for("10.0.0.5", 4000) == "tcp://10.0.0.5:4000"
    assert endpoint_for("fd00::5", 4000) == "tcp://[fd00::5]:4000"
    assert endpoint_for("node-1.internal", 4000) == "tcp://node-1.internal:4000"
    for bad in ("", "a/b", 5):
        with pytest.raises(ValueError, match="not an address"):
            endpoint_for(bad, 4000)  # type: ignore[arg-type]


def test_a_name_given_twice_is_looked_up_once(run: Run) -> None:
    async def body() -> None:
        calls: list[str] = []

        async def count(host: str, port: int) -> list[str]:
            calls.append(host)
            return []

        node = PubSub(
            "n",
            peer_dns=["tracker:4000", "tracker:4000"],
            resolver=count,
            start_timeout=30,
            gossip_interval=60,  # one round of lookups in this test
            peer_timeout=120,
        )
        async with asyncio.timeout(10), started(node):  # the one answer names nobody: go
            assert calls == ["tracker"]

    run(body)


def test_peer_dns_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="list of entries"):
        PubSub("a", peer_dns="tracker:4000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="HOST:PORT"):
        PubSub("a", peer_dns=["tcp://tracker:4000"])
    with pytest.raises(ConfigError, match="resolver"):
        PubSub("a", peer_dns=["tracker:4000"], resolver="dns")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bind_fallback needs"):
        PubSub("a", bind="ipc:///tmp/x", bind_fallback=True)
    with pytest.raises(ConfigError, match="bind_fallback must be a bool"):
        PubSub("a", bind_fallback=1)  # type: ignore[arg-type]


# -- the member table ----------------------------------------------------------------

ME = NodeRecord("me", 100, "tcp://10.0.0.1:4000", "tcp://10.0.0.1:4001")


def table(forget_after: float = 60.0) -> Membership:
    return Membership(
        ME,
        [("tcp://seed:1", None)],
        gossip_interval=1.0,
        peer_timeout=5.0,
        forget_after=forget_after,
        min_backoff=0.1,
        max_backoff=2.0,
        rng=random.Random(1),
        own=[ME.control],
    )


def test_dns_seeds_are_added_refreshed_and_forgotten_after_forget_after() -> None:
    m = table(forget_after=60.0)
    answer = [("tcp://10.0.0.1:4000", None), ("tcp://10.0.0.2:4000", None)]
    added = m.resolved(answer, now=0.0)
    assert [s.endpoint for s in added] == ["tcp://10.0.0.2:4000"]  # its own is excluded
    assert m.pending_seeds() == ["tcp://seed:1"]  # start-up waits for configured seeds only
    assert [s.endpoint for s in m.dns_seeds()] == ["tcp://10.0.0.2:4000"]
    tick = m.tick(0.0)
    assert {s.endpoint for s in tick.hello_seeds} == {"tcp://seed:1", "tcp://10.0.0.2:4000"}
    assert m.resolved(answer, now=1.0) == []  # named again: nothing new
    # the answers stop naming 10.0.0.2: it is kept, and greeted, until forget_after
    m.resolved([], now=2.0)
    assert [s.endpoint for s in m.dns_seeds()] == ["tcp://10.0.0.2:4000"]
    assert m.tick(60.0).forget_seeds == []
    tick = m.tick(61.5)
    assert [s.endpoint for s in tick.forget_seeds] == ["tcp://10.0.0.2:4000"]
    assert m.dns_seeds() == []
    assert "tcp://seed:1" in m.seeds  # a configured seed is never forgotten
    # named again later: a seed again
    assert [s.endpoint for s in m.resolved(answer, now=70.0)] == ["tcp://10.0.0.2:4000"]


def test_an_endpoint_found_to_be_this_node_is_never_a_seed_again() -> None:
    m = table()
    m.resolved([("tcp://me.internal:4000", None)], now=0.0)
    m.drop_seed("tcp://me.internal:4000")  # our own hello came back
    assert m.resolved([("tcp://me.internal:4000", None)], now=1.0) == []
    assert m.dns_seeds() == []


def test_a_configured_seed_named_by_dns_stays_configured() -> None:
    m = table(forget_after=1.0)
    m.resolved([("tcp://seed:1", None)], now=0.0)
    assert m.dns_seeds() == []
    assert m.tick(10.0).forget_seeds == []
    assert "tcp://seed:1" in m.seeds


# -- nodes on loopback -------------------------------------------------------------


def test_localhost_names_the_seed_and_the_own_endpoint_is_left_out(run: Run) -> None:
    async def body() -> None:
        port = free_port()
        # a names itself: localhost:port is its own endpoint, no seed, no wait
        a = PubSub("a", bind=f"tcp://127.0.0.1:{port}", peer_dns=[f"localhost:{port}"], **FAST)
        b = PubSub("b", peer_dns=[f"localhost:{port}"], **{**FAST, "start_timeout": 60.0})
        async with asyncio.timeout(30):
            async with started(a, b):
                # b's start returned once the seed at localhost answered
                assert b.peers() == ["a"]
                assert b.stats()["dns"]["seeds"] == 1
                assert b.stats()["dns"]["lookups"] >= 1
                assert a.stats()["dns"] == {
                    "lookups": a.stats()["dns"]["lookups"],
                    "failures": 0,
                    "seeds": 0,
                }
                assert a.stats()["dns"]["lookups"] >= 1

    run(body)


def test_the_default_resolver_gives_ipv4_addresses(run: Run) -> None:
    async def body() -> None:
        assert await resolve("localhost", 4000) == ["127.0.0.1"]
        with pytest.raises(OSError):
            await resolve("no-such-host.invalid", 4000)

    run(body)


class Registry:
    """An injected resolver whose answers the test changes; it can also fail."""

    def __init__(self) -> None:
        self.answer: list[str | tuple[str, int]] = []
        self.fail = False

    async def __call__(self, host: str, port: int) -> Iterable[str | tuple[str, int]]:
        assert (host, port) == ("tracker", 4000)
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("name server down")
        return list(self.answer)

    def add(self, node: PubSub) -> None:
        self.answer.append(("127.0.0.1", port_of(node.endpoint)))

    def remove(self, node: PubSub) -> None:
        self.answer.remove(("127.0.0.1", port_of(node.endpoint)))


def test_injected_resolver_a_node_added_then_removed(run: Run, wait: Wait) -> None:
    async def body() -> None:
        registry = Registry()
        a, b = PubSub("a", **FAST), PubSub("b", **FAST)
        n = PubSub("n", peer_dns=["tracker:4000"], resolver=registry, forget_after=3.0, **FAST)
        async with asyncio.timeout(30), started(a, b):
            registry.add(a)
            async with started(n):
                assert n.peers() == ["a"]
                registry.add(b)  # a node added: found at the next lookup
                await wait(lambda: n.peers() == ["a", "b"], message="n finds b")
                await wait(lambda: a.peers() == ["b", "n"], message="gossip tells a of b")
                assert n.stats()["dns"]["seeds"] == 2
                # the name server fails: the last answer's seeds are kept, it is counted
                registry.fail = True
                await wait(lambda: n.stats()["dns"]["failures"] >= 2, message="two failed lookups")
                assert n.stats()["dns"]["seeds"] == 2
                registry.fail = False
                # a node removed from the answers: still a seed for forget_after
                registry.remove(b)
                lookups = n.stats()["dns"]["lookups"]
                await wait(lambda: n.stats()["dns"]["lookups"] >= lookups + 2, message="lookups")
                assert n.stats()["dns"]["seeds"] == 2
                await wait(
                    lambda: n.stats()["dns"]["seeds"] == 1,
                    timeout=15,
                    message="b's seed forgotten after forget_after",
                )
                assert n.peers() == ["a", "b"]  # b itself is still a member: it talks

    run(body)


def test_start_needs_one_answering_dns_seed_not_all(run: Run) -> None:
    async def body() -> None:
        registry = Registry()
        a = PubSub("a", **FAST)
        # nothing listens on the first address; the node must not wait for it
        n = PubSub(
            "n", peer_dns=["tracker:4000"], resolver=registry, **{**FAST, "start_timeout": 60.0}
        )
        async with asyncio.timeout(30), started(a):
            registry.answer = [("127.0.0.1", free_port())]
            registry.add(a)
            async with started(n):
                assert n.peers() == ["a"]
                seeds = n._membership.dns_seeds()  # type: ignore[union-attr]
                assert sorted(s.name is None for s in seeds) == [False, True]

    run(body)


def test_start_waits_for_a_failing_name_until_start_timeout(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        registry = Registry()
        registry.fail = True
        n = PubSub(
            "n", peer_dns=["tracker:4000"], resolver=registry, **{**FAST, "start_timeout": 0.5}
        )
        async with asyncio.timeout(30), started(n):
            assert n.peers() == []
            assert n.stats()["dns"]["failures"] >= 1
        assert "seeds did not answer" in caplog.text
        assert "peer_dns lookup of tracker:4000 failed: name server down" in caplog.text

    run(body)


def test_a_resolver_that_returns_garbage_is_a_failed_lookup(run: Run) -> None:
    async def body() -> None:
        async def bad(host: str, port: int) -> Any:
            return "127.0.0.1"  # one str, not a collection of addresses

        n = PubSub("n", peer_dns=["tracker:4000"], resolver=bad, **{**FAST, "start_timeout": 0.3})
        async with asyncio.timeout(30), started(n):
            assert n.stats()["dns"]["failures"] >= 1
            assert n.stats()["dns"]["seeds"] == 0

    run(body)


# -- web workers -------------------------------------------------------------------


def test_auto_names() -> None:
    name = auto_node_name()
    host = socket.gethostname()
    assert re.fullmatch(rf"{re.escape(host)}-\d+-[0-9a-f]{{8}}", name), name
    assert auto_node_name() != name
    node = PubSub(None)
    assert node.auto_named
    assert node.node_name.startswith(f"{host}-")
    assert not PubSub("web-1").auto_named


def test_workers_share_one_port_with_bind_fallback(run: Run, wait: Wait) -> None:
    async def body() -> None:
        seed = f"tcp://127.0.0.1:{free_port()}"
        # every worker runs the same code: bind the host's port if free, else port 0
        workers = [PubSub(None, bind=seed, peers=[seed], bind_fallback=True, **FAST) for _ in "abc"]
        async with asyncio.timeout(30), started(*workers):
            assert workers[0].endpoint == seed  # the first one is the host's seed
            assert all(w.endpoint != seed for w in workers[1:])
            names = {w.node_name for w in workers}
            assert len(names) == 3
            await wait(
                lambda: all(set(w.peers()) == names - {w.node_name} for w in workers),
                message="the full mesh",
            )
        # without bind_fallback a taken port is an error
        async with started(PubSub("holder", bind=seed, **FAST)):
            with pytest.raises(PubSubError, match="cannot bind"):
                await PubSub("late", bind=seed, **FAST).start()

    run(body)


# -- what a wildcard bind announces -------------------------------------------------


def test_a_wildcard_bind_announces_what_the_host_name_resolves_to(
    run: Run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # (binding a wildcard in a test would listen beyond loopback: the lookup alone)
    async def body() -> None:
        node = PubSub("n")
        monkeypatch.setattr(socket, "gethostname", lambda: "localhost")
        assert await node._own_address() == "127.0.0.1"
        assert "only this host can reach it: give advertise_host" in caplog.text
        monkeypatch.setattr(socket, "gethostname", lambda: "no-such-host.invalid")
        assert await node._own_address() is None
        assert "does not resolve" in caplog.text

    run(body)
