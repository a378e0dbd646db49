"""``EndpointOptions(coalesce_diffs=...)`` behind a real uvicorn server.

Many sockets of one room join within the window: every socket of the room gets one
``presence_diff`` frame for them all (not one per join), encoded once per serializer,
and what it shows after its ``presence_state`` and that frame is the room's presence,
also for the sockets that joined during the window and for a join that left again.
Without the option each join is its own frame, as in Phoenix. The harness (uvicorn in a
task, the ``websockets`` client speaking Phoenix's protocol) is test_channels.py's; the
merge itself is checked against phoenix.js in tests/test_coalesce_js.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aio import run, until
from test_channels import Phx, client, node

from tracker_zmq.channels import EndpointOptions
from tracker_zmq.errors import ConfigError

WINDOW = 5.0  # seconds: far longer than the joins take, so they fall in one window
N = 20


def sync_diff(state: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """phoenix.js's ``Presence.syncDiff``: the joins, then the leaves, by ``phx_ref``."""
    state = {key: {**entry, "metas": list(entry["metas"])} for key, entry in state.items()}
    for key, entry in diff["joins"].items():
        joined = {meta["phx_ref"] for meta in entry["metas"]}
        kept = [m for m in state.get(key, {"metas": []})["metas"] if m["phx_ref"] not in joined]
        state[key] = {**entry, "metas": kept + list(entry["metas"])}
    for key, entry in diff["leaves"].items():
        if key in state:
            left = {meta["phx_ref"] for meta in entry["metas"]}
            metas = [m for m in state[key]["metas"] if m["phx_ref"] not in left]
            state[key]["metas"] = metas
            if not metas:
                del state[key]
    return state


def diffs_in(phx: Phx, topic: str) -> list[dict[str, Any]]:
    return [
        f["payload"] for f in phx.unread if f["topic"] == topic and f["event"] == "presence_diff"
    ]


async def join(phx: Phx, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Join; the presence_state the channel pushes after the reply."""
    assert (await phx.push(topic, "phx_join", payload))["status"] == "ok"
    return dict((await phx.event(topic, "presence_state"))["payload"])


@pytest.mark.slow
def test_joins_within_the_window_reach_each_socket_as_one_frame() -> None:
    async def body() -> None:
        topic = "room:storm"
        async with (
            node(coalesce_diffs=WINDOW) as (endpoint, url),
            contextlib.AsyncExitStack() as stack,
        ):
            presence = endpoint.presence_required()
            watchers = [
                await stack.enter_async_context(client(url, f"watch{vsn}", vsn))
                for vsn in ("2.0.0", "1.0.0")
            ]
            start = {}
            for phx in watchers:
                start[phx] = await join(phx, topic, {"track": False})
                assert start[phx] == {}
            joiners = [await stack.enter_async_context(client(url, f"u{i}")) for i in range(N)]
            before = endpoint.stats()
            states = await asyncio.gather(*(join(phx, topic, {}) for phx in joiners))
            start.update(zip(joiners, states, strict=True))
            # one of them leaves again within the window
            assert (await joiners[0].push(topic, "phx_leave"))["status"] == "ok"
            await until(lambda: "u0" not in presence.list(topic), message="u0 left")
            expected = {f"u{i}" for i in range(1, N)}
            assert set(presence.list(topic)) == expected
            for phx in [*watchers, *joiners[1:]]:
                diff = await phx.event(topic, "presence_diff")
                state = sync_diff(start[phx], diff["payload"])
                assert set(state) == expected
                assert all(len(state[key]["metas"]) == 1 for key in expected)
            # one merged diff for the whole window: no second frame follows
            await asyncio.sleep(0)
            for phx in [*watchers, *joiners[1:]]:
                assert diffs_in(phx, topic) == []
            stats = endpoint.stats()
            assert stats["coalesced_diffs"] - before["coalesced_diffs"] == N  # N+1 diffs
            assert stats["encodes"] - before["encodes"] == 2  # once per serializer
            assert stats["irregular_diffs"] == 0

    run(body)


def test_without_the_option_each_join_is_its_own_frame() -> None:
    async def body() -> None:
        topic = "room:plain"
        async with node() as (endpoint, url), contextlib.AsyncExitStack() as stack:
            watcher = await stack.enter_async_context(client(url, "watch"))
            await join(watcher, topic, {"track": False})
            for i in range(3):
                phx = await stack.enter_async_context(client(url, f"p{i}"))
                await join(phx, topic, {})
                diff = await watcher.event(topic, "presence_diff")
                assert list(diff["payload"]["joins"]) == [f"p{i}"]
            assert endpoint.stats()["coalesced_diffs"] == 0

    run(body)


def test_an_irregular_diff_flushes_the_window_and_goes_out_as_it_came() -> None:
    async def body() -> None:
        topic = "room:odd"
        async with node(coalesce_diffs=WINDOW) as (endpoint, url), client(url, "w") as watcher:
            await join(watcher, topic, {"track": False})
            async with client(url, "joiner") as joiner:
                await join(joiner, topic, {})
                odd = {"joins": {"x": {"metas": [{"no": "ref"}]}}, "leaves": {}}
                endpoint.pubsub.broadcast(topic, {"event": "presence_diff", "payload": odd})
                first = await watcher.event(topic, "presence_diff")
                second = await watcher.event(topic, "presence_diff")
                # what was merged first, then the irregular one, without waiting
                assert list(first["payload"]["joins"]) == ["joiner"]
                assert second["payload"] == odd
                assert endpoint.stats()["irregular_diffs"] == 1

    run(body)


@pytest.mark.parametrize("value", [-1, 61, float("nan"), "1", None])
def test_a_bad_window_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match="coalesce_diffs"):
        EndpointOptions(coalesce_diffs=value)
    assert EndpointOptions(coalesce_diffs=0).coalesce_diffs == 0


def test_shutdown_sends_what_is_being_coalesced_before_it_drains() -> None:
    async def body() -> None:
        topic = "room:late"
        async with node(coalesce_diffs=30.0) as (endpoint, url), client(url, "w") as watcher:
            await join(watcher, topic, {"track": False})
            async with client(url, "joiner") as joiner:
                await join(joiner, topic, {})
                await until(lambda: bool(endpoint._windows), message="a diff in a window")
                await endpoint.shutdown()
                diff = await watcher.event(topic, "presence_diff")
                assert list(diff["payload"]["joins"]) == ["joiner"]
                assert endpoint.stats()["drained"] == 2

    run(body)
