"""The client protocol's typed requests (tracker_zmq.protocol): one dataclass per op.

The codec's round trips and its garbage handling are in test_client_protocol.py (through
the names tracker_zmq.client still exports); here: what :func:`decode_request` returns,
and that the old import path and the generic :class:`Request` still agree with it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker_zmq import ProtocolError, client, protocol
from tracker_zmq.protocol import (
    BULK_OPS,
    OPS,
    SESSION_OPS,
    V1_OPS,
    BroadcastRequest,
    ByeRequest,
    ClientRequest,
    DisconnectRequest,
    GetByKeyRequest,
    HeartbeatRequest,
    HelloRequest,
    ListRequest,
    Request,
    StatusRequest,
    SubscribeRequest,
    TrackItem,
    TrackManyRequest,
    TrackRequest,
    UnsubscribeRequest,
    UntrackItem,
    UntrackManyRequest,
    UntrackRequest,
    UpdateRequest,
    decode_request,
    encode_request,
    served_ops,
    to_request,
)

TYPED: list[ClientRequest] = [
    HelloRequest(1, "app", 3.0),
    HelloRequest(2, "app"),
    HeartbeatRequest(3, "tok"),
    ByeRequest(4, "tok"),
    TrackRequest(5, "tok", "room", "alice", {"a": [1]}, owner="c1"),
    TrackRequest(6, "tok", 5, 6, {}),
    UpdateRequest(7, "tok", "room", "alice", {"b": None}),
    UntrackRequest(8, "tok", "room", "alice"),
    UntrackRequest(9, "tok", owner="c1"),
    UntrackRequest(10, "tok"),
    SubscribeRequest(11, "tok", "room"),
    UnsubscribeRequest(12, "tok", 7),
    ListRequest(13, "room"),
    GetByKeyRequest(14, "room", 1),
    StatusRequest(15),
    TrackManyRequest(16, "tok", (TrackItem("room", "a", {}), TrackItem(5, 6, {"m": 1}, "c1"))),
    TrackManyRequest(17, "tok", ()),
    UntrackManyRequest(18, "tok", (UntrackItem("room", "a"), UntrackItem(5, 6, "c1"))),
    BroadcastRequest(19, "room:1", "new_msg", {"body": "hi"}),
    DisconnectRequest(20, "user_socket:1", 60.0),
    DisconnectRequest(21, "user_socket:1"),
]


def test_there_is_one_dataclass_per_op_and_the_union_holds_them_all() -> None:
    classes: tuple[Any, ...] = typing.get_args(protocol.ClientRequest)
    assert sorted(cls.op for cls in classes) == sorted(OPS)
    assert {type(r) for r in TYPED} == set(classes)
    sessions: tuple[Any, ...] = typing.get_args(protocol.SessionRequest)
    assert {cls.op for cls in sessions} == SESSION_OPS
    for cls in classes:
        assert cls.__dataclass_params__.frozen
        assert hasattr(cls, "__slots__")
        assert dataclasses.fields(cls)[0].name == "id"
        assert ("token" in cls.__slots__) == (cls.op in SESSION_OPS)


@pytest.mark.parametrize("request_", TYPED, ids=lambda r: f"{r.op}-{r.id}")
def test_typed_requests_round_trip(request_: ClientRequest) -> None:
    assert decode_request(encode_request(request_)) == request_
    # the generic form encodes to the same frame, and the old decoder returns it
    generic = to_request(request_)
    assert encode_request(generic) == encode_request(request_)
    assert client.decode_request(encode_request(request_)) == generic


ids = st.one_of(st.text(min_size=1, max_size=20), st.integers(-(2**63), 2**63 - 1))
owners = st.none() | st.text(min_size=1, max_size=10)
metas = st.dictionaries(st.text(max_size=5), ids, max_size=3)


@given(st.integers(0, 2**53), st.text(min_size=1, max_size=9), ids, ids, metas, owners)
def test_track_and_update_decode_to_their_types(
    rid: int, token: str, topic: Any, key: Any, meta: Any, owner: str | None
) -> None:
    for cls in (TrackRequest, UpdateRequest):
        generic = Request(rid, cls.op, token, topic=topic, key=key, meta=meta, owner=owner)
        assert decode_request(encode_request(generic)) == cls(rid, token, topic, key, meta, owner)


def test_decode_drops_what_an_op_does_not_take() -> None:
    frame = b'{"v": 1, "id": 2, "op": "list", "topic": "t", "token": "x", "key": 3}'
    assert decode_request(frame) == ListRequest(2, "t")
    frame = b'{"v": 1, "id": 2, "op": "hello", "client": "c", "lease": 2}'
    decoded = decode_request(frame)
    assert decoded == HelloRequest(2, "c", 2.0)
    assert isinstance(decoded, HelloRequest)
    assert type(decoded.lease) is float


def test_the_old_import_path_keeps_every_name() -> None:
    for name in (
        "DEFAULT_MAX_FRAME_BYTES",
        "ERROR_CODES",
        "MAX_ID_CHARS",
        "OPS",
        "PROTOCOL_VERSION",
        "SESSION_OPS",
        "Event",
        "Reply",
        "Request",
        "decode_message",
        "encode_diff",
        "encode_error",
        "encode_ok",
        "encode_request",
    ):
        assert getattr(client, name) is getattr(protocol, name), name
    assert client.ProtocolError is protocol.ProtocolError


# ------------------------------------------------------------------ served ops


def test_the_endpoint_grows_additively() -> None:
    # every op of the first release is still served: an old client works on a new node
    assert V1_OPS <= OPS
    assert "hello" in V1_OPS
    # the session ops of this release beyond the first's are the bulk ones
    assert SESSION_OPS - BULK_OPS <= V1_OPS


def test_served_ops_reads_the_hello_result() -> None:
    hello = {"session": "s", "token": "t", "node": "n", "vsn": 1, "lease": 3.0}
    # a node of the first release lists none: it serves the first release's ops
    assert served_ops(hello) == V1_OPS
    assert served_ops({**hello, "ops": None}) == V1_OPS
    assert served_ops({**hello, "ops": sorted(OPS)}) == OPS
    # a node that lists fewer (or newer) ops is taken at its word
    assert served_ops({**hello, "ops": ["hello", "list"]}) == {"hello", "list"}
    assert served_ops({**hello, "ops": ["hello", "teleport"]}) == {"hello", "teleport"}


@pytest.mark.parametrize("ops", ["hello", {"hello": 1}, ["hello", 3], [None], 7])
def test_served_ops_refuses_a_malformed_list(ops: Any) -> None:
    with pytest.raises(ProtocolError, match="ops must be a list of strings"):
        served_ops({"ops": ops})
