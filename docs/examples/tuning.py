"""The tuning guide's checks: the validation rules, and detection times in virtual time."""

from __future__ import annotations

from tracker_zmq import ConfigError, Options
from tracker_zmq.testing import Cluster

# --8<-- [start:validation]
defaults = Options()
assert defaults.down_period == 1.5 * 10 * 2 == 30  # broadcast_period * max_silent * 2
assert defaults.timeout == 5 * 30  # transfer_timeout: 5 * down_period

bad = [
    {"broadcast_period": 0},  # periods are positive numbers of seconds
    {"max_silent_periods": 1.5},  # counts are positive ints
    {"down_period": 16.5},  # must exceed (10 + 1) * 1.5 = 16.5: an idle peer's heartbeat
    {"down_period": 60, "permdown_period": 60},  # permdown_period must exceed down_period
    {"max_delta_sizes": (1000, 100)},  # ascending
]
for options in bad:
    try:
        Options(**options)
    except ConfigError as error:  # also a ValueError
        print(f"{options}: {error}")
    else:
        raise AssertionError(f"{options} was accepted")
Options(broadcast_period=0.5, max_silent_periods=4, down_period=2.6)  # 2.6 > 5 * 0.5
# --8<-- [end:validation]


# --8<-- [start:detection]
def detection_time(options: Options) -> float:
    """Seconds from a crash to its leave on a peer, in virtual time."""
    cluster = Cluster(options, seed=4, nodes=["a", "b"])
    cluster.track("a", "conn-1", "room", "alice", {})
    assert cluster.settle()
    crashed_at = cluster.now
    cluster.crash("a")
    cluster.run_for(options.down + 2 * options.broadcast_period)
    left = [r.time for r in cluster.node("b").diffs if r.diff.get("room", ([], []))[1]]
    return left[0] - crashed_at


for options in (Options(), Options(broadcast_period=0.5, max_silent_periods=4)):
    seconds = detection_time(options)
    idle = (options.max_silent_periods + 1) * options.broadcast_period
    assert options.down - idle < seconds <= options.down + options.broadcast_period
    print(f"down_period {options.down:>4} s: a crash was noticed after {seconds:.1f} s")
# --8<-- [end:detection]
