"""Unit tests of the Shard, its options and its replicas, driven by hand, message by message.

Ports phoenix_pubsub's shard_test (option validation), replica_test's cases as the
Shard sees them (up, down and permdown by silence; the table itself is in
test_replica.py) and the local-operation cases of shard_replication_test, and checks
the rules this port adds: messages matched to requests, foreign and permdowned senders
dropped, garbage never raising, the stall rule.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker_zmq import (
    AlreadyTracked,
    ConfigError,
    NoPresence,
    Options,
    Output,
    Shard,
    Status,
)

OPTS = Options(broadcast_period=1.0, max_silent_periods=2, down_period=5.0, permdown_period=10.0)
T = "topic"


def wire(message: Any) -> Any:
    """What the peer receives: the message after a trip through JSON."""
    return json.loads(json.dumps(message))


def make(name: str, vsn: int = 1, options: Options = OPTS, seed: int = 0) -> Shard:
    shard = Shard(name, vsn, 0, options, random.Random(seed))
    shard.start(0.0)
    return shard


def tick(shard: Shard, now: float) -> Output:
    """A tick on time (not stalled): these tests jump time, so the tick was due now."""
    shard._next_tick = now  # the one write to a Shard's schedule, for the tests' jumps
    return shard.tick(now)


def beat(shard: Shard, now: float) -> dict[str, Any]:
    """Tick until the shard heartbeats; returns the heartbeat's wire form."""
    for _ in range(shard.options.max_silent_periods + 1):
        for send in tick(shard, now).sends:
            if send.message["t"] == "hb":
                return wire(send.message)
    raise AssertionError("no heartbeat")


def deliver(out: Output, to: Shard, now: float) -> Output:
    """Deliver what ``out`` sends to ``to``; returns the merged Outputs' union."""
    total = Output()
    for send in out.sends:
        if send.node in (None, to.node):
            got = to.receive(wire(send.message), now)
            total.sends += got.sends
            total.events += got.events
            for topic, (joins, leaves) in got.diff.items():
                mine = total.diff.setdefault(topic, ([], []))
                mine[0].extend(joins)
                mine[1].extend(leaves)
    return total


def kinds(out: Output) -> list[tuple[str, Any]]:
    return [(e.kind, e.ref) for e in out.events]


# ------------------------------------------------------------------ options


def test_defaults_are_phoenixs_in_seconds() -> None:
    options = Options()
    assert options.broadcast_period == 1.5
    assert options.max_silent_periods == 10
    assert options.down_period == 30.0
    assert options.permdown_period == 1200.0
    assert options.clock_sample_periods == 2
    assert options.max_delta_sizes == (100, 1000, 10000)
    assert options.pool_size == 1


def test_down_period_must_exceed_the_idle_heartbeat_interval() -> None:
    # shard_test: down_period 1 ms is refused; here the bound is the idle interval.
    with pytest.raises(ConfigError, match="down_period"):
        Options(down_period=0.001)
    with pytest.raises(ConfigError, match="down_period"):
        Options(broadcast_period=1.5, max_silent_periods=10, down_period=16.5)
    assert Options(broadcast_period=1.5, max_silent_periods=10, down_period=16.6).down == 16.6


def test_permdown_period_must_exceed_down_period() -> None:
    # shard_test: permdown 120 s with down 1200 s is refused.
    with pytest.raises(ConfigError, match="permdown_period"):
        Options(down_period=1200.0, permdown_period=120.0)
    with pytest.raises(ConfigError, match="permdown_period"):
        Options(down_period=40.0, permdown_period=40.0)
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "bad",
    [
        {"broadcast_period": 0},
        {"broadcast_period": float("nan")},
        {"broadcast_period": True},
        {"max_silent_periods": 0},
        {"max_silent_periods": 1.5},
        {"clock_sample_periods": 0},
        {"max_delta_sizes": ()},
        {"max_delta_sizes": (10, 5)},
        {"pool_size": 0},
        {"permdown_period": -1},
    ],
)
def test_bad_options_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Options(**bad)


# ----------------------------------------------------------------- replicas


def test_first_heartbeat_adds_an_up_replica() -> None:
    a, b = make("a"), make("b", vsn=9)
    out = a.receive(beat(b, 0.0), 0.5)
    assert kinds(out) == [("up", ("b", 9))]
    assert a.replicas["b"].status is Status.UP
    assert a.replicas["b"].last_heartbeat_at == 0.5


def test_silence_makes_a_replica_down_then_permdown() -> None:
    # replica_test's detect_down with temp 5 / perm 10.
    a, b = make("a"), make("b")
    a.receive(beat(b, 0.0), 0.0)
    assert kinds(tick(a, 0.0)) == []
    assert kinds(tick(a, 1.0)) == []
    for t in (2.0, 3.0, 4.0, 5.0):
        assert kinds(tick(a, t)) == []
    assert kinds(tick(a, 6.0)) == [("down", ("b", 1))]
    assert a.replicas["b"].status is Status.DOWN
    for t in (7.0, 8.0, 9.0, 10.0):
        assert kinds(tick(a, t)) == []
    assert kinds(tick(a, 11.0)) == [("permdown", ("b", 1))]
    assert "b" not in a.replicas


def test_a_heartbeat_brings_a_down_replica_back_up_with_its_presences() -> None:
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {})
    a.receive(beat(b, 0.0), 0.0)
    assert [k for k, _ in a.list(T)] == ["k"]
    for t in range(1, 7):
        out = tick(a, float(t))
    assert out.diff == {T: ([], [("k", a.state.get("pid", T, "k").meta)])}  # type: ignore[union-attr]
    assert a.list(T) == []
    out = a.receive(beat(b, 7.0), 7.0)
    assert kinds(out) == [("up", ("b", 1))]
    assert [k for k, _ in out.diff[T][0]] == ["k"]
    assert a.replicas["b"].status is Status.UP


def test_permdown_of_a_replica_already_down_reports_no_leaves_again() -> None:
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {})
    a.receive(beat(b, 0.0), 0.0)
    for t in range(1, 7):
        tick(a, float(t))
    assert a.replicas["b"].status is Status.DOWN
    out = deliver(b.graceful_permdown(), a, 7.0)
    assert kinds(out) == [("permdown", ("b", 1))]
    assert out.diff == {}


# ------------------------------------------------------------- heartbeats


def test_first_tick_is_jittered_within_a_quarter_period() -> None:
    firsts = set()
    for seed in range(50):
        shard = Shard("a", 1, 0, OPTS, random.Random(seed))
        first = shard.start(100.0)
        assert 100.0 <= first <= 100.0 + 0.25 * OPTS.broadcast_period
        assert shard.next_tick == first
        firsts.add(first)
    assert len(firsts) > 40


def test_heartbeats_carry_deltas_and_an_empty_one_after_max_silent_periods() -> None:
    a = make("a")
    sends = [tick(a, float(t)).sends for t in range(8)]
    beats = [t for t, s in enumerate(sends) if s]
    # The first tick always sends; then one every max_silent_periods + 1 ticks.
    assert beats == [0, 3, 6]
    assert all(s[0].node is None and s[0].message["delta"] is None for s in sends if s)
    a.track("pid", T, "k", {})
    out = tick(a, 8.0)
    assert len(out.sends) == 1
    assert out.sends[0].message["delta"] is not None
    assert tick(a, 9.0).sends == []


def test_next_tick_is_one_period_after_the_tick() -> None:
    a = make("a")
    tick(a, 3.0)
    assert a.next_tick == 4.0


# --------------------------------------------------------- local operations


def test_track_reports_a_join_with_a_phx_ref() -> None:
    a = make("a")
    ref, out = a.track("pid", T, "k", {"name": "x"})
    assert out.diff == {T: ([("k", {"name": "x", "phx_ref": ref})], [])}
    assert a.list(T) == [("k", {"name": "x", "phx_ref": ref})]
    assert a.get_by_key(T, "k") == [("pid", {"name": "x", "phx_ref": ref})]
    ref2, _ = a.track("pid", T, "k2", {})
    assert ref2 != ref


def test_duplicate_track_raises_already_tracked() -> None:
    a = make("a")
    a.track("pid", T, "u1", {})
    with pytest.raises(AlreadyTracked):
        a.track("pid", T, "u1", {})
    a.track("pid", "other", "u1", {})
    a.track("pid", T, "u2", {})
    assert len(a.state) == 3


@pytest.mark.parametrize(
    ("owner", "topic", "key", "meta"),
    [
        (1.5, T, "k", {}),
        (True, T, "k", {}),
        ("pid", None, "k", {}),
        ("pid", T, ("k",), {}),
        ("pid", T, "k", {"x": object()}),
        ("pid", T, "k", {"x": float("inf")}),
        ("pid", T, "k", {1: "x"}),
        ("pid", T, "k", ["x"]),
    ],
)
def test_track_refuses_bad_ids_and_metas(owner: Any, topic: Any, key: Any, meta: Any) -> None:
    a = make("a")
    with pytest.raises(TypeError):
        a.track(owner, topic, key, meta)
    assert len(a.state) == 0


def test_update_with_a_map_reports_leave_and_join_with_phx_ref_prev() -> None:
    a = make("a")
    old, _ = a.track("pid", T, "k", {"v": 1})
    new, out = a.update("pid", T, "k", {"w": 2, "phx_ref": "mine", "phx_ref_prev": "x"})
    assert new != old
    assert out.diff == {
        T: (
            [("k", {"w": 2, "phx_ref": new, "phx_ref_prev": old})],
            [("k", {"v": 1, "phx_ref": old})],
        )
    }
    assert a.list(T) == [("k", {"w": 2, "phx_ref": new, "phx_ref_prev": old})]


def test_update_with_a_function_gets_a_copy() -> None:
    a = make("a")
    old, _ = a.track("pid", T, "k", {"v": 1, "keep": True})

    def bump(meta: dict[str, Any]) -> dict[str, Any]:
        meta["v"] += 1
        return meta

    new, out = a.update("pid", T, "k", bump)
    assert out.diff[T][1] == [("k", {"v": 1, "keep": True, "phx_ref": old})]
    assert out.diff[T][0] == [("k", {"v": 2, "keep": True, "phx_ref": new, "phx_ref_prev": old})]


def test_update_without_presence_raises_no_presence() -> None:
    a, b = make("a"), make("b")
    with pytest.raises(NoPresence):
        a.update("pid", T, "k", {})
    assert issubclass(NoPresence, LookupError)
    # A presence another node tracks is not ours to update.
    b.track("pid", T, "k", {})
    a.receive(beat(b, 0.0), 0.0)
    assert a.get_by_key(T, "k")
    with pytest.raises(NoPresence):
        a.update("pid", T, "k", {})


def test_untrack_unknown_is_a_no_op() -> None:
    a = make("a")
    assert a.untrack("pid", T, "k").diff == {}
    assert a.untrack_owner("pid").diff == {}


def test_untrack_one_topic_keeps_the_other() -> None:
    a = make("a")
    a.track("pid", "t1", "k", {})
    a.track("pid", "t2", "k", {})
    out = a.untrack("pid", "t1", "k")
    assert list(out.diff) == ["t1"]
    assert a.list("t1") == []
    assert [k for k, _ in a.list("t2")] == ["k"]


def test_untrack_owner_removes_all_its_presences() -> None:
    a = make("a")
    a.track("pid", "t1", "k", {})
    a.track("pid", "t2", "k", {})
    a.track("other", "t1", "j", {})
    out = a.untrack_owner("pid")
    assert sorted(out.diff) == ["t1", "t2"]
    assert all(out.diff[t][1] and not out.diff[t][0] for t in out.diff)
    assert a.list("t2") == []
    assert [k for k, _ in a.list("t1")] == ["j"]


def test_remote_writes_reach_a_peer_in_the_next_heartbeat() -> None:
    a, b = make("a"), make("b")
    a.receive(beat(b, 0.0), 0.0)
    ref, _ = b.track("pid", T, "k", {})
    out = a.receive(beat(b, 1.0), 1.0)
    assert out.diff == {T: ([("k", {"phx_ref": ref})], [])}
    b.update("pid", T, "k", {"v": 2})
    out = a.receive(beat(b, 2.0), 2.0)
    assert [m.get("phx_ref_prev") for _, m in out.diff[T][0]] == [ref]
    assert [m["phx_ref"] for _, m in out.diff[T][1]] == [ref]
    b.untrack("pid", T, "k")
    out = a.receive(beat(b, 3.0), 3.0)
    assert out.diff[T][0] == []
    assert len(out.diff[T][1]) == 1
    assert a.list(T) == []


# --------------------------------------------------- what peers send: drops


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
fields = st.sampled_from(["v", "t", "from", "pool", "clock", "delta", "id", "part", "last"])


@settings(max_examples=300, deadline=None)
@given(data=json_values)
def test_garbage_never_raises_and_is_dropped(data: Any) -> None:
    a = make("a")
    before = a.counters["dropped"]
    out = a.receive(wire(data), 0.0)
    assert out.diff == {}
    assert out.events == []
    assert a.counters["dropped"] == before + 1
    assert a.drops.get("invalid") == 1


@settings(max_examples=300, deadline=None)
@given(field=fields, value=json_values, kind=st.sampled_from(["hb", "treq", "tack"]))
def test_a_corrupted_message_never_raises(field: str, value: Any, kind: str) -> None:
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {"x": [1, 2]})
    messages = {
        "hb": beat(b, 0.0),
        "treq": {
            "v": 1,
            "t": "treq",
            "from": ["b", 1],
            "pool": [1, "crc32"],
            "id": [["b", 1], 1],
            "clock": [],
        },
        "tack": {
            "v": 1,
            "t": "tack",
            "from": ["b", 1],
            "pool": [1, "crc32"],
            "id": [["a", 1], 1],
            "part": 0,
            "last": True,
            "kind": "snapshot",
            "data": {"values": value},
        },
    }
    message = dict(messages[kind], **{field: value})
    a.receive(wire(message), 0.0)
    a.receive(wire(messages[kind]), 0.5)
    tick(a, 1.0)


def test_a_heartbeat_with_a_pool_mismatch_is_dropped() -> None:
    a = make("a")
    other = Shard("b", 1, 0, Options(**{**_fields(OPTS), "pool_size": 2}), random.Random(0))
    other.start(0.0)
    out = a.receive(beat(other, 0.0), 0.0)
    assert out.events == []
    assert a.drops == {"invalid": 1}


def _fields(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}


def test_a_message_under_our_own_name_is_dropped() -> None:
    a, impostor = make("a", vsn=1), make("a", vsn=2)
    out = a.receive(beat(impostor, 0.0), 0.0)
    assert out.events == []
    assert a.replicas == {}
    assert a.drops == {"from_own_name": 1}


def test_a_heartbeat_with_foreign_values_is_dropped() -> None:
    a, b, c = make("a"), make("b"), make("c")
    a.receive(beat(b, 0.0), 0.0)
    a.receive(beat(c, 0.0), 0.0)
    b.track("pid", T, "k", {})
    relayed = beat(b, 1.0)
    relayed["from"] = ["c", 1]  # c passes off b's values as its heartbeat
    out = a.receive(relayed, 1.0)
    assert out.diff == {}
    assert a.list(T) == []
    assert a.drops == {"foreign_values_in_heartbeat": 1}


def test_transfer_parts_are_merged_only_when_all_came_and_once() -> None:
    options = Options(**{**_fields(OPTS), "transfer_part_values": 3})
    a, b = make("a", options=options), make("b", options=options)
    for i in range(10):
        b.track(i, T, i, {})
    tick(b, 0.0)  # b's delta goes out to nobody; b's clock is ahead of a's
    a.receive(beat(b, 1.0), 1.0)
    requests = [s for t in (1.0, 2.0) for s in tick(a, t).sends if s.message["t"] == "treq"]
    assert [s.node for s in requests] == ["b"]
    answer = b.receive(wire(requests[0].message), 2.0)
    assert answer.sends == []  # the answer is built part by part, as it is pulled
    sends = [send for parts in answer.later for send in parts]
    parts = [wire(s.message) for s in sends]
    assert len(parts) == 4
    assert {s.node for s in sends} == {"a"}
    for part in (parts[3], parts[1], parts[0]):
        assert a.receive(part, 2.1).diff == {}
        assert a.list(T) == []
    out = a.receive(parts[2], 2.1)
    assert sorted(k for k, _ in out.diff[T][0]) == list(range(10))
    assert len(a.list(T)) == 10
    # Every part again: the request is answered, so all are dropped.
    for part in parts:
        assert a.receive(part, 2.2).diff == {}
    assert a.drops == {"unexpected_transfer": 4}


def test_a_second_full_request_in_one_window_is_answered_when_the_window_ends() -> None:
    options = Options(**{**_fields(OPTS), "max_delta_sizes": (1,)})  # no delta fits: full
    a, b = make("a", options=options), make("b", options=options)
    for i in range(3):
        b.track(i, T, i, {})
    tick(b, 0.0)
    a.receive(beat(b, 1.0), 1.0)
    requests = [s for t in (1.0, 2.0) for s in tick(a, t).sends if s.message["t"] == "treq"]
    first = wire(requests[0].message)
    assert b.receive(first, 2.0).later  # answered: one full snapshot in this window
    again = {**first, "id": [first["id"][0], first["id"][1] + 1]}  # the answer was lost
    assert b.receive(again, 2.5).later == []  # not twice in one window...
    assert b.drops == {"full_transfer_already_answered": 1}
    assert b.counters["transfers_answered_full"] == 1
    window = OPTS.broadcast_period * OPTS.clock_sample_periods
    late = tick(b, 2.0 + window)  # ...but once it ends, without a new request
    sends = [send for parts in late.later for send in parts]
    assert sends
    assert {s.node for s in sends} == {"a"}
    assert all(wire(s.message)["id"] == again["id"] for s in sends)
    assert b.counters["transfers_answered_full"] == 2
    assert tick(b, 2.0 + 2 * window).later == []  # and only once


def test_an_unrequested_transfer_ack_is_dropped() -> None:
    a, b, c = make("a"), make("b"), make("c")
    b.track("pid", T, "k", {})
    tick(b, 0.0)
    c.receive(beat(b, 1.0), 1.0)
    requests = [s for t in (1.0, 2.0) for s in tick(c, t).sends if s.message["t"] == "treq"]
    answer = b.receive(wire(requests[0].message), 2.0)
    a.receive(beat(b, 2.0), 2.0)
    # The answer to c's request, shown to a (which asked nothing) is dropped.
    sends = [send for parts in answer.later for send in parts]
    out = deliver(Output(sends=[replace(s, node="a") for s in sends]), a, 2.1)
    assert out.diff == {}
    assert a.drops == {"unexpected_transfer": 1}


def test_messages_from_a_permdowned_ref_are_dropped() -> None:
    a, b = make("a"), make("b")
    b.track("pid", T, "k", {})
    old_beat = beat(b, 0.0)
    a.receive(old_beat, 0.0)
    assert [k for k, _ in a.list(T)] == ["k"]
    out = deliver(b.graceful_permdown(), a, 1.0)
    assert kinds(out) == [("down", ("b", 1)), ("permdown", ("b", 1))]
    assert [k for k, _ in out.diff[T][1]] == ["k"]
    # A late copy of b's heartbeat must not bring the forgotten replica back as a ghost.
    out = a.receive(wire(old_beat), 1.5)
    assert out.events == []
    assert a.list(T) == []
    assert "b" not in a.replicas
    assert a.drops == {"from_permdowned": 1}


def test_a_restart_with_a_new_vsn_permdowns_the_old_one_at_once() -> None:
    a, b1 = make("a"), make("b", vsn=1)
    b1.track("pid", T, "old", {})
    old_beat = beat(b1, 0.0)
    a.receive(old_beat, 0.0)
    b2 = make("b", vsn=2)
    b2.track("pid", T, "new", {})
    out = a.receive(beat(b2, 1.0), 1.0)
    assert kinds(out) == [("down", ("b", 1)), ("permdown", ("b", 1)), ("up", ("b", 2))]
    assert [k for k, _ in out.diff[T][1]] == ["old"]
    assert [k for k, _ in out.diff[T][0]] == ["new"]
    assert a.replicas["b"].vsn == 2
    # The old incarnation's late messages are dropped.
    assert a.receive(wire(old_beat), 1.5).diff == {}
    assert [k for k, _ in a.list(T)] == ["new"]


# ----------------------------------------------------------------- stalls


def test_a_late_tick_skips_down_judgements() -> None:
    a, b = make("a"), make("b")
    a.receive(beat(b, 0.0), 0.0)
    tick(a, 0.0)
    # a is frozen from t=0 to t=20: its next tick, due at 1.0, runs at 20.
    out = a.tick(20.0)
    assert out.events == []
    assert a.replicas["b"].status is Status.UP
    assert a.drops == {"down_judgement_skipped_after_stall": 1}
    # Once ticking on time again, a silent b is judged: here long past permdown.
    out = a.tick(21.0)
    assert kinds(out) == [("down", ("b", 1)), ("permdown", ("b", 1))]


def test_a_stalled_node_reading_its_input_first_sees_nobody_down() -> None:
    a, b = make("a"), make("b")
    a.receive(beat(b, 0.0), 0.0)
    tick(a, 0.0)
    # Resumed at 8.0 (past down_period): the queued heartbeat is read before the tick.
    a.receive(beat(b, 7.5), 8.0)
    assert a.tick(8.0).events == []
    assert a.tick(9.0).events == []
    assert a.replicas["b"].status is Status.UP


def test_a_tick_just_within_a_period_late_still_judges() -> None:
    a, b = make("a"), make("b")
    a.receive(beat(b, 0.0), 0.0)
    for t in range(1, 6):
        tick(a, float(t))
    assert a.next_tick == 6.0
    assert kinds(a.tick(6.9)) == [("down", ("b", 1))]


def test_stats_show_replicas_and_counters() -> None:
    a, b = make("a"), make("b", vsn=3)
    a.track("pid", T, "k", {})
    a.receive(beat(b, 0.0), 0.0)
    stats = a.stats()
    assert stats["replicas"] == {"b": {"vsn": 3, "status": "up"}}
    assert stats["presences"] == 1
    assert stats["messages_in"] == 1


def test_a_large_delta_splits_values_and_cloud_tags_into_parts_that_fit() -> None:
    from crdt_state import State
    from tracker_zmq.wire import join_payload, json_size, split_payload

    state = State(("a", 1))
    for i in range(3000):
        state.join(f"pid-{i}", "topic", f"user-{i}", {"n": i})
    for i in range(0, 3000, 2):
        state.leave(f"pid-{i}", "topic", f"user-{i}")
    delta = state.take_delta()  # 1,500 values, 6,000 cloud tags
    parts = split_payload(delta, part_values=1000, part_bytes=8 * 1024)
    assert len(parts) > 1
    assert all(json_size(part) <= 8 * 1024 for part in parts)
    wired = [json.loads(json.dumps(part)) for part in parts]
    assert join_payload("delta", wired, max_entries=10**6) == delta
    assert split_payload(delta, part_values=10**6, part_bytes=10**9) == [delta.to_wire()]


def test_a_value_larger_than_a_part_travels_alone() -> None:
    from crdt_state import State
    from tracker_zmq.wire import join_payload, split_payload

    state = State(("a", 1))
    state.join("pid-big", "topic", "big", {"blob": "x" * 5000})
    state.join("pid-gone", "topic", "gone", {})
    state.leave("pid-gone", "topic", "gone")
    delta = state.take_delta()  # 1 value over the part size, and its cloud tags
    parts = split_payload(delta, part_values=1000, part_bytes=1024)
    assert [len(p["values"]) for p in parts].count(1) == 1
    assert sum(len(p["cloud"]) for p in parts) == delta.size() - 1
    wired = [json.loads(json.dumps(part)) for part in parts]
    assert join_payload("delta", wired, max_entries=10**6) == delta


# ------------------------------------------------------ the seam: one way


def test_a_heartbeat_is_encoded_once_and_sent_as_those_bytes() -> None:
    calls: list[Any] = []

    def encoder(data: object) -> bytes:
        calls.append(data)
        return json.dumps(data).encode()  # spaces and all: any JSON encoder will do

    a = Shard("a", 1, 0, OPTS, random.Random(0), encoder=encoder)
    a.start(0.0)
    a.track("pid", T, "k", {})
    out = tick(a, 0.0)
    assert len(out.sends) == 1
    assert len(calls) == 1
    assert out.sends[0].data == json.dumps(calls[0]).encode()
    assert out.sends[0].message == wire(calls[0])
    assert out.next_tick == a.next_tick == 1.0


def test_transfer_parts_are_encoded_once_and_counted_when_the_answer_is_decided() -> None:
    options = Options(**{**_fields(OPTS), "transfer_part_values": 3})
    calls: list[Any] = []

    def encoder(data: object) -> bytes:
        calls.append(data)
        return json.dumps(data).encode()

    a, b = make("a", options=options), Shard("b", 1, 0, options, random.Random(0), encoder=encoder)
    b.start(0.0)
    for i in range(10):
        b.track(i, T, i, {})
    tick(b, 0.0)
    a.receive(beat(b, 1.0), 1.0)
    requests = [s for t in (1.0, 2.0) for s in tick(a, t).sends if s.message["t"] == "treq"]
    before = dict(b.counters)
    answer = b.receive(wire(requests[0].message), 2.0)
    assert b.counters["messages_out"] == before["messages_out"] + 1
    counted = dict(b.counters)
    calls.clear()
    sends = [send for parts in answer.later for send in parts]
    assert b.counters == counted  # pulling the parts moves no counter
    # each part's payload, then its envelope: two encodings per part, none twice
    assert len(calls) == 2 * len(sends) == 8
    for send in sends:
        assert a.receive(send.message, 2.1).events == []
    assert len(a.list(T)) == 10


def test_phx_refs_are_the_url_safe_base64_of_vsn_shard_and_counter() -> None:
    vsn, index = 1_765_000_000_123_456_789, 3
    shard = Shard("a", vsn, index, OPTS, random.Random(0))
    for counter in (1, 2, 255, 256, 257, 65_535, 65_536, 2**40 + 7, 2**48 - 1, 2**48, 2**48 + 1):
        shard._ref_counter = counter - 1
        raw = (
            vsn.to_bytes(8, "big") + index.to_bytes(2, "big") + (counter % 2**48).to_bytes(6, "big")
        )
        assert shard._new_ref() == base64.urlsafe_b64encode(raw).decode().rstrip("=")
