"""The session table of a node's client endpoint (tracker_zmq.sessions), without sockets.

h11-style: a :class:`Sessions` is driven with decoded requests (or raw frames), a fake
clock (a float) and a tracker made of one real :class:`Shard` (or a fake that fails on
purpose); what it answers is read back from the actions it returns.
"""

from __future__ import annotations

import ast
import builtins
import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import tracker_zmq
from crdt_state import Key, Meta, Topic
from tracker_zmq.errors import ConfigError, TooManyPresences, TrackerNotRunning
from tracker_zmq.options import Options
from tracker_zmq.protocol import (
    CONTROL_OPS,
    OPS,
    BroadcastRequest,
    ByeRequest,
    ClientRequest,
    DisconnectRequest,
    Event,
    GetByKeyRequest,
    HeartbeatRequest,
    HelloRequest,
    ListRequest,
    Reply,
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
    decode_message,
    encode_diff,
    served_ops,
)
from tracker_zmq.sessions import (
    Action,
    ClientLimits,
    FrameDropped,
    RequestFailed,
    SendFrame,
    SessionEnded,
    SessionOpened,
    Sessions,
)
from tracker_zmq.shard import Shard

NODE = "n1"
VSN = 7


class ShardTracker:
    """The TrackerLike of one real Shard: what the Tracker does, minus the I/O."""

    def __init__(self) -> None:
        self.shard = Shard(NODE, VSN, 0, Options(), random.Random(1))
        self.running = True
        self.diffs: list[tuple[Topic, list[tuple[Key, Meta]], list[tuple[Key, Meta]]]] = []

    @property
    def vsn(self) -> int:
        return self.shard.vsn

    def _check(self) -> None:
        if not self.running:
            raise TrackerNotRunning("stopped")

    def _diff(self, out: Any) -> None:
        for topic, (joins, leaves) in out.diff.items():
            self.diffs.append((topic, joins, leaves))

    def track(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
        self._check()
        ref, out = self.shard.track(owner, topic, key, meta)
        self._diff(out)
        return ref

    def update(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
        self._check()
        ref, out = self.shard.update(owner, topic, key, meta)
        self._diff(out)
        return ref

    def untrack(self, owner: str, topic: Topic | None = None, key: Key | None = None) -> None:
        self._check()
        if topic is None or key is None:
            self._diff(self.shard.untrack_owner(owner))
        else:
            self._diff(self.shard.untrack(owner, topic, key))

    def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
        self._check()
        return self.shard.list(topic)

    def get_by_key(self, topic: Topic, key: Key) -> builtins.list[tuple[str | int, Meta]]:
        self._check()
        return self.shard.get_by_key(topic, key)


class Recorder:
    """A Broadcaster that records what it was asked (and refuses a topic, as the node's
    refuses the reserved ones)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.running = True

    def broadcast(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        if not self.running:
            raise TrackerNotRunning("stopped")
        if topic == "phx_bans":
            raise ValueError("'phx_bans' is reserved for bans")
        self.sent.append(("broadcast", topic, event, payload))

    def disconnect(self, socket_id: str, ban_seconds: float) -> None:
        self.sent.append(("disconnect", socket_id, ban_seconds))


class Endpoint:
    """A Sessions on a fake clock, with helpers that read the replies back."""

    def __init__(
        self,
        limits: ClientLimits | None = None,
        tracker: Any = None,
        status: Callable[[], dict[str, Any]] | None = None,
        ops: frozenset[str] = OPS,
        broadcaster: Recorder | None = None,
    ) -> None:
        self.tracker = tracker if tracker is not None else ShardTracker()
        self.broadcaster = broadcaster if broadcaster is not None else Recorder()
        counter = itertools.count(1)
        self.sessions = Sessions(
            NODE,
            self.tracker,
            limits,
            tokens=lambda: f"token-{next(counter)}",
            status=status,
            ops=ops,
            broadcaster=self.broadcaster,
        )
        self.now = 1000.0
        self.ids = itertools.count(1)

    def send(self, envelope: bytes, request: ClientRequest) -> tuple[Reply, list[Action]]:
        actions = self.sessions.handle(request, (envelope,), self.now)
        last = actions[-1]
        assert isinstance(last, SendFrame)
        assert last.envelope == (envelope,)
        assert not last.push
        reply = decode_message(last.frame)
        assert isinstance(reply, Reply)
        assert reply.id == request.id
        return reply, actions[:-1]

    def ok(self, envelope: bytes, request: ClientRequest) -> dict[str, Any]:
        reply, _ = self.send(envelope, request)
        assert reply.ok, reply.error
        return reply.result

    def refused(self, envelope: bytes, request: ClientRequest, code: str) -> dict[str, Any]:
        errors = self.sessions.counters["errors"]
        reply, _ = self.send(envelope, request)
        assert not reply.ok
        assert reply.code == code, reply.error
        assert self.sessions.counters["errors"] == errors + 1
        return reply.error

    def hello(self, envelope: bytes, client: str = "app", lease: float | None = None) -> str:
        return str(self.ok(envelope, HelloRequest(next(self.ids), client, lease))["token"])

    def rid(self) -> int:
        return next(self.ids)

    def pushes(self) -> list[SendFrame]:
        """The pushes of every diff the tracker made since the last call."""
        out: list[SendFrame] = []
        for topic, joins, leaves in self.tracker.diffs:
            out.extend(self.sessions.on_diff(topic, joins, leaves))
        self.tracker.diffs.clear()
        return out

    def keys(self, topic: Topic) -> set[Key]:
        return {k for k, _ in self.tracker.list(topic)}


# ------------------------------------------------------------------ hello


def test_hello_opens_a_named_session_with_a_token_from_the_factory() -> None:
    ep = Endpoint(ClientLimits(lease=6.0, max_presences=5, max_subscriptions=3))
    reply, actions = ep.send(b"c1", HelloRequest(1, "web-1"))
    assert reply.ok
    assert reply.result == {
        "session": f"web-1@{NODE}:{VSN}:1",
        "token": "token-1",
        "node": NODE,
        "vsn": VSN,
        "lease": 6.0,
        "heartbeat": 2.0,
        "max_presences": 5,
        "max_subscriptions": 3,
        "ops": sorted(OPS),
    }
    assert actions == [SessionOpened(f"web-1@{NODE}:{VSN}:1", 6.0)]
    # a second session of the same client name is another session
    assert ep.ok(b"c2", HelloRequest(2, "web-1", 3.0))["session"] == f"web-1@{NODE}:{VSN}:2"
    stats = ep.sessions.stats()
    assert (stats["sessions"], stats["sessions_opened"], stats["requests"]) == (2, 2, 2)


def test_hello_lists_the_ops_the_endpoint_serves_and_no_other_op_is_served() -> None:
    ep = Endpoint()
    result = ep.ok(b"c", HelloRequest(1, "app"))
    assert result["ops"] == sorted(OPS)
    assert served_ops(result) == OPS
    assert ep.ok(b"c", StatusRequest(2))["ops"] == sorted(OPS)
    # an endpoint serving fewer ops (as a node of an older release does) lists fewer,
    # and answers the others unknown_op, counted as errors
    fewer = Endpoint(ops=OPS - {"get_by_key", "status"})
    result = fewer.ok(b"c", HelloRequest(1, "app"))
    assert served_ops(result) == OPS - {"get_by_key", "status"}
    error = fewer.refused(b"c", GetByKeyRequest(2, "t", "k"), "unknown_op")
    assert "get_by_key" in error["message"]
    fewer.refused(b"c", StatusRequest(3), "unknown_op")
    assert fewer.ok(b"c", ListRequest(4, "t")) == {"presences": []}
    # hello is always served; an op that does not exist is a configuration error
    assert "hello" in Endpoint(ops=frozenset({"list"})).sessions.ops
    with pytest.raises(ConfigError, match="teleport"):
        Endpoint(ops=OPS | {"teleport"})


def test_hello_refuses_a_lease_out_of_bounds_and_too_many_sessions() -> None:
    ep = Endpoint(ClientLimits(lease=2.0, min_lease=1.0, max_lease=10.0, max_sessions=2))
    error = ep.refused(b"c", HelloRequest(1, "x", 10.5), "bad_lease")
    assert (error["min_lease"], error["max_lease"]) == (1.0, 10.0)
    ep.refused(b"c", HelloRequest(2, "x", 0.5), "bad_lease")
    ep.hello(b"a")
    ep.hello(b"b", lease=10.0)
    assert ep.refused(b"c", HelloRequest(3, "x"), "too_many_sessions")["limit"] == 2
    assert ep.sessions.stats()["sessions"] == 2


# ------------------------------------------------------------------ presences


def test_track_update_untrack_through_the_sessions_owner_ids() -> None:
    ep = Endpoint()
    token = ep.hello(b"c", client="web")
    name = f"web@{NODE}:{VSN}:1"
    ref = ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "alice", {"s": 1}))["ref"]
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "alice", {"s": 2}, owner="tab-2"))
    owners = dict(ep.tracker.get_by_key("room", "alice"))
    assert set(owners) == {name, f"{name}/tab-2"}
    assert owners[name]["phx_ref"] == ref
    new = ep.ok(b"c", UpdateRequest(ep.rid(), token, "room", "alice", {"s": 3}))["ref"]
    meta = dict(ep.tracker.get_by_key("room", "alice"))[name]
    assert (meta["s"], meta["phx_ref"], meta["phx_ref_prev"]) == (3, new, ref)
    assert ep.sessions.stats()["presences"] == 2
    # one presence, then every presence of an owner, then what is not held
    assert ep.ok(b"c", UntrackRequest(ep.rid(), token, "room", "alice"))["untracked"] == 1
    assert ep.ok(b"c", UntrackRequest(ep.rid(), token, "room", "alice"))["untracked"] == 0
    assert ep.ok(b"c", UntrackRequest(ep.rid(), token, owner="tab-2"))["untracked"] == 1
    assert ep.keys("room") == set()
    assert ep.sessions.stats()["presences"] == 0


def test_untrack_without_topic_or_owner_untracks_the_whole_session() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    for i, owner in enumerate((None, "a", "b")):
        ep.ok(b"c", TrackRequest(ep.rid(), token, f"t{i}", i, {}, owner=owner))
    assert ep.ok(b"c", UntrackRequest(ep.rid(), token))["untracked"] == 3
    assert [ep.keys(f"t{i}") for i in range(3)] == [set(), set(), set()]


def test_already_tracked_no_presence_and_bad_meta() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "k", {}))
    ep.refused(b"c", TrackRequest(ep.rid(), token, "room", "k", {}), "already_tracked")
    ep.refused(b"c", UpdateRequest(ep.rid(), token, "room", "nobody", {}), "no_presence")
    ep.refused(b"c", TrackRequest(ep.rid(), token, "room", "j", {"x": {1, 2}}), "bad_request")
    assert ep.sessions.stats()["presences"] == 1


def test_the_per_session_presence_limit() -> None:
    ep = Endpoint(ClientLimits(max_presences=2))
    token = ep.hello(b"c")
    other = ep.hello(b"d")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", 1, {}))
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", 2, {}))
    error = ep.refused(b"c", TrackRequest(ep.rid(), token, "room", 3, {}), "limit_exceeded")
    assert error["limit"] == 2
    # a presence already held is not one more (the tracker says already_tracked)
    ep.refused(b"c", TrackRequest(ep.rid(), token, "room", 2, {}), "already_tracked")
    ep.ok(b"d", TrackRequest(ep.rid(), other, "room", 3, {}))  # per session
    ep.ok(b"c", UntrackRequest(ep.rid(), token, "room", 1))
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", 3, {}))


def test_the_trackers_own_limit_is_limit_exceeded_too() -> None:
    class Full(ShardTracker):
        def track(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
            raise TooManyPresences("this node holds max_presences = 4", 4)

    ep = Endpoint(tracker=Full())
    token = ep.hello(b"c")
    error = ep.refused(b"c", TrackRequest(ep.rid(), token, "t", "k", {}), "limit_exceeded")
    assert error["limit"] == 4
    assert "max_presences" in error["message"]
    assert ep.sessions.stats()["presences"] == 0


def test_sessions_are_isolated_from_each_other() -> None:
    ep = Endpoint()
    a = ep.hello(b"a", client="same")
    b = ep.hello(b"b", client="same")
    ep.ok(b"a", TrackRequest(ep.rid(), a, "room", "k", {}, owner="o"))
    ep.ok(b"b", TrackRequest(ep.rid(), b, "room", "k", {}, owner="o"))  # two presences
    assert len(ep.tracker.get_by_key("room", "k")) == 2
    # b acts on its own owner "o" only
    ep.refused(b"b", UpdateRequest(ep.rid(), b, "room", "other", {}), "no_presence")
    assert ep.ok(b"b", UntrackRequest(ep.rid(), b, owner="o"))["untracked"] == 1
    assert ep.ok(b"b", UntrackRequest(ep.rid(), b, owner="o"))["untracked"] == 0
    [(owner, _)] = ep.tracker.get_by_key("room", "k")
    assert owner == f"same@{NODE}:{VSN}:1/o"
    # bye of one session leaves the other's presences
    ep.ok(b"b", ByeRequest(ep.rid(), b))
    assert ep.keys("room") == {"k"}


def test_session_less_requests_need_no_token() -> None:
    ep = Endpoint()
    token = ep.hello(b"c", client="w")
    ep.ok(b"c", TrackRequest(ep.rid(), token, 5, 6, {"a": 1}))
    [[key, meta]] = ep.ok(b"x", ListRequest(ep.rid(), 5))["presences"]
    assert (key, meta["a"]) == (6, 1)
    [[owner, meta]] = ep.ok(b"x", GetByKeyRequest(ep.rid(), 5, 6))["presences"]
    assert owner == f"w@{NODE}:{VSN}:1"


# ------------------------------------------------------------------ bye, leases, stall


def test_unknown_tokens_get_unknown_session_with_the_vsn() -> None:
    ep = Endpoint()
    for request in (
        HeartbeatRequest(1, "nope"),
        TrackRequest(2, "nope", "t", "k", {}),
        SubscribeRequest(3, "nope", "t"),
        ByeRequest(4, "nope"),
    ):
        assert ep.refused(b"c", request, "unknown_session")["vsn"] == VSN


def test_bye_untracks_and_forgets_the_session() -> None:
    ep = Endpoint()
    token = ep.hello(b"c", client="w")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "a", {}))
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "b", {}, owner="x"))
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, "room"))
    reply, actions = ep.send(b"c", ByeRequest(ep.rid(), token))
    assert reply.result == {"untracked": 2}
    assert actions == [SessionEnded(f"w@{NODE}:{VSN}:1", "closed", 2)]
    assert ep.keys("room") == set()
    stats = ep.sessions.stats()
    assert (stats["sessions"], stats["subscriptions"], stats["sessions_closed"]) == (0, 0, 1)
    ep.refused(b"c", HeartbeatRequest(ep.rid(), token), "unknown_session")
    assert ep.pushes() == []  # the leaves reach no one: the subscription went with it


def test_a_silent_session_expires_after_its_lease_and_a_heartbeating_one_does_not() -> None:
    ep = Endpoint(ClientLimits(lease=3.0))
    silent = ep.hello(b"s", client="silent")
    alive = ep.hello(b"a", client="alive")
    ep.ok(b"s", TrackRequest(ep.rid(), silent, "room", "ghost", {}))
    ep.ok(b"a", TrackRequest(ep.rid(), alive, "room", "alive", {}))
    for _ in range(5):
        ep.now += 1.0
        assert ep.ok(b"a", HeartbeatRequest(ep.rid(), alive)) == {"lease": 3.0}
        ended = ep.sessions.expire(ep.now)
        if ep.now - 1000.0 <= 3.0:
            assert ended == []
    assert ep.sessions.counters["sessions_expired"] == 1
    assert ep.keys("room") == {"alive"}
    ep.refused(b"s", HeartbeatRequest(ep.rid(), silent), "unknown_session")


def test_expiry_reports_each_session_ended() -> None:
    ep = Endpoint(ClientLimits(lease=2.0))
    token = ep.hello(b"s", client="w")
    ep.ok(b"s", TrackRequest(ep.rid(), token, "t", 1, {}))
    assert ep.sessions.expire(ep.now + 2.0) == []  # a lease of 2 s lasts 2 s
    assert ep.sessions.expire(ep.now + 2.01) == [SessionEnded(f"w@{NODE}:{VSN}:1", "expired", 1)]
    assert ep.sessions.stats()["sessions"] == 0


def test_every_session_request_renews_the_lease() -> None:
    ep = Endpoint(ClientLimits(lease=2.0))
    token = ep.hello(b"s")
    ep.now += 1.5
    ep.ok(b"s", SubscribeRequest(ep.rid(), token, "t"))
    ep.now += 1.5
    assert ep.sessions.expire(ep.now) == []
    ep.now += 0.6
    assert len(ep.sessions.expire(ep.now)) == 1


def test_the_stall_rule_judges_nothing_late_and_forgives_the_stuck_time() -> None:
    limits = ClientLimits(lease=2.0, min_lease=1.0, check_interval=0.25)
    ep = Endpoint(limits)
    token = ep.hello(b"s")
    # on time, or late by at most an interval: judge
    assert not ep.sessions.stalled(0.25, ep.now + 0.25)
    # the node was stuck 5 s: the client's heartbeats sat unread
    ep.now += 5.0
    assert ep.sessions.stalled(4.9, ep.now)
    assert ep.sessions.counters["lease_checks_skipped"] == 1
    # the stuck time does not count against the lease: the piled-up heartbeat is read
    # in time, and the session lives on
    assert ep.sessions.expire(ep.now) == []
    ep.ok(b"s", HeartbeatRequest(ep.rid(), token))
    ep.now += 1.9
    assert ep.sessions.expire(ep.now) == []
    # silence after the stall is judged as usual
    ep.now += 0.2
    assert len(ep.sessions.expire(ep.now)) == 1


def test_the_stall_rule_never_moves_last_seen_past_now() -> None:
    ep = Endpoint(ClientLimits(lease=2.0, check_interval=0.25))
    ep.hello(b"s")
    ep.now += 1.0
    assert ep.sessions.stalled(30.0, ep.now)  # a lateness larger than the silence
    assert ep.sessions.expire(ep.now + 2.0) == []
    assert len(ep.sessions.expire(ep.now + 2.01)) == 1


# ------------------------------------------------------------------ subscriptions


def test_diffs_are_pushed_to_the_subscribers_of_their_topic_only() -> None:
    ep = Endpoint()
    sub = ep.hello(b"sub")
    other = ep.hello(b"other")
    ep.ok(b"other", SubscribeRequest(ep.rid(), other, "elsewhere"))
    ep.ok(b"sub", SubscribeRequest(ep.rid(), sub, "room"))
    ep.ok(b"sub", SubscribeRequest(ep.rid(), sub, "room"))  # twice is once
    assert ep.sessions.stats()["subscriptions"] == 2
    ep.ok(b"other", TrackRequest(ep.rid(), other, "room", "alice", {"a": 1}))
    [push] = ep.pushes()
    assert push.envelope == (b"sub",)
    assert push.push
    event = decode_message(push.frame)
    assert isinstance(event, Event)
    assert (event.kind, event.topic, [k for k, _ in event.joins], event.leaves) == (
        "diff",
        "room",
        ["alice"],
        [],
    )
    ep.ok(b"sub", UnsubscribeRequest(ep.rid(), sub, "room"))
    ep.ok(b"other", UntrackRequest(ep.rid(), other, "room", "alice"))
    assert ep.pushes() == []
    assert ep.sessions.stats()["subscriptions"] == 1


def test_a_push_goes_to_the_envelope_of_the_sessions_last_request() -> None:
    ep = Endpoint()
    token = ep.hello(b"old")
    ep.ok(b"old", SubscribeRequest(ep.rid(), token, "t"))
    ep.ok(b"new", HeartbeatRequest(ep.rid(), token))  # the client reconnected
    pushes = ep.sessions.on_diff("t", [("k", {})], [])
    assert pushes == [SendFrame((b"new",), encode_diff("t", [("k", {})], []), push=True)]


def test_the_per_session_subscription_limit() -> None:
    ep = Endpoint(ClientLimits(max_subscriptions=2))
    token = ep.hello(b"c")
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, "a"))
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, 2))
    error = ep.refused(b"c", SubscribeRequest(ep.rid(), token, "c"), "limit_exceeded")
    assert error["limit"] == 2
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, "a"))  # held already: fine
    ep.ok(b"c", UnsubscribeRequest(ep.rid(), token, "a"))
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, "c"))


# ------------------------------------------------------------------ frames and failures


def test_frames_are_decoded_checked_and_counted() -> None:
    ep = Endpoint()
    request = orjson.dumps({"v": 1, "id": 4, "op": "hello", "client": "raw"})
    # a DEALER's [identity, body] and a REQ's [identity, b"", body]
    for frames in ([b"id", request], [b"id", b"", request]):
        actions = ep.sessions.receive(frames, ep.now)
        assert isinstance(actions[-1], SendFrame)
        assert actions[-1].envelope == tuple(frames[:-1])
        assert decode_message(actions[-1].frame).ok  # type: ignore[union-attr]
    assert ep.sessions.receive([b"id", b"x", request], ep.now) == [
        FrameDropped("3 frames in one message", 1)
    ]
    assert ep.sessions.receive([request], ep.now) == [FrameDropped("1 frames in one message", 2)]
    [dropped] = ep.sessions.receive([b"id", b"{"], ep.now)  # no id: not answered
    assert isinstance(dropped, FrameDropped)
    assert dropped.total == 3
    dropped, answer = ep.sessions.receive([b"id", b'{"v": 2, "id": 9, "op": "status"}'], ep.now)
    assert isinstance(dropped, FrameDropped)
    assert isinstance(answer, SendFrame)
    reply = decode_message(answer.frame)
    assert isinstance(reply, Reply)
    assert (reply.id, reply.code, reply.error["versions"]) == (9, "unsupported_version", [1])
    big = orjson.dumps({"v": 1, "id": 5, "op": "status", "pad": "x" * 2048})
    limited = Endpoint(ClientLimits(max_frame_bytes=1024))
    [dropped] = limited.sessions.receive([b"id", big], limited.now)
    assert isinstance(dropped, FrameDropped)
    assert "over the 1024 byte limit" in dropped.reason
    stats = ep.sessions.stats()
    assert (stats["requests"], stats["garbage"], stats["errors"]) == (2, 4, 1)


def test_a_stopped_tracker_is_not_running_and_a_session_ends_without_untracking() -> None:
    ep = Endpoint(ClientLimits(lease=1.0))
    token = ep.hello(b"c")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "t", "k", {}))
    ep.tracker.running = False
    ep.refused(b"c", TrackRequest(ep.rid(), token, "t", "j", {}), "not_running")
    ep.refused(b"x", ListRequest(ep.rid(), "t"), "not_running")
    assert len(ep.sessions.expire(ep.now + 5)) == 1  # no untrack on a stopped tracker


def test_a_failing_tracker_is_answered_internal_and_reported() -> None:
    class Broken(ShardTracker):
        def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
            raise RuntimeError("boom")

    ep = Endpoint(tracker=Broken())
    reply, actions = ep.send(b"c", ListRequest(1, "t"))
    assert (reply.ok, reply.code) == (False, "internal")
    [failed] = actions
    assert isinstance(failed, RequestFailed)
    assert failed.op == "list"
    assert str(failed.error) == "boom"


def test_a_result_that_does_not_encode_is_internal() -> None:
    class Huge(ShardTracker):
        def list(self, topic: Topic) -> list[tuple[Key, Meta]]:
            return [("k", {"n": 2**70})]

    ep = Endpoint(tracker=Huge())
    reply, actions = ep.send(b"c", ListRequest(1, "t"))
    assert (reply.code, actions) == ("internal", [])
    assert reply.message is not None
    assert "cannot encode the result" in reply.message


def test_status_is_the_injected_one_or_the_sessions_own() -> None:
    assert Endpoint(status=lambda: {"node": "x", "more": 1}).ok(b"c", StatusRequest(1)) == {
        "node": "x",
        "more": 1,
    }
    ep = Endpoint()
    status = ep.ok(b"c", StatusRequest(1))
    assert (status["node"], status["vsn"], status["protocol"]) == (NODE, VSN, 1)
    assert status["clients"]["requests"] == 1


def test_clear_forgets_every_session_without_untracking() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "t", "k", {}))
    ep.ok(b"c", SubscribeRequest(ep.rid(), token, "t"))
    ep.sessions.clear()
    assert ep.sessions.stats()["sessions"] == 0
    assert ep.sessions.on_diff("t", [("k", {})], []) == []
    assert ep.keys("t") == {"k"}


# ------------------------------------------------------------------ bulk ops


def test_track_many_tracks_each_and_reports_the_ones_that_failed() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    ep.ok(b"c", TrackRequest(ep.rid(), token, "room", "b", {}))
    items = (
        TrackItem("room", "a", {"n": 1}),
        TrackItem("room", "b", {}),  # held already
        TrackItem("room", "c", {}, owner="ws-1"),
        TrackItem("room", "a", {}),  # twice in the batch
        TrackItem("other", 7, {"x": {1}}),  # a meta the tracker refuses
    )
    result = ep.ok(b"c", TrackManyRequest(ep.rid(), token, items))
    refs = result["refs"]
    assert [ref is not None for ref in refs] == [True, False, True, False, False]
    assert [(e["index"], e["code"]) for e in result["errors"]] == [
        (1, "already_tracked"),
        (3, "already_tracked"),
        (4, "bad_request"),
    ]
    assert ep.keys("room") == {"a", "b", "c"}
    assert {m["phx_ref"] for k, m in ep.tracker.list("room") if k != "b"} == {refs[0], refs[2]}
    assert ep.sessions.stats()["presences"] == 3
    # a sub-owner's presences are that owner's, as with track
    assert ep.ok(b"c", UntrackRequest(ep.rid(), token, owner="ws-1"))["untracked"] == 1


def test_a_batch_is_refused_whole_when_too_large_or_over_the_session_limit() -> None:
    ep = Endpoint(ClientLimits(max_presences=4, max_batch=3))
    token = ep.hello(b"c")
    too_many = tuple(TrackItem("room", k, {}) for k in range(4))
    error = ep.refused(b"c", TrackManyRequest(ep.rid(), token, too_many), "limit_exceeded")
    assert error["limit"] == error["max_batch"] == 3
    assert "split the batch" in error["message"]
    ep.ok(b"c", TrackManyRequest(ep.rid(), token, too_many[:3]))
    # one held plus two new would be five: nothing of the batch is tracked
    batch = (TrackItem("room", 0, {}), TrackItem("room", 8, {}), TrackItem("room", 9, {}))
    error = ep.refused(b"c", TrackManyRequest(ep.rid(), token, batch), "limit_exceeded")
    assert error["limit"] == 4
    assert ep.keys("room") == {0, 1, 2}
    untrack = tuple(UntrackItem("room", k) for k in range(4))
    ep.refused(b"c", UntrackManyRequest(ep.rid(), token, untrack), "limit_exceeded")


def test_the_trackers_own_limit_fails_items_not_the_batch() -> None:
    class Full(ShardTracker):
        def track(self, owner: str, topic: Topic, key: Key, meta: Meta) -> str:
            if key == "over":
                raise TooManyPresences("this node holds max_presences = 1", 1)
            return super().track(owner, topic, key, meta)

    ep = Endpoint(tracker=Full())
    token = ep.hello(b"c")
    items = (TrackItem("t", "ok", {}), TrackItem("t", "over", {}))
    result = ep.ok(b"c", TrackManyRequest(ep.rid(), token, items))
    assert result["refs"][1] is None
    assert result["errors"] == [
        {
            "index": 1,
            "code": "limit_exceeded",
            "message": "this node holds max_presences = 1",
            "limit": 1,
        }
    ]
    assert ep.sessions.stats()["presences"] == 1


def test_untrack_many_untracks_what_the_session_holds_and_skips_the_rest() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    other = ep.hello(b"d")
    items = tuple(TrackItem("room", k, {}) for k in "abc")
    ep.ok(b"c", TrackManyRequest(ep.rid(), token, items))
    ep.ok(b"d", TrackRequest(ep.rid(), other, "room", "z", {}))
    gone = (UntrackItem("room", "a"), UntrackItem("room", "b"), UntrackItem("room", "z"))
    assert ep.ok(b"c", UntrackManyRequest(ep.rid(), token, gone)) == {"untracked": 2}
    assert ep.keys("room") == {"c", "z"}  # another session's presence is not this one's
    assert ep.ok(b"c", UntrackManyRequest(ep.rid(), token, ())) == {"untracked": 0}
    ep.refused(b"x", UntrackManyRequest(ep.rid(), "nope", gone), "unknown_session")


def test_bulk_frames_are_checked_item_by_item() -> None:
    ep = Endpoint()
    token = ep.hello(b"c")
    frame = orjson.dumps(
        {
            "v": 1,
            "id": 5,
            "op": "track_many",
            "token": token,
            "presences": [{"topic": "t", "key": "k", "meta": {}}, {"topic": "t", "key": True}],
        }
    )
    actions = ep.sessions.receive([b"c", frame], ep.now)
    reply = decode_message(next(a for a in actions if isinstance(a, SendFrame)).frame)
    assert isinstance(reply, Reply)
    assert reply.code == "bad_request"
    assert reply.message is not None
    assert "presences[1]: key" in reply.message
    assert ep.keys("t") == set()  # nothing of a malformed batch is tracked


# ------------------------------------------------------------------ broadcast, disconnect


def test_broadcast_and_disconnect_go_to_the_broadcaster_without_a_session() -> None:
    ep = Endpoint()
    assert ep.ok(b"c", BroadcastRequest(ep.rid(), "room:1", "new_msg", {"body": "hi"})) == {}
    assert ep.ok(b"c", DisconnectRequest(ep.rid(), "user_socket:7", 30.0)) == {}
    assert ep.ok(b"c", DisconnectRequest(ep.rid(), "user_socket:8")) == {}
    assert ep.broadcaster.sent == [
        ("broadcast", "room:1", "new_msg", {"body": "hi"}),
        ("disconnect", "user_socket:7", 30.0),
        ("disconnect", "user_socket:8", 0.0),
    ]
    error = ep.refused(b"c", BroadcastRequest(ep.rid(), "phx_bans", "x", {}), "bad_request")
    assert "reserved" in error["message"]
    ep.broadcaster.running = False
    ep.refused(b"c", BroadcastRequest(ep.rid(), "room:1", "x", {}), "not_running")


def test_without_a_broadcaster_broadcast_and_disconnect_are_not_served() -> None:
    counter = itertools.count()
    sessions = Sessions(NODE, ShardTracker(), tokens=lambda: f"t{next(counter)}")
    assert sessions.ops == OPS - CONTROL_OPS
    actions = sessions.handle(BroadcastRequest(1, "room", "e", {}), (b"c",), 0.0)
    reply = decode_message(actions[-1].frame)  # type: ignore[union-attr]
    assert isinstance(reply, Reply)
    assert reply.code == "unknown_op"


def test_bad_broadcast_and_disconnect_frames_are_bad_requests() -> None:
    ep = Endpoint()
    for body in (
        {"op": "broadcast", "topic": "", "event": "e", "payload": {}},
        {"op": "broadcast", "topic": "t", "event": 5, "payload": {}},
        {"op": "broadcast", "topic": "t", "event": "e", "payload": []},
        {"op": "disconnect", "socket_id": None},
        {"op": "disconnect", "socket_id": "s", "ban_seconds": -1},
        {"op": "disconnect", "socket_id": "s", "ban_seconds": 31 * 24 * 3600},
        {"op": "disconnect", "socket_id": "s", "ban_seconds": "60"},
    ):
        frame = orjson.dumps({"v": 1, "id": 9, **body})
        actions = ep.sessions.receive([b"c", frame], ep.now)
        reply = decode_message(next(a for a in actions if isinstance(a, SendFrame)).frame)
        assert isinstance(reply, Reply)
        assert reply.code == "bad_request", body
    assert ep.broadcaster.sent == []


# ------------------------------------------------------------------ purity

SOURCE = Path(tracker_zmq.__file__).resolve().parent
FORBIDDEN = {"zmq", "asyncio", "socket", "threading", "time", "os", "io", "select", "pubsub_zmq"}


@pytest.mark.parametrize("name", ["sessions.py", "protocol.py"])
def test_the_client_endpoint_core_is_pure(name: str) -> None:
    tree = ast.parse((SOURCE / name).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    # no clock, no I/O, and no randomness of its own: tokens come from the caller
    assert not imported & (FORBIDDEN | {"random", "secrets"})
