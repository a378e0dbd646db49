"""Encoded: sending a message that is already JSON, without encoding it again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest

from pubsub_zmq import Encoded, MessageTooLarge, PubSub, Subscription

FAST: dict[str, Any] = {"gossip_interval": 0.1, "peer_timeout": 1.0, "start_timeout": 5.0}

Run = Callable[..., Any]
Wait = Callable[..., Any]


@contextlib.contextmanager
def counting_dumps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Count every value orjson.dumps encodes (the list holds them).

    A call that raises encodes nothing and is not counted: ``broadcast`` tries the
    plain encoding first and takes an Encoded message from orjson's TypeError, which
    costs nothing on the hot path (an Encoded's bytes field stops orjson at once).
    """
    calls: list[Any] = []
    dumps = orjson.dumps

    def counted(value: Any, *args: Any, **kwargs: Any) -> bytes:
        data = dumps(value, *args, **kwargs)
        calls.append(value)
        return data

    with monkeypatch.context() as patch:
        patch.setattr(orjson, "dumps", counted)
        yield calls


@contextlib.asynccontextmanager
async def pair(wait: Wait) -> AsyncIterator[tuple[PubSub, PubSub]]:
    async with PubSub("a", **FAST) as a, PubSub("b", peers=[a.endpoint], **FAST) as b:
        await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"], message="the mesh")
        yield a, b


async def subscribed(nodes: Sequence[PubSub], topic: str, wait: Wait) -> None:
    await wait(lambda: all(n.remote_subscribers(topic) >= 1 for n in nodes), message="subs")


def test_of_encodes_like_orjson_and_rejects_what_it_cannot() -> None:
    message = {"n": [1, 2.5, None, "é"]}
    assert Encoded.of(message) == Encoded(orjson.dumps(message))
    assert Encoded.of(message).data == orjson.dumps(message)
    with pytest.raises(TypeError):
        Encoded.of(object())


@pytest.mark.parametrize("data", [b"", "1", bytearray(b"1"), None])
def test_data_must_be_non_empty_bytes(data: Any) -> None:
    with pytest.raises(TypeError):
        Encoded(data)


def test_encoded_is_a_frozen_value() -> None:
    e = Encoded(b"[1]")
    with pytest.raises(AttributeError):
        e.data = b"2"  # type: ignore[misc]
    assert not hasattr(e, "__dict__")
    assert e == Encoded(b"[1]")
    assert hash(e) == hash(Encoded(b"[1]"))


def test_broadcast_sends_the_bytes_once_and_subscribers_get_the_value(
    run: Run, wait: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = {"tuple": (1, 2), "n": 3}
    decoded = orjson.loads(orjson.dumps(message))  # what the plain broadcast delivers

    async def body() -> None:
        async with pair(wait) as (a, b):
            remote = b.subscribe("t")
            local = a.subscribe("t")
            await subscribed([a], "t", wait)
            encoded = Encoded.of(message)
            with counting_dumps(monkeypatch) as calls:
                a.broadcast("t", encoded)
                await a.flush()
            assert calls == []
            assert local.drain() == [decoded]
            assert await asyncio.wait_for(remote.get(), 2) == decoded
            assert a.stats()["sent"]["broadcasts"] == 1

    run(body)


def test_broadcast_from_skips_the_sender_and_decodes_only_for_others(
    run: Run, wait: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads_calls: list[Any] = []
    loads = orjson.loads

    def counted_loads(data: Any) -> Any:
        loads_calls.append(bytes(data))
        return loads(data)

    async def body() -> None:
        async with pair(wait) as (a, b):
            me = a.subscribe("t")
            remote = b.subscribe("t")
            await subscribed([a], "t", wait)
            with counting_dumps(monkeypatch) as calls:
                monkeypatch.setattr(orjson, "loads", counted_loads)
                a.broadcast_from(me, "t", Encoded(b'{"alone":true}'))
                assert loads_calls == []  # only the sender is subscribed here
                other = a.subscribe("t")
                a.broadcast_from(me, "t", Encoded(b'{"alone":false}'))
                assert loads_calls == [b'{"alone":false}']
                monkeypatch.setattr(orjson, "loads", loads)
                await a.flush()
            assert calls == []
            assert me.drain() == []
            assert other.drain() == [{"alone": False}]
            got = [await asyncio.wait_for(remote.get(), 2) for _ in range(2)]
            assert got == [{"alone": True}, {"alone": False}]

    run(body)


def test_direct_broadcast_to_a_peer_and_to_itself(
    run: Run, wait: Wait, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with pair(wait) as (a, b):
            remote = b.subscribe("t")
            local = a.subscribe("t")
            with counting_dumps(monkeypatch) as calls:
                a.direct_broadcast("b", "t", Encoded(b"[1,2]"))
                a.direct_broadcast("a", "t", Encoded(b'"self"'))
                await a.flush()
            assert calls == []
            assert await asyncio.wait_for(remote.get(), 2) == [1, 2]
            assert local.drain() == ["self"]
            assert a.stats()["sent"]["directs"] == 1

    run(body)


def test_custom_dispatcher_gets_the_decoded_value(run: Run) -> None:
    seen: list[tuple[Any, Any]] = []

    def dispatcher(subs: Sequence[Subscription], sender: Any, message: Any) -> None:
        seen.append((sender, message))

    async def body() -> None:
        async with PubSub("solo", dispatcher=dispatcher) as ps:
            me = ps.subscribe("t")
            ps.broadcast("t", Encoded(b"1"))
            ps.broadcast_from(me, "t", Encoded(b"2"))
            assert seen == [(None, 1), (me, 2)]

    run(body)


def test_message_too_large_applies_to_the_encoded_length(run: Run) -> None:
    async def body() -> None:
        async with PubSub("solo", max_frame_bytes=4096) as ps:
            sub = ps.subscribe("t")
            big = Encoded.of("x" * 5000)
            with pytest.raises(MessageTooLarge):
                ps.broadcast("t", big)
            with pytest.raises(MessageTooLarge):
                ps.broadcast_from(sub, "t", big)
            with pytest.raises(MessageTooLarge):
                ps.direct_broadcast("other", "t", big)
            assert sub.drain() == []
            ps.broadcast("t", Encoded.of("x" * 3000))  # fits alone: sent in its own frame
            assert sub.drain() == ["x" * 3000]
            await ps.flush()

    run(body)
