"""The client protocol's codec (tracker_zmq.client): round trips, and garbage rejected.

Pure: no sockets. The decoders' one documented exception is ProtocolError; whatever
bytes or JSON come in, nothing else escapes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker_zmq import Client, ProtocolError
from tracker_zmq.client import (
    ERROR_CODES,
    OPS,
    PROTOCOL_VERSION,
    SESSION_OPS,
    Event,
    Reply,
    Request,
    decode_message,
    decode_request,
    encode_diff,
    encode_error,
    encode_ok,
    encode_request,
)
from tracker_zmq.protocol import MAX_BAN_SECONDS, TrackItem, UntrackItem

ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
metas = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
owners = st.none() | st.text(min_size=1, max_size=30)
tokens = st.text(min_size=1, max_size=40)
request_ids = st.integers(min_value=0, max_value=2**53)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    op = draw(st.sampled_from(sorted(OPS)))
    rid = draw(request_ids)
    token = draw(tokens) if op in SESSION_OPS else None
    fields: dict[str, Any] = {}
    if op == "hello":
        fields["client"] = draw(st.text(min_size=1, max_size=30))
        fields["lease"] = draw(st.none() | st.floats(min_value=0.001, max_value=1e6))
    if op in ("track", "update", "subscribe", "unsubscribe", "list", "get_by_key"):
        fields["topic"] = draw(ids)
    if op in ("track", "update", "get_by_key"):
        fields["key"] = draw(ids)
    if op in ("track", "update"):
        fields["meta"] = draw(metas)
    if op in ("track", "update", "untrack"):
        fields["owner"] = draw(owners)
    if op == "untrack" and draw(st.booleans()):
        fields["topic"] = draw(ids)
        fields["key"] = draw(ids)
    labels = st.text(min_size=1, max_size=30)
    if op == "track_many":
        item = st.builds(TrackItem, ids, ids, metas, owners)
        fields["presences"] = tuple(draw(st.lists(item, max_size=4)))
    if op == "untrack_many":
        fields["presences"] = tuple(draw(st.lists(st.builds(UntrackItem, ids, ids, owners))))
    if op == "broadcast":
        fields["topic"] = draw(labels)
        fields["event"] = draw(labels)
        fields["payload"] = draw(metas)
    if op == "disconnect":
        fields["socket_id"] = draw(labels)
        fields["ban_seconds"] = draw(st.floats(min_value=0, max_value=MAX_BAN_SECONDS))
    return Request(rid, op, token, **fields)


@given(requests())
def test_every_request_round_trips(request: Request) -> None:
    assert decode_request(encode_request(request)) == request


@given(request_ids, st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_ok_replies_round_trip(rid: int, result: dict[str, Any]) -> None:
    assert decode_message(encode_ok(rid, result)) == Reply(rid, True, result)


@given(request_ids, st.sampled_from(sorted(ERROR_CODES)), st.text(max_size=40))
def test_error_replies_round_trip(rid: int, code: str, message: str) -> None:
    reply = decode_message(encode_error(rid, code, message, limit=5))
    assert isinstance(reply, Reply)
    assert (reply.id, reply.ok, reply.code, reply.message) == (rid, False, code, message)
    assert reply.error == {"code": code, "message": message, "limit": 5}


@given(
    ids, st.lists(st.tuples(ids, metas), max_size=4), st.lists(st.tuples(ids, metas), max_size=4)
)
def test_diff_events_round_trip(topic: Any, joins: Any, leaves: Any) -> None:
    assert decode_message(encode_diff(topic, joins, leaves)) == Event("diff", topic, joins, leaves)


@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_protocol_error(frame: bytes) -> None:
    for decode in (decode_request, decode_message):
        with contextlib.suppress(ProtocolError):
            decode(frame)


def _mangled_objects() -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects that look like requests and replies, with any value in any field."""
    field_names = st.sampled_from(
        [
            *("v", "id", "op", "token", "client", "lease", "topic", "key", "meta", "owner"),
            *("ok", "result", "error", "event", "joins", "leaves"),
        ]
    )
    values = json_values | st.sampled_from(sorted(OPS)) | st.just(PROTOCOL_VERSION)
    return st.dictionaries(field_names, values, max_size=8)


@given(_mangled_objects())
def test_mangled_json_raises_only_protocol_error(data: dict[str, Any]) -> None:
    frame = orjson.dumps(data)
    outcome = _attempt(frame)
    if isinstance(outcome, ProtocolError):
        assert outcome.code in ("bad_request", "unsupported_version", "unknown_op")
        assert outcome.request_id is None or 0 <= outcome.request_id <= 2**53
    else:
        assert outcome.op in OPS
        assert decode_request(encode_request(outcome)) == outcome
    with contextlib.suppress(ProtocolError):
        decode_message(frame)


def _attempt(frame: bytes) -> Request | ProtocolError:
    try:
        return decode_request(frame)
    except ProtocolError as exc:
        return exc


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        (b'{"v": 2, "id": 4, "op": "status"}', "unsupported_version", 4),
        (b'{"id": 4, "op": "status"}', "unsupported_version", 4),
        (b'{"v": true, "id": 4, "op": "status"}', "unsupported_version", 4),
        (b'{"v": 1, "op": "status"}', "bad_request", None),
        (b'{"v": 1, "id": -1, "op": "status"}', "bad_request", None),
        (b'{"v": 1, "id": 3, "op": "nope"}', "unknown_op", 3),
        (b'{"v": 1, "id": 3}', "bad_request", 3),
        (
            b'{"v": 1, "id": 3, "op": "track", "topic": "t", "key": "k", "meta": {}}',
            "bad_request",
            3,
        ),
        (b'{"v": 1, "id": 3, "op": "list", "topic": true}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "list", "topic": 1.5}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "list", "topic": ""}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "list", "topic": 18446744073709551615}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "hello", "client": "c", "lease": 0}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "hello"}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "untrack", "token": "t", "topic": "x"}', "bad_request", 3),
        (b'{"v": 1, "id": 3, "op": "untrack", "token": "t", "owner": 5}', "bad_request", 3),
        (
            b'{"v": 1, "id": 3, "op": "update", "token": "t", "topic": "x", "key": 1, "meta": []}',
            "bad_request",
            3,
        ),
        (b"[1]", "bad_request", None),
        (b"{", "bad_request", None),
    ],
)
def test_bad_requests_say_why(frame: bytes, code: str, request_id: int | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(frame)
    assert info.value.code == code
    assert info.value.request_id == request_id
    assert isinstance(info.value, ValueError)


def test_oversized_frames_are_refused_before_parsing() -> None:
    frame = encode_request(Request(1, "list", topic="t" * 200))
    assert decode_request(frame, max_bytes=len(frame)).topic == "t" * 200
    with pytest.raises(ProtocolError, match="over the"):
        decode_request(frame, max_bytes=len(frame) - 1)


def test_unknown_fields_and_events_are_ignored() -> None:
    frame = b'{"v": 1, "id": 2, "op": "status", "future": [1, 2]}'
    assert decode_request(frame) == Request(2, "status")
    assert decode_message(b'{"v": 1, "event": "someday"}') == Event("someday")
    assert decode_message(b'{"v": 1, "id": 2, "ok": true}') == Reply(2, True, {})


def test_session_less_ops_drop_a_token() -> None:
    frame = b'{"v": 1, "id": 2, "op": "list", "topic": "t", "token": "x"}'
    assert decode_request(frame).token is None


@pytest.mark.parametrize(
    "options",
    [
        {"heartbeat_interval": 0},
        {"heartbeat_interval": 2.0, "lease": 1.0},
        {"client_id": ""},
        {"timeout": float("nan")},
        {"queue_size": 0},
        {"curve_secret_key": "x" * 40},
    ],
)
def test_client_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Client("tcp://127.0.0.1:1", **options)


def test_client_rejects_a_bad_endpoint() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Client("127.0.0.1:5560")
