"""tracker_zmq.metrics, .health and .logs in this process: the key tables, the readiness
signal, the HTTP parser and server, a FastAPI app that mounts the metrics, JSON logs.

The real-process side (a 2-node ``tracker-zmq node`` cluster scraped over HTTP) is
``tests/test_metrics.py``. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aio import run, until
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pubsub_zmq import PubSub
from tracker_zmq import Node, Presence, Tracker, metrics
from tracker_zmq.channels import Endpoint
from tracker_zmq.errors import ConfigError
from tracker_zmq.health import HealthServer, HttpError, parse_head, parse_host_port
from tracker_zmq.logs import JsonFormatter, configure

ROOT_SRC = Path(__file__).resolve().parent.parent / "packages/tracker-zmq/src/tracker_zmq"
FAST: dict[str, Any] = {"broadcast_period": 0.05, "max_silent_periods": 3, "down_period": 1.0}
PUBSUB_FAST: dict[str, Any] = {"gossip_interval": 0.05, "peer_timeout": 1.0}


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The samples of a registry, by sample name then sorted labels (parsed back)."""
    text = generate_latest(registry).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def one(samples: Mapping[str, Mapping[Any, float]], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


# ------------------------------------------------------------------ key tables


def _all_stats_keys_mapped(source: str, stats: Mapping[str, Any]) -> None:
    missing = metrics.unmapped(source, stats)
    assert not missing, (
        f"{source}.stats() keys without an entry in tracker_zmq.metrics.TABLES: {missing}; "
        "give each a name, type, unit and help (and a row in docs/guides/operating.md)"
    )


def test_every_stats_key_of_every_source_has_a_metric_with_help_and_unit() -> None:
    async def main() -> None:
        a = PubSub("a", **PUBSUB_FAST)
        async with a:
            b = PubSub("b", peers=[a.endpoint], **PUBSUB_FAST)
            async with b, Presence(a, **FAST) as pa, Presence(b, **FAST) as pb:
                pa.track("o", "t", "k", {})
                endpoint = Endpoint(pa)
                await until(lambda: bool(pa.tracker.stats()["replicas"]), timeout=10)
                await until(lambda: pb.list("t") != {}, timeout=10)
                node = Node("n")
                for source, stats in (
                    ("pubsub", a.stats()),
                    ("tracker", pa.tracker.stats()),
                    ("node", node.stats()),
                    ("endpoint", endpoint.stats()),
                ):
                    _all_stats_keys_mapped(source, stats)
        # every entry names a unit and a help text, counters end in _total, gauges not
        specs: list[metrics.Spec | metrics.Labeled] = list(metrics.DERIVED)

        def walk(table: Mapping[str, Any]) -> None:
            for entry in table.values():
                if isinstance(entry, metrics.Spec | metrics.Labeled):
                    specs.append(entry)
                elif isinstance(entry, metrics.PerItem):
                    walk(entry.fields)
                elif isinstance(entry, Mapping):
                    walk(entry)

        for table in metrics.TABLES.values():
            walk(table)
        names = [spec.name for spec in specs]
        assert len(names) == len(set(names)), "a metric name is used twice"
        for spec in specs:
            assert spec.unit, spec
            assert spec.help.strip(), spec
            assert spec.name.endswith("_total") == (spec.kind == "counter"), spec

    run(main)


def test_the_operating_guide_tables_every_metric() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs/guides/operating.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)[{`]", guide, re.MULTILINE))
    names: list[str] = [spec.name for spec in metrics.DERIVED]

    def walk(table: Mapping[str, Any]) -> None:
        for entry in table.values():
            if isinstance(entry, metrics.Spec | metrics.Labeled):
                names.append(entry.name)
            elif isinstance(entry, metrics.PerItem):
                walk(entry.fields)
            elif isinstance(entry, Mapping):
                walk(entry)

    for table in metrics.TABLES.values():
        walk(table)
    assert set(names) - rows == set(), "metrics missing from docs/guides/operating.md"


def _metric_names() -> set[str]:
    """Every metric name the key tables (and the derived totals) export."""
    names = {spec.name for spec in metrics.DERIVED}

    def walk(table: Mapping[str, Any]) -> None:
        for entry in table.values():
            if isinstance(entry, metrics.Spec | metrics.Labeled):
                names.add(entry.name)
            elif isinstance(entry, metrics.PerItem):
                walk(entry.fields)
            elif isinstance(entry, Mapping):
                walk(entry)

    for table in metrics.TABLES.values():
        walk(table)
    return names


def guide_promql() -> str:
    """The PromQL of the operating guide: its dashboard and its alert rules' ``expr``."""
    guide = (Path(__file__).resolve().parent.parent / "docs/guides/operating.md").read_text()
    blocks = re.findall(r"```promql\n(.*?)```", guide, re.DOTALL)
    blocks += re.findall(r"^\s+expr: (.*)$", guide, re.MULTILINE)  # the alert rules
    assert len(blocks) >= 4, "the operating guide's dashboard and alerts"
    return "\n".join(
        line for block in blocks for line in block.splitlines() if not line.startswith("#")
    )


def guide_promql_metrics() -> set[str]:
    """The metric names the operating guide's PromQL reads."""
    used = set(re.findall(r"\b((?:pubsub|tracker|websocket)_[a-z_]+)\b", guide_promql()))
    assert len(used) >= 10, used
    return used


def test_every_metric_the_guides_promql_reads_exists() -> None:
    """The dashboard's and the alerts' expressions name metrics (and reasons) that exist."""
    code = guide_promql()
    used = guide_promql_metrics()
    assert used - _metric_names() == set(), "PromQL in docs/guides/operating.md"
    reasons = set(re.findall(r'tracker_drops_total\{reason="([a-z_]+)"\}', code))
    assert reasons, "the stall alert reads tracker_drops_total by reason"
    drops = metrics.TABLES["tracker"]["totals"]["drops"]  # type: ignore[index]
    # a series an alert reads exists from the first scrape, at 0
    assert reasons <= set(drops.zeros)


def test_every_tracker_drop_reason_is_exported_at_zero_from_the_start() -> None:
    from tracker_zmq.replica import Drop

    source = (ROOT_SRC / "shard.py").read_text()
    counted = set(re.findall(r'_count_drop\("([a-z_]+)"\)', source)) | {d.value for d in Drop}
    drops = metrics.TABLES["tracker"]["totals"]["drops"]  # type: ignore[index]
    assert counted == set(drops.zeros), "add a new drop reason to metrics' zeros"

    async def main() -> None:
        async with PubSub("a", **PUBSUB_FAST) as a, Presence(a, **FAST) as pa:
            registry = CollectorRegistry()
            metrics.register(registry, tracker=pa)
            samples = scrape(registry)
            for reason in counted:
                assert one(samples, "tracker_drops_total", reason=reason) == 0, reason

    run(main)


def test_an_unknown_stats_key_is_still_exported_untyped_with_a_generic_help() -> None:
    class Grown:
        def __init__(self, inner: Mapping[str, Any]) -> None:
            self.inner = inner

        def stats(self) -> dict[str, Any]:
            return {
                **self.inner,
                "bans": 3,
                "bulk": {"tracks": 7, "untracks": 2},
                "label": "x",
                "partitions": [{"sent": 4}, {"sent": 5}],
            }

    node = Node("n")
    grown = Grown(node.stats())
    registry = CollectorRegistry()
    metrics.register(registry, node=grown)  # a Node-like source: tracker, pubsub missing
    assert metrics.unmapped("node", grown.stats()) == ["bans", "bulk", "label", "partitions"]
    text = generate_latest(registry).decode()
    assert "# TYPE tracker_client_bans untyped" in text
    assert "tracker_client_bans 3.0" in text
    assert "tracker_client_bulk_tracks 7.0" in text
    assert "node.stats() key bulk.untracks" in text
    assert 'tracker_client_partitions_sent{index="1"} 5.0' in text
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "tracker_client_sessions" in families


def test_the_design_names_are_unlabeled_node_wide_totals() -> None:
    async def main() -> None:
        async with PubSub("a", **PUBSUB_FAST) as a, Presence(a, pool_size=3, **FAST) as pa:
            for i in range(10):
                pa.track(f"o{i}", f"topic{i}", "k", {})
            registry = CollectorRegistry()
            metrics.register(registry, tracker=pa, endpoint=Endpoint(pa))
            samples = scrape(registry)
            assert one(samples, "tracker_presences") == 10
            assert sum(samples["tracker_shard_presences"].values()) == 10
            assert one(samples, "websocket_connections") == 0
            assert one(samples, "tracker_replicas", status="up") == 0
            assert one(samples, "tracker_replicas", status="down") == 0
            for name in (
                "pubsub_messages_sent_total",
                "pubsub_messages_received_total",
                "pubsub_messages_lost_total",
            ):
                assert list(samples[name]) == [()], name
            # one collector per registry: the names are checked at registration
            with pytest.raises(ValueError, match="Duplicated"):
                metrics.register(registry, pubsub=a)

    run(main)


def test_a_collector_needs_a_source_with_stats() -> None:
    with pytest.raises(TypeError, match="at least one"):
        metrics.Collector()
    with pytest.raises(TypeError, match="stats"):
        metrics.Collector(pubsub=object())


def test_fastapi_mounts_the_metrics_in_one_line() -> None:
    from fastapi import FastAPI

    async def get(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start = sent[0]
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])

    async def main() -> None:
        pubsub = PubSub("web-1", **PUBSUB_FAST)
        presence = Presence(pubsub, **FAST)
        endpoint = Endpoint(presence)
        app = FastAPI()
        app.mount("/metrics", metrics.asgi_app(endpoint=endpoint))
        async with pubsub, presence:
            presence.track("o", "room:1", "alice", {})
            status, headers, body = await get(app, "/metrics/")
            assert status == 200
            assert headers["content-type"].startswith("text/plain")
            samples = {
                s.name: s.value
                for f in text_string_to_metric_families(body.decode())
                for s in f.samples
            }
            assert samples["tracker_presences"] == 1
            assert samples["websocket_connections"] == 0
            assert samples["pubsub_running"] == 1
            status, headers, _ = await get(app, "/metrics")  # Starlette adds the slash
            assert status in (307, 200)

    run(main)


def test_the_counts_the_stats_read_cost_no_walk_of_the_presences_and_stay_right() -> None:
    from crdt_state import State

    a, b = State(("a", 1)), State(("b", 1))
    for i in range(5):
        a.join("o", "t", f"a{i}", {})
    for i in range(3):
        b.join("o", "t", f"b{i}", {})
    assert a.delta_size() == a.delta.size()
    a.replica_up(("b", 1))
    a.merge(b.delta)
    assert a.online_count() == len(a.online_list()) == 8
    a.replica_down(("b", 1))
    assert a.online_count() == len(a.online_list()) == 5
    assert len(a) == 8


def test_mailboxes_sharing_a_tally_count_their_drops_together() -> None:
    from pubsub_zmq.registry import DropTally, Mailbox

    tally = DropTally()
    one, two, alone = Mailbox(1, tally), Mailbox(2, tally), Mailbox(1)
    for box in (one, two, alone):
        box.push("a")
        box.push("b")
    two.extend(["c", "d", "e"])
    assert (one.dropped_total, two.dropped_total, alone.dropped_total) == (1, 3, 1)
    assert tally.dropped == 4


def test_pubsub_overflow_drops_stay_counted_after_an_unsubscribe() -> None:
    async def main() -> None:
        async with PubSub("a", **PUBSUB_FAST) as a:
            sub = a.subscribe("t", queue_size=1, link=False)
            for i in range(5):
                a.broadcast("t", i)
            await a.flush()
            await until(lambda: a.stats()["dropped"]["overflow"] >= 4)
            dropped = a.stats()["dropped"]["overflow"]
            a.unsubscribe(sub)
            assert a.stats()["dropped"]["overflow"] == dropped  # a counter never falls

    run(main)


# ------------------------------------------------------------------ readiness


def test_a_tracker_is_synced_once_it_holds_what_its_up_peers_hold() -> None:
    async def main() -> None:
        async with PubSub("a", **PUBSUB_FAST) as a, Tracker(a, **FAST) as ta:
            for i in range(50):
                ta.track("o", "room", f"user{i}", {})
            await ta.wait_synced()  # no peers: synced after its first ticks
            assert ta.synced
            b = PubSub("b", peers=[a.endpoint], **PUBSUB_FAST)
            async with b:
                tb = Tracker(b, **FAST)
                assert not tb.synced  # not started
                async with tb:
                    assert not tb.synced  # it knows a has a tracker, and has not heard it
                    await asyncio.wait_for(tb.wait_synced(), 10)
                    # synced means: what a held when b met it is here
                    assert len(tb.list("room")) == 50
                    assert tb.stats()["replicas"]["a"]["status"] == "up"

    run(main)


def test_a_member_without_a_tracker_is_not_waited_for() -> None:
    async def main() -> None:
        async with PubSub("plain", **PUBSUB_FAST) as plain:
            b = PubSub("b", peers=[plain.endpoint], **PUBSUB_FAST)
            async with b, Tracker(b, **{**FAST, "down_period": 30.0}) as tb:
                assert "plain" in b.peers()
                await asyncio.wait_for(tb.wait_synced(), 10)

    run(main)


# ------------------------------------------------------------------ HTTP


def test_parse_head_reads_get_and_head_and_refuses_the_rest() -> None:
    request = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n")
    assert (request.method, request.path) == ("GET", "/metrics")
    assert request.headers == {"host": "a", "accept": "text/plain"}
    assert parse_head(b"HEAD /healthz HTTP/1.0\r\n\r\n").method == "HEAD"
    for head, status in (
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
        (b"GET /metrics HTTP/2\r\n\r\n", 505),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 100 + b"\r\n", 431),
    ):
        with pytest.raises(HttpError) as info:
            parse_head(head)
        assert info.value.status == status, head


def test_parse_host_port() -> None:
    assert parse_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_host_port("[::1]:9100") == ("::1", 9100)
    for bad in ("9100", ":9100", "host:port", "host:70000"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


async def _http(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_health_server_in_process_says_not_ready_until_started_and_synced() -> None:
    async def main() -> None:
        node = Node("h", tracker_options=FAST, pubsub_options=PUBSUB_FAST)
        async with HealthServer(node, "127.0.0.1", 0) as health:
            port = health.port
            assert health.url == f"http://127.0.0.1:{port}"
            assert await _http(port, b"GET /healthz HTTP/1.1\r\n\r\n") == (200, b"ok\n")
            status, body = await _http(port, b"GET /readyz HTTP/1.1\r\n\r\n")
            assert (status, body) == (503, b"starting\n")
            async with node:
                await node.tracker.wait_synced()
                assert await _http(port, b"GET /readyz HTTP/1.1\r\n\r\n") == (200, b"ready\n")
                status, body = await _http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
                assert status == 200
                assert b"tracker_presences 0.0" in body
                status, body = await _http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
                assert (status, body) == (200, b"")
                assert (await _http(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
                assert (await _http(port, b"DELETE /readyz HTTP/1.1\r\n\r\n"))[0] == 405
                assert (await _http(port, b"GET / HTTP/1.1\r\n" + b"x" * 9000))[0] == 431
                health.drain()
                status, body = await _http(port, b"GET /readyz HTTP/1.1\r\n\r\n")
                assert (status, body) == (503, b"shutting down\n")
                assert health.counters["errors"] == 3

    run(main)


def test_readyz_waits_for_the_first_sync_with_a_peer() -> None:
    # a quiet peer heartbeats every max_silent_periods periods (about 1.5 s here): until
    # b heard it and caught up, b is not ready
    quiet = {"broadcast_period": 0.3, "max_silent_periods": 5, "down_period": 10.0}

    async def main() -> None:
        a = Node("a", tracker_options=quiet, pubsub_options=PUBSUB_FAST)
        async with a:
            for i in range(20):
                a.tracker.track("o", "room", f"user{i}", {})
            b = Node("b", peers=[a.endpoint], tracker_options=quiet, pubsub_options=PUBSUB_FAST)
            async with HealthServer(b, "127.0.0.1", 0) as health, b:
                status, body = await _http(health.port, b"GET /readyz HTTP/1.1\r\n\r\n")
                assert (status, body) == (503, b"waiting for the first sync with the peers\n")

                async def ready() -> bool:
                    return (await _http(health.port, b"GET /readyz HTTP/1.1\r\n\r\n"))[0] == 200

                await until(ready, timeout=15)
                assert len(b.tracker.list("room")) == 20

    run(main)


# ------------------------------------------------------------------ logs


def test_json_formatter_leaves_out_uvicorns_colour_copy_of_the_message() -> None:
    record = logging.makeLogRecord(
        {"name": "uvicorn.error", "msg": "Started server process [%d]", "args": (7,)}
    )
    record.color_message = "Started server process [\x1b[36m%d\x1b[0m]"  # as uvicorn logs it
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "Started server process [7]"
    assert "color_message" not in line


def test_json_formatter_writes_one_object_a_line_with_the_fields() -> None:
    stream = io.StringIO()
    configure(logging.DEBUG, "json", stream)
    try:
        log = logging.getLogger("tracker_zmq.test")
        log.info("replica %s:%d %s", "b", 7, "up", extra={"replica": "b", "vsn": 7, "status": "up"})
        log.warning("a set %s", {1}, extra={"odd": {1, 2}, "event": "clash"})
        try:
            raise RuntimeError("boom\nline two")
        except RuntimeError:
            log.exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["event"] == "replica b:7 up"
    assert (first["level"], first["logger"]) == ("INFO", "tracker_zmq.test")
    assert (first["replica"], first["vsn"], first["status"]) == ("b", 7, "up")
    assert first["time"].endswith("Z")
    assert "T" in first["time"]
    assert second["_event"] == "clash"
    assert second["event"] == "a set {1}"
    assert second["odd"] == repr({1, 2})
    assert third["level"] == "ERROR"
    assert "RuntimeError: boom" in third["exc"]
    with pytest.raises(ValueError, match="log format"):
        configure(logging.INFO, "xml")
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": "x"})), str)
