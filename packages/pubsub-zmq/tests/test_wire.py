"""wire.py: the frame codec; every bad input is rejected with WireError (fuzzed in
test_fuzz.py)."""

from __future__ import annotations

import struct

import orjson
import pytest

from pubsub_zmq import FrameTooLarge, InvalidTopic, UnknownVersion, WireError
from pubsub_zmq.versions import LEGACY, Range
from pubsub_zmq.wire import (
    LOWEST,
    MAX_MEMBERS,
    MAX_PROTOCOLS,
    VERSION,
    VERSIONS,
    Control,
    Kind,
    NodeRecord,
    batch_frame,
    check_protocol,
    decode,
    encode_batch,
    encode_control,
    sender_field,
    topic_prefix,
)

REC = NodeRecord("a", 7, "tcp://127.0.0.1:5550", "tcp://127.0.0.1:6000", None)
KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def batch(topic: str = "room:1", seq: int = 0, messages: list[object] | None = None) -> bytes:
    values = messages if messages is not None else [1, "two"]
    return batch_frame(topic, values, sender="a", incarnation=7, seq=seq)


def test_batch_round_trip() -> None:
    frame = decode(batch(messages=[{"x": [1, 2]}, "é", None, 3.5]), 1 << 20)
    assert frame.topic == "room:1"
    assert frame.kind is Kind.BROADCAST
    assert (frame.incarnation, frame.seq, frame.sender) == (7, 0, "a")
    assert frame.messages == [{"x": [1, 2]}, "é", None, 3.5]
    assert frame.control is None


def test_batch_frame_encodes_message_values() -> None:
    frame = decode(batch_frame("t", [{"a": 1}, 2], sender="b", incarnation=9, seq=4))
    assert (frame.kind, frame.topic, frame.sender) == (Kind.BROADCAST, "t", "b")
    assert (frame.incarnation, frame.seq, frame.messages) == (9, 4, [{"a": 1}, 2])
    direct = decode(batch_frame("t", ["x"], sender="b", incarnation=9, kind=Kind.DIRECT))
    assert (direct.kind, direct.seq) == (Kind.DIRECT, 0)


def test_frame_starts_with_the_subscription_prefix() -> None:
    data = batch("room:42")
    assert data.startswith(topic_prefix("room:42"))
    assert not data.startswith(topic_prefix("room:4"))


def test_control_round_trip() -> None:
    other = NodeRecord("b", 9, "ipc:///tmp/b", "ipc:///tmp/b.pub", KEY)
    body = Control(REC, (other,), "tcp://localhost:5550")
    frame = decode(encode_control(Kind.HELLO, 7, 3, sender_field("a"), body))
    assert frame.kind is Kind.HELLO
    assert frame.topic == ""
    assert frame.control == body
    assert frame.messages == []


def test_control_must_match_its_sender() -> None:
    data = encode_control(Kind.GOSSIP, 8, 1, sender_field("a"), Control(REC))
    with pytest.raises(WireError, match="sender"):
        decode(data)
    data = encode_control(Kind.GOSSIP, 7, 1, sender_field("b"), Control(REC))
    with pytest.raises(WireError, match="sender"):
        decode(data)


def test_unknown_version_is_its_own_error() -> None:
    data = bytearray(batch())
    data[len(topic_prefix("room:1"))] = VERSION + 1
    with pytest.raises(UnknownVersion):
        decode(bytes(data))


def test_frame_too_large() -> None:
    data = batch(messages=["x" * 2000])
    with pytest.raises(FrameTooLarge):
        decode(data, 1024)
    assert decode(data, len(data)).messages == ["x" * 2000]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"room",
        b"room\x00\x01",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("Z"), 1, 0) + b"\x01a[1]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x00[1]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x05a[1]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01a[]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01a{}",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01a[1",
        b"\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01a[1]",
        b"\xff\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01a[1]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 0) + b"\x01\xff[1]",
        b"room\x00" + struct.pack("!BBQQ", VERSION, ord("H"), 1, 0) + b"\x01a{}",
        b"\x00" + struct.pack("!BBQQ", VERSION, ord("H"), 1, 0) + b"\x01a[]",
        b"\x00" + struct.pack("!BBQQ", VERSION, ord("H"), 1, 0) + b"\x01a{}",
        b"\x00" + struct.pack("!BBQQ", VERSION, ord("B"), 1, 2**64 - 1) + b"\x01a[1,2]",
    ],
)
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(WireError):
        decode(data)


def control_frame(node: object, members: object = (), via: object = None) -> bytes:
    payload = orjson.dumps({"node": node, "members": members, "via": via})
    return b"\x00" + struct.pack("!BBQQ", VERSION, ord("G"), 7, 0) + b"\x01a" + payload


GOOD = REC.to_json()


@pytest.mark.parametrize(
    "node",
    [
        None,
        [],
        {**GOOD, "name": ""},
        {**GOOD, "name": 5},
        {**GOOD, "name": "x" * 300},
        {**GOOD, "incarnation": -1},
        {**GOOD, "incarnation": True},
        {**GOOD, "incarnation": "7"},
        {**GOOD, "control": "http://x"},
        {**GOOD, "control": None},
        {**GOOD, "pub": "tcp://" + "x" * 2000},
        {**GOOD, "key": "short"},
        {**GOOD, "key": 5},
        {k: v for k, v in GOOD.items() if k != "pub"},
    ],
)
def test_bad_records(node: object) -> None:
    with pytest.raises(WireError):
        decode(control_frame(node))


def test_bad_member_lists() -> None:
    with pytest.raises(WireError):
        decode(control_frame(GOOD, members={"a": 1}))
    with pytest.raises(WireError):
        decode(control_frame(GOOD, members=[GOOD] * (MAX_MEMBERS + 1)))
    too_big = orjson.dumps({**GOOD, "incarnation": 1}).replace(b":1,", b":18446744073709551616,")
    data = control_frame(GOOD, members=[None]).replace(b"[null]", b"[" + too_big + b"]")
    with pytest.raises(WireError):
        decode(data)
    with pytest.raises(WireError):
        decode(control_frame(GOOD, via="nowhere"))
    assert decode(control_frame(GOOD, members=[GOOD], via="tcp://h:1")).control is not None


@pytest.mark.parametrize("topic", ["", "a\x00b", "x" * 3000])
def test_bad_topics(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        topic_prefix(topic)


def test_topic_must_be_str() -> None:
    with pytest.raises(TypeError):
        topic_prefix(b"room")  # type: ignore[arg-type]


def test_sender_names_are_checked() -> None:
    with pytest.raises(ValueError, match="1 to 255"):
        sender_field("")
    with pytest.raises(TypeError):
        sender_field(3)  # type: ignore[arg-type]


# -- versions ------------------------------------------------------------------------------


def test_records_carry_their_versions() -> None:
    record = REC.with_versions(
        {"pubsub": Range(1, 1), "tracker": Range(1, 3), "transfer": Range(2, 2)}
    )
    assert record.to_json()["versions"] == {
        "pubsub": [1, 1],
        "tracker": [1, 3],
        "transfer": [2, 2],
    }
    assert record.speaks("tracker") == Range(1, 3)
    assert record.speaks("channels") is None
    frame = decode(encode_control(Kind.GOSSIP, 7, 1, sender_field("a"), Control(REC, (record,))))
    assert frame.control is not None
    assert frame.control.node == REC
    assert frame.control.members == (record,)
    assert REC.versions == (("pubsub", VERSIONS),)  # a record's default: these frames


def test_a_record_without_versions_is_the_release_before_negotiation() -> None:
    old = {k: v for k, v in GOOD.items() if k != "versions"}  # what 316520a sends
    frame = decode(control_frame(old, members=[old]))
    assert frame.control is not None
    for record in (frame.control.node, *frame.control.members):
        assert dict(record.versions) == dict(LEGACY)
        assert record.speaks("pubsub") == Range(1, 1)
        assert record.speaks("tracker") == Range(1, 1)
        assert record.speaks("transfer") == Range(1, 1)
    # a null ``versions`` reads the same way; an empty object speaks nothing
    assert decode(control_frame({**GOOD, "versions": None})).control.node.versions == tuple(
        sorted(LEGACY.items())
    )
    assert decode(control_frame({**GOOD, "versions": {}})).control.node.versions == ()


@pytest.mark.parametrize(
    "versions",
    [
        [],
        "pubsub",
        {"pubsub": [1]},
        {"pubsub": [1, 2, 3]},
        {"pubsub": [0, 1]},
        {"pubsub": [2, 1]},
        {"pubsub": [1, 2**31]},
        {"pubsub": [1.0, 2]},
        {"pubsub": [True, 2]},
        {"pubsub": {"low": 1, "high": 2}},
        {"": [1, 1]},
        {"a b": [1, 1]},
        {"x" * 65: [1, 1]},
        {"é": [1, 1]},
        {f"p{i}": [1, 1] for i in range(MAX_PROTOCOLS + 1)},
    ],
)
def test_bad_versions(versions: object) -> None:
    with pytest.raises(WireError, match="versions"):
        decode(control_frame({**GOOD, "versions": versions}))


def test_frames_are_written_and_read_in_every_version_of_the_range() -> None:
    for version in range(LOWEST, VERSION + 1):
        data = encode_batch(
            topic_prefix("t"), Kind.BROADCAST, 7, 0, sender_field("a"), b"[1]", version
        )
        frame = decode(data)
        assert (frame.version, frame.messages) == (version, [1])
        frame = decode(encode_control(Kind.HELLO, 7, 1, sender_field("a"), Control(REC), version))
        assert frame.version == version
    for version in (LOWEST - 1, VERSION + 1, 256):
        with pytest.raises(ValueError, match="not one this codec speaks"):
            encode_control(Kind.HELLO, 7, 1, sender_field("a"), Control(REC), version)
        with pytest.raises(ValueError, match="not one this codec speaks"):
            encode_batch(
                topic_prefix("t"), Kind.BROADCAST, 7, 0, sender_field("a"), b"[1]", version
            )


def test_a_control_frame_of_a_version_we_do_not_speak_is_still_read() -> None:
    # the negotiation itself: a newer node's hello must read, so that it can be refused
    # with its ranges in the log, not dropped as noise
    newer = REC.with_versions({"pubsub": Range(VERSION + 1, VERSION + 2)})
    data = bytearray(encode_control(Kind.HELLO, 7, 1, sender_field("a"), Control(newer)))
    data[1] = VERSION + 1
    frame = decode(bytes(data))
    assert frame.version == VERSION + 1
    assert frame.control is not None
    assert frame.control.node.speaks("pubsub") == Range(VERSION + 1, VERSION + 2)
    # one that does not read as a control frame is an unknown version, not invalid
    with pytest.raises(UnknownVersion):
        decode(b"\x00" + struct.pack("!BBQQ", VERSION + 1, ord("H"), 7, 0) + b"\x01a{}")
    with pytest.raises(UnknownVersion):
        decode(b"\x00" + struct.pack("!BBQQ", VERSION + 1, ord("Z"), 7, 0) + b"\x01a{}")
    # batches of such a version never are
    batch_data = bytearray(batch())
    batch_data[len(topic_prefix("room:1"))] = VERSION + 1
    with pytest.raises(UnknownVersion):
        decode(bytes(batch_data))


def test_protocol_names() -> None:
    assert check_protocol("tracker") == "tracker"
    assert check_protocol("my-app.v_2") == "my-app.v_2"
    for bad in ["", "a b", "x" * 65, "é", "a/b"]:
        with pytest.raises(ValueError, match="protocol name"):
            check_protocol(bad)
    with pytest.raises(TypeError):
        check_protocol(3)  # type: ignore[arg-type]


def test_many_distinct_versions_decode_right_and_the_codec_keeps_no_more_of_them() -> None:
    from pubsub_zmq import wire

    for high in range(1, 3000):
        versions = {f"p{high % 50}": [1, high]}
        record = decode(control_frame({**GOOD, "versions": versions})).control.node
        assert record.versions == ((f"p{high % 50}", Range(1, high)),)
    assert len(wire._RANGES_SEEN) <= MAX_PROTOCOLS * 16
    assert len(wire._PROTOCOLS_SEEN) <= MAX_PROTOCOLS * 16
