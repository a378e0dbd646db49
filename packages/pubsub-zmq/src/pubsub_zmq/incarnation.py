"""Incarnation numbers: what tells one run of a node from the next.

Not pure: it reads the wall clock (that is the point). Phoenix tells runs apart by
Erlang pids and a replica's ``vsn`` (``System.system_time``); here a node's PubSub
incarnation and a tracker's vsn are both minted by :func:`new_incarnation`.
"""

from __future__ import annotations

import random
import time

__all__ = ["new_incarnation"]

_RANDOM_BITS = 16
_LOW = (1 << _RANDOM_BITS) - 1


def new_incarnation(floor: int = 0, rng: random.Random | None = None) -> int:
    """Mint an incarnation: the wall clock in nanoseconds with random low bits.

    The clock keeps incarnations growing across restarts (even of another process);
    the 16 random low bits keep two nodes started in the same instant apart. It fits
    the wire's unsigned 64 bits until the year 2554.

    Args:
        floor: the result is greater than this (pass the last incarnation minted for
            the same name, or one the new one must outgrow, to stay monotonic even when
            the clock stands still or steps back).
        rng: where the random bits come from (default: a fresh ``random.Random``).

    Returns:
        A positive int greater than ``floor``.
    """
    bits = (rng if rng is not None else random.Random()).getrandbits(_RANDOM_BITS)
    incarnation = (max(time.time_ns(), floor) & ~_LOW) | bits
    if incarnation <= floor:
        incarnation = (((floor >> _RANDOM_BITS) + 1) << _RANDOM_BITS) | bits
    return incarnation
