"""versions.py: the choice of a version, as tables of (mine, theirs) -> chosen; and the
PubSub's side of it (announced ranges travel in the records; refusals: test_hostile.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pubsub_zmq import ConfigError, PubSub
from pubsub_zmq.versions import LEGACY, Range, broadcast, direct, left_out
from pubsub_zmq.wire import LOWEST, VERSION, VERSIONS

Run = Callable[..., Any]
Wait = Callable[..., Any]


def r(low: int, high: int) -> Range:
    return Range(low, high)


@pytest.mark.parametrize(
    ("mine", "theirs", "chosen"),
    [
        (r(1, 1), r(1, 1), 1),  # this release against the previous one
        (r(1, 2), r(1, 1), 1),  # a new node to an old one: the old one's version
        (r(1, 1), r(1, 2), 1),  # and the other way round: both pick the same
        (r(1, 3), r(2, 5), 3),  # the highest both know
        (r(2, 5), r(1, 3), 3),
        (r(1, 5), r(3, 3), 3),  # one range inside the other
        (r(3, 3), r(1, 5), 3),
        (r(2, 4), r(4, 9), 4),  # touching at one version
        (r(4, 9), r(2, 4), 4),
        (r(1, 1), r(2, 3), None),  # disjoint: refused
        (r(2, 3), r(1, 1), None),
        (r(5, 9), r(1, 4), None),
    ],
)
def test_direct(mine: Range, theirs: Range, chosen: int | None) -> None:
    assert direct(mine, theirs) == chosen
    assert direct(theirs, mine) == chosen  # both ends compute the same number


@pytest.mark.parametrize(
    ("mine", "members", "chosen", "left"),
    [
        (r(1, 2), [], 2, []),  # nobody to read it: our newest
        (r(1, 1), [r(1, 1), r(1, 1)], 1, []),
        (r(1, 2), [r(1, 1), r(1, 2)], 1, []),  # an old node is up: its version
        (r(1, 2), [r(1, 2), r(1, 2)], 2, []),  # the last old node is gone: it rises
        (r(1, 3), [r(1, 3), r(2, 3)], 3, []),  # not the literal lowest (1): m1 reads 2..3
        (r(2, 3), [r(1, 2)], 2, []),
        (r(1, 5), [r(2, 4), r(3, 6)], 4, []),
        # no single version fits everyone: the lowest any member speaks that we speak,
        # and whoever cannot read it is reported
        (r(1, 3), [r(1, 1), r(3, 3)], 1, ["m1"]),
        (r(1, 3), [r(3, 3), r(1, 1)], 1, ["m0"]),
        (r(1, 4), [r(2, 2), r(4, 4), r(2, 3)], 2, ["m1"]),
        (r(2, 4), [r(1, 2), r(4, 5)], 2, ["m1"]),
        # members sharing nothing with us (refused at hello; never live in practice)
        (r(1, 1), [r(2, 3)], None, ["m0"]),
        (r(1, 1), [r(1, 1), r(2, 3)], 1, ["m1"]),
        (r(3, 4), [r(1, 2), r(5, 6)], None, ["m0", "m1"]),
    ],
)
def test_broadcast(mine: Range, members: list[Range], chosen: int | None, left: list[str]) -> None:
    by_name = {f"m{i}": theirs for i, theirs in enumerate(members)}
    assert broadcast(mine, members) == chosen
    assert broadcast(mine, iter(members)) == chosen  # any iterable, read once
    assert left_out(chosen, by_name) == left
    if chosen is not None:
        assert chosen in mine


def test_the_chosen_broadcast_is_readable_by_all_when_a_version_fits_everyone() -> None:
    ranges = [r(lo, hi) for lo in range(1, 5) for hi in range(lo, 5)]
    for mine in ranges:
        for a in ranges:
            for b in ranges:
                chosen = broadcast(mine, [a, b])
                common = set(range(mine.low, mine.high + 1)) & set(range(a.low, a.high + 1))
                common &= set(range(b.low, b.high + 1))
                if common:
                    assert chosen == max(common)
                    assert left_out(chosen, {"a": a, "b": b}) == []


def test_range_checks_its_bounds() -> None:
    assert r(1, 1).to_json() == [1, 1]
    assert str(r(2, 3)) == "[2, 3]"
    assert 2 in r(1, 3)
    assert 4 not in r(1, 3)
    assert "2" not in r(1, 3)
    for low, high in [(0, 1), (2, 1), (-1, 3), (1, 2**31)]:
        with pytest.raises(ValueError, match="low <= high"):
            Range(low, high)
    for low, high in [(True, 1), (1.0, 2), ("1", 2), (1, None)]:
        with pytest.raises(TypeError, match="ints"):
            Range(low, high)  # type: ignore[arg-type]


def test_legacy_is_version_1_of_the_three_protocols_of_the_previous_release() -> None:
    assert dict(LEGACY) == {"pubsub": r(1, 1), "tracker": r(1, 1), "transfer": r(1, 1)}
    with pytest.raises(TypeError):
        LEGACY["x"] = r(1, 1)  # type: ignore[index]


# -- the PubSub's side: announced ranges travel in the node records ------------------------

FAST = {"gossip_interval": 0.1, "peer_timeout": 1.0}


def test_announced_ranges_reach_the_peers(run: Run, wait: Wait) -> None:
    async def body() -> None:
        a = PubSub("a", **FAST)
        a.announce("app", 1, 2)  # before start: in the first hello
        async with a, PubSub("b", peers=[a.endpoint], **FAST) as b:
            await wait(lambda: a.peers() == ["b"] and b.peers() == ["a"])
            assert b.versions("a") == {"pubsub": VERSIONS, "app": r(1, 2)}
            assert a.versions("a") == {"pubsub": VERSIONS, "app": r(1, 2)}
            assert a.versions("b") == {"pubsub": VERSIONS}
            assert a.versions("nobody") == {}
            # after start: the next gossip round carries it
            a.announce("app", 2, 4)
            b.announce("other", 3, 3)
            await wait(lambda: b.versions("a").get("app") == r(2, 4), message="a's new range")
            await wait(lambda: a.versions("b").get("other") == r(3, 3), message="b's range")
            assert b.member_versions() == {"a": {"pubsub": VERSIONS, "app": r(2, 4)}}
            assert a.member_versions() == {"b": {"pubsub": VERSIONS, "other": r(3, 3)}}
            stats = a.stats()
            assert stats["versions"] == {"app": [2, 4], "pubsub": [LOWEST, VERSION]}
            assert stats["broadcast_version"] == VERSION
            assert stats["peers"]["b"]["version"] == VERSION
            assert stats["peers"]["b"]["versions"] == {
                "other": [3, 3],
                "pubsub": [LOWEST, VERSION],
            }
            assert stats["dropped"]["refused_version"] == 0
            assert stats["dropped"]["unreadable"] == 0
            # still one mesh
            sub = b.subscribe("t")
            await wait(lambda: a.remote_subscribers("t") == 1)
            a.broadcast("t", "hi")
            a.direct_broadcast("b", "t", "direct")
            assert sorted([await sub.get(), await sub.get()]) == ["direct", "hi"]

    run(body)


def test_announce_checks_its_arguments() -> None:
    pubsub = PubSub("a")
    for protocol, low, high in [
        ("pubsub", 1, 1),  # the codec's own range
        ("a b", 1, 1),
        ("", 1, 1),
        ("app", 0, 1),
        ("app", 2, 1),
        ("app", 1.0, 2),
        (3, 1, 1),
    ]:
        with pytest.raises(ConfigError):
            pubsub.announce(protocol, low, high)  # type: ignore[arg-type]
    assert pubsub.versions("a") == {"pubsub": VERSIONS}
    assert pubsub.member_versions() == {}
