"""outbox.py: batching rules and sequence numbers, with no sockets and no event loop."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pubsub_zmq import InvalidTopic, MessageTooLarge
from pubsub_zmq.outbox import MAX_CACHED_TOPICS, Batch, Outbox
from pubsub_zmq.wire import Kind, decode, sender_field

INCARNATION = 7


def outbox(**options: Any) -> Outbox:
    settings = {"max_frame_bytes": 4096, "max_batch": 256, "batch_bytes": 64 * 1024}
    return Outbox(sender_field("a"), INCARNATION, **{**settings, **options})


def add(box: Outbox, topic: str, message: Any, dest: str | None = None) -> tuple[Batch, ...]:
    return box.add(dest, topic, orjson.dumps(message))


def messages(box: Outbox, batch: Batch) -> list[Any]:
    return decode(box.frame(batch)).messages


def test_messages_wait_in_one_batch_per_topic_until_taken() -> None:
    box = outbox()
    for i in range(3):
        assert add(box, "t", i) == ()
        assert add(box, "u", -i) == ()
    taken = box.take()
    assert [(b.dest, b.topic, b.count) for b in taken] == [(None, "t", 3), (None, "u", 3)]
    assert [messages(box, b) for b in taken] == [[0, 1, 2], [0, -1, -2]]
    assert box.take() == []
    assert box.broadcasts == {}


def test_direct_batches_are_per_destination_and_come_after_broadcasts() -> None:
    box = outbox()
    add(box, "t", "to b", dest="b")
    add(box, "t", "to c", dest="c")
    add(box, "t", "all")
    add(box, "t", "to b again", dest="b")
    taken = box.take()
    assert [(b.dest, b.count) for b in taken] == [(None, 1), ("b", 2), ("c", 1)]
    frames = [decode(box.frame(b)) for b in taken]
    assert [f.kind for f in frames] == [Kind.BROADCAST, Kind.DIRECT, Kind.DIRECT]
    assert frames[1].messages == ["to b", "to b again"]
    assert {f.incarnation for f in frames} == {INCARNATION}
    assert {f.sender for f in frames} == {"a"}


def test_a_batch_goes_out_once_it_holds_max_batch_messages() -> None:
    box = outbox(max_batch=3)
    assert add(box, "t", 1) == ()
    assert add(box, "t", 2) == ()
    (full,) = add(box, "t", 3)
    assert messages(box, full) == [1, 2, 3]
    assert "t" not in box.broadcasts
    (alone,) = outbox(max_batch=1).add(None, "t", b"1")
    assert alone.count == 1


def test_a_batch_goes_out_when_its_bytes_are_used_up() -> None:
    box = outbox(batch_bytes=20)
    data = orjson.dumps("x" * 7)  # 9 bytes, 10 with its comma
    assert box.add(None, "t", data) == ()
    (full,) = box.add(None, "t", data)  # exactly full: out at once
    assert full.room == 0
    assert messages(box, full) == ["x" * 7] * 2


def test_a_message_that_does_not_fit_closes_the_open_batch() -> None:
    box = outbox(batch_bytes=40)
    add(box, "t", "small")  # 8 bytes with its comma: 32 left
    (previous,) = add(box, "t", "y" * 35)  # 37 bytes: a new batch starts
    assert messages(box, previous) == ["small"]
    assert box.broadcasts["t"].count == 1
    (big,) = box.take()
    assert messages(box, big) == ["y" * 35]


def test_both_batches_go_out_when_the_new_one_is_full_at_once() -> None:
    box = outbox(max_batch=1, batch_bytes=10)
    box.broadcasts["t"] = Batch(None, "t", b"t\x00", 5)  # an open batch with little room
    box.broadcasts["t"].body += b"1,"
    box.broadcasts["t"].count = 1
    old, new = add(box, "t", "long enough")
    assert (old.count, new.count) == (1, 1)
    assert messages(box, old) == [1]
    assert messages(box, new) == ["long enough"]


def test_message_too_large_changes_nothing() -> None:
    box = outbox(max_frame_bytes=1024)
    add(box, "t", 1)
    with pytest.raises(MessageTooLarge):
        add(box, "t", "z" * 1024)
    with pytest.raises(MessageTooLarge):
        add(box, "t", "z" * 1024, dest="b")
    (batch,) = box.take()
    assert messages(box, batch) == [1]
    # the largest message that fits alone makes a frame within max_frame_bytes
    big = "z" * 990
    add(box, "t", big)
    (batch,) = box.take()
    frame = box.frame(batch)
    assert len(frame) <= 1024
    assert decode(frame, 1024).messages == [big]


def test_invalid_topics_raise() -> None:
    box = outbox()
    with pytest.raises(InvalidTopic):
        add(box, "", 1)
    with pytest.raises(InvalidTopic):
        add(box, "a\x00b", 1)
    with pytest.raises(TypeError):
        box.add(None, 5, b"1")  # type: ignore[arg-type]
    assert box.take() == []


def test_sequence_numbers_run_per_topic_and_per_destination() -> None:
    box = outbox(max_batch=2)
    seqs: list[tuple[str | None, str, int]] = []
    for dest in (None, None, "b", "c", "b"):
        for topic in ("t", "u"):
            for i in range(3):
                for batch in add(box, topic, i, dest=dest):
                    frame = decode(box.frame(batch))
                    seqs.append((batch.dest, frame.topic, frame.seq))
            for batch in box.take():
                frame = decode(box.frame(batch))
                seqs.append((batch.dest, frame.topic, frame.seq))
    broadcast_t = [s for d, t, s in seqs if d is None and t == "t"]
    assert broadcast_t == [0, 2, 3, 5]  # 2 + 1 + 2 + 1 messages
    assert [s for d, t, s in seqs if d is None and t == "u"] == [0, 2, 3, 5]
    # direct numbers run per destination, whatever the topic
    assert [s for d, _, s in seqs if d == "b"] == [0, 2, 3, 5, 6, 8, 9, 11]
    assert [s for d, _, s in seqs if d == "c"] == [0, 2, 3, 5]


def test_an_unsent_batch_takes_no_sequence_numbers() -> None:
    box = outbox()
    add(box, "t", 1, dest="nobody")
    box.take()  # dropped unsent: frame() never called
    add(box, "t", 2, dest="nobody")
    (batch,) = box.take()
    assert decode(box.frame(batch)).seq == 0


def test_broadcast_numbers_of_too_many_topics_restart_from_zero() -> None:
    box = outbox()
    add(box, "first", 1)
    (batch,) = box.take()
    box.frame(batch)
    for i in range(MAX_CACHED_TOPICS):
        add(box, f"topic {i}", i)
        (batch,) = box.take()
        box.frame(batch)
    add(box, "first", 2)  # "first" was evicted: its count restarts
    (batch,) = box.take()
    assert decode(box.frame(batch)).seq == 0


def test_prefixes_are_cached_and_validated() -> None:
    box = outbox()
    assert box.prefix("room") == b"room\x00"
    assert box.prefix("room") is box.prefix("room")
    with pytest.raises(InvalidTopic):
        box.prefix("")
