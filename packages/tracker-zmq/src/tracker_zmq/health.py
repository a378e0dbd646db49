"""The node's HTTP endpoint for operators: ``/metrics``, ``/healthz`` and ``/readyz``.

Not pure: an asyncio server (``tracker-zmq node --metrics-bind HOST:PORT`` runs one). It
is small on purpose and depends on no web server: one request per connection
(``Connection: close``), GET and HEAD only, a request head of at most
:data:`MAX_HEAD_BYTES` read within :data:`READ_TIMEOUT` seconds, at most
:data:`MAX_CONNECTIONS` at once (more are closed at once). The request head is parsed
by :func:`parse_head`, which is pure.

* ``GET /metrics``: the node's metrics (:mod:`tracker_zmq.metrics`) in Prometheus' text
  format, or OpenMetrics when the scraper's ``Accept`` asks for it; read on the event
  loop, where the stats live.
* ``GET /healthz``: 200 ``ok`` while the node's event loop answers (it serves this).
* ``GET /readyz``: 200 ``ready`` once the node started and its tracker finished the
  first sync with the peers that are up (:attr:`tracker_zmq.Tracker.synced`); 503 with
  the reason before, and from the moment shutdown begins (:meth:`HealthServer.drain`),
  so a load balancer stops sending new clients before the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracker_zmq.errors import ConfigError

if TYPE_CHECKING:
    from tracker_zmq.node import Node

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "READ_TIMEOUT",
    "HealthServer",
    "HttpError",
    "Request",
    "parse_head",
    "parse_host_port",
]

log = logging.getLogger("tracker_zmq.health")

MAX_HEAD_BYTES = 8192
"""The longest request head (request line and headers) read, in bytes."""
MAX_HEADERS = 64
"""The most header lines in a request head."""
READ_TIMEOUT = 5.0
"""Seconds a client has to send its request head."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are closed without an answer."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request this server answers with an error status.

    Attributes:
        status: The HTTP status code.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head.

    Attributes:
        method: ``GET`` or ``HEAD`` (others are refused by :func:`parse_head`).
        path: The path, without the query string.
        headers: Header names (lowercase) to values; a repeated header keeps the last.
    """

    method: str
    path: str
    headers: dict[str, str]


def parse_head(head: bytes) -> Request:
    """Parse an HTTP/1.x request head (up to and including the blank line). Pure.

    Raises:
        HttpError: 400 for a malformed head, 405 for a method other than GET or HEAD,
            505 for a version other than HTTP/1.0 or 1.1, 431 for too many headers.
    """
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable request") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "bad request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, f"unsupported version {version[:16]!r}")
    if not target.startswith("/"):
        raise HttpError(400, "the target must be a path")
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method[:16]!r} not allowed")
    headers: dict[str, str] = {}
    fields = [line for line in lines[1:] if line]
    if len(fields) > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    for line in fields:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad header line")
        headers[name.lower()] = value.strip()
    return Request(method, target.partition("?")[0], headers)


def _response(status: int, body: bytes, content_type: str, *, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else body)


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as ``(host, port)``; port 0 picks a free one.

    Raises:
        ConfigError: Not of that form, or the port is out of range.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"expected HOST:PORT with a numeric port, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host, port


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` for a :class:`~tracker_zmq.Node`.

    Start it before the node (``/readyz`` says 503 while the node starts), call
    :meth:`drain` when shutdown begins, and stop it after the node stopped.

    Args:
        node: The node whose stats and readiness it serves.
        host: The address to listen on.
        port: The port; 0 picks a free one (see :attr:`url`).
        metrics: Whether to serve ``/metrics`` (needs prometheus_client, in the
            ``[web]`` extra); False answers it with 404.
        endpoint: A channels :class:`~tracker_zmq.channels.Endpoint` the node serves
            websockets with, whose ``stats()`` the metrics add (``websocket_*``).

    Raises:
        ConfigError: ``metrics`` is True and prometheus_client is not installed.
    """

    def __init__(
        self, node: Node, host: str, port: int, *, metrics: bool = True, endpoint: Any = None
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self._draining = False
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._render: Callable[[str], tuple[bytes, str]] | None = None
        self.counters = {"requests": 0, "errors": 0, "refused": 0}
        """Requests answered, error answers (4xx, 5xx), connections refused (too many)."""
        self._collector: Any = None
        if metrics:
            self._render, self._collector = _metrics_renderer(node, endpoint)

    def add_endpoint(self, endpoint: Any) -> None:
        """Add a channels Endpoint's ``websocket_*`` metrics (one made after this server).

        Args:
            endpoint: The :class:`~tracker_zmq.channels.Endpoint`.

        Raises:
            TypeError: It has no ``stats()`` method.
        """
        if not callable(getattr(endpoint, "stats", None)):
            raise TypeError(f"endpoint must have a stats() method, not {type(endpoint).__name__}")
        if self._collector is not None:
            self._collector.sources["endpoint"] = endpoint

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the bound socket (after :meth:`start`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def drain(self) -> None:
        """Make ``/readyz`` answer 503 from now on (shutdown began)."""
        self._draining = True

    def ready(self) -> tuple[bool, str]:
        """Whether the node is ready, and why not."""
        if self._draining:
            return False, "shutting down"
        if not self.node.running:
            return False, "starting"
        if not self.node.tracker.synced:
            return False, "waiting for the first sync with the peers"
        return True, "ready"

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: The address cannot be bound.
        """
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])

    async def stop(self) -> None:
        """Stop listening and close the open connections. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            self.counters["refused"] += 1
            writer.close()
            return
        self._connections.add(task)
        try:
            writer.write(await self._answer(reader))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes:
        head_only = False
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                raise HttpError(408, "request head too slow") from None
            except asyncio.LimitOverrunError:
                raise HttpError(431, "request head too large") from None
            request = parse_head(head)
            head_only = request.method == "HEAD"
            status, body, kind = self._route(request)
        except HttpError as exc:
            status, body, kind = exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8"
        self.counters["requests"] += 1
        if status >= 400 and status != 503:
            self.counters["errors"] += 1
        return _response(status, body, kind, head=head_only)

    def _route(self, request: Request) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        if request.path == "/healthz":
            return 200, b"ok\n", text
        if request.path == "/readyz":
            ready, why = self.ready()
            return (200 if ready else 503), f"{why}\n".encode(), text
        if request.path == "/metrics" and self._render is not None:
            try:
                body, kind = self._render(request.headers.get("accept", ""))
            except Exception:
                log.exception("metrics: a scrape failed")
                return 500, b"the scrape failed (see the node's log)\n", text
            return 200, body, kind
        raise HttpError(404, f"no {request.path[:64]!r} here: /metrics, /healthz, /readyz")


def _metrics_renderer(node: Node, endpoint: Any) -> tuple[Callable[[str], tuple[bytes, str]], Any]:
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        from tracker_zmq import metrics
    except ImportError as exc:  # pragma: no cover - the [web] extra is not installed
        raise ConfigError(
            "serving /metrics needs prometheus_client: pip install 'tracker-zmq[web]'"
        ) from exc
    registry = CollectorRegistry(auto_describe=True)
    collector = metrics.register(registry, node=node, endpoint=endpoint)

    def render(accept: str) -> tuple[bytes, str]:
        encoder: Any
        encoder, kind = choose_encoder(accept)
        return encoder(registry), kind

    return render, collector
