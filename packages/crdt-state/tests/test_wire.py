"""Unit tests of the wire form of Snapshot and Delta (to_wire / from_wire).

Round trips (directly and through JSON), a table of malformed inputs that must each raise
WireError, and Hypothesis tests that arbitrary garbage and random mutations of valid wire
data only ever raise WireError or produce a valid object.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state import Delta, Snapshot, State, StateError, WireError
from crdt_state.bulk import COLLECT_AFTER, CollectorPause, gc_paused
from crdt_state.wire import PayloadReader, columns_out, iter_records

# ------------------------------------------------------------------------- fixtures


def cluster(replica_a, replica_b):
    """Two connected states with some history: joins, an update, a leave and a gap."""
    a, b = State(replica_a), State(replica_b)
    a.replica_up(replica_b)
    b.replica_up(replica_a)
    a.join("conn-1", "room:1", "alice", {"status": "online", "n": [1, 2, {"x": None}]})
    a.join(7, 8, 9, {})
    a.leave_join("conn-1", "room:1", "alice", {"status": "away"})
    b.merge(a.take_delta())
    b.join("conn-2", "room:1", "bob", {"k": "v"})
    b.join("conn-2", "room:2", "bob", {})
    b.leave("conn-2", "room:2", "bob")
    a.merge(b.delta)
    a.join("conn-3", "room:1", "carol", {})
    a.take_delta()  # lost: b keeps a gap, so the next one stays in b's cloud
    a.join("conn-4", "room:1", "dave", {"unicode": "é✓"})
    b.merge(a.delta)
    return a, b


REPLICA_KINDS = [
    pytest.param(("a", 1), ("b", 2), id="tuple"),
    pytest.param("a", "b", id="str"),
    pytest.param(1, 2, id="int"),
    pytest.param(("node", "a", 1), ("node", "b", 1), id="long-tuple"),
]


def json_round_trip(data):
    return json.loads(json.dumps(data))


def only_plain(data):
    """Whether data holds only lists, dicts with str keys, str, int and None."""
    if data is None or type(data) in (str, int):
        return True
    if type(data) is list:
        return all(only_plain(item) for item in data)
    if type(data) is dict:
        return all(type(k) is str and only_plain(v) for k, v in data.items())
    return False


def only_plain_outside_metas(data):
    """only_plain for a wire payload, metas excepted (they are whatever JSON the user put)."""
    for field, value in data.items():
        if field == "values":
            for topic, owner, key, _meta, tag in value:
                assert only_plain([topic, owner, key, tag])
        else:
            assert only_plain(value), field
    return True


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("ra", "rb"), REPLICA_KINDS)
def test_snapshot_round_trips(ra, rb):
    a, b = cluster(ra, rb)
    for snapshot in (
        b.extract(("x", 0), b.context),
        b.extract(ra, b.context),
        a.extract(rb, a.context),
        b.extract(rb, {}),
    ):
        wire = snapshot.to_wire()
        assert only_plain_outside_metas(wire)
        assert Snapshot.from_wire(wire) == snapshot
        assert Snapshot.from_wire(json_round_trip(wire)) == snapshot
        back = Snapshot.from_wire(json_round_trip(wire))
        assert back.values == snapshot.values
        assert back.context == snapshot.context
        assert back.clouds == snapshot.clouds
        assert back.replica == snapshot.replica
        assert type(back.replica) is type(snapshot.replica)
    # The snapshot with a cloud really has one.
    assert b.extract(("x", 0), b.context).clouds


@pytest.mark.parametrize(("ra", "rb"), REPLICA_KINDS)
def test_delta_round_trips(ra, rb):
    a, b = cluster(ra, rb)
    for delta in (a.delta, b.delta, b.delta.extract(ra, {ra: 0}), Delta(ra)):
        wire = delta.to_wire()
        assert only_plain_outside_metas(wire)
        back = Delta.from_wire(json_round_trip(wire))
        assert back == delta
        assert Delta.from_wire(wire) == delta
        assert back.values == delta.values
        assert back.clouds == delta.clouds
        assert back.range == delta.range
        assert back.size() == delta.size()


def test_empty_snapshot_and_delta_round_trip():
    state = State(("solo", 1))
    snapshot = state.extract(("x", 0), state.context)
    assert snapshot.values == {}
    assert Snapshot.from_wire(json_round_trip(snapshot.to_wire())) == snapshot
    assert Snapshot.from_wire(Snapshot("z").to_wire()) == Snapshot("z")
    assert Snapshot("z").to_wire() == {"replica": "z", "context": [], "clouds": [], "values": []}
    delta = state.delta
    assert delta.range == ({("solo", 1): 0}, {("solo", 1): 0})
    assert Delta.from_wire(json_round_trip(delta.to_wire())) == delta
    assert Delta("z").to_wire() == {"replica": "z", "clouds": [], "values": [], "range": [[], []]}


def test_tuple_replicas_travel_as_lists_and_come_back_as_tuples():
    state = State(("a", 1))
    state.join("o", "t", "k", {})
    wire = state.delta.to_wire()
    assert wire["replica"] == ["a", 1]
    assert wire["values"] == [["t", "o", "k", {}, [["a", 1], 1]]]
    assert wire["clouds"] == [[["a", 1], [1]]]
    assert wire["range"] == [[[["a", 1], 0]], [[["a", 1], 1]]]
    back = Delta.from_wire(json_round_trip(wire))
    assert back.replica == ("a", 1)
    assert list(back.values) == [(("a", 1), 1)]


def test_merging_a_round_tripped_payload_gives_the_same_result():
    a, b = cluster(("a", 1), ("b", 1))
    c1, c2 = State(("c", 1)), State(("c", 1))
    for c in (c1, c2):
        c.replica_up(("a", 1))
        c.replica_up(("b", 1))
    snapshot = b.extract(c1.replica, c1.context)
    delta = a.delta
    joins1, leaves1 = c1.merge(snapshot)
    joins2, leaves2 = c2.merge(Snapshot.from_wire(json_round_trip(snapshot.to_wire())))
    assert sorted(joins1, key=repr) == sorted(joins2, key=repr)
    assert leaves1 == leaves2 == []
    assert c1.merge(delta) == c2.merge(Delta.from_wire(json_round_trip(delta.to_wire())))
    assert c1.context == c2.context
    assert c1.clouds == c2.clouds
    assert sorted(c1.online_list(), key=repr) == sorted(c2.online_list(), key=repr)


def test_caps_at_their_limit_are_accepted():
    snapshot = {
        "replica": "a",
        "context": [["a", 1], ["b", 0]],
        "clouds": [["b", [2, 3]]],
        "values": [["t", "o", "k", {}, ["a", 1]]],
    }
    assert Snapshot.from_wire(snapshot, max_size=3, max_replicas=2).size() == 3
    delta = {
        "replica": "a",
        "clouds": [["a", [1, 2]]],
        "values": [["t", "o", "k", {}, ["a", 1]]],
        "range": [[["a", 0]], [["a", 2]]],
    }
    assert Delta.from_wire(delta, max_size=3, max_replicas=1).size() == 3


def test_wire_error_is_a_value_error_and_a_state_error():
    assert issubclass(WireError, ValueError)
    assert issubclass(WireError, StateError)


def test_from_wire_does_not_keep_or_mutate_its_input():
    wire = cluster("a", "b")[1].extract("x", {"a": 0, "b": 0}).to_wire()
    kept = copy.deepcopy(wire)
    snapshot = Snapshot.from_wire(wire)
    assert wire == kept
    wire["context"].clear()
    wire["values"].clear()
    wire["clouds"][0][1].clear()
    assert snapshot.to_wire() == kept


# -------------------------------------------------------------------- malformed inputs

R = ["a", 1]  # a tuple replica as it travels


def valid_snapshot():
    return {
        "replica": R,
        "context": [[R, 2], [["b", 1], 0]],
        "clouds": [[["b", 1], [2, 4]]],
        "values": [
            ["room", "conn", "alice", {"s": 1}, [R, 1]],
            ["room", 5, 6, {}, [["b", 1], 4]],
        ],
    }


def valid_delta():
    return {
        "replica": R,
        "clouds": [[R, [1, 2, 3]], [["b", 1], [4]]],
        "values": [
            ["room", "conn", "alice", {"s": 1}, [R, 3]],
            ["room", 5, 6, {}, [["b", 1], 4]],
        ],
        "range": [[[R, 0], [["b", 1], 3]], [[R, 3], [["b", 1], 4]]],
    }


def test_the_valid_payloads_of_the_table_are_valid():
    assert Snapshot.from_wire(valid_snapshot()).size() == 4
    assert Delta.from_wire(valid_delta()).size() == 6


def snap(**fields):
    data = valid_snapshot()
    data.update(fields)
    return data


def dlt(**fields):
    data = valid_delta()
    data.update(fields)
    return data


def value_row(tag=(R, 1), topic="room", owner="conn", key="alice", meta=None):
    return [topic, owner, key, {} if meta is None else meta, list(tag)]


MALFORMED_SNAPSHOTS = {
    # the payload itself
    "not a dict (list)": [R, [], [], []],
    "not a dict (None)": None,
    "not a dict (str)": "snapshot",
    "a delta given as a snapshot": valid_delta(),
    "missing field": {k: v for k, v in valid_snapshot().items() if k != "clouds"},
    "extra field": snap(range=[[], []]),
    "non-str field name": {**valid_snapshot(), 1: 2},
    # replica
    "replica float": snap(replica=1.5),
    "replica bool": snap(replica=True),
    "replica None": snap(replica=None),
    "replica dict": snap(replica={"a": 1}),
    "replica empty list": snap(replica=[]),
    "replica nested list": snap(replica=[["a"], 1]),
    "replica list with bool": snap(replica=["a", False]),
    "replica list with float": snap(replica=["a", 1.0]),
    # context
    "context not a list": snap(context={"a": 1}),
    "context entry not a list": snap(context=[5]),
    "context entry too short": snap(context=[[R]]),
    "context entry too long": snap(context=[[R, 2, 3]]),
    "context clock bool": snap(context=[[R, True]]),
    "context clock negative": snap(context=[[R, -1]]),
    "context clock float": snap(context=[[R, 2.0]]),
    "context clock str": snap(context=[[R, "2"]]),
    "context clock None": snap(context=[[R, None]]),
    "context clock too big": snap(context=[[R, 2**63]]),
    "context duplicate replica": snap(context=[[R, 2], [R, 2]]),
    "context replica nested list": snap(context=[[[["a"], 1], 2], [R, 2]]),
    # clouds
    "clouds not a list": snap(clouds={"b": [2]}),
    "cloud not a pair": snap(clouds=[[["b", 1], [2, 4], 5]]),
    "cloud clocks not a list": snap(clouds=[[["b", 1], 2]]),
    "cloud clock zero": snap(clouds=[[["b", 1], [0, 2, 4]]]),
    "cloud clock negative": snap(clouds=[[["b", 1], [-2, 2, 4]]]),
    "cloud clock bool": snap(clouds=[[["b", 1], [True, 2, 4]]]),
    "cloud clock float": snap(clouds=[[["b", 1], [2.5, 2, 4]]]),
    "cloud duplicate clock": snap(clouds=[[["b", 1], [2, 4, 4]]]),
    "cloud duplicate replica": snap(clouds=[[["b", 1], [2]], [["b", 1], [4]]]),
    "cloud replica bool": snap(clouds=[[False, [2]]]),
    # values
    "values not a list": snap(values={"x": 1}),
    "value not a list": snap(values=["room"]),
    "value too short": snap(values=[["room", "conn", "alice", {}]]),
    "value too long": snap(values=[[*value_row(), None]]),
    "value topic float": snap(values=[value_row(topic=1.5)]),
    "value topic None": snap(values=[value_row(topic=None)]),
    "value owner bool": snap(values=[value_row(owner=True)]),
    "value owner list": snap(values=[value_row(owner=["x"])]),
    "value key dict": snap(values=[value_row(key={"k": 1})]),
    "value meta not a dict": snap(values=[["room", "conn", "alice", [], [R, 1]]]),
    "value meta None": snap(values=[["room", "conn", "alice", None, [R, 1]]]),
    "value meta non-str key": snap(values=[value_row(meta={1: "x"})]),
    "value tag not a list": snap(values=[["room", "conn", "alice", {}, 1]]),
    "value tag too long": snap(values=[["room", "conn", "alice", {}, [R, 1, 1]]]),
    "value tag clock zero": snap(values=[value_row(tag=(R, 0))]),
    "value tag clock negative": snap(values=[value_row(tag=(R, -1))]),
    "value tag clock bool": snap(values=[value_row(tag=(R, True))]),
    "value tag clock float": snap(values=[value_row(tag=(R, 1.0))]),
    "value tag replica nested": snap(values=[value_row(tag=([R], 1))]),
    "value tag outside context and clouds": snap(values=[value_row(tag=(R, 3))]),
    "value tag of an unknown replica": snap(values=[value_row(tag=(["z", 1], 1))]),
    "value tag in context gap": snap(values=[value_row(tag=(["b", 1], 3))]),
    "duplicate tags": snap(values=[value_row(), value_row(key="other")]),
}

MALFORMED_DELTAS = {
    "not a dict": [R, [], [], [[], []]],
    "a snapshot given as a delta": valid_snapshot(),
    "missing range": {k: v for k, v in valid_delta().items() if k != "range"},
    "extra field": dlt(context=[]),
    "replica nested list": dlt(replica=[[["a", 1]]]),
    "replica bool": dlt(replica=False),
    "range not a list": dlt(range={"start": [], "end": []}),
    "range of one": dlt(range=[[[R, 0]]]),
    "range of three": dlt(range=[[[R, 0]], [[R, 3]], [[R, 3]]]),
    "range start after end": dlt(range=[[[R, 2]], [[R, 1]]]),
    "range start after end on one replica": dlt(
        range=[[[R, 0], [["b", 1], 5]], [[R, 3], [["b", 1], 4]]]
    ),
    "range clock negative": dlt(range=[[[R, -1]], [[R, 3]]]),
    "range clock bool": dlt(range=[[[R, 0]], [[R, True]]]),
    "range clock float": dlt(range=[[[R, 0]], [[R, 3.0]]]),
    "range duplicate replica": dlt(range=[[[R, 0], [R, 0]], [[R, 3]]]),
    "range entry not a pair": dlt(range=[[[R]], [[R, 3]]]),
    "cloud clock zero": dlt(clouds=[[R, [0, 1, 2, 3]], [["b", 1], [4]]]),
    "cloud duplicate replica": dlt(clouds=[[R, [1, 2]], [R, [3]], [["b", 1], [4]]]),
    "cloud duplicate clock": dlt(clouds=[[R, [1, 2, 3, 3]], [["b", 1], [4]]]),
    "value tag outside clouds": dlt(
        clouds=[[R, [1, 2]], [["b", 1], [4]]],
    ),
    "duplicate tags": dlt(
        values=[
            ["room", "conn", "alice", {}, [R, 3]],
            ["room", "conn", "bob", {}, [R, 3]],
            ["room", 5, 6, {}, [["b", 1], 4]],
        ]
    ),
    "value meta non-str key": dlt(values=[["room", "conn", "alice", {None: 1}, [R, 3]]]),
    "value tag clock zero": dlt(values=[["room", "conn", "alice", {}, [R, 0]]]),
}


@pytest.mark.parametrize("data", MALFORMED_SNAPSHOTS.values(), ids=MALFORMED_SNAPSHOTS.keys())
def test_malformed_snapshots_raise_wire_error(data):
    with pytest.raises(WireError):
        Snapshot.from_wire(data)


@pytest.mark.parametrize("data", MALFORMED_DELTAS.values(), ids=MALFORMED_DELTAS.keys())
def test_malformed_deltas_raise_wire_error(data):
    with pytest.raises(WireError):
        Delta.from_wire(data)


@pytest.mark.parametrize(
    ("kind", "data", "caps"),
    [
        ("snapshot", valid_snapshot(), {"max_size": 3}),
        ("snapshot", valid_snapshot(), {"max_replicas": 1}),
        ("snapshot", valid_snapshot(), {"max_size": 0}),
        ("delta", valid_delta(), {"max_size": 5}),
        ("delta", valid_delta(), {"max_replicas": 1}),
        ("delta", valid_delta(), {"max_size": 5, "max_replicas": 5}),
    ],
)
def test_caps_exceeded_raise_wire_error(kind, data, caps):
    cls = Snapshot if kind == "snapshot" else Delta
    with pytest.raises(WireError):
        cls.from_wire(data, **caps)


def test_context_clock_zero_is_allowed_where_zero_means_nothing_seen():
    assert Snapshot.from_wire(snap(context=[[R, 1], [["b", 1], 0]])).context == {
        ("a", 1): 1,
        ("b", 1): 0,
    }
    data = dlt(range=[[[R, 0], [["b", 1], 0]], [[R, 3], [["b", 1], 4]]])
    assert Delta.from_wire(data).range == (
        {("a", 1): 0, ("b", 1): 0},
        {("a", 1): 3, ("b", 1): 4},
    )


# ---------------------------------------------------------------------- hypothesis

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=30,
)

# Garbage biased towards the right shape: the right field names, lists of lists.
near_miss = st.fixed_dictionaries(
    {},
    optional={
        "replica": json_like,
        "context": st.lists(st.lists(json_like, max_size=3), max_size=3),
        "clouds": st.lists(st.lists(json_like, max_size=3), max_size=3),
        "values": st.lists(st.lists(json_like, max_size=6), max_size=3),
        "range": st.lists(st.lists(st.lists(json_like, max_size=3), max_size=3), max_size=3),
    },
)


def check_valid(obj, kind):
    """A payload that was accepted must be a real, usable object."""
    assert isinstance(obj, kind)
    wire = obj.to_wire()
    assert kind.from_wire(wire) == obj
    assert kind.from_wire(json_round_trip(wire)) == obj
    # It merges into a State that knows every replica it names without an error.
    local = State(("local", 0))
    for tag in obj.values:
        if tag[0] != local.replica and tag[0] not in local.replicas:
            local.replica_up(tag[0])
    for replica in obj.clouds:
        if replica != local.replica and replica not in local.replicas:
            local.replica_up(replica)
    joins, leaves = local.merge(obj)
    assert leaves == []
    assert len(joins) <= len(obj.values)


def read_or_wire_error(kind, data):
    try:
        obj = kind.from_wire(data)
    except WireError:
        return
    check_valid(obj, kind)


FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FAST
@given(data=json_like | near_miss)
def test_garbage_only_ever_raises_wire_error(data):
    read_or_wire_error(Snapshot, data)
    read_or_wire_error(Delta, data)


def paths(data, prefix=()):
    """Every path into a JSON-like structure, the root included."""
    yield prefix
    if type(data) is list:
        for i, item in enumerate(data):
            yield from paths(item, (*prefix, i))
    elif type(data) is dict:
        for k, item in data.items():
            yield from paths(item, (*prefix, k))


def replace_at(data, path, value):
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def delete_at(data, path):
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]
    del node[path[-1]]
    return out


def duplicate_at(data, path):
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]
    if type(node) is list:
        node.insert(path[-1], copy.deepcopy(node[path[-1]]))
    return out


VALID_PAYLOADS = [
    (Snapshot, valid_snapshot()),
    (Delta, valid_delta()),
    (
        Snapshot,
        cluster(("a", 1), ("b", 1))[1].extract(("x", 0), {("a", 1): 0, ("b", 1): 0}).to_wire(),
    ),
    (Delta, cluster("a", "b")[0].delta.to_wire()),
]

small_values = (
    st.sampled_from([0, 1, 2, 3, 4, -1, 2**63, True, False, None, 1.0, "a", [], {}, ["a", 1]])
    | json_like
)


@st.composite
def mutated_payload(draw):
    kind, data = draw(st.sampled_from(VALID_PAYLOADS))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        all_paths = list(paths(data))[1:]  # the root is the garbage test's business
        path = draw(st.sampled_from(all_paths))
        how = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if how == "replace":
            data = replace_at(data, path, draw(small_values))
        elif how == "delete":
            data = delete_at(data, path)
        else:
            data = duplicate_at(data, path)
        if not list(paths(data))[1:]:
            break
    return kind, data


@FAST
@given(payload=mutated_payload())
def test_mutations_of_valid_wire_data_only_ever_raise_wire_error(payload):
    kind, data = payload
    read_or_wire_error(kind, data)
    other = Delta if kind is Snapshot else Snapshot
    read_or_wire_error(other, data)


@settings(max_examples=50, deadline=None)
@given(
    max_size=st.integers(min_value=0, max_value=8),
    max_replicas=st.integers(min_value=0, max_value=3),
)
def test_caps_are_enforced_exactly(max_size, max_replicas):
    for kind, data in VALID_PAYLOADS:
        full = kind.from_wire(data)
        replicas = {tag[0] for tag in full.values} | set(full.clouds) | {full.replica}
        if kind is Snapshot:
            replicas |= set(full.context)
        else:
            start, end = full.range
            replicas |= set(start) | set(end)
        fits = full.size() <= max_size and len(replicas) <= max_replicas
        try:
            kind.from_wire(data, max_size=max_size, max_replicas=max_replicas)
        except WireError:
            assert not fits
        else:
            assert fits


def test_a_payload_written_piece_by_piece_equals_its_wire_form():
    from crdt_state.wire import iter_wire_values, wire_head

    state = State(("a", 1))
    for i in range(5):
        state.join(f"pid-{i}", "topic", i, {"n": i})
    state.leave("pid-3", "topic", 3)
    delta = state.delta
    snapshot = state.extract(("b", 2), {("a", 1): 0, ("b", 2): 0})
    for payload in (delta, snapshot):
        pieces = {**wire_head(payload), "values": list(iter_wire_values(payload))}
        assert pieces == payload.to_wire()
        assert type(payload).from_wire(pieces) == payload


def _pieces(payload, size):
    from crdt_state.wire import iter_wire_values, wire_head

    head = wire_head(payload)
    rows = list(iter_wire_values(payload))
    pairs = [[r, c] for r, clocks in head.pop("clouds") for c in clocks]
    chunks = [
        (rows[i : i + size], pairs[i : i + size]) for i in range(0, len(rows) + len(pairs), size)
    ]
    return head, chunks


@given(size=st.integers(1, 8), reverse=st.booleans())
def test_a_payload_read_in_pieces_equals_one_read_whole(size, reverse):
    state = State(("a", 1))
    for i in range(9):
        state.join(f"pid-{i}", "topic", i, {"n": i})
    for i in (2, 5):
        state.leave(f"pid-{i}", "topic", i)
    for payload in (state.delta, state.extract(("b", 2), {("a", 1): 0, ("b", 2): 0})):
        head, chunks = _pieces(payload, size)
        reader = PayloadReader(type(payload), max_size=100, max_replicas=4)
        for rows, pairs in reversed(chunks) if reverse else chunks:
            reader.add_values(json.loads(json.dumps(rows)))
            reader.add_cloud_tags(json.loads(json.dumps(pairs)))
        assert reader.finish(json.loads(json.dumps(head))) == payload


def test_a_payload_reader_checks_across_pieces():
    state = State(("a", 1))
    for i in range(4):
        state.join(f"pid-{i}", "topic", i, {})
    delta = state.delta
    head, ((rows, pairs),) = _pieces(delta, 100)
    reader = PayloadReader(Delta)
    reader.add_values(rows[:2])
    with pytest.raises(WireError, match="twice"):
        reader.add_values(rows[1:])
    reader = PayloadReader(Delta)
    reader.add_cloud_tags(pairs)
    with pytest.raises(WireError, match="twice"):
        reader.add_cloud_tags(pairs[:1])
    reader = PayloadReader(Delta, max_size=5)
    reader.add_values(rows)
    with pytest.raises(WireError, match="more than 5"):
        reader.add_cloud_tags(pairs)
    reader = PayloadReader(Delta)
    reader.add_values(rows)  # values whose tags no cloud covers
    with pytest.raises(WireError, match="outside"):
        reader.finish(head)
    with pytest.raises(WireError):
        PayloadReader(Snapshot).finish(head)  # a delta's head is no snapshot's


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=3),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=12,
    )
)
def test_a_payload_reader_rejects_garbage_with_wire_error(garbage):
    for kind in (Snapshot, Delta):
        reader = PayloadReader(kind)
        for step in (reader.add_values, reader.add_cloud_tags, reader.finish):
            with contextlib.suppress(WireError):  # any other exception fails the test
                step(garbage)


# ------------------------------------------------------- the columnar form


def _payload_with_three_replicas() -> tuple[State, Snapshot]:
    a, b, c = State(("a", 1)), State(2), State("c")
    for s in (a, b, c):
        for other in (a, b, c):
            if other is not s:
                s.replica_up(other.replica)
    for i in range(50):
        a.join(f"o{i}", f"t{i % 3}", i, {"i": i})
        b.join(i, i % 4, f"k{i}", {"nested": {"x": [1, None]}})
    a.leave("o1", "t1", 1)
    c.merge(a.take_delta())
    c.merge(b.take_delta())
    return c, c.extract("new", {("a", 1): 0, 2: 0, "c": 0})


def test_columns_round_trip_through_a_payload_reader_in_pieces() -> None:
    _, snapshot = _payload_with_three_replicas()
    records = list(iter_records(snapshot))
    reader = PayloadReader(Snapshot)
    for start in range(0, len(records), 17):
        reader.add_columns(json.loads(json.dumps(columns_out(records[start : start + 17]))))
    head = snapshot.to_wire()
    reader.add_clouds(head["clouds"])
    assert reader.size == snapshot.size()
    assert reader.finish({"replica": head["replica"], "context": head["context"]}) == snapshot


def test_take_values_hands_each_piece_over_once_and_merging_them_first_changes_nothing() -> None:
    _source, snapshot = _payload_with_three_replicas()
    records = list(iter_records(snapshot))
    reader = PayloadReader(Snapshot)
    pieces = State("new")
    whole = State("new")
    for s in (pieces, whole):
        for r in (("a", 1), 2, "c"):
            s.replica_up(r)
    taken = 0
    for start in range(0, len(records), 20):
        reader.add_columns(columns_out(records[start : start + 20]))
        part = reader.take_values("c")
        assert part is not None
        assert reader.take_values("c") is None
        taken += len(part)
        pieces.merge(part)
    assert taken == len(records)
    wired = snapshot.to_wire()
    reader.add_clouds(wired["clouds"])
    pieces.merge(reader.finish({"replica": wired["replica"], "context": wired["context"]}))
    whole.merge(snapshot)
    assert sorted(map(repr, pieces.online_list())) == sorted(map(repr, whole.online_list()))
    assert pieces.clocks() == whole.clocks()


@pytest.mark.parametrize(
    "data",
    [
        {"topics": ["t"], "values": [["a", [1], [0], ["o"], ["k"], [{}]]], "extra": 1},
        {"topics": [1.5], "values": []},
        {"topics": ["t"], "values": [["a", [True], [0], ["o"], ["k"], [{}]]]},
        {"topics": ["t"], "values": [["a", [2**63], [0], ["o"], ["k"], [{}]]]},
        {"topics": ["t"], "values": [["a", [1], [-1], ["o"], ["k"], [{}]]]},
        {"topics": ["t"], "values": [["a", [1], [0], [None], ["k"], [{}]]]},
        {"topics": ["t"], "values": [["a", [1], [0], ["o"], ["k"], [{"x": 1, 2: 3}]]]},
        {"topics": ["t"], "values": [["a", [1, 1], [0, 0], ["o", "p"], ["k", "l"], [{}, {}]]]},
        {"topics": ["t"], "values": [[None, [1], [0], ["o"], ["k"], [{}]]]},
        {"topics": ["t"], "values": [["a", [1], [0], ["o"], ["k"]]]},
    ],
)
def test_malformed_columns_raise_wire_errors(data: object) -> None:
    with pytest.raises(WireError):
        PayloadReader(Snapshot).add_columns(data)


def test_a_collector_pause_resumes_only_what_it_paused() -> None:
    assert gc.isenabled()
    pause, other = CollectorPause(), CollectorPause()
    pause.pause()
    other.pause()  # already disabled: not this one's to resume
    assert not gc.isenabled()
    assert pause.held
    assert not other.held
    other.resume()
    assert not gc.isenabled()
    pause.resume()
    pause.resume()
    assert gc.isenabled()
    assert not pause.held


def _full_collections_during(action: Callable[[], object]) -> int:
    seen: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    try:
        action()
    finally:
        gc.callbacks.remove(record)
    return seen.count(2)


def test_a_collector_pause_that_piled_up_objects_ends_with_one_full_collection() -> None:
    """Once instead of three walks (young, middle-aged, then the full pass they trigger)."""
    gc.collect()
    pause = CollectorPause()
    pause.pause()
    held = [{"n": i} for i in range(COLLECT_AFTER + 10_000)]  # tracked, and kept
    assert gc.get_count()[0] >= COLLECT_AFTER
    assert _full_collections_during(pause.resume) == 1
    assert gc.isenabled()
    assert gc.get_count()[0] < 1_000  # the young generation was emptied
    small = CollectorPause()
    small.pause()
    held += [{"n": i} for i in range(1_000)]
    assert _full_collections_during(small.resume) == 0
    with gc_paused():
        held += [{"n": i} for i in range(COLLECT_AFTER + 10_000)]
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_count()[0] < 1_000
