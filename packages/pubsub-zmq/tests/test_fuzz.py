"""Fuzzing of the frame decoder: garbage, structured garbage and mangled valid frames.

Random bytes and structured garbage (a plausible header before random bodies); then
inputs that start as valid frames (batches, directs, hello, welcome, gossip) and get
bytes flipped, cut out, spliced in or the frame truncated, so that most of them get past
the header and exercise the body checks. Only :class:`WireError` (and its subclasses) may
escape, and what is accepted is well formed. ``make fuzz`` runs the same target longer.
"""

from __future__ import annotations

import contextlib
import struct

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsub_zmq import wire
from pubsub_zmq.errors import WireError

GOOD = wire.NodeRecord("a", 7, "tcp://127.0.0.1:5550", "tcp://127.0.0.1:6000", None)


def assert_well_formed(frame: wire.Frame) -> None:
    """What :func:`~pubsub_zmq.wire.decode` accepts is a frame the node can use."""
    assert isinstance(frame.kind, wire.Kind)
    assert frame.sender
    if frame.kind in (wire.Kind.BROADCAST, wire.Kind.DIRECT):
        assert frame.topic
        assert isinstance(frame.messages, list)
        assert frame.messages
    else:
        assert frame.control is not None
        assert frame.control.node.name == frame.sender


def valid_frames() -> list[bytes]:
    a = wire.NodeRecord("a", 7, "tcp://127.0.0.1:5550", "tcp://127.0.0.1:5551", None)
    b = wire.NodeRecord("b", 9, "tcp://127.0.0.1:5552", "tcp://127.0.0.1:5553", None)
    messages = ({"event": "x", "n": [1, 2]}, "two", 3)
    sender, kind = wire.sender_field("a"), wire.Kind
    controls = [
        (kind.HELLO, wire.Control(a, (), "tcp://x:1")),
        (kind.WELCOME, wire.Control(a, (b,), None)),
        (kind.GOSSIP, wire.Control(a, (a, b), None)),
    ]
    return [
        wire.batch_frame("room:42", messages, sender="a", incarnation=7),
        wire.batch_frame("phx:t", messages, sender="a", incarnation=7, seq=2**40, kind=kind.DIRECT),
        *(wire.encode_control(k, 7, seq, sender, c) for seq, (k, c) in enumerate(controls, 1)),
    ]


FRAMES = valid_frames()


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "byte"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "byte" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x22, 0x5B, 0x5D, 0x7B, 0x7D, 0xFF]))
        elif how == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


def test_the_originals_decode() -> None:
    for frame in FRAMES:
        wire.decode(frame)


@settings(max_examples=500, deadline=None, database=None)
@given(mangled())
def test_mangled_frames_raise_only_wire_error(data: bytes) -> None:
    frame = None
    with contextlib.suppress(WireError):
        frame = wire.decode(data, 4096)
    if frame is not None:  # accepted: then well formed
        assert_well_formed(frame)


# -- hypothesis: any garbage is a WireError, never another exception ----------------------


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_garbage_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        wire.decode(data, 200)


head = st.builds(
    lambda v, k, i, s: struct.pack("!BBQQ", v, k, i, s),
    st.sampled_from([wire.VERSION, wire.VERSION, 0, 255]),
    st.sampled_from([int(k) for k in wire.Kind] + [0, 0x58]),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries(
        {"node": json_values | st.just(GOOD.to_json()), "members": json_values, "via": json_values}
    ).map(orjson.dumps),
)


@settings(max_examples=600)
@given(
    st.sampled_from([b"", b"room:1", b"\xff\xfe", b"a\x00b"]),
    head,
    st.binary(min_size=0, max_size=3),
    bodies,
    st.integers(0, 300),
)
def test_structured_garbage(topic: bytes, hdr: bytes, name: bytes, body: bytes, cut: int) -> None:
    data = topic + b"\x00" + hdr + bytes((len(name),)) + name + body
    for candidate in (data, data[:cut], data[cut:]):
        try:
            frame = wire.decode(candidate)
        except WireError:
            continue
        assert_well_formed(frame)  # what is accepted
