"""Fuzzing of everything in tracker_zmq that reads the network.

Targets: the tracker's message decoder (:func:`tracker_zmq.wire.decode`), the assembly
of transfer answers (:func:`tracker_zmq.wire.join_payload`), a Shard fed garbage (its
state unchanged, the drop counted), the client protocol codec (``decode_request``,
``decode_message``), and a standalone node's client endpoint end to end (raw frames on a
DEALER: every bad frame counted, the node still answering). Inputs are mutations of
valid messages (a field replaced, deleted or duplicated; bytes flipped, cut or spliced),
so that they get past the first checks. Each decoder may raise only its documented
exception. ``make fuzz`` (``scripts/fuzz.py``) runs the same kinds of targets longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crdt_state import State
from tracker_zmq import Node, Options, Shard
from tracker_zmq.client import (
    PROTOCOL_VERSION,
    ProtocolError,
    Request,
    decode_message,
    decode_request,
    encode_diff,
    encode_error,
    encode_ok,
    encode_request,
)
from tracker_zmq.wire import (
    GracefulPermdown,
    Heartbeat,
    MessageError,
    TransferAck,
    TransferRequest,
    decode,
    encode,
    join_payload,
    split_payload,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
OPTS = Options(broadcast_period=1.0, max_silent_periods=2, down_period=5.0, permdown_period=10.0)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


# ------------------------------------------------------------ mutations of valid data


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a node of a JSON-like value (the root included)."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, (*prefix, i))


def mutate(data: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of ``data`` with the node at ``path`` replaced, deleted or duplicated."""
    data = json.loads(json.dumps(data))
    if not path:
        return value
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[f"{last}_"] = parent[last]
    return data


@st.composite
def mutated(draw: st.DrawFn, originals: list[Any]) -> Any:
    """One valid value of ``originals`` with one to three structural mutations."""
    data = draw(st.sampled_from(originals))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths(data))))
        how = draw(st.sampled_from(["replace", "replace", "delete", "duplicate"]))
        data = mutate(data, path, how, draw(json_values))
    return data


@st.composite
def mangled_bytes(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """One valid frame with bytes flipped, cut out or spliced in."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


def dumps(data: Any) -> bytes:
    """JSON bytes of anything ``json_values`` makes (orjson refuses ints over 64 bits)."""
    return json.dumps(data).encode()


# ------------------------------------------------------------------ valid messages


def _peer_state() -> State:
    b = State(("b", 1))
    b.replica_up(("a", 1))
    b.join("pid", "room", "alice", {"x": [1, 2], "phx_ref": "r1"})
    b.join("pid", 7, 8, {"phx_ref": "r2"})
    b.join("other", "room", "bob", {"phx_ref": "r3"})
    b.leave("other", "room", "bob")
    return b


def valid_messages() -> list[dict[str, Any]]:
    b = _peer_state()
    delta = b.delta
    snapshot = b.extract(("a", 1), {("a", 1): 0})
    sender = ("b", 1)
    request = (("a", 1), 1)
    messages = [
        Heartbeat(sender, {("b", 1): 3}, delta),
        Heartbeat(sender, {("b", 1): 3, ("a", 1): 0}, None),
        TransferRequest(sender, request, {("b", 1): 3}),
        TransferAck(sender, request, 0, True, "snapshot", snapshot.to_wire()),
        TransferAck(sender, request, 0, True, "delta", delta.to_wire()),
        GracefulPermdown(sender),
    ]
    return [json.loads(json.dumps(encode(m, 1))) for m in messages]


def valid_parts() -> list[tuple[str, list[dict[str, Any]]]]:
    b = _peer_state()
    snapshot = b.extract(("a", 1), {("a", 1): 0})
    return [
        ("snapshot", json.loads(json.dumps(split_payload(snapshot, 1)))),
        ("snapshot", json.loads(json.dumps(split_payload(snapshot, 10)))),
        ("delta", json.loads(json.dumps(split_payload(b.delta, 1)))),
    ]


MESSAGES = valid_messages()
PARTS = valid_parts()


def test_the_originals_are_valid() -> None:
    for message in MESSAGES:
        decode(message, pool_size=1)
    for kind, parts in PARTS:
        join_payload(kind, parts, 1000)


# -------------------------------------------------------------- tracker messages


@FUZZ
@given(mutated(MESSAGES))
def test_decode_raises_only_message_error(data: Any) -> None:
    with contextlib.suppress(MessageError):
        decode(data, pool_size=1, max_replicas=8, max_entries=100)


@FUZZ
@given(st.sampled_from(PARTS), st.data())
def test_join_payload_raises_only_message_error(original: Any, data: st.DataObject) -> None:
    kind, parts = original
    parts = data.draw(mutated([parts]))
    # its contract: a list of dicts (decode checks each part's data is a dict)
    assume(isinstance(parts, list) and all(type(part) is dict for part in parts))
    with contextlib.suppress(MessageError):
        join_payload(kind, parts, 1000)


def fingerprint(shard: Shard) -> Any:
    """Everything a dropped message must leave as it was."""
    state = shard.state
    counters = {k: v for k, v in shard.counters.items() if k not in ("messages_in", "dropped")}
    return (
        sorted(repr(e) for e in state.online_list()),
        sorted(map(repr, state.context.items())),
        sorted(repr((r, sorted(tags))) for r, tags in state.clouds.items()),
        sorted(map(repr, state.replicas.items())),
        {name: (r.vsn, r.status) for name, r in shard.replicas.items()},
        counters,
        state.has_delta(),
    )


def peer_shard() -> Shard:
    """Shard a with presences, which knows b (vsn 1) as up and holds b's presences."""
    a = Shard("a", 1, 0, OPTS, random.Random(0))
    a.start(0.0)
    a.track("conn", "room", "carol", {"v": 1})
    a.state.reset_delta()
    hb = MESSAGES[0]
    a.receive(hb, 0.0)
    return a


@FUZZ
@given(st.one_of(mutated(MESSAGES), json_values))
def test_a_shard_fed_garbage_is_unchanged_and_counts_the_drop(data: Any) -> None:
    try:
        decode(
            data, pool_size=1, max_replicas=OPTS.max_replicas, max_entries=OPTS.max_message_entries
        )
    except MessageError:
        invalid = True
    else:
        invalid = False
    a = peer_shard()
    before = fingerprint(a)
    dropped = a.counters["dropped"]
    invalid_before = a.drops.get("invalid", 0)
    out = a.receive(data, 1.0)  # never raises, valid or not
    if invalid:
        assert out.diff == {}
        assert out.sends == []
        assert out.events == []
        assert fingerprint(a) == before
        assert a.counters["dropped"] == dropped + 1
        assert a.drops["invalid"] == invalid_before + 1


# --------------------------------------------------------- client protocol codec


def valid_requests() -> list[bytes]:
    token = "t0k3n"
    return [
        encode_request(r)
        for r in (
            Request(1, "hello", client="app", lease=3.0),
            Request(2, "heartbeat", token),
            Request(3, "track", token, topic="room", key="alice", meta={"a": [1]}, owner="c1"),
            Request(4, "update", token, topic=5, key=6, meta={}),
            Request(5, "untrack", token, topic="room", key="alice"),
            Request(6, "untrack", token, owner="c1"),
            Request(7, "subscribe", token, topic="room"),
            Request(8, "list", topic="room"),
            Request(9, "get_by_key", topic="room", key=1),
            Request(10, "status"),
            Request(11, "bye", token),
        )
    ]


def valid_node_messages() -> list[bytes]:
    return [
        encode_ok(1, {"session": "s", "token": "t", "presences": [["k", {"a": 1}]]}),
        encode_error(2, "limit_exceeded", "too many", limit=3),
        encode_diff("room", [("alice", {"phx_ref": "r"})], [(7, {})]),
    ]


REQUESTS = valid_requests()
NODE_MESSAGES = valid_node_messages()


@FUZZ
@given(st.one_of(mangled_bytes(REQUESTS), mutated([orjson.loads(r) for r in REQUESTS])))
def test_decode_request_raises_only_protocol_error(frame: Any) -> None:
    if not isinstance(frame, bytes):
        frame = dumps(frame)
    try:
        decode_request(frame)
    except ProtocolError as exc:
        code = exc.code
    else:
        code = "ok"
    assert code in ("ok", "bad_request", "unsupported_version", "unknown_op")


@FUZZ
@given(st.one_of(mangled_bytes(NODE_MESSAGES), mutated([orjson.loads(m) for m in NODE_MESSAGES])))
def test_decode_message_raises_only_protocol_error(frame: Any) -> None:
    if not isinstance(frame, bytes):
        frame = dumps(frame)
    with contextlib.suppress(ProtocolError):
        decode_message(frame)


# ------------------------------------------------ a node's client endpoint, end to end


class NodeThread:
    """A :class:`Node` on its own event loop in a thread (the test drives raw sockets)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.endpoint = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(20):
            raise AssertionError("the node did not start")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            node = Node("fuzzed", tracker_options={"broadcast_period": 0.05, "down_period": 1.0})
            async with node:
                self.endpoint = node.client_endpoint
                self.ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)
        assert not self.thread.is_alive(), "the node did not stop"
        if self.error is not None:
            raise self.error


class Probe:
    """A raw DEALER on a node's client endpoint: send anything, then ask for status."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.rcvtimeo = 5000
        self.sock.connect(endpoint)
        self.next_id = 1_000_000

    def status(self) -> dict[str, Any]:
        """Ask for status; skip the replies to earlier frames. Fails if none comes."""
        self.next_id += 1
        self.sock.send(encode_request(Request(self.next_id, "status")))
        while True:
            # the last frame: a REQ-style envelope (an empty frame first) is echoed back
            reply = decode_message(self.sock.recv_multipart()[-1])  # zmq.Again: it hung
            if getattr(reply, "id", None) == self.next_id:
                assert reply.ok  # type: ignore[union-attr]
                return reply.result  # type: ignore[union-attr]

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    node = NodeThread()
    probe = Probe(node.endpoint)
    try:
        yield probe
    finally:
        probe.close()
        node.close()


frames = st.one_of(
    st.binary(max_size=64).map(lambda b: [b]),
    mangled_bytes(REQUESTS).map(lambda b: [b]),
    mutated([orjson.loads(r) for r in REQUESTS]).map(lambda d: [dumps(d)]),
    st.lists(st.binary(max_size=16), min_size=2, max_size=4),  # wrong number of frames
)


@settings(FUZZ, max_examples=100)
@given(frames)
def test_a_node_fed_garbage_counts_it_and_keeps_serving(probe: Probe, parts: list[bytes]) -> None:
    before = probe.status()["clients"]
    probe.sock.send_multipart(parts)
    after = probe.status()["clients"]
    garbage = after["garbage"] - before["garbage"]
    requests = after["requests"] - before["requests"] - 1  # the status request itself
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == b""):
        try:
            decode_request(parts[-1])
        except ProtocolError:
            expected_garbage = 1
        else:
            expected_garbage = 0
    else:
        expected_garbage = 1  # [identity, a, b, ...] is no request (unless REQ-shaped)
    assert (garbage, requests) == (expected_garbage, 1 - expected_garbage)


def test_the_node_still_serves_a_real_client_after_the_garbage(probe: Probe) -> None:
    status = probe.status()
    assert status["node"] == "fuzzed"
    assert status["protocol"] == PROTOCOL_VERSION
