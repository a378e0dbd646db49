"""Tracker options, their Phoenix defaults and their validation. Pure.

Periods are in seconds (Phoenix uses milliseconds). The defaults are Phoenix.Tracker's:
a heartbeat every 1.5 s, an empty one after 10 quiet periods, down after 30 s of silence,
permanently down after 20 minutes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from tracker_zmq.errors import ConfigError

__all__ = ["Options", "check_positive"]


@dataclass(frozen=True, slots=True)
class Options:
    """The options of a tracker, checked at construction.

    Attributes:
        broadcast_period: Seconds between ticks: delta heartbeats, down detection and
            clock sampling all happen on the tick.
        max_silent_periods: Quiet ticks before an empty heartbeat is sent anyway; an idle
            replica heartbeats every ``(max_silent_periods + 1) * broadcast_period``.
        down_period: Seconds of silence before a replica is down (its presences leave).
            None: ``broadcast_period * max_silent_periods * 2``. Must exceed an idle
            replica's heartbeat interval.
        permdown_period: Seconds of silence before a replica is permanently down (its
            state is discarded). Must exceed ``down_period``.
        clock_sample_periods: Ticks over which peers' clocks are sampled before asking
            the replicas this one is behind for a transfer.
        max_delta_sizes: Caps of the delta generations kept to answer transfers.
        pool_size: Number of shards; topics map to shards by a stable hash. Every node
            of a cluster must use the same.
        transfer_timeout: Seconds a transfer request stays outstanding without a part of
            its answer arriving; None: ``5 * down_period`` (a responder builds a large
            answer before its first part leaves).
        transfer_part_values: Most values in one part of a transfer answer.
        transfer_part_bytes: About the most encoded bytes in one part, and in one
            heartbeat (a larger delta is fetched by transfer instead). A
            :class:`~tracker_zmq.Tracker` requires it to be at most half its PubSub's
            ``max_frame_bytes`` (``transfer_part_bytes <= max_frame_bytes // 2``, or
            ``ConfigError``) and defaults it to exactly that half; the default here,
            512 KiB, is half the PubSub's default of 1 MiB.
        max_replicas: Most remote replicas a shard keeps; heartbeats of more are dropped.
        max_message_entries: Most values plus cloud tags accepted in one message.
        max_presences: Most presences this node may track at once, over all its shards
            (remote ones do not count); a ``track`` beyond it raises
            :class:`~tracker_zmq.errors.TooManyPresences`. None: no limit.
    """

    broadcast_period: float = 1.5
    max_silent_periods: int = 10
    down_period: float | None = None
    permdown_period: float = 1200.0
    clock_sample_periods: int = 2
    max_delta_sizes: Sequence[int] = (100, 1000, 10000)
    pool_size: int = 1
    transfer_timeout: float | None = None
    transfer_part_values: int = 20_000
    transfer_part_bytes: int = 512 * 1024
    max_replicas: int = 1024
    max_message_entries: int = 2_000_000
    max_presences: int | None = None

    def __post_init__(self) -> None:
        for name in ("broadcast_period", "permdown_period"):
            check_positive(name, getattr(self, name))
        for name in (
            "max_silent_periods",
            "clock_sample_periods",
            "pool_size",
            "transfer_part_values",
            "transfer_part_bytes",
            "max_replicas",
            "max_message_entries",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, not {value!r}")
        if self.max_presences is not None and (
            type(self.max_presences) is not int or self.max_presences < 1
        ):
            raise ConfigError(
                f"max_presences must be a positive int or None, not {self.max_presences!r}"
            )
        sizes = tuple(self.max_delta_sizes) if _is_sequence(self.max_delta_sizes) else ()
        if not sizes or any(type(s) is not int or s < 1 for s in sizes):
            raise ConfigError(
                f"max_delta_sizes must be positive ints, not {self.max_delta_sizes!r}"
            )
        if list(sizes) != sorted(sizes):
            raise ConfigError(f"max_delta_sizes must be ascending, not {self.max_delta_sizes!r}")
        object.__setattr__(self, "max_delta_sizes", sizes)
        if self.down_period is None:
            down = self.broadcast_period * self.max_silent_periods * 2
            object.__setattr__(self, "down_period", down)
        check_positive("down_period", self.down_period)
        idle = (self.max_silent_periods + 1) * self.broadcast_period
        if not self.down_period > idle:  # type: ignore[operator]
            raise ConfigError(
                f"down_period ({self.down_period} s) must exceed the idle heartbeat interval, "
                f"(max_silent_periods + 1) * broadcast_period = {idle} s, or idle replicas "
                "would be marked down between heartbeats"
            )
        if not self.permdown_period > self.down_period:  # type: ignore[operator]
            raise ConfigError(
                f"permdown_period ({self.permdown_period} s) must exceed "
                f"down_period ({self.down_period} s)"
            )
        if self.transfer_timeout is None:
            object.__setattr__(self, "transfer_timeout", 5 * self.down)
        check_positive("transfer_timeout", self.transfer_timeout)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default as declared (``down_period`` and ``transfer_timeout``
        None: derived from the others), by name.

        The one source of the tracker's defaults: the command line and the node read
        them here instead of restating them.
        """
        return {f.name: f.default for f in fields(cls)}

    @property
    def down(self) -> float:
        """``down_period`` once resolved (always a float)."""
        assert self.down_period is not None
        return self.down_period

    @property
    def timeout(self) -> float:
        """``transfer_timeout`` once resolved (always a float)."""
        assert self.transfer_timeout is not None
        return self.transfer_timeout


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def check_positive(name: str, value: object) -> float:
    """Check that an option is a positive, finite number (an int or a float, not a bool).

    The one check of every period, lease and timeout option in tracker_zmq
    (:class:`Options`, :class:`~tracker_zmq.ClientLimits`, :class:`~tracker_zmq.Client`).

    Args:
        name: The option's name, for the message.
        value: Its value.

    Returns:
        The value as a float.

    Raises:
        ConfigError: It is not a positive number (also a ValueError).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)
