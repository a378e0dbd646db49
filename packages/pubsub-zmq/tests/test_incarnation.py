"""incarnation.py: incarnations grow with the clock, and past any floor."""

from __future__ import annotations

import random
import time

from pubsub_zmq import PubSub, new_incarnation


def test_an_incarnation_is_the_clock_with_random_low_bits() -> None:
    before = time.time_ns()
    incarnation = new_incarnation(rng=random.Random(1))
    after = time.time_ns()
    assert before >> 16 <= incarnation >> 16 <= after >> 16
    assert incarnation & 0xFFFF == random.Random(1).getrandbits(16)
    assert incarnation < 1 << 64  # fits the wire's unsigned 64 bits


def test_it_outgrows_the_floor_even_when_the_clock_is_behind() -> None:
    future = time.time_ns() + 10**12
    for seed in range(50):
        assert new_incarnation(future, random.Random(seed)) > future
    last = new_incarnation()
    for _ in range(1000):  # the clock may stand still between two calls
        last_now = new_incarnation(last)
        assert last_now > last
        last = last_now


def test_two_nodes_started_in_one_instant_differ_and_each_start_grows() -> None:
    incarnations = [PubSub(f"n{i}").incarnation for i in range(20)]
    assert len(set(incarnations)) == 20
    assert PubSub("later").incarnation >> 16 >= max(incarnations) >> 16
