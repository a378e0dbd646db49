"""Hostile or broken input reaching a node's sockets: dropped, counted, logged; the node
keeps serving. Also the loss count from per-sender sequence numbers (a fake member)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest
from fake_member import FakeMember

from pubsub_zmq import PubSub, Range
from pubsub_zmq.versions import LEGACY
from pubsub_zmq.wire import LOWEST, VERSION, batch_frame

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0}
Run = Callable[..., Any]
Wait = Callable[..., Any]


def batch(topic: str, seq: int, messages: list[Any], sender: str = "fake", inc: int = 1) -> bytes:
    return batch_frame(topic, messages, sender=sender, incarnation=inc, seq=seq)


def test_garbage_on_the_control_endpoint_is_counted_and_harmless(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with (
            PubSub("a", max_frame_bytes=4096, **FAST) as a,
            PubSub("b", peers=[a.endpoint], **FAST) as b,
        ):
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            fake = FakeMember()
            try:
                fake.connect(a.endpoint)
                head = struct.pack("!BBQQ", VERSION + 1, ord("G"), 1, 0)
                frames: list[Any] = [
                    b"",
                    b"garbage",
                    b"\x01" * 40,
                    b"\x00" + head + b"\x01x{}",  # unknown version
                    b"\x00" + b"x" * 5000,  # over max_frame_bytes
                    [b"two", b"parts"],
                    batch("t", 0, [1]),  # a broadcast on the control channel
                    batch("t", 0, [1], sender="b").replace(b"B", b"D", 1),  # forged direct
                ]
                for frame in frames:
                    if isinstance(frame, list):
                        fake.dealer.send_multipart(frame)
                    else:
                        fake.dealer.send(frame)
                await wait(
                    lambda: a.stats()["received"]["control_frames"] >= len(frames) + 1,
                    message="every frame read",
                )
                dropped = a.stats()["dropped"]
                assert dropped["invalid"] >= 4
                assert dropped["unknown_version"] == 1
                assert dropped["oversize"] == 1
                assert dropped["rejected"] >= 2
                # still serving
                sub = b.subscribe("t")
                await wait(lambda: a.remote_subscribers("t") == 1)
                a.broadcast("t", "still here")
                assert await asyncio.wait_for(sub.get(), 2) == "still here"
                assert sub.drain() == []
            finally:
                fake.close()

    run(body)


def test_a_member_pub_sending_garbage_gaps_and_forgeries(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with PubSub("a", max_frame_bytes=4096, **FAST) as a:
            fake = FakeMember()
            try:
                fake.connect(a.endpoint)
                fake.hello()
                await wait(lambda: "fake" in a.stats()["peers"], message="fake member known")
                sub = a.subscribe("t")
                await wait(lambda: b"\x01t\x00" in fake.poll_subscriptions(), message="sub")
                for frame in [
                    b"t\x00garbage",
                    b"t\x00" + struct.pack("!BBQQ", 9, ord("B"), 1, 0) + b"\x04fake[1]",
                    batch("t", 0, ["x" * 5000]),  # oversize
                    batch("t", 0, ["m0", "m1"]),
                    batch("t", 5, ["m5"]),  # 2, 3, 4 were lost
                    batch("t", 6, ["forged"], sender="someone"),  # not this PUB's member
                    batch("t", 6, ["stale"], inc=0),  # another incarnation
                    batch("t", 6, ["m6"]),
                ]:
                    fake.pub.send(frame)
                got: list[Any] = []
                while len(got) < 4:
                    got.append(await asyncio.wait_for(sub.get(), 2))
                assert got == ["m0", "m1", "m5", "m6"]
                stats = a.stats()
                assert stats["peers"]["fake"]["lost"] == 3
                assert stats["dropped"]["lost"] == 3
                assert stats["dropped"]["invalid"] == 1
                assert stats["dropped"]["unknown_version"] == 1
                assert stats["dropped"]["oversize"] == 1
                assert stats["dropped"]["rejected"] == 2
            finally:
                fake.close()

    run(body)


def test_loss_at_the_high_water_mark_is_counted(run: Run, wait: Wait) -> None:
    async def body() -> None:
        opts = {**FAST, "send_hwm": 1, "recv_hwm": 1, "max_batch": 1}
        async with PubSub("a", **opts) as a, PubSub("b", peers=[a.endpoint], **opts) as b:
            sub = b.subscribe("t", queue_size=1_000_000)
            await wait(lambda: a.remote_subscribers("t") == 1)
            sent = 30_000
            payload = "x" * 1000
            for i in range(sent):
                a.broadcast("t", [i, payload])
            await a.flush()
            received: list[Any] = []

            def ended() -> bool:
                received.extend(sub.drain())
                if "end" in received:
                    return True
                a.broadcast("t", "end")  # repeated: the tail of a burst may be lost too
                return False

            await wait(ended, timeout=20, message="the end marker")
            got = [m for m in received if isinstance(m, list)]
            lost = b.stats()["dropped"]["lost"]
            assert lost > 0
            assert len(got) + lost <= sent + 1
            numbers = [m[0] for m in got]
            assert numbers == sorted(numbers)  # what arrives is in order

    run(body)


def test_a_node_sharing_no_pubsub_version_is_refused_logged_and_counted(
    run: Run, wait: Wait, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with PubSub("a", **FAST) as a, PubSub("b", peers=[a.endpoint], **FAST) as b:
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            newer = FakeMember("newer", versions={"pubsub": Range(VERSION + 1, VERSION + 2)})
            try:
                newer.connect(a.endpoint)
                newer.hello(version=VERSION + 1)  # in its own lowest version
                newer.hello()  # and in ours
                newer.hello()
                await wait(
                    lambda: a.stats()["dropped"]["refused_version"] == 3,
                    message="three hellos refused",
                )
                stats = a.stats()
                assert "newer" not in stats["peers"]
                assert a.peers() == ["b"]
                assert stats["dropped"]["unknown_version"] == 0  # refused, not noise
                assert stats["dropped"]["refused"] == 0
                refused = stats["refused_versions"]["newer"]
                assert refused["incarnation"] == 1
                assert refused["versions"] == {"pubsub": [VERSION + 1, VERSION + 2]}
                assert refused["reason"] == (
                    f"no common pubsub version: it speaks [{VERSION + 1}, {VERSION + 2}], "
                    f"we speak [{LOWEST}, {VERSION}]"
                )
                # logged once for that incarnation, with both ranges
                lines = [r for r in caplog.records if "'newer'" in r.getMessage()]
                assert len(lines) == 1
                assert lines[0].levelno == logging.WARNING
                assert "no common pubsub version" in lines[0].getMessage()
                assert f"[{VERSION + 1}, {VERSION + 2}]" in lines[0].getMessage()
                # never connected: a's subscriptions reach b, never the refused node
                sub = a.subscribe("t")
                await wait(lambda: b.remote_subscribers("t") == 1)
                assert newer.poll_subscriptions() == []
                # and the mesh keeps working
                b.broadcast("t", "still here")
                assert await asyncio.wait_for(sub.get(), 2) == "still here"
                # b never heard of it: a refused node is not gossiped
                assert "newer" not in b.stats()["peers"]
            finally:
                newer.close()

    with caplog.at_level(logging.WARNING, logger="pubsub_zmq"):
        run(body)


def test_a_hello_without_versions_is_read_as_version_1(run: Run, wait: Wait) -> None:
    async def body() -> None:
        async with PubSub("a", **FAST) as a:
            old = FakeMember("old", legacy=True)  # as the release before negotiation
            try:
                old.connect(a.endpoint)
                old.hello()
                await wait(lambda: "old" in a.stats()["peers"], message="the old node joined")
                assert a.versions("old") == dict(LEGACY)
                peer = a.stats()["peers"]["old"]
                assert peer["version"] == 1
                assert peer["versions"] == {"pubsub": [1, 1], "tracker": [1, 1], "transfer": [1, 1]}
                assert a.stats()["dropped"]["refused_version"] == 0
                sub = a.subscribe("t")
                await wait(lambda: b"\x01t\x00" in old.poll_subscriptions(), message="sub")
                old.pub.send(batch("t", 0, ["from the old node"], sender="old"))
                assert await asyncio.wait_for(sub.get(), 2) == "from the old node"
            finally:
                old.close()

    run(body)


def test_a_hello_in_a_version_we_do_not_read_from_a_node_we_could_talk_to_is_dropped(
    run: Run, wait: Wait
) -> None:
    async def body() -> None:
        async with PubSub("a", **FAST) as a:
            # it speaks our version too, but wrote in one we do not read: noise, counted
            odd = FakeMember("odd", versions={"pubsub": Range(LOWEST, VERSION + 1)})
            try:
                odd.connect(a.endpoint)
                odd.hello(version=VERSION + 1)
                await wait(lambda: a.stats()["dropped"]["unknown_version"] == 1)
                assert "odd" not in a.stats()["peers"]
                assert a.stats()["dropped"]["refused_version"] == 0
                odd.hello()  # in the version we share: welcome
                await wait(lambda: "odd" in a.stats()["peers"], message="odd joined")
                assert a.stats()["peers"]["odd"]["version"] == VERSION
            finally:
                odd.close()

    run(body)


def test_a_relayed_record_sharing_no_version_is_never_greeted(
    run: Run, wait: Wait, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with PubSub("a", **FAST) as a:
            relay = FakeMember("relay")  # relays what it heard of "newer"
            newer = FakeMember("newer", versions={"pubsub": Range(VERSION + 1, VERSION + 1)})
            try:
                relay.connect(a.endpoint)
                for _ in range(3):
                    relay.hello(members=(newer.record,))
                await wait(lambda: a.stats()["received"]["control_frames"] >= 3)
                await wait(lambda: "relay" in a.stats()["peers"], message="the relay joined")
                stats = a.stats()
                assert "newer" not in stats["peers"]
                assert stats["dropped"]["refused_version"] == 1  # once per incarnation
                assert stats["refused_versions"]["newer"]["versions"] == {
                    "pubsub": [VERSION + 1, VERSION + 1]
                }
                assert newer.router.poll(200) == 0  # never greeted
                lines = [r for r in caplog.records if "'newer'" in r.getMessage()]
                assert len(lines) == 1
                assert "a record relayed for 'newer'" in lines[0].getMessage()
            finally:
                relay.close()
                newer.close()

    with caplog.at_level(logging.WARNING, logger="pubsub_zmq"):
        run(body)


def test_a_node_relayed_as_version_1_is_dropped_when_its_own_hello_says_otherwise(
    run: Run, wait: Wait
) -> None:
    async def body() -> None:
        async with PubSub("a", **FAST) as a:
            # a node of the previous release relays records without versions: "newer"
            # reads as version 1, is greeted, and its own word then refuses it
            relay = FakeMember("relay", legacy=True)
            newer = FakeMember("newer", versions={"pubsub": Range(VERSION + 1, VERSION + 1)})
            try:
                relay.connect(a.endpoint)
                relay.hello(members=(newer.record,))
                await wait(lambda: "newer" in a.stats()["peers"], message="newer relayed")
                assert a.versions("newer") == dict(LEGACY)
                assert newer.router.poll(2000)  # greeted
                newer.connect(a.endpoint)
                newer.hello()
                await wait(lambda: "newer" not in a.stats()["peers"], message="newer removed")
                assert a.stats()["dropped"]["refused_version"] == 1
                assert a.versions("newer") == {}
                assert a.peers() == ["relay"]
                # relayed again (as an old node gossips each round): not greeted again
                while newer.router.poll(0):
                    newer.router.recv_multipart()
                controls = a.stats()["received"]["control_frames"]
                relay.hello(members=(newer.record,))
                relay.hello()  # a marker frame after it: once read, the relay was too
                await wait(lambda: a.stats()["received"]["control_frames"] >= controls + 2)
                assert "newer" not in a.stats()["peers"]
                assert newer.router.poll(300) == 0
                assert a.stats()["dropped"]["refused_version"] == 1
            finally:
                relay.close()
                newer.close()

    run(body)
