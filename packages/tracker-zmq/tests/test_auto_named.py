"""A tracker on an automatically named node (``PubSub(None)``, a web worker).

Its name never comes back, so by default the tracker's stop is a graceful permdown:
peers forget its replica at once instead of keeping it down for ``permdown_period``.
"""

from __future__ import annotations

import asyncio

import pytest
from aio import run, until

from pubsub_zmq import PubSub
from tracker_zmq import ConfigError, Tracker

FAST = {"broadcast_period": 0.05, "max_silent_periods": 2, "down_period": 0.3}
NET = {"gossip_interval": 0.05, "peer_timeout": 1.0}


def test_permdown_on_shutdown_follows_the_name_unless_given() -> None:
    async def body() -> None:
        assert Tracker(PubSub(None)).permdown_on_shutdown is True
        assert Tracker(PubSub("web-1")).permdown_on_shutdown is False
        assert Tracker(PubSub(None), permdown_on_shutdown=False).permdown_on_shutdown is False
        assert Tracker(PubSub("web-1"), permdown_on_shutdown=True).permdown_on_shutdown is True
        with pytest.raises(ConfigError, match="permdown_on_shutdown"):
            Tracker(PubSub(None), permdown_on_shutdown=1)  # type: ignore[arg-type]

    run(body)


def test_a_stopped_worker_leaves_no_replica_behind() -> None:
    async def body() -> None:
        host = PubSub("host", **NET)
        # permdown_period is 20 minutes: only the permdown removes the worker's replica
        observer = Tracker(host, permdown_period=1200, **FAST)
        async with asyncio.timeout(30), host, observer:
            async with (
                PubSub(None, peers=[host.endpoint], **NET) as worker_pubsub,
                Tracker(worker_pubsub, permdown_period=1200, **FAST) as worker,
            ):
                name = worker_pubsub.node_name
                worker.track("conn-1", "room", "alice", {})
                await until(lambda: observer.list("room") != [], 10.0, "alice")
                assert observer.stats()["replicas"][name]["status"] == "up"
            await until(lambda: name not in observer.stats()["replicas"], 10.0, "the permdown")
            assert observer.list("room") == []

    run(body)
