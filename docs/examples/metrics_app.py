"""Prometheus metrics and JSON logs in an app that embeds a node (the operating guide's
example).

A FastAPI app with a PubSub, a Presence and a channels Endpoint mounts
``tracker_zmq.metrics`` at ``/metrics`` in one line; here the app is driven in process
(no server) and its scrape parsed back with prometheus_client's parser, so the guide's
names cannot drift from the code. Run ``uvicorn`` on such an app and Prometheus scrapes
``http://HOST:PORT/metrics/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from pubsub_zmq import PubSub
from tracker_zmq import Presence, metrics
from tracker_zmq.channels import Endpoint
from tracker_zmq.logs import JsonFormatter


def create_app() -> FastAPI:
    # --8<-- [start:fastapi]
    pubsub = PubSub("web-1", bind="tcp://127.0.0.1:0")
    presence = Presence(pubsub)
    endpoint = Endpoint(presence)  # its Presence and PubSub are read through it

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with pubsub, presence:
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/socket", endpoint)
    app.mount("/metrics", metrics.asgi_app(endpoint=endpoint))  # GET /metrics/
    # --8<-- [end:fastapi]
    app.state.presence = presence
    return app


async def get(app: Any, path: str) -> bytes:
    """One GET through the ASGI app, as a server would make it."""
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
        "headers": [(b"host", b"example")],
        "client": ("127.0.0.1", 1),
        "server": ("example", 80),
    }
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        parts.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(parts)


async def scrape_the_app() -> None:
    app = create_app()
    async with app.router.lifespan_context(app):
        app.state.presence.track("socket-1", "room:lobby", "alice", {})
        text = (await get(app, "/metrics/")).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("tracker_presences", ())] == 1
    assert samples[("websocket_connections", ())] == 0
    assert samples[("tracker_replicas", (("status", "up"),))] == 0
    assert ("pubsub_messages_lost_total", ()) in samples
    print(f"scraped {len(samples)} samples; tracker_presences 1.0")


def registry_of_your_own() -> None:
    # --8<-- [start:register]
    from prometheus_client import CollectorRegistry, generate_latest

    pubsub = PubSub("worker-1")
    presence = Presence(pubsub)
    registry = CollectorRegistry()  # or leave it out: prometheus_client's REGISTRY
    metrics.register(registry, pubsub=pubsub, tracker=presence)
    text = generate_latest(registry)  # what any exporter of that registry serves
    # --8<-- [end:register]
    assert b"tracker_presences 0.0" in text


def json_logs() -> None:
    stream = io.StringIO()
    # --8<-- [start:logs]
    handler = logging.StreamHandler(stream)  # sys.stderr in an app
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # --8<-- [end:logs]
    logging.getLogger("tracker_zmq").info(
        "tracker %r shard %d on %s: replica %s:%d %s",
        "presence",
        0,
        "web-1",
        "web-2",
        17,
        "up",
        extra={"tracker": "presence", "shard": 0, "replica": "web-2", "vsn": 17, "status": "up"},
    )
    line = json.loads(stream.getvalue())
    assert (line["replica"], line["status"], line["level"]) == ("web-2", "up", "INFO")
    print(stream.getvalue(), end="")


asyncio.run(scrape_the_app())
registry_of_your_own()
json_logs()
