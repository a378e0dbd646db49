"""channels/wire.py: the serializers, the handshake rules and topic routing (pure)."""

from __future__ import annotations

import base64
import json

import pytest

from tracker_zmq.channels.errors import FrameError
from tracker_zmq.channels.wire import (
    AUTH_TOKEN_PREFIX,
    V1,
    V2,
    Message,
    Reply,
    auth_token,
    origin_allowed,
    parse_query,
    route,
    serializer_for,
)


def test_v2_decodes_phoenix_js_frames() -> None:
    frame = '["3","4","room:lobby","phx_join",{"token":"t"}]'
    assert V2.decode(frame) == Message("room:lobby", "phx_join", {"token": "t"}, "4", "3")
    heartbeat = V2.decode('[null,"5","phoenix","heartbeat",{}]')
    assert heartbeat == Message("phoenix", "heartbeat", {}, "5", None)
    assert V2.decode(b'[1,2,"t","e",{}]') == Message("t", "e", {}, 2, 1)  # integer refs too


def test_v2_encodes_replies_pushes_and_broadcasts() -> None:
    reply = Reply("room:1", "ok", {"joined": "room:1"}, "4", "3")
    assert json.loads(V2.encode(reply)) == [
        "3",
        "4",
        "room:1",
        "phx_reply",
        {"status": "ok", "response": {"joined": "room:1"}},
    ]
    push = Message("room:1", "presence_state", {}, None, "3")
    assert json.loads(V2.encode(push)) == ["3", None, "room:1", "presence_state", {}]
    assert json.loads(V2.fastlane("room:1", "new_msg", {"b": 1})) == [
        None,
        None,
        "room:1",
        "new_msg",
        {"b": 1},
    ]


def test_v1_objects_carry_topic_event_payload_and_ref_only() -> None:
    frame = '{"topic":"room:1","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}'
    assert V1.decode(frame) == Message("room:1", "phx_join", {}, "1", "1")
    assert V1.decode('{"topic":"t","event":"e","payload":{},"ref":null}').join_ref is None
    assert json.loads(V1.encode(Reply("t", "error", {"reason": "x"}, "2", "1"))) == {
        "topic": "t",
        "event": "phx_reply",
        "payload": {"status": "error", "response": {"reason": "x"}},
        "ref": "2",
    }
    assert json.loads(V1.encode(Message("t", "e", {"a": 1}, None, "1"))) == {
        "topic": "t",
        "event": "e",
        "payload": {"a": 1},
        "ref": None,
    }
    assert json.loads(V1.fastlane("t", "e", {})) == {
        "topic": "t",
        "event": "e",
        "payload": {},
        "ref": None,
    }


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "{}",
        "[]",
        '["1","2","t","e"]',
        '["1","2","t","e",{},6]',
        '["1","2","","e",{}]',
        '["1","2","t","",{}]',
        '["1","2",5,"e",{}]',
        '["1","2","t","e",[]]',
        '["1","2","t","e","x"]',
        '[["1"],"2","t","e",{}]',
        '["1",{"r":1},"t","e",{}]',
        '["1",true,"t","e",{}]',
        '"a string"',
    ],
)
def test_v2_refuses_wrong_shapes(frame: str) -> None:
    with pytest.raises(FrameError):
        V2.decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "[]",
        '{"topic":"t","event":"e","payload":{}}',
        '{"topic":"t","event":"e","ref":null}',
        '{"topic":"t","event":"e","payload":5,"ref":null}',
        '{"topic":1,"event":"e","payload":{},"ref":null}',
    ],
)
def test_v1_refuses_wrong_shapes(frame: str) -> None:
    with pytest.raises(FrameError):
        V1.decode(frame)


def test_frames_over_the_limit_are_refused_before_parsing() -> None:
    frame = '["1","2","t","e",{"x":"' + "y" * 100 + '"}]'
    with pytest.raises(FrameError, match="over the limit"):
        V2.decode(frame, max_bytes=50)
    assert V2.decode(frame, max_bytes=len(frame)).topic == "t"


def test_a_payload_that_does_not_encode_raises_type_error() -> None:
    with pytest.raises(TypeError):
        V2.encode(Message("t", "e", {"x": object()}))


def test_serializer_for_picks_by_major_version() -> None:
    assert serializer_for("2.0.0") is V2
    assert serializer_for("2.1.0") is V2
    assert serializer_for("1.0.0") is V1
    assert serializer_for(None) is V1  # Phoenix's default vsn
    for bad in ("3.0.0", "2", "", "x.y.z", "2.0.0-rc"):
        assert serializer_for(bad) is None


def test_parse_query() -> None:
    assert parse_query(b"vsn=2.0.0&token=a%2Bb&empty=") == {
        "vsn": "2.0.0",
        "token": "a+b",
        "empty": "",
    }
    with pytest.raises(FrameError):
        parse_query(b"\xff=1")


def test_auth_token_as_phoenix_js_sends_it() -> None:
    token = "secret token/+?"
    encoded = base64.b64encode(token.encode()).decode().rstrip("=")  # btoa, no padding
    assert auth_token(["phoenix", AUTH_TOKEN_PREFIX + encoded]) == (token, ["phoenix"])
    urlsafe = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    assert auth_token([AUTH_TOKEN_PREFIX + urlsafe, "phoenix"]) == (token, ["phoenix"])
    assert auth_token(["phoenix"]) == (None, ["phoenix"])
    with pytest.raises(FrameError):
        auth_token([AUTH_TOKEN_PREFIX + "!!!"])
    with pytest.raises(FrameError):
        auth_token([AUTH_TOKEN_PREFIX + "YQ", AUTH_TOKEN_PREFIX + "Yg"])


def test_origin_check() -> None:
    # no Origin header: not a browser, it passes (as in Phoenix)
    assert origin_allowed(None, "example.com", True)
    assert origin_allowed("https://example.com", "example.com", True)
    assert origin_allowed("http://example.com:4000", "example.com:4000", True)
    assert not origin_allowed("https://evil.com", "example.com", True)
    assert not origin_allowed("null", "example.com", True)
    assert origin_allowed("https://evil.com", "example.com", False)
    allowed = ["https://example.com", "//*.example.org"]
    assert origin_allowed("https://example.com", None, allowed)
    assert not origin_allowed("http://example.com", None, allowed)  # the scheme counts
    assert origin_allowed("http://a.example.org", None, allowed)
    assert origin_allowed("https://example.org", None, allowed)
    assert not origin_allowed("https://example.org.evil.com", None, allowed)
    assert origin_allowed("https://x", None, lambda o: o == "https://x")
    assert not origin_allowed("https://y", None, lambda o: o == "https://x")


def test_route_prefers_exact_then_the_longest_prefix() -> None:
    routes = {"room:*": "room", "room:vip:*": "vip", "lobby": "lobby", "*": "any"}
    assert route(routes, "room:1") == "room"
    assert route(routes, "room:vip:1") == "vip"
    assert route(routes, "lobby") == "lobby"
    assert route(routes, "other") == "any"
    assert route({"room:*": 1}, "roo") is None
