"""membership.py: verdicts on records, and what tick asks for, under a virtual clock."""

from __future__ import annotations

import itertools
import random

from pubsub_zmq.membership import Membership, Verdict
from pubsub_zmq.versions import LEGACY, Range
from pubsub_zmq.wire import NodeRecord

ME = NodeRecord("me", 100, "tcp://h:1", "tcp://h:2")


def rec(name: str, inc: int = 1, port: int = 10) -> NodeRecord:
    return NodeRecord(name, inc, f"tcp://h:{port}", f"tcp://h:{port + 1}")


def table(**kw: object) -> Membership:
    options: dict[str, object] = {
        "gossip_interval": 1.0,
        "peer_timeout": 5.0,
        "forget_after": 60.0,
        "min_backoff": 0.1,
        "max_backoff": 2.0,
        "rng": random.Random(1),
    }
    options.update(kw)
    return Membership(ME, [("tcp://seed:1", None)], **options)  # type: ignore[arg-type]


def test_self_and_conflicts_with_self() -> None:
    m = table()
    assert m.observe(ME, 0, first_hand=True) is Verdict.SELF
    other_me = NodeRecord("me", 99, "tcp://x:1", "tcp://x:2")
    assert m.observe(other_me, 0, first_hand=True) is Verdict.CONFLICT
    assert m.observe(other_me, 0, first_hand=False) is Verdict.STALE
    assert m.members == {}


def test_new_known_recovered() -> None:
    m = table()
    assert m.observe(rec("a"), 0, first_hand=True) is Verdict.NEW
    assert m.observe(rec("a"), 1, first_hand=True) is Verdict.KNOWN
    assert m.observe(rec("a"), 1, first_hand=False) is Verdict.KNOWN
    m.tick(10)  # silent
    assert not m.members["a"].alive
    assert m.observe(rec("a"), 11, first_hand=True) is Verdict.RECOVERED
    assert m.members["a"].alive


def test_second_hand_member_is_not_live_until_heard() -> None:
    m = table()
    assert m.observe(rec("b"), 0, first_hand=False) is Verdict.NEW
    assert m.live() == []
    assert m.observe(rec("b"), 0.5, first_hand=True) is Verdict.KNOWN
    assert [x.record.name for x in m.live()] == ["b"]


def test_restart_from_same_endpoint_replaces_at_once() -> None:
    m = table()
    m.observe(rec("a", 1), 0, first_hand=True)
    assert m.observe(rec("a", 2), 1, first_hand=True) is Verdict.RESTARTED
    assert m.members["a"].record.incarnation == 2
    assert m.observe(rec("a", 1), 2, first_hand=True) is Verdict.STALE


def test_duplicate_name_elsewhere_is_refused_while_the_holder_lives() -> None:
    m = table()
    m.observe(rec("a", 1, port=10), 0, first_hand=True)
    assert m.observe(rec("a", 2, port=20), 1, first_hand=True) is Verdict.CONFLICT
    assert m.members["a"].record.incarnation == 1
    # once the holder is silent, the newer incarnation takes the name
    assert m.observe(rec("a", 2, port=20), 7, first_hand=True) is Verdict.RESTARTED


def test_not_allowed() -> None:
    m = table(allowed=lambda r: r.name != "evil")
    assert m.observe(rec("evil"), 0, first_hand=True) is Verdict.NOT_ALLOWED
    assert "evil" not in m.members


def test_heard_only_for_the_current_incarnation() -> None:
    m = table()
    m.observe(rec("a", 3), 0, first_hand=True)
    assert m.heard("a", 3, 1)
    assert not m.heard("a", 2, 1)
    assert not m.heard("zz", 3, 1)


def test_seed_hellos_back_off_until_answered() -> None:
    m = table()
    times = []
    now = 0.0
    while now < 10:
        if m.tick(now).hello_seeds:
            times.append(now)
        now = round(now + 0.01, 2)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < gaps[-1]
    assert max(gaps) <= 2.0 * 1.2 + 0.02  # capped at max_backoff (+ jitter)
    assert m.pending_seeds() == ["tcp://seed:1"]
    m.observe(rec("s"), now, first_hand=True)
    assert m.seed_answered("tcp://seed:1", "s")
    assert m.pending_seeds() == []
    assert m.tick(now + 0.5).hello_seeds == []


def test_seeds_are_never_forgotten() -> None:
    m = table()
    m.observe(rec("s"), 0, first_hand=True)
    m.seed_answered("tcp://seed:1", "s")
    out = m.tick(100)  # silent and past forget_after
    assert [x.record.name for x in out.forget] == ["s"]
    assert "s" not in m.members
    assert m.seeds["tcp://seed:1"].endpoint == "tcp://seed:1"
    assert any(m.tick(t / 10).hello_seeds for t in range(1000, 1100))


def test_silence_then_forget() -> None:
    m = table()
    m.observe(rec("a"), 0, first_hand=True)
    assert m.tick(1).silent == []
    out = m.tick(6)
    assert [x.record.name for x in out.silent] == ["a"]
    assert [x.record.name for x in out.hello_members] == ["a"]
    assert m.tick(61).forget[0].record.name == "a"
    assert m.members == {}


def test_gossip_goes_to_live_members_every_interval() -> None:
    m = table()
    m.observe(rec("a"), 0, first_hand=True)
    m.observe(rec("b"), 0, first_hand=False)
    rounds = [t for t in range(400) if m.tick(t / 100).gossip]
    assert 3 <= len(rounds) <= 6  # about one per second over 4 s
    assert [x.record.name for x in m.tick(100).gossip] == []  # all silent by then


def test_live_records_carry_only_heard_members() -> None:
    m = table()
    m.observe(rec("a"), 0, first_hand=True)
    m.observe(rec("b"), 0, first_hand=False)
    assert [r.name for r in m.live_records()] == ["a"]
    assert m.forget("a") is not None
    assert m.forget("a") is None


# -- versions ------------------------------------------------------------------------------


def speaking(record: NodeRecord, low: int, high: int, **others: Range) -> NodeRecord:
    return record.with_versions({"pubsub": Range(low, high), **others})


def test_a_record_sharing_no_pubsub_version_is_refused() -> None:
    m = table()
    newer = speaking(rec("n"), 2, 3)
    assert m.observe(newer, 0, first_hand=True) is Verdict.INCOMPATIBLE
    assert m.observe(newer, 0, first_hand=False) is Verdict.INCOMPATIBLE
    assert m.members == {}
    speaks_nothing = rec("x").with_versions({})
    assert m.observe(speaks_nothing, 0, first_hand=True) is Verdict.INCOMPATIBLE
    assert not m.compatible(speaks_nothing)
    # overlapping ranges, and the release before negotiation (read as pubsub 1), join
    assert m.observe(speaking(rec("a"), 1, 5), 0, first_hand=True) is Verdict.NEW
    legacy = rec("b", port=20).with_versions(LEGACY)
    assert m.observe(legacy, 0, first_hand=True) is Verdict.NEW
    assert sorted(m.members) == ["a", "b"]


def test_a_member_known_second_hand_is_removed_when_its_own_record_refutes_it() -> None:
    m = table()
    # relayed by a node of the previous release, which drops versions: read as v1
    assert m.observe(rec("n").with_versions(LEGACY), 0, first_hand=False) is Verdict.NEW
    generation = m.generation
    assert m.observe(speaking(rec("n"), 2, 3), 0.1, first_hand=True) is Verdict.INCOMPATIBLE
    assert "n" not in m.members
    assert m.generation > generation


def test_the_own_record_of_a_member_updates_its_versions() -> None:
    m = table()
    assert m.observe(rec("a"), 0, first_hand=True) is Verdict.NEW
    generation = m.generation
    tracker = speaking(rec("a"), 1, 1, tracker=Range(1, 2))
    # a relayed copy may be older than what the member says: it changes nothing
    assert m.observe(tracker, 0.5, first_hand=False) is Verdict.KNOWN
    assert m.members["a"].record.speaks("tracker") is None
    assert m.generation == generation
    assert m.observe(tracker, 1, first_hand=True) is Verdict.UPDATED
    assert m.members["a"].record.speaks("tracker") == Range(1, 2)
    assert m.generation == generation + 1
    assert m.observe(tracker, 1.5, first_hand=True) is Verdict.KNOWN
    assert m.generation == generation + 1
    # only the versions are taken from it: the endpoints of an incarnation stay
    moved = NodeRecord("a", 1, "tcp://elsewhere:1", "tcp://elsewhere:2", None, tracker.versions)
    assert m.observe(moved.with_versions({"pubsub": Range(1, 1)}), 2, first_hand=True) is (
        Verdict.UPDATED
    )
    assert m.members["a"].record.control == "tcp://h:10"
    # silent, then back with other versions: recovered (and updated)
    m.tick(10)
    assert m.observe(tracker, 11, first_hand=True) is Verdict.RECOVERED
    assert m.members["a"].record.speaks("tracker") == Range(1, 2)


def test_the_generation_moves_with_the_live_set() -> None:
    m = table()
    seen = [m.generation]

    def moved() -> bool:
        seen.append(m.generation)
        return seen[-1] != seen[-2]

    m.observe(rec("a"), 0, first_hand=True)
    assert moved()  # joined
    m.observe(rec("a"), 1, first_hand=True)
    assert not moved()  # heard again: nothing changed
    m.observe(rec("b", port=20), 1, first_hand=False)
    assert moved()  # known second hand
    assert m.heard("b", 1, 1.5)
    assert moved()  # now live
    m.tick(7)
    assert moved()  # both silent
    m.observe(rec("a"), 8, first_hand=True)
    assert moved()  # a is back
    m.forget("a")
    assert moved()
    m.tick(100)
    assert moved()  # b forgotten
    assert m.members == {}
