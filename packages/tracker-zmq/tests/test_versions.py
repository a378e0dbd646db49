"""Versions of the tracker's protocols: the Shard speaks what it is told (pure tests with
injected :class:`~tracker_zmq.shard.Versions`), and the Tracker announces its ranges on
its PubSub, negotiates from the members' ranges and refuses a peer sharing none.

The choice of a version itself is pubsub_zmq's (tested in its test_versions.py); the
mixed clusters of this release and the previous one are in tests/test_rolling.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from typing import Any

import pytest
from aio import run, until
from mesh import pubsubs, sees_up

from pubsub_zmq import PubSub, Range
from tracker_zmq import Options, Shard, Tracker
from tracker_zmq.shard import Output, Versions
from tracker_zmq.testing import Cluster, Network
from tracker_zmq.wire import (
    LOWEST_PROTOCOL,
    LOWEST_TRANSFER_FORMAT,
    PROTOCOL,
    TRANSFER_FORMAT,
    GracefulPermdown,
    Heartbeat,
    MessageError,
    UnknownProtocolVersion,
    decode,
    encode,
)

OPTS = Options(broadcast_period=1.0, max_silent_periods=2, down_period=5.0, permdown_period=10.0)
T = "topic"
NEWER = f"no common tracker version: it speaks [{PROTOCOL + 1}, {PROTOCOL + 2}], we speak [1, 1]"


def wire(message: Any) -> Any:
    return json.loads(json.dumps(message))


def make(name: str, vsn: int = 1) -> Shard:
    shard = Shard(name, vsn, 0, OPTS, random.Random(0))
    shard.start(0.0)
    return shard


def tick(shard: Shard, now: float) -> Output:
    shard._next_tick = now  # on time: these tests jump time
    return shard.tick(now)


def beat(shard: Shard, now: float) -> dict[str, Any]:
    for _ in range(shard.options.max_silent_periods + 1):
        for send in tick(shard, now).sends:
            if send.message["t"] == "hb":
                return wire(send.message)
    raise AssertionError("no heartbeat")


# ------------------------------------------------------------------ the codec


def test_this_release_speaks_tracker_version_1_and_transfer_formats_1_to_2() -> None:
    assert (LOWEST_PROTOCOL, PROTOCOL) == (1, 1)
    assert (LOWEST_TRANSFER_FORMAT, TRANSFER_FORMAT) == (1, 2)


def test_decode_accepts_the_versions_of_the_range_only() -> None:
    for version in range(LOWEST_PROTOCOL, PROTOCOL + 1):
        message = encode(GracefulPermdown(("b", 1)), 1, version)
        assert decode(wire(message), pool_size=1) == GracefulPermdown(("b", 1))
    for version in (LOWEST_PROTOCOL - 1, PROTOCOL + 1, "1", None, True):
        message = {**encode(GracefulPermdown(("b", 1)), 1), "v": version}
        with pytest.raises(UnknownProtocolVersion):
            decode(message, pool_size=1)
    assert issubclass(UnknownProtocolVersion, MessageError)  # dropped as invalid
    with pytest.raises(ValueError, match="not one this node speaks"):
        encode(GracefulPermdown(("b", 1)), 1, PROTOCOL + 1)


def test_version_1_messages_are_the_previous_releases_field_for_field() -> None:
    # The previous release reads with dict.get and ignores unknown fields, but what it
    # was sent must stay what it was: nothing is added at version 1.
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {"x": 1})
    heartbeat = beat(b, 0.0)
    assert set(heartbeat) == {"v", "t", "from", "pool", "clock", "delta"}
    assert heartbeat["v"] == 1
    a.receive(heartbeat, 0.0)
    a.receive(beat(b, 1.0), 1.0)
    b.track("pid", T, "k2", {})
    tick(b, 1.5)  # b's clock runs ahead of what a merged
    a.receive(beat(b, 2.0), 2.0)
    requests = [s for t in (2.0, 3.0) for s in tick(a, t).sends if s.message["t"] == "treq"]
    assert [set(s.message) for s in requests] == [{"v", "t", "from", "pool", "id", "clock"}]
    assert requests[0].message["v"] == 1
    answer = b.receive(wire(requests[0].message), 3.0)
    parts = [wire(send.message) for parts in answer.later for send in parts]
    assert parts
    for part in parts:
        assert set(part) == {"v", "t", "from", "pool", "id", "part", "last", "kind", "data"}
        assert part["v"] == 1
    perm = b.graceful_permdown().sends[0].message
    assert perm == {"v": 1, "t": "perm", "from": ["b", 1], "pool": [1, "crc32"]}


# ------------------------------------------------------------------ the Shard


def test_a_shard_speaks_the_versions_it_is_given() -> None:
    a = make("a")
    assert a.versions == Versions()  # before any: the newest tracker version
    versions = Versions(broadcast=1, direct={"b": 1}, transfer={"b": 1})
    a.set_versions(versions)
    assert a.versions is versions
    assert beat(a, 0.0)["v"] == 1
    assert a.graceful_permdown().sends[0].message["v"] == 1
    assert a.stats()["versions"] == {"broadcast": 1, "refused": []}


@pytest.mark.parametrize(
    "bad",
    [
        Versions(broadcast=PROTOCOL + 1),
        Versions(broadcast=0),
        Versions(direct={"b": PROTOCOL + 1}),
        Versions(transfer={"b": TRANSFER_FORMAT + 1}),
        Versions(transfer={"b": 0}),
    ],
)
def test_versions_a_shard_cannot_write_are_refused(bad: Versions) -> None:
    a = make("a")
    with pytest.raises(ValueError, match="not one this node speaks"):
        a.set_versions(bad)
    assert a.versions == Versions()


def test_a_peer_sharing_no_version_is_refused_counted_and_reported_once_per_ref() -> None:
    a, b, c = make("a"), make("b"), make("c")
    b.track("pid", T, "from b", {})
    c.track("pid", T, "from c", {})
    a.set_versions(Versions(direct={"c": 1}, transfer={"c": 1}, refused={"b": NEWER}))
    out = a.receive(beat(b, 0.0), 0.0)
    assert out.refusals == [(("b", 1), NEWER)]
    assert out.diff == {}
    assert out.events == []
    again = a.receive(beat(b, 1.0), 1.0)
    assert again.refusals == []  # reported once per ref; counted every time
    assert a.drops == {"no_common_version": 2}
    assert a.counters["dropped"] == 2
    # its next incarnation is reported again
    b2 = make("b", vsn=2)
    assert a.receive(beat(b2, 1.5), 1.5).refusals == [(("b", 2), NEWER)]
    # the other peer is unaffected
    a.receive(beat(c, 2.0), 2.0)
    assert [key for key, _ in a.list(T)] == ["from c"]
    assert sorted(a.replicas) == ["c"]
    assert a.stats()["versions"] == {"broadcast": 1, "refused": ["b"]}


def test_no_transfer_request_goes_to_a_refused_peer() -> None:
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {})
    tick(b, 0.0)  # b's delta goes to nobody: its clock is ahead of a's
    a.receive(beat(b, 1.0), 1.0)
    assert a.replicas["b"].status.value == "up"
    a.set_versions(Versions(refused={"b": NEWER}))  # b turned out to share nothing
    sends = [s for t in (1.0, 2.0) for s in tick(a, t).sends]
    assert [s for s in sends if s.message["t"] == "treq"] == []
    assert a.drops == {"no_common_version": 1}


def test_garbage_from_a_refused_name_is_still_only_counted() -> None:
    a = make("a")
    a.set_versions(Versions(refused={"b": NEWER}))
    for data in ({"from": ["b", 1]}, {"from": ["b", "x"]}, ["b", 1], None):
        out = a.receive(data, 0.0)
        assert out.diff == {}
        assert out.sends == []
    assert a.drops == {"no_common_version": 1, "invalid": 3}


# ------------------------------------------------------------------ the Tracker

FAST: dict[str, Any] = {
    "broadcast_period": 0.05,
    "max_silent_periods": 2,
    "down_period": 0.3,
    "permdown_period": 1.0,
}


def test_trackers_announce_their_ranges_and_negotiate() -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            n0, n1, n2 = await pubsubs(stack, 3)
            assert n2.versions("n2") == {"pubsub": Range(1, 1)}  # no tracker there
            trackers = [Tracker(n0, **FAST), Tracker(n1, **FAST)]
            for tracker in trackers:
                await stack.enter_async_context(tracker)
            await until(lambda: all(sees_up(t, trackers) for t in trackers), message="up")
            ranges = {"pubsub": Range(1, 1), "tracker": Range(1, 1), "transfer": Range(1, 2)}
            assert n0.versions("n0") == ranges
            # a plain PubSub reads them, through gossip
            await until(
                lambda: n2.member_versions() == {"n0": ranges, "n1": ranges},
                message="the trackers' ranges at n2",
            )
            await until(lambda: n0.versions("n1") == ranges, message="n1's ranges at n0")
            await until(
                lambda: (
                    trackers[0].stats()["versions"]["peers"]
                    == {"n1": {"tracker": 1, "transfer": 2}}
                ),
                message="n0 negotiated with n1",
            )
            assert trackers[0].stats()["versions"] == {
                "tracker": [1, 1],
                "transfer": [1, 2],
                "broadcast": 1,
                "peers": {"n1": {"tracker": 1, "transfer": 2}},
                "refused": {},
                "left_out": [],
            }
            trackers[0].track("pid", "room", "alice", {})
            await until(lambda: [k for k, _ in trackers[1].list("room")] == ["alice"])
            assert trackers[0].stats()["totals"]["drops"] == {}
            assert trackers[1].stats()["totals"]["drops"] == {}

    run(body)


def test_a_node_sharing_no_tracker_version_is_refused_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            n0, newer = await pubsubs(stack, 2)
            # a node of a later release: no tracker version in common with ours
            newer.announce("tracker", PROTOCOL + 1, PROTOCOL + 2)
            newer.announce("transfer", 1, 1)
            tracker = await stack.enter_async_context(Tracker(n0, **FAST))
            await until(
                lambda: tracker.stats()["versions"]["refused"] == {"n1": NEWER},
                message="n1 refused",
            )
            sub = newer.subscribe("phx_presence:presence_shard0")
            # n0's tracker reads that topic at newer's PUB
            await until(lambda: newer.remote_subscribers("phx_presence:presence_shard0") == 1)
            for vsn in (5, 5, 5, 6):  # three messages of one incarnation, one of the next
                newer.broadcast_from(
                    sub,
                    "phx_presence:presence_shard0",
                    encode(Heartbeat(("n1", vsn), {}, None), 1),
                )
                await newer.flush()
            await until(
                lambda: tracker.stats()["totals"]["drops"].get("no_common_version") == 4,
                message="four messages refused",
            )
            assert tracker.stats()["replicas"] == {}
            lines = [r for r in caplog.records if "refused the messages of n1" in r.getMessage()]
            assert [line.levelno for line in lines] == [logging.WARNING] * 2
            assert "(vsn 5)" in lines[0].getMessage()
            assert "(vsn 6)" in lines[1].getMessage()
            assert NEWER in lines[0].getMessage()

    with caplog.at_level(logging.WARNING, logger="tracker_zmq"):
        run(body)


def test_a_tracker_announces_on_a_pubsub_it_is_given() -> None:
    async def body() -> None:
        async with PubSub("solo") as pubsub, Tracker(pubsub, **FAST) as tracker:
            assert pubsub.versions("solo")["tracker"] == Range(LOWEST_PROTOCOL, PROTOCOL)
            assert pubsub.versions("solo")["transfer"] == Range(
                LOWEST_TRANSFER_FORMAT, TRANSFER_FORMAT
            )
            assert tracker.stats()["versions"]["broadcast"] == PROTOCOL
            assert pubsub.stats()["versions"]["tracker"] == [LOWEST_PROTOCOL, PROTOCOL]

    run(body)


# ------------------------------------------------------------------ the simulator


def test_a_refused_node_stays_out_of_a_simulated_cluster_and_every_drop_is_counted() -> None:
    options = Options(broadcast_period=0.1, max_silent_periods=2, permdown_period=1.5)
    cluster = Cluster(options, seed=11, nodes=["a", "b", "c"], network=Network(loss=0.05))
    newer = Versions(refused={"a": NEWER, "b": NEWER})  # c shares no version with a, b
    cluster.set_versions("a", Versions(refused={"c": NEWER}))
    cluster.set_versions("b", Versions(refused={"c": NEWER}))
    cluster.set_versions("c", newer)
    cluster.track("a", "o", T, "alice", {})
    cluster.track("b", "o", T, "bob", {})
    cluster.track("c", "o", T, "carol", {})
    cluster.run_for(2.0)
    cluster.crash("c")
    cluster.restart("c")  # its next incarnation keeps its versions
    assert cluster.node("c").shards[0].versions is newer
    cluster.track("c", "o", T, "carol", {})
    cluster.run_for(2.0)
    for name in ("a", "b"):
        assert {key for key, _ in cluster.list(name, T)} == {"alice", "bob"}
        shard = cluster.shard(name, T)
        assert "c" not in shard.replicas
        assert shard.drops.get("no_common_version", 0) > 0
        assert shard.drops.get("invalid", 0) == 0
    assert {key for key, _ in cluster.list("c", T)} == {"carol"}
    assert cluster.shard("c", T).drops.get("no_common_version", 0) > 0
    with pytest.raises(ValueError, match="not one this node speaks"):
        cluster.set_versions("a", Versions(broadcast=PROTOCOL + 1))
