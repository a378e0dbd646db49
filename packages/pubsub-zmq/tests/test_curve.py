"""curve.py and CURVE end to end: encrypted mesh; an intruder can neither read nor inject."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from pubsub_zmq import ConfigError, KeyPair, PubSub, generate_keypair, load_keypair
from pubsub_zmq.cli import main as cli_main
from pubsub_zmq.curve import CurveConfig, normalize_key
from pubsub_zmq.wire import Kind, batch_frame

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0}
Run = Callable[..., Any]
Wait = Callable[..., Any]


def test_keypairs_and_config() -> None:
    pair = generate_keypair()
    assert len(pair.public) == len(pair.secret) == 40
    assert normalize_key(pair.public.encode()) == pair.public
    other = generate_keypair()
    config = CurveConfig.build(pair.secret, [other.public])
    assert config.public == pair.public
    assert config.allowed == {pair.public, other.public}
    assert config.permits("anyone", other.public)
    assert not config.permits("anyone", None)
    assert not config.permits("anyone", generate_keypair().public)
    bound = CurveConfig.build(pair.secret, {"b": other.public})
    assert bound.permits("b", other.public)
    assert not bound.permits("c", other.public)
    assert bound.callback("*", other.public.encode())
    assert not bound.callback("*", generate_keypair().public.encode())


@pytest.mark.parametrize(
    ("secret", "allow"),
    [("short", []), ("x" * 40, None), ("x" * 40, "y" * 40), ("x" * 40, ["é" * 40])],
)
def test_bad_curve_config(secret: str, allow: Any) -> None:
    with pytest.raises(ConfigError):
        CurveConfig.build(secret, allow)


def test_peers_need_keys_with_curve() -> None:
    pair = generate_keypair()
    with pytest.raises(ConfigError, match="public key"):
        PubSub("a", peers=["tcp://127.0.0.1:1"], curve_secret_key=pair.secret, curve_allow=[])


def test_keygen_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["keygen"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("public: ")
    assert cli_main(["keygen", "--out", str(tmp_path), "--name", "web-1"]) == 0
    pair = load_keypair(tmp_path / "web-1.key_secret")
    assert isinstance(pair, KeyPair)
    assert (tmp_path / "web-1.key_secret").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError):
        load_keypair(tmp_path / "web-1.key")


@contextlib.asynccontextmanager
async def curve_pair(a_keys: KeyPair, b_keys: KeyPair, **extra: Any) -> Any:
    allow = extra.pop("allow", None)
    a = PubSub("a", curve_secret_key=a_keys.secret, curve_allow=allow or [b_keys.public], **FAST)
    await a.start()
    b = PubSub(
        "b",
        peers=[(a.endpoint, a_keys.public)],
        curve_secret_key=b_keys.secret,
        curve_allow=allow or [a_keys.public],
        **FAST,
    )
    try:
        await b.start()
        yield a, b
    finally:
        await b.stop()
        await a.stop()


def test_curve_mesh_works(run: Run, wait: Wait) -> None:
    ka, kb = generate_keypair(), generate_keypair()

    async def body() -> None:
        async with curve_pair(ka, kb) as (a, b):
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            assert a.public_key == ka.public
            sub = b.subscribe("t")
            await wait(lambda: a.remote_subscribers("t") == 1)
            a.broadcast("t", "secret")
            a.direct_broadcast("b", "t", "direct")
            assert {await asyncio.wait_for(sub.get(), 2) for _ in range(2)} == {
                "secret",
                "direct",
            }

    run(body)


def test_intruder_reads_nothing_and_injects_nothing(run: Run, wait: Wait) -> None:
    ka, kb, kx = generate_keypair(), generate_keypair(), generate_keypair()

    async def body() -> None:
        async with curve_pair(ka, kb) as (a, b):
            await wait(lambda: a.peers() == ["b"])
            a_sub = a.subscribe("t")
            b_sub = b.subscribe("t")
            await wait(lambda: a.remote_subscribers("t") == 1 and b.remote_subscribers("t") == 1)
            # 1. a full node with an unknown key that knows a's public key and endpoint
            intruder = PubSub(
                "x",
                peers=[(a.endpoint, ka.public)],
                curve_secret_key=kx.secret,
                curve_allow=[ka.public],
                start_timeout=0.3,
                **FAST,
            )
            # 2. raw sockets with the unknown key, and raw sockets in the clear
            ctx = zmq.Context()
            socks: list[zmq.Socket[bytes]] = []
            try:
                await intruder.start()
                x_sub = intruder.subscribe("t")
                for curve in (True, False):
                    spy = ctx.socket(zmq.SUB)
                    dealer = ctx.socket(zmq.DEALER)
                    for sock in (spy, dealer):
                        sock.linger = 0
                        if curve:
                            sock.curve_secretkey = kx.secret.encode()
                            sock.curve_publickey = kx.public.encode()
                            sock.curve_serverkey = ka.public.encode()
                        socks.append(sock)
                    spy.subscribe(b"")
                    spy.connect(a.pub_endpoint)
                    dealer.connect(a.endpoint)
                    # a forged direct message "from b"
                    forged = batch_frame(
                        "t", ["forged"], sender="b", incarnation=b.incarnation, kind=Kind.DIRECT
                    )
                    for _ in range(3):
                        with contextlib.suppress(zmq.Again):
                            dealer.send(forged, zmq.NOBLOCK)
                await asyncio.sleep(0.3)  # long enough for any handshake to succeed
                for i in range(20):
                    a.broadcast("t", f"for b only {i}")
                    b.broadcast("t", f"for a only {i}")
                await a.flush()
                await b.flush()
                expected = sorted(
                    [f"for b only {i}" for i in range(20)] + [f"for a only {i}" for i in range(20)]
                )
                for sub in (a_sub, b_sub):
                    got = [await asyncio.wait_for(sub.get(), 2) for _ in range(40)]
                    assert sorted(got) == expected
                await asyncio.sleep(0.1)
                assert x_sub.drain() == []
                assert intruder.peers() == []
                assert all(not s.poll(0) for s in socks if s.type == zmq.SUB)
                assert "x" not in a.stats()["peers"]
                assert a_sub.drain() == []
                assert b_sub.drain() == []
                assert a.stats()["dropped"]["rejected"] == 0  # nothing even reached the codec
            finally:
                await intruder.stop()
                for sock in socks:
                    sock.close(linger=0)
                ctx.term()

    run(body)


def test_allowed_key_cannot_take_another_name(run: Run, wait: Wait) -> None:
    ka, kb = generate_keypair(), generate_keypair()

    async def body() -> None:
        names = {"a": ka.public, "b": kb.public}
        a = PubSub("a", curve_secret_key=ka.secret, curve_allow=names, **FAST)
        await a.start()
        # b's key, but the name "c": its key is on the list, bound to another name
        c = PubSub(
            "c",
            peers=[(a.endpoint, ka.public)],
            curve_secret_key=kb.secret,
            curve_allow=names,
            start_timeout=0.3,
            **FAST,
        )
        try:
            await c.start()
            await wait(lambda: a.stats()["dropped"]["refused"] >= 1)
            assert a.peers() == []
        finally:
            await c.stop()
            await a.stop()

    run(body)


def test_two_curve_nodes_on_one_context_is_a_config_error(run: Run) -> None:
    async def body() -> None:
        context = zmq.asyncio.Context()
        a, b = generate_keypair(), generate_keypair()

        def node(name: str, keys: KeyPair, peer: KeyPair) -> PubSub:
            return PubSub(
                name,
                "tcp://127.0.0.1:0",
                [],
                context=context,
                curve_secret_key=keys.secret,
                curve_allow=[peer.public],
            )

        first, second = node("a", a, b), node("b", b, a)
        await first.start()
        try:
            with pytest.raises(ConfigError, match="its own context"):
                await second.start()
        finally:
            await second.stop()
            await first.stop()
            context.term()

    run(body)
