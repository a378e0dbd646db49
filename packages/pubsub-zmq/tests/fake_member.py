"""A hand-driven pubsub-zmq member for tests: raw sockets that speak the wire format.

pytest's ``pythonpath`` puts this folder on the path: tests import it as ``fake_member``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import zmq

from pubsub_zmq.versions import Range
from pubsub_zmq.wire import VERSION, Control, Kind, NodeRecord, encode_control, sender_field


class FakeMember:
    """A member made of raw sockets: it says hello, publishes what a test makes it send,
    and records the subscriptions a node makes to its PUB, or sends anything else.

    ``versions`` is what its record announces (default: this codec's pubsub range);
    ``legacy=True`` makes its hello a record without versions, as the release before
    negotiation sends."""

    def __init__(
        self,
        name: str = "fake",
        incarnation: int = 1,
        hwm: int = 1000,
        versions: Mapping[str, Range] | None = None,
        legacy: bool = False,
    ) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.linger = 0
        self.pub.sndhwm = hwm
        self.pub.bind("tcp://127.0.0.1:0")
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind("tcp://127.0.0.1:0")
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.sndhwm = hwm
        self.record = NodeRecord(
            name,
            incarnation,
            self.router.last_endpoint.decode(),
            self.pub.last_endpoint.decode(),
        )
        if versions is not None:
            self.record = self.record.with_versions(versions)
        self.legacy = legacy
        self.subscriptions: list[bytes] = []

    def connect(self, endpoint: str) -> None:
        self.dealer.connect(endpoint)

    def hello(self, version: int = VERSION, members: tuple[NodeRecord, ...] = ()) -> None:
        """Say hello in frame ``version`` (any byte: a newer node's hello is one),
        listing ``members`` as the live members it knows."""
        body = Control(self.record, members)
        frame = bytearray(
            encode_control(
                Kind.HELLO, self.record.incarnation, 1, sender_field(self.record.name), body
            )
        )
        frame[1] = version  # after the empty topic and its separator
        if self.legacy:  # every record without versions, as that release writes them
            old = [
                {k: v for k, v in record.to_json().items() if k != "versions"}
                for record in (self.record, *members)
            ]
            start = 1 + 18 + 1 + len(self.record.name.encode())  # NUL, header, name
            frame[start:] = orjson.dumps({"node": old[0], "members": old[1:], "via": None})
        self.dealer.send(bytes(frame))

    def poll_subscriptions(self) -> list[bytes]:
        while self.pub.poll(0):
            self.subscriptions.append(self.pub.recv())
        return self.subscriptions

    def close(self) -> None:
        for sock in (self.pub, self.router, self.dealer):
            sock.close(linger=0)
        self.ctx.term()
