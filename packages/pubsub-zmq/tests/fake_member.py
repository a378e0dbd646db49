"""A hand-driven pubsub-zmq member for tests: raw sockets that speak the wire format.

pytest's ``pythonpath`` puts this folder on the path: tests import it as ``fake_member``.
"""

from __future__ import annotations

import zmq

from pubsub_zmq.wire import Control, Kind, NodeRecord, encode_control, sender_field


class FakeMember:
    """A member made of raw sockets: it says hello, publishes what a test makes it send,
    and records the subscriptions a node makes to its PUB, or sends anything else."""

    def __init__(self, name: str = "fake", incarnation: int = 1, hwm: int = 1000) -> None:
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
        self.subscriptions: list[bytes] = []

    def connect(self, endpoint: str) -> None:
        self.dealer.connect(endpoint)

    def hello(self) -> None:
        body = Control(self.record)
        self.dealer.send(
            encode_control(
                Kind.HELLO, self.record.incarnation, 1, sender_field(self.record.name), body
            )
        )

    def poll_subscriptions(self) -> list[bytes]:
        while self.pub.poll(0):
            self.subscriptions.append(self.pub.recv())
        return self.subscriptions

    def close(self) -> None:
        for sock in (self.pub, self.router, self.dealer):
            sock.close(linger=0)
        self.ctx.term()
