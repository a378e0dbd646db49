"""registry.py: subscriptions by topic, bounded mailboxes, the default dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pubsub_zmq.registry import Mailbox, Overflow, Registry, default_dispatch


@dataclass(eq=False)
class Sub:
    topic: str
    metadata: Any = None
    got: list[Any] = field(default_factory=list)

    def deliver(self, message: Any) -> None:
        self.got.append(message)


def test_add_reports_first_and_remove_reports_last() -> None:
    reg: Registry[Sub] = Registry()
    a, b = Sub("t"), Sub("t")
    assert reg.add(a) is True
    assert reg.add(b) is False
    assert reg.count("t") == 2
    assert len(reg) == 2
    assert reg.remove(a) is False
    assert reg.remove(a) is False  # a no-op when absent, as Phoenix's unsubscribe
    assert reg.remove(b) is True
    assert "t" not in reg
    assert reg.topics() == []
    assert len(reg) == 0


def test_adding_the_same_subscription_twice_keeps_one() -> None:
    reg: Registry[Sub] = Registry()
    a = Sub("t")
    reg.add(a)
    reg.add(a)
    assert reg.subscribers("t") == [a]


def test_subscribers_in_order_and_copies() -> None:
    reg: Registry[Sub] = Registry()
    subs = [Sub("t") for _ in range(5)]
    for s in subs:
        reg.add(s)
    listed = reg.subscribers("t")
    assert listed == subs
    listed.clear()
    assert reg.count("t") == 5
    assert reg.subscribers("other") == []
    assert reg.lookup("other") is None
    assert list(reg.lookup("t") or ()) == subs


def test_match_by_metadata() -> None:
    reg: Registry[Sub] = Registry()
    a, b, c = Sub("t", {"k": 1}), Sub("t", {"k": 2}), Sub("u", {"k": 1})
    for s in (a, b, c):
        reg.add(s)
    assert reg.match("t", {"k": 1}) == [a]
    assert reg.match("t", None) == []
    assert reg.match("x", 1) == []
    assert sorted(map(id, reg.all())) == sorted(map(id, [a, b, c]))


def test_default_dispatch_skips_the_sender() -> None:
    a, b, c = Sub("t"), Sub("t"), Sub("t")
    default_dispatch([a, b, c], b, "m")
    assert (a.got, b.got, c.got) == (["m"], [], ["m"])
    default_dispatch([a, b], None, "n")
    assert (a.got, b.got) == (["m", "n"], ["n"])


def test_mailbox_fifo() -> None:
    box = Mailbox(3)
    box.push(1)
    box.extend([2, 3])
    assert len(box) == 3
    assert [box.pop(), box.pop(), box.pop()] == [1, 2, 3]
    assert not box
    with pytest.raises(IndexError):
        box.pop()


def test_mailbox_overflow_drops_oldest_then_marks_once() -> None:
    box = Mailbox(3)
    for i in range(5):
        box.push(i)
    assert len(box) == 4  # 3 messages and the marker
    assert box.pop() == Overflow(2)
    assert [box.pop(), box.pop(), box.pop()] == [2, 3, 4]
    assert box.dropped_total == 2
    box.extend(list(range(10)))
    assert box.pop() == Overflow(7)
    assert [box.pop() for _ in range(3)] == [7, 8, 9]
    assert box.dropped_total == 9


def test_mailbox_markers_merge_until_read() -> None:
    box = Mailbox(1)
    box.push("a")
    box.push("b")
    box.push("c")
    assert box.pop() == Overflow(2)
    assert box.pop() == "c"
    box.clear()
    assert len(box) == 0


def test_mailbox_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(0)
